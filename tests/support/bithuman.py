"""What bitHuman sends today (SPEC 1.1, 1.2): the documented shapes, built independently.

The account signature is computed here with bitHuman's documented recipe, not with relay's
own signing code, so a test that uses it checks relay against the documentation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

AGENT = "A80HVD8577"
SESSION_ID = "8d947f06-2c36-4d98-aafe-b232da2433ff"
DASHBOARD_HEADER_VALUE = "dashboard-typed-value-5c1e9a"  # X-Webhook-Secret, typed by the user
ACCOUNT_SECRET = "whsec_9f86d081884c7d659a2feaa0c55ad015"  # returned once by POST /v1/webhooks

# The session events of SPEC 1.1, verbatim: no signature, the dashboard's header instead.
ROOM_JOIN = (
    b'{"agent_id": "A80HVD8577", "event_type": "room.join",\n'
    b' "data": {"room_name": "room-A80HVD8577-qtrJ-cOFR", "participant_count": 3,\n'
    b'          "session_id": "8d947f06-2c36-4d98-aafe-b232da2433ff"},\n'
    b' "timestamp": 1790607253.5575945}'
)
CHAT_PUSH = (
    b'{"agent_id": "A80HVD8577", "event_type": "chat.push",\n'
    b' "data": {"role": "user", "message": "Hello, I need help with my order",\n'
    b'          "session_id": "8d947f06-2c36-4d98-aafe-b232da2433ff",'
    b' "timestamp": 1790607268.8956978},\n'
    b' "timestamp": 1790607268.895705}'
)
TEST_BUTTON = b'{"event_type": "test", "agent_id": "test_agent_123"}'

# Each account event's data, as SPEC 1.2 lists its fields.
ACCOUNT_DATA: dict[str, dict[str, Any]] = {
    "agent.ready": {"agent_id": AGENT, "code": AGENT},
    "agent.failed": {"agent_id": AGENT, "error": "Face not detected in the source image"},
    "video.completed": {
        "agent_id": AGENT,
        "job_id": "job_7d2f0c1a9b",
        "status": "completed",
        "model": "essence",
        "video_url": "https://videos.example.com/job_7d2f0c1a9b.mp4?sig=a1&exp=2",
        "duration_seconds": 12.5,
        "credits_charged": 25,
    },
    "video.failed": {
        "agent_id": AGENT,
        "job_id": "job_3e4f5a6b7c",
        "error": {"message": "Audio file could not be decoded"},
    },
    "ping": {},
}


def dashboard_headers(**extra: str) -> dict[str, str]:
    """The headers a session event arrives with: the user's typed header, no signature."""
    return {"Content-Type": "application/json", "X-Webhook-Secret": DASHBOARD_HEADER_VALUE, **extra}


def account_body(
    event: str, data: dict[str, Any] | None = None, *, event_id: str = "evt_a1b2c3", created: int
) -> bytes:
    """Return an account webhook's body (`id`, `event`, `created`, `data`)."""
    payload = {"id": event_id, "event": event, "created": created, "data": data or {}}
    return json.dumps(payload, separators=(",", ":")).encode()


def bithuman_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Sign as bitHuman documents it: HMAC-SHA256 over `<timestamp>.` + the raw body."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def bithuman_verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """bitHuman's documented Python `verify` function, as a receiver would copy it."""
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(f"sha256={expected.hexdigest()}", signature)


def account_headers(
    body: bytes,
    *,
    timestamp: int,
    secret: str = ACCOUNT_SECRET,
    delivery: str | None = "evt_a1b2c3",
    event: str = "agent.ready",
    signature: str | None = None,
) -> dict[str, str]:
    """The headers an account webhook arrives with, signed unless `signature` is given."""
    stamp = str(timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-BitHuman-Event": event,
        "X-BitHuman-Timestamp": stamp,
        "X-BitHuman-Signature": signature or bithuman_signature(secret, stamp, body),
    }
    if delivery is not None:
        headers["X-BitHuman-Delivery"] = delivery
    return headers
