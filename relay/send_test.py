"""`relay send-test`: post a signed sample event, like the dashboard's Test button."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import aiohttp

from relay.config.model import Config
from relay.verify import sign

DEFAULT_URL = "http://127.0.0.1:8080/webhook"


def sample_event(event_type: str, message: str, agent_id: str) -> dict[str, object]:
    """Return a sample event stamped with the current time, so each one is new."""
    now = time.time()
    session = f"session_test_{uuid.uuid4().hex[:8]}"
    if event_type == "chat.push":
        data: dict[str, object] = {
            "role": "user",
            "message": message,
            "session_id": session,
            "timestamp": now,
        }
    else:
        data = {"room_name": "relay-send-test", "participant_count": 1, "session_id": session}
    return {"agent_id": agent_id, "event_type": event_type, "data": data, "timestamp": now}


def _default_url(config: Config | None) -> str:
    if config is None:
        return DEFAULT_URL
    server = config.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    scheme = "https" if server.tls else "http"
    return f"{scheme}://{host}:{server.port}{server.path}"


async def send_test(args: argparse.Namespace, config: Config | None) -> int:
    """Send the sample; print the answer; return 0 on 2xx, else 1."""
    url = args.url or _default_url(config)
    body = json.dumps(sample_event(args.event, args.message, args.agent)).encode()
    headers = {"Content-Type": "application/json"}
    if config is not None:
        headers.update({name: value.reveal() for name, value in config.verify.headers.items()})
        header_name = config.verify.signature_header
    else:
        header_name = "X-bitHuman-Signature"
    secret = args.secret or (
        config.verify.secrets[0].reveal() if config and config.verify.secrets else None
    )
    if secret:
        headers[header_name] = sign(body, secret)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"relay send-test: cannot reach {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{response.status} {response.reason}")
    print(text)
    return 0 if 200 <= response.status < 300 else 1
