"""What a notification says, before any destination's markup: title, text and fields."""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.events import Event
from relay.notification import Notification


@dataclass(frozen=True)
class Summary:
    """The plain-text content every destination lays out in its own way."""

    title: str
    text: str
    fields: tuple[tuple[str, str], ...]
    footer: str


def _default_title(event: Event) -> str:
    if event.kind == "room.join":
        room = event.room or "a room"
        return f"A user joined {room}"
    if event.kind == "chat.push":
        role = event.role or "someone"
        return f"New chat message from {role}"
    return f"bitHuman event {event.event_type}"


def _default_text(event: Event) -> str:
    if event.kind == "chat.push":
        return event.message or ""
    if event.kind == "room.join":
        count = event.data_str("participant_count")
        return f"{count} participant(s) in the room" if count is not None else ""
    return ""


def _fields(event: Event) -> tuple[tuple[str, str], ...]:
    fields = [("Agent", event.agent_id)]
    for label, value in (("Room", event.room), ("Session", event.session)):
        if value is not None:
            fields.append((label, value))
    if event.kind not in ("room.join", "chat.push"):
        for key, raw in event.data.items():
            if key not in ("room_name", "session_id") and len(fields) < 10:
                fields.append((key, str(raw)))
    return tuple(fields)


def summarize(notification: Notification) -> Summary:
    """Return the title, text and fields of a notification, template or default."""
    event = notification.event
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.timestamp))
    return Summary(
        title=notification.title if notification.title is not None else _default_title(event),
        text=notification.text if notification.text is not None else _default_text(event),
        fields=_fields(event),
        footer=f"{event.event_type} · rule {notification.rule} · {when}",
    )


TRUNCATION_MARKER = "… [truncated]"


def truncate(text: str, limit: int) -> str:
    """Cut text to at most `limit` characters, ending with a visible marker when cut."""
    limit = max(limit, 0)
    if len(text) <= limit:
        return text
    return text[: max(limit - len(TRUNCATION_MARKER), 0)] + TRUNCATION_MARKER[:limit]
