"""One event on its way to one destination, with its rule's template rendered."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jinja2

from relay.config.model import Template
from relay.events import Event
from relay.templates import RENDER_ERRORS, render


@dataclass(frozen=True)
class Notification:
    """One event on its way to one destination.

    `title` and `text` are set when a rule's template rendered them; otherwise the
    destination's default formatter decides both.
    """

    event: Event
    rule: str
    title: str | None = None
    text: str | None = None
    template_error: str | None = None  # the template failed: the default layout is used
    # With `thread: session`: the conversation (data.session_id), and its thread at this
    # destination as the store keeps it, None for the conversation's first notification.
    conversation: str | None = None
    thread: str | None = None
    broadcast: bool = False  # a reply is also shown in the channel (Slack)
    # A digest (SPEC 4.2): every event of the window, in order; `event` is the first.
    transcript: tuple[Event, ...] = ()
    # Each event's transcript line as the rule's template text renders it (None where it
    # failed on that event, or without a template: the default line is used).
    transcript_lines: tuple[str | None, ...] = ()


def build_notification(event: Event, rule: str, template: Template | None) -> Notification:
    """Render a rule's template (if any) into a notification for one event.

    A template that compiled at load can still fail on one event: under strict undefined,
    `{{ data.message }}` fails for an event without a message. The notification then goes
    out in the destination's default layout, with the error kept for the log, rather than
    not at all.
    """
    if template is None:
        return Notification(event=event, rule=rule)
    context = event.context()
    try:
        title = render(template.title, context) if template.title is not None else None
        text = render(template.text, context) if template.text is not None else None
    except RENDER_ERRORS as exc:
        error = f"template {template.name} failed: {exc}"
        return Notification(event=event, rule=rule, template_error=error)
    return Notification(event=event, rule=rule, title=title, text=text)


def as_digest(
    notification: Notification, events: tuple[Event, ...], template: Template | None
) -> Notification:
    """Make a notification a digest of `events`, in order (none: its own event alone).

    A rule's template shapes a digest this way: its title, rendered for the first event,
    titles the digest; its text, rendered for each event, is that event's line.
    """
    events = events or (notification.event,)
    if template is None:
        return dataclasses.replace(notification, transcript=events)
    # Each part on its own: a text that fails on the first event keeps the title, and
    # the other way round.
    title = _line(template.title, events[0]) if template.title is not None else None
    lines: tuple[str | None, ...] = ()
    if template.text is not None:
        lines = tuple(_line(template.text, event) for event in events)
    return dataclasses.replace(notification, title=title, transcript=events, transcript_lines=lines)


def _line(text: jinja2.Template, event: Event) -> str | None:
    """Render a template for one event as one line; None when it fails on that event."""
    try:
        return " ".join(render(text, event.context()).split())  # one line, as the default
    except RENDER_ERRORS:
        return None
