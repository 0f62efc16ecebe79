"""Read a webhook destination: its URL, signing secret, headers and JSON body template."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml

from relay.config.model import WebhookDestination
from relay.config.sections import secret_headers
from relay.config.template_reader import template
from relay.config.yamlnodes import Context, Invalid, Section, secret, secret_http_url
from relay.events import Event, event_from_payload
from relay.secrets import Secret
from relay.templates import NotJson, TemplateFailed, render, render_json

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


# Events a body template is tried on at load: what bitHuman sends, every text holding a
# quote, a backslash and a newline, so a template that splices any of them into JSON
# without `tojson` fails here rather than on the first real one.
def _hostile(text: str) -> str:
    return f'{text} "quoted" \\ and\nmore'


_SAMPLES: tuple[dict[str, object], ...] = (
    {
        "agent_id": _hostile("A80HVD8577"),
        "event_type": "room.join",
        "timestamp": 1790607253.5,
        "data": {
            "room_name": _hostile("room"),
            "participant_count": 3,
            "session_id": _hostile("s1"),
        },
    },
    {
        "agent_id": _hostile("A80HVD8577"),
        "event_type": "chat.push",
        "timestamp": 1790607268.9,
        "data": {
            "role": "user",
            "message": _hostile("I want a refund"),
            "session_id": _hostile("s1"),
            "timestamp": 1790607268.9,
        },
    },
    {"agent_id": _hostile("test_agent_123"), "event_type": "test"},
    {
        "id": _hostile("evt_a1b2c3"),
        "event": "agent.ready",
        "created": 1780417371,
        "data": {"agent_id": _hostile("A80HVD8577"), "code": _hostile("A80HVD8577")},
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
    if urlsplit(url.reveal()).username is not None and "authorization" in map(str.lower, headers):
        section.error(
            "the url's user:password and an Authorization header would both authenticate: keep one",
            "url",
        )
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
    for header, value in headers.items():
        if _TOKEN.fullmatch(header) is None:
            ctx.error(node, f"{path}.{header}", "is not a valid HTTP header name")
        elif header.lower() in RESERVED_HEADERS:
            ctx.error(node, f"{path}.{header}", "is set by relay itself (the signature and body)")
        elif any(ch in value.reveal() for ch in "\r\n\0"):
            ctx.error(
                node,
                f"{path}.{header}",
                "must be one line, without CR, LF or NUL (value not shown: it is a secret)",
            )
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
        # Nothing at all is no verdict: a template may write for some event types only
        # (`{% if event_type == "chat.push" %}…`), and its rules may send it no others.
        if not render(compiled, context).strip():
            return None
        return str(exc)
    except TemplateFailed:
        return None
    return None
