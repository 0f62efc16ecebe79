"""The one place that knows the shape of a bitHuman event."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class EventError(ValueError):
    """The body is not a valid bitHuman event; the message names the field."""


def normalize_event_type(event_type: str) -> str:
    """Spell an event type the payload way: the dashboard's `room_join` is `room.join`."""
    return event_type.strip().replace("_", ".").lower()


def body_event_id(body: bytes) -> str:
    """Return the id of an event that carries none: the hex SHA-256 of its raw body."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Event:
    """One verified bitHuman event, as received."""

    event_id: str
    agent_id: str
    event_type: str
    data: Mapping[str, Any]
    timestamp: float
    payload: Mapping[str, Any] = field(repr=False)

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


def parse_event(body: bytes, *, event_id: str, received_at: float) -> Event:
    """Parse and check a raw body; raise EventError naming the first bad field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):  # json.loads says so too; the bare decoder would not
        raise EventError("body is not valid JSON: it starts with a byte order mark")
    try:
        payload = _DECODER.decode(text)
    except RecursionError:
        raise EventError("body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise EventError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. integers too long to convert
        raise EventError(f"body is not valid JSON: {exc}") from None
    return event_from_payload(payload, event_id=event_id, received_at=received_at)


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not, and passing them on
    # would make the payloads relay sends to Slack or Discord invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


# One decoder for every request: json.loads with an argument builds a new one each call.
# JSONDecoder keeps no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def event_from_payload(payload: object, *, event_id: str, received_at: float) -> Event:
    """Check a decoded payload and build an Event; raise EventError naming the field."""
    if not isinstance(payload, dict):
        raise EventError(f"body must be a JSON object, got {_json_type(payload)}")
    agent_id = _required(payload, "agent_id", str, "a string")
    event_type = _required(payload, "event_type", str, "a string")
    if not event_type.strip():
        raise EventError("field 'event_type' must not be empty")
    data = _required(payload, "data", dict, "an object")
    timestamp = payload.get("timestamp")
    if timestamp is None:
        timestamp = received_at
    elif isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise EventError(f"field 'timestamp' must be a number, got {_json_type(timestamp)}")
    elif not _finite(timestamp):
        raise EventError("field 'timestamp' must be a finite number")
    return Event(
        event_id=event_id,
        agent_id=agent_id,
        event_type=event_type,
        data=data,
        timestamp=float(timestamp),
        payload=payload,
    )


def _finite(number: float) -> bool:
    try:
        return math.isfinite(float(number))
    except OverflowError:  # an integer too large for a float
        return False


def _required(payload: Mapping[str, Any], name: str, kind: type, described: str) -> Any:
    if name not in payload:
        raise EventError(f"missing required field '{name}'")
    value = payload[name]
    if not isinstance(value, kind):
        raise EventError(f"field '{name}' must be {described}, got {_json_type(value)}")
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
