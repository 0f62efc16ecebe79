"""What a notification says, before any destination's markup: title, text, fields, link."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yarl

from relay.durations import format_duration
from relay.events import Event
from relay.notification import Notification


@dataclass(frozen=True)
class Link:
    """A link a notification offers (a finished video): always http or https."""

    label: str
    url: str


@dataclass(frozen=True)
class Summary:
    """The plain-text content every destination lays out in its own way."""

    title: str
    text: str
    fields: tuple[tuple[str, str], ...]
    footer: str
    link: Link | None = None
    # A digest's transcript, a line per event: `text` joins them; a destination with a
    # limit shows what fits, then "… and N more" (fit_lines).
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Layout:
    """An event type's default title and text, and what it adds to the fields."""

    title: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()
    link: Link | None = None


MAX_FIELDS = 10
MAX_URL_LENGTH = 2000
TEST_TEXT = "This is a test from bitHuman: it reached relay, and relay's rules sent it here"


def safe_link(label: str, value: object) -> Link | None:
    """Return a Link for an http(s) URL with a host; None for anything else.

    Event content decides the URL: no `javascript:`, and no spaces or control characters,
    which could end a link early in Slack's or Markdown's syntax.
    """
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        return None
    if not value.isprintable() or any(ch.isspace() for ch in value):
        return None
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:  # an unclosed IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return Link(label, value)


def uri_of(url: str) -> str | None:
    """A link's URL as a strict URI (non-ASCII and unsafe characters percent-encoded),
    what the Adaptive Card and Discord schemas take; None when it cannot be made one."""
    try:
        encoded = str(yarl.URL(url))
    except ValueError:
        return None
    return encoded if encoded.isascii() and _URI.fullmatch(encoded) else None


# RFC 3986's characters, so what the schemas' uri format accepts.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


def _text_of(value: object) -> str | None:
    """Return a string or a number as text; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _failure_reason(data: Mapping[str, Any]) -> str:
    """Return why an agent or a video failed: `data.error`, a string or `{message: …}`."""
    error = data.get("error")
    if isinstance(error, Mapping):
        error = error.get("message")
    return _text_of(error) or "bitHuman gave no reason"


def _data_fields(data: Mapping[str, Any], labels: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    """Return (label, text) for each labelled data key that holds a string or a number."""
    values = ((label, _text_of(data.get(key))) for key, label in labels)
    return tuple((label, value) for label, value in values if value is not None)


def _session_layout(event: Event) -> _Layout | None:
    if event.kind == "room.join":
        count = event.data_str("participant_count")
        text = f"{count} participant(s) in the room" if count is not None else ""
        return _Layout(f"A user joined {event.room or 'a room'}", text)
    if event.kind == "chat.push":
        return _Layout(f"New chat message from {event.role or 'someone'}", event.message or "")
    if event.kind == "test":
        return _Layout("Test event from bitHuman", f"{TEST_TEXT} (the dashboard's Test button).")
    return None


def _video_completed(event: Event, agent: str) -> _Layout:
    data = event.data
    seconds = _text_of(data.get("duration_seconds"))
    text = f"A {seconds} s video is ready." if seconds else "The video is ready."
    link = safe_link("Watch the video", data.get("video_url"))
    if link is None and "video_url" in data:
        text += " Its link is not an http(s) URL, so it is not shown."
    labels = (("job_id", "Job"), ("model", "Model"), ("credits_charged", "Credits"))
    return _Layout(f"Video completed for agent {agent}", text, _data_fields(data, labels), link)


def _account_layout(event: Event) -> _Layout | None:
    agent, data = event.agent_id or "(unknown)", event.data
    if event.kind == "ping":
        return _Layout("Test ping from bitHuman", f"{TEST_TEXT} (an account webhook ping).")
    if event.kind == "agent.ready":
        return _Layout(f"Agent {agent} is ready", "The agent finished generating.")
    if event.kind == "agent.failed":
        return _Layout(f"Agent {agent} failed", f"Reason: {_failure_reason(data)}")
    if event.kind == "video.completed":
        return _video_completed(event, agent)
    if event.kind == "video.failed":
        reason = f"Reason: {_failure_reason(data)}"
        job = _data_fields(data, (("job_id", "Job"),))
        return _Layout(f"Video failed for agent {agent}", reason, job)
    return None


def _seconds(value: object) -> str | None:
    """A number of seconds as a person reads it at a glance (`2m`, `3s`); None if not one."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return format_duration(float(value))
    return None


