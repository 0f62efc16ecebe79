"""Build configs and signed requests for tests."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relay.config import load_text
from relay.config.model import Config
from relay.verify import sign

SECRET = "test-webhook-secret"

ROOM_JOIN = (
    b'{"agent_id": "agent_abc123", "event_type": "room.join",\n'
    b' "data": {"room_name": "customer-support", "participant_count": 1,'
    b' "session_id": "session_xyz789"},\n'
    b' "timestamp": 1705312200.0}'
)
CHAT_PUSH = (
    b'{"agent_id": "agent_abc123", "event_type": "chat.push",\n'
    b' "data": {"role": "user", "message": "Hello, I need help with my order",\n'
    b'          "session_id": "session_xyz789", "timestamp": 1705312285.0},\n'
    b' "timestamp": 1705312285.0}'
)


# Every event, verified with SECRET, to one console destination.
BASIC = """
verify:
  secrets: ["${SECRET}"]
destinations:
  stdout: { type: console }
rules:
  - name: everything
    send_to: [stdout]
"""


def make_config(yaml_text: str, tmp_path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Load a test config; its store is a fresh SQLite file under tmp_path."""
    text = textwrap.dedent(yaml_text)
    if "store:" not in text:
        text += f"\nstore:\n  url: sqlite:{tmp_path / 'relay.db'}\n"
    return load_text(text, "test.yaml", env={"SECRET": SECRET, **(env or {})})


def event_body(
    kind: str = "chat.push", *, message: str = "hello", session: str = "s1", **overrides: Any
) -> bytes:
    """Return a JSON body for an event, with top-level fields overridden (None removes one)."""
    data: dict[str, Any] = {"role": "user", "message": message, "session_id": session}
    payload: dict[str, Any] = {
        "agent_id": "agent_abc123",
        "event_type": kind,
        "data": data,
        "timestamp": 1705312285.0,
    }
    for key, value in overrides.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return json.dumps(payload).encode()


def signed_headers(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    """Headers bitHuman would send for a body."""
    return {"Content-Type": "application/json", "X-bitHuman-Signature": sign(body, secret), **extra}


class Output(io.StringIO):
    """Captures console destination output."""

    def blocks(self) -> list[str]:
        return [block for block in self.getvalue().split("\n\n") if block.strip()]
