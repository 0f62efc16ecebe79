"""Read a webhook destination: its URL, signing secret, headers and JSON body template."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import jinja2
import yaml

from relay.config.model import WebhookDestination
from relay.config.sections import secret_headers
from relay.config.template_reader import template
from relay.config.yamlnodes import Context, Invalid, Section, secret, secret_http_url
from relay.events import Event, event_from_payload
from relay.secrets import Secret
from relay.templates import NotJson, TemplateFailed, render_json

# Standard Webhooks: a secret is whsec_ and base64 of 24 to 64 random bytes.
_SECRET_PREFIX = "whsec_"
_SECRET_BYTES = (24, 64)
# An HTTP header name is a token (RFC 9110 5.1).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers relay sets itself: the signature's and the body's.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
    }
)

# Events a body template is tried on at load: what bitHuman sends, with a message that
# needs escaping, so a template that splices text into JSON without `tojson` fails here.
_HOSTILE = 'He said "refund" \\ then\nleft'
_SAMPLES: tuple[dict[str, object], ...] = (
    {
        "agent_id": "A80HVD8577",
        "event_type": "room.join",
        "timestamp": 1790607253.5,
        "data": {"room_name": "room-A80HVD8577-qtrJ", "participant_count": 3, "session_id": "s1"},
    },
    {
        "agent_id": "A80HVD8577",
        "event_type": "chat.push",
        "timestamp": 1790607268.9,
        "data": {
            "role": "user",
            "message": _HOSTILE,
            "session_id": "s1",
            "timestamp": 1790607268.9,
        },
    },
    {"agent_id": "test_agent_123", "event_type": "test"},
    {
        "id": "evt_a1b2c3",
        "event": "agent.ready",
        "created": 1780417371,
        "data": {"agent_id": "A80HVD8577", "code": "A80HVD8577"},
    },
)


def _sample_events() -> list[Event]:
    return [
        event_from_payload(payload, event_id=f"sample-{index}", received_at=1790607270.0)
        for index, payload in enumerate(_SAMPLES)
    ]


def read_webhook(section: Section, name: str) -> WebhookDestination:
    """Build a webhook destination from its section; every problem is reported."""
    url = section.require("url", secret_http_url)
    signing = section.opt("secret", _signing_secret)
    headers: dict[str, Secret] = section.get("headers", _headers, {})
    body = section.opt("body", _json_template)
    if url is None:
        raise Invalid
    return WebhookDestination(name, url=url, secret=signing, headers=headers, body=body)


def _signing_secret(ctx: Context, node: yaml.Node, path: str) -> Secret:
    value = secret(ctx, node, path)
    raw = value.reveal()
    low, high = _SECRET_BYTES
    try:
        key = base64.b64decode(raw.removeprefix(_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not raw.startswith(_SECRET_PREFIX) or not low <= len(key) <= high:
        ctx.fail(
            node,
            path,
            f"expected {_SECRET_PREFIX} followed by the base64 of {low} to {high} random bytes"
            " (value not shown: it is a secret)",
        )
    return value


def _headers(ctx: Context, node: yaml.Node, path: str) -> dict[str, Secret]:
    headers = secret_headers(ctx, node, path)
    for header in headers:
        if _TOKEN.fullmatch(header) is None:
            ctx.error(node, f"{path}.{header}", "is not a valid HTTP header name")
        elif header.lower() in RESERVED_HEADERS:
            ctx.error(node, f"{path}.{header}", "is set by relay itself (the signature and body)")
    return headers


def _json_template(ctx: Context, node: yaml.Node, path: str) -> jinja2.Template:
    """Read a body template, and try it on sample events: one that renders text that is
    not JSON is an error now rather than a dead letter later."""
    compiled = template(ctx, node, path)
    for event in _sample_events():
        problem = json_problem(compiled, event.context())
        if problem is not None:
            kind = event.event_type
            ctx.fail(node, path, f"for a sample {kind}: {problem}")
    return compiled


def json_problem(compiled: jinja2.Template, context: dict[str, Any]) -> str | None:
    """Say why a body template's output for an event is not JSON; None when it is, or when
    it fails on this event (a real event like it is dead-lettered with the reason)."""
    try:
        render_json(compiled, context)
    except NotJson as exc:
        return str(exc)
    except TemplateFailed:
        return None
    return None