def _signal_layout(event: Event) -> _Layout | None:
    """The events relay raises itself (SPEC 4.4), read at a glance."""
    agent, data = event.agent_id or "(unknown)", event.data
    if event.kind == "conversation.unanswered":
        waited = _seconds(data.get("waited_s"))
        title = (
            f"No answer for {waited} from agent {agent}"
            if waited
            else f"No answer from agent {agent}"
        )
        asked = _text_of(data.get("message"))
        return _Layout(title, f"'{asked}'" if asked is not None else "")
    if event.kind == "conversation.ended":
        took = _seconds(data.get("duration_s"))
        title = f"Conversation with {agent} ended" + (f" after {took}" if took else "")
        return _Layout(title, _ended_text(data))
    return None


def _ended_text(data: Mapping[str, Any]) -> str:
    """`5 visitor messages, 4 answers, first answer after 3s`, from what data holds."""
    parts = []
    visitors, answers = _text_of(data.get("visitor_messages")), _text_of(data.get("agent_messages"))
    if visitors is not None:
        parts.append(f"{visitors} visitor message{'' if visitors == '1' else 's'}")
    if answers is not None:
        parts.append(f"{answers} answer{'' if answers == '1' else 's'}")
    first = _seconds(data.get("first_answer_s"))
    parts.append(f"first answer after {first}" if first else "no answer")
    if data.get("unanswered") is True and first:
        parts.append("the last visitor message got no answer")
    return ", ".join(parts)


def _other_layout(event: Event) -> _Layout:
    """Any other event type: the values of its data, as many as fit."""
    shown = ("room_name", "session_id", "agent_id", "code")
    fields = tuple((key, str(raw)) for key, raw in event.data.items() if key not in shown)
    return _Layout(f"bitHuman event {event.event_type}", "", fields)


def _fields(event: Event, extra: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    fields = [("Agent", event.agent_id)] if event.agent_id else []
    for label, value in (("Room", event.room), ("Session", event.session)):
        if value is not None:
            fields.append((label, value))
    fields.extend(extra)
    if len(fields) > MAX_FIELDS:  # cut visibly, as text is
        shown = fields[: MAX_FIELDS - 1]
        fields = [*shown, ("…", f"and {len(fields) - len(shown)} more")]
    return tuple(fields)


def fit_lines(lines: Sequence[str], limit: int) -> str:
    """Join whole lines up to `limit` characters; when they do not all fit, end with
    "… and N more" for the lines left out."""
    whole = "\n".join(lines)
    if len(whole) <= limit:
        return whole
    shown: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        more = f"… and {len(lines) - index - 1} more"
        room = limit - size - 1 - len(more)  # for this line, then the marker
        if len(line) > room:
            if not shown:  # one line longer than all the room: its start, cut visibly
                shown.append(truncate(line, room))
            break
        shown.append(line)
        size += len(line) + 1
    return truncate("\n".join([*shown, f"… and {len(lines) - len(shown)} more"]), limit)


def _transcript_line(event: Event) -> str:
    when = time.strftime("%H:%M:%S", time.gmtime(event.timestamp))
    if event.kind == "chat.push":
        said = f"{event.role or 'someone'}: {event.message or ''}"
    else:
        layout = _session_layout(event) or _signal_layout(event) or _other_layout(event)
        said = f"{event.event_type}: {layout.title}"
    return " ".join(f"{when} {said}".split())  # one line, whatever the message held


def _digest(notification: Notification) -> Summary:
    """A conversation's window of events as one notification: a transcript in order, each
    line as the rule's template text renders it, else the default line."""
    first = notification.transcript[0]
    count = len(notification.transcript)
    shaped = notification.transcript_lines or (None,) * count
    lines = tuple(
        line if line is not None else _transcript_line(event)
        for event, line in zip(notification.transcript, shaped, strict=True)
    )
    who = f" with {first.agent_id}" if first.agent_id else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(first.timestamp))
    default_title = f"Conversation{who}: {count} event{'s' if count != 1 else ''}"
    return Summary(
        title=notification.title if notification.title is not None else default_title,
        text="\n".join(lines),
        fields=_fields(first, ()),
        footer=f"digest · rule {notification.rule} · from {when}",
        lines=lines,
    )


def summarize(notification: Notification) -> Summary:
    """Return the title, text, fields and link of a notification, template or default."""
    if notification.transcript:
        return _digest(notification)
    event = notification.event
    layout = (
        _account_layout(event) if event.account else _session_layout(event) or _signal_layout(event)
    ) or _other_layout(event)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.timestamp))
    return Summary(
        title=notification.title if notification.title is not None else layout.title,
        text=notification.text if notification.text is not None else layout.text,
        fields=_fields(event, layout.fields),
        footer=f"{event.event_type} · rule {notification.rule} · {when}",
        link=layout.link,
    )


TRUNCATION_MARKER = "… [truncated]"


def truncate(text: str, limit: int) -> str:
    """Cut text to at most `limit` characters, ending with a visible marker when cut."""
    limit = max(limit, 0)
    if len(text) <= limit:
        return text
    return text[: max(limit - len(TRUNCATION_MARKER), 0)] + TRUNCATION_MARKER[:limit]
