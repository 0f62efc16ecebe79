"""`relay send-test`: post a sample event of either family, like bitHuman would."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import aiohttp

from relay.config.model import Config
from relay.events import ACCOUNT_EVENT_TYPES, SESSION_EVENT_TYPES
from relay.verify import (
    ACCOUNT_DELIVERY_HEADER,
    ACCOUNT_SIGNATURE_HEADER,
    ACCOUNT_TIMESTAMP_HEADER,
    sign,
    sign_account,
)

DEFAULT_URL = "http://127.0.0.1:8080/webhook"
DEFAULT_AGENT = "A80HVD8577"
EVENTS = SESSION_EVENT_TYPES + ACCOUNT_EVENT_TYPES


class SendTestError(Exception):
    """send-test cannot build the request it was asked for."""


def sample_session_event(event_type: str, message: str, agent_id: str) -> dict[str, object]:
    """Return a session event as the dashboard sends it, stamped now so each one is new."""
    now = time.time()
    if event_type == "test":
        # The Test button's body, plus a timestamp: without one, a second run would be the
        # same body, which relay rightly answers as a duplicate.
        return {"event_type": "test", "agent_id": agent_id, "timestamp": now}
    session = str(uuid.uuid4())
    if event_type == "chat.push":
        data: dict[str, object] = {
            "role": "user",
            "message": message,
            "session_id": session,
            "timestamp": now,
        }
    else:
        room = f"room-{agent_id}-{uuid.uuid4().hex[:4]}-{uuid.uuid4().hex[:4]}"
        data = {"room_name": room, "participant_count": 3, "session_id": session}
    return {"agent_id": agent_id, "event_type": event_type, "data": data, "timestamp": now}


def _account_data(event_type: str, agent_id: str) -> dict[str, object]:
    agent: dict[str, object] = {"agent_id": agent_id, "code": agent_id}
    job = f"job_{uuid.uuid4().hex[:12]}"
    samples: dict[str, dict[str, object]] = {
        "agent.ready": agent,
        "agent.failed": {**agent, "error": "relay send-test: a sample failure"},
        "video.completed": {
            **agent,
            "job_id": job,
            "status": "completed",
            "model": "essence",
            "video_url": f"https://example.com/relay-send-test/{job}.mp4",
            "duration_seconds": 12.5,
            "credits_charged": 25,
        },
        "video.failed": {
            **agent,
            "job_id": job,
            "status": "failed",
            "error": {"message": "relay send-test: a sample failure"},
        },
    }
    return samples.get(event_type, {})


def sample_account_event(event_type: str, agent_id: str, created: int) -> dict[str, object]:
    """Return an account webhook's body (SPEC 1.2) with a new id."""
    return {
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "event": event_type,
        "created": created,
        "data": _account_data(event_type, agent_id),
    }


def session_request(
    args: argparse.Namespace, config: Config | None
) -> tuple[bytes, dict[str, str]]:
    """Return a sample session event's body and headers, as the config authenticates it."""
    agent = args.agent or DEFAULT_AGENT
    body = json.dumps(sample_session_event(args.event, args.message, agent)).encode()
    headers = {"Content-Type": "application/json"}
    if args.event == "test":
        headers["X-Test-Webhook"] = "true"
    if config is not None:
        headers.update({name: value.reveal() for name, value in config.verify.headers.items()})
    header_name = config.verify.signature_header if config else "X-bitHuman-Signature"
    secret = args.secret or (
        config.verify.secrets[0].reveal() if config and config.verify.secrets else None
    )
    if secret:
        headers[header_name] = sign(body, secret)
    return body, headers


def account_request(
    args: argparse.Namespace, config: Config | None
) -> tuple[bytes, dict[str, str]]:
    """Return a sample account webhook's body and headers, signed with the account secret."""
    secrets = config.verify.account.secrets if config else ()
    secret = args.secret or (secrets[0].reveal() if secrets else None)
    if not secret:
        raise SendTestError(
            f"{args.event} is an account webhook, signed with the account secret: "
            "set verify.account.secrets in the config, or give --secret"
        )
    created = int(time.time())
    payload = sample_account_event(args.event, args.agent or DEFAULT_AGENT, created)
    body = json.dumps(payload).encode()
    stamp = str(created)
    headers = {
        "Content-Type": "application/json",
        "X-BitHuman-Event": args.event,
        ACCOUNT_DELIVERY_HEADER: str(payload["id"]),
        ACCOUNT_TIMESTAMP_HEADER: stamp,
        ACCOUNT_SIGNATURE_HEADER: sign_account(body, secret, stamp),
    }
    return body, headers


def default_url(config: Config | None) -> str:
    """Return relay's webhook URL as this host reaches it."""
    if config is None:
        return DEFAULT_URL
    server = config.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    scheme = "https" if server.tls else "http"
    return f"{scheme}://{host}:{server.port}{server.path}"


async def send_test(args: argparse.Namespace, config: Config | None) -> int:
    """Send the sample; print the answer; return 0 on 2xx, else 1."""
    url = args.url or default_url(config)
    try:
        build = account_request if args.event in ACCOUNT_EVENT_TYPES else session_request
        body, headers = build(args, config)
    except SendTestError as exc:
        print(f"relay send-test: {exc}", file=sys.stderr)
        return 1
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            # Not followed: a redirect would carry the secret headers to another server,
            # and report its answer as relay's.
            session.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            text = await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        said = str(exc) or type(exc).__name__  # a timeout's text is empty
        print(f"relay send-test: cannot reach {url}: {said}", file=sys.stderr)
        return 1
    print(f"{response.status} {response.reason}")
    print(text)
    return 0 if 200 <= response.status < 300 else 1
