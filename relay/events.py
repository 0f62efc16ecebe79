"""The one place that knows the shape of a bitHuman event: both families (SPEC 1.1, 1.2)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The event types bitHuman documents; any other is accepted and routed all the same.
SESSION_EVENT_TYPES = ("room.join", "chat.push", "test")  # SPEC 1.1
ACCOUNT_EVENT_TYPES = ("agent.ready", "agent.failed", "video.completed", "video.failed", "ping")
# An event id from a header or an account webhook's `id`: it names the event in the store,
# in logs and in `relay deliveries`, so it is bounded and printable (no control characters,
# no lone surrogates that the stores could not encode).
MAX_EVENT_ID_LENGTH = 256


def is_valid_event_id(value: str) -> bool:
    return 0 < len(value) <= MAX_EVENT_ID_LENGTH and value.isprintable()


# The names a template sees at its top level (Event.context): each family's payload fields
# (session: agent_id, event_type, data, timestamp; account: id, event, created, data) and
# what relay adds to both.
CONTEXT_NAMES = frozenset(
    {"agent_id", "event_type", "data", "timestamp", "id", "event", "created", "event_id"}
)


class EventError(ValueError):
    """The body is not a valid bitHuman event; the message names the field."""


def storable(text: str) -> str:
    """Return text a store can keep: JSON may carry a lone surrogate ("\\ud800"), which no
    UTF-8 column takes; it becomes U+FFFD, as it would in PostgreSQL."""
    if text.isascii():
        return text  # nearly always, and cheap to tell
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def normalize_event_type(event_type: str) -> str:
    """Spell an event type the payload way: the dashboard's `room_join` is `room.join`."""
    return event_type.strip().replace("_", ".").lower()


def body_event_id(body: bytes) -> str:
    """Return the id of an event that carries none: the hex SHA-256 of its raw body."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Event:
    """One verified bitHuman event, as received: a session event or an account webhook.

    Both families are read into the same fields: an account webhook's `event` is its
    `event_type`, its `created` its `timestamp`, and its `data.agent_id` (else
    `data.code`) its `agent_id`.
    """

    event_id: str
    agent_id: str
    event_type: str
    data: Mapping[str, Any]
    timestamp: float
    payload: Mapping[str, Any] = field(repr=False)
    account: bool = False  # an account webhook (SPEC 1.2) rather than a session event
    # The body's bytes as received, where they are known (a stored event): what a webhook
    # destination sends on by default, byte for byte.
    raw: bytes = field(default=b"", repr=False, compare=False)
    received_at: float = field(default=0.0, compare=False)  # when relay received it

    # Read several times per event by the rules, so worked out once, up front (a
    # cached_property would take a lock on every first read).
    kind: str = field(init=False, repr=False)
    session: str | None = field(init=False, repr=False)
    message: str | None = field(init=False, repr=False)
    role: str | None = field(init=False, repr=False)
    room: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        derived = {
            "kind": normalize_event_type(self.event_type),
            "session": self.data_str("session_id"),
            "message": self.data_str("message"),
            "role": self.data_str("role"),
            "room": self.data_str("room_name"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # the dataclass is frozen

    def data_str(self, key: str) -> str | None:
        """Return `data[key]` when it is a string (or a number), else None."""
        value = self.data.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return None

    def context(self) -> dict[str, Any]:
        """Return the event as template and field-path context: the payload, completed."""
        context = dict(self.payload)
        context.update(
            agent_id=self.agent_id,
            event_type=self.event_type,
            data=dict(self.data),
            timestamp=self.timestamp,
            event_id=self.event_id,
        )
        return context


def stored_event_type(body: bytes) -> str:
    """Return a stored event's type, in the payload spelling ('' when it has none)."""
    try:
        payload: Any = _DECODER.decode(bytes(body).decode("utf-8", "replace"))
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    kind = payload.get("event_type", payload.get("event"))
    return normalize_event_type(kind) if isinstance(kind, str) else ""


def searchable_text(body: bytes) -> str:
    """Return a stored event as text to search in, case folded: JSON's \\u escapes
    resolved, so that "café" is found whether the sender wrote it as é or as \\u00e9."""
    text = bytes(body).decode("utf-8", "replace")
    # A stored event parsed once; should it not now, its text is searched as it is.
    with contextlib.suppress(ValueError, RecursionError):
        if "\\u" in text:
            text = json.dumps(_DECODER.decode(text), ensure_ascii=False)
    return text.casefold()


