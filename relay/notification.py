"""One event on its way to one destination, with its rule's template rendered."""

from __future__ import annotations

from dataclasses import dataclass

from relay.config.model import Template
from relay.events import Event
from relay.templates import render


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


def build_notification(event: Event, rule: str, template: Template | None) -> Notification:
    """Render a rule's template (if any) into a notification for one event."""
    if template is None:
        return Notification(event=event, rule=rule)
    context = event.context()
    title = render(template.title, context) if template.title is not None else None
    text = render(template.text, context) if template.text is not None else None
    return Notification(event=event, rule=rule, title=title, text=text)
