"""What an event becomes in a table: a row, column by column, as psycopg binds it."""

from __future__ import annotations

import datetime
import json
from collections.abc import Collection, Mapping
from typing import Any

from psycopg.types.json import Jsonb

from relay.events import Event
from relay.rules import MISSING, lookup


def _when(seconds: float) -> datetime.datetime | None:
    """A timestamp as a date; None (NULL) past what a date holds (year 9999: a value in
    milliseconds sent as seconds, say), which the payload keeps as it was sent."""
    try:
        return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def without_nul(value: Any) -> Any:
    """Return a value with every NUL character replaced by U+FFFD, keys included:
    PostgreSQL's text and jsonb cannot hold one, and refusing the whole event for it
    would lose the rest of what it says."""
    if isinstance(value, str):
        return value.replace("\x00", "\N{REPLACEMENT CHARACTER}") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def _payload(event: Event) -> Jsonb:
    return Jsonb(without_nul(dict(event.payload)))


def column_value(event: Event, source: str) -> Any:
    """What goes in a column: one of relay's values, or the value at a path as JSON types
    it (an object or a list as JSON; a path the event lacks: NULL)."""
    if source == "timestamp":
        return _when(event.timestamp)
    if source == "received_at":
        return _when(event.received_at)
    if source == "payload":
        return _payload(event)
    if source == "event_type":
        return event.kind
    value = lookup(event, source)
    if value is MISSING:
        return None
    if isinstance(value, dict | list):
        return Jsonb(without_nul(value))
    return without_nul(value)


def default_row(event: Event) -> dict[str, Any]:
    """The row of relay's own table for an event (SPEC 4.3)."""
    return {
        "event_id": event.event_id,
        "event_type": event.kind,
        "agent_id": without_nul(event.agent_id) or None,
        "session_id": without_nul(event.session),
        "role": without_nul(event.role),
        "message": without_nul(event.message),
        "occurred_at": _when(event.timestamp),
        "received_at": _when(event.received_at),
        "payload": _payload(event),
    }


def mapped_row(
    event: Event, columns: Mapping[str, str], json_columns: Collection[str] = ()
) -> dict[str, Any]:
    """The row of a table of the user's, through `columns`. A value bound for a json or
    jsonb column goes as JSON whatever its type, so a string stays a JSON string."""
    row = {column: column_value(event, source) for column, source in columns.items()}
    for column in json_columns:
        value = row.get(column)
        if value is not None and not isinstance(value, Jsonb):
            row[column] = Jsonb(
                value.isoformat() if isinstance(value, datetime.datetime) else value
            )
    return row


def shown(value: Any) -> str:
    """A value as relay route shows it: JSON, a timestamp in ISO 8601, NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, Jsonb):
        return json.dumps(value.obj, ensure_ascii=False) + " (jsonb)"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False)