def decode_body(body: bytes) -> object:
    """Decode a raw body as JSON; raise EventError saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):  # json.loads says so too; the bare decoder would not
        raise EventError("body is not valid JSON: it starts with a byte order mark")
    try:
        decoded = _DECODER.decode(text)
    except RecursionError:
        raise EventError("body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise EventError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. integers too long to convert
        raise EventError(f"body is not valid JSON: {exc}") from None
    # JSON may escape a lone surrogate ("\\ud800"), which no store, database, mail or
    # chat service takes: every string gets U+FFFD in its place, once, here. The raw
    # body, which a webhook destination sends on, keeps it. Seldom there: a search first.
    if not _SURROGATE_ESCAPE.search(text):
        return decoded
    cleaned = _storable_tree(decoded)
    if isinstance(decoded, dict) and isinstance(cleaned, dict):
        # Except the ids that name the event: one that is no text cannot name it, and
        # is refused as it was sent (two such ids must not become one).
        cleaned.update({key: decoded[key] for key in _NAMING_KEYS if key in decoded})
    return cleaned


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NAMING_KEYS = ("id", "event_id")


def _storable_tree(value: object) -> object:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(key): _storable_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable_tree(item) for item in value]
    return value


def parse_event(body: bytes, *, event_id: str | None, received_at: float) -> Event:
    """Parse a raw body of either family, told apart by its shape; raise EventError.

    This reads stored bodies and `relay route` files, which come without their headers.
    The ingest path knows the family from the headers and calls the family's own parser;
    it accepts no account webhook whose body would read here as a session event. Without
    an `event_id`, a session event's is the SHA-256 of its body, an account webhook's its
    `id`.
    """
    payload = decode_body(body)
    if looks_like_account_event(payload):
        return account_event(payload, event_id=event_id, received_at=received_at, raw=body)
    event_id = event_id or body_event_id(body)
    return session_event(payload, event_id=event_id, received_at=received_at, raw=body)


def parse_session_event(body: bytes, *, event_id: str, received_at: float) -> Event:
    """Parse a session event (SPEC 1.1); raise EventError naming the first bad field."""
    return session_event(decode_body(body), event_id=event_id, received_at=received_at)


def parse_account_event(body: bytes, *, event_id: str | None) -> Event:
    """Parse an account webhook (SPEC 1.2); its id is `event_id` when given, else `id`."""
    return account_event(decode_body(body), event_id=event_id)


def looks_like_account_event(payload: object) -> bool:
    """Return whether a decoded body has an account webhook's shape rather than a session's."""
    return isinstance(payload, dict) and "event" in payload and "event_type" not in payload


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not, and passing them on
    # would make the payloads relay sends to Slack or Discord invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


# One decoder for every request: json.loads with an argument builds a new one each call.
# JSONDecoder keeps no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def event_from_payload(payload: object, *, event_id: str, received_at: float) -> Event:
    """Check a decoded payload of either family and build an Event; raise EventError."""
    if looks_like_account_event(payload):
        return account_event(payload, event_id=event_id, received_at=received_at)
    return session_event(payload, event_id=event_id, received_at=received_at)


_ACCOUNT_HINT = (
    " (this body looks like an account webhook: those carry an X-BitHuman-Timestamp header)"
)
_SESSION_HINT = " (this body looks like a session event, sent without X-BitHuman-Timestamp)"


def session_event(payload: object, *, event_id: str, received_at: float, raw: bytes = b"") -> Event:
    """Check a decoded session event and build an Event; raise EventError naming the field.

    The dashboard's Test button sends no `data` and no `timestamp`: missing `data` is
    `{}`, a missing timestamp is the receive time.
    """
    payload = _object(payload)
    hint = _ACCOUNT_HINT if looks_like_account_event(payload) else ""
    agent_id = _required(payload, "agent_id", str, "a string", hint)
    event_type = _required(payload, "event_type", str, "a string", hint)
    if not event_type.strip():
        raise EventError("field 'event_type' must not be empty")
    data = _optional(payload, "data", dict, "an object")
    timestamp = _optional(payload, "timestamp", int | float, "a number")
    return Event(
        event_id=event_id,
        agent_id=agent_id,
        event_type=event_type,
        data={} if data is None else data,
        timestamp=received_at if timestamp is None else float(timestamp),
        payload=payload,
        raw=raw,
        received_at=received_at,
    )


def account_event(
    payload: object, *, event_id: str | None, received_at: float = 0.0, raw: bytes = b""
) -> Event:
    """Check a decoded account webhook and build an Event; raise EventError naming the field."""
    payload = _object(payload)
    if "event_type" in payload:
        # Stored bodies are read back by shape (parse_event): this one would read as a
        # session event, so it is refused here rather than misread later.
        raise EventError(
            "field 'event_type' does not belong in an account webhook"
            " (its fields are id, event, created and data)"
        )
    looks_like_session = "agent_id" in payload and "event" not in payload
    hint = _SESSION_HINT if looks_like_session else ""
    body_id = _required(payload, "id", str, "a string", hint)
    if event_id is None and not is_valid_event_id(body_id):
        raise EventError(f"field 'id' must be 1 to {MAX_EVENT_ID_LENGTH} printable characters")
    event_type = _required(payload, "event", str, "a string", hint)
    if not event_type.strip():
        raise EventError("field 'event' must not be empty")
    created = _required(payload, "created", int | float, "a number", hint)
    data = _required(payload, "data", dict, "an object", hint)
    agent = data.get("agent_id")
    if not isinstance(agent, str) or not agent:
        agent = data.get("code")
    return Event(
        event_id=event_id or body_id,
        agent_id=agent if isinstance(agent, str) else "",
        event_type=event_type,
        data=data,
        timestamp=float(created),
        payload=payload,
        account=True,
        raw=raw,
        received_at=received_at,
    )


def _object(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise EventError(f"body must be a JSON object, got {_json_type(payload)}")
    return payload


def _finite(number: float) -> bool:
    try:
        return math.isfinite(float(number))
    except OverflowError:  # an integer too large for a float
        return False


def _required(
    payload: Mapping[str, Any], name: str, kind: Any, described: str, hint: str = ""
) -> Any:
    if name not in payload:
        raise EventError(f"missing required field '{name}'{hint}")
    if payload[name] is None:
        raise EventError(f"field '{name}' must be {described}, got null")
    return _optional(payload, name, kind, described)


def _optional(payload: Mapping[str, Any], name: str, kind: Any, described: str) -> Any:
    """Return the field, None when absent or null; raise EventError on the wrong type."""
    value = payload.get(name)
    if value is None:
        return None
    # bool is an int to Python, never a number to JSON.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise EventError(f"field '{name}' must be {described}, got {_json_type(value)}")
    if isinstance(value, float | int) and not _finite(value):
        raise EventError(f"field '{name}' must be a finite number")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
