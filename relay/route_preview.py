"""`relay route`: explain, rule by rule, what an event matches and what would be sent."""

from __future__ import annotations

import dataclasses
import time
from typing import TextIO

from relay.config.model import Config, Rule, Template
from relay.conversations.watch import is_signal
from relay.events import EventError, parse_event
from relay.notification import Notification, as_digest, build_notification
from relay.rules import explain, route
from relay.senders import SenderContext, build_senders
from relay.senders.console import printable


def explain_route(config: Config, body: bytes, *, source: str, out: TextIO) -> int:
    """Print the dry run for one event body; return the exit status. Sends nothing."""
    try:
        event = parse_event(body, event_id=None, received_at=time.time())
    except EventError as exc:
        out.write(f"{source}: {exc}\n")
        return 1
    family = "account webhook" if event.account else "session event"
    if is_signal(event.event_type):
        family = "conversation signal"
    agent = event.agent_id or "no agent"
    out.write(f"{family} {event.event_type} from {agent} (event_id {event.event_id})\n\n")
    for verdict in explain(config.rules, event):
        name = verdict.rule.name
        if verdict.skipped:
            out.write(f"rule {name}: skipped (an earlier matching rule has stop: true)\n")
        elif verdict.outcome.matched:
            stop = ", stop" if verdict.rule.stop else ""
            targets = ", ".join(verdict.rule.send_to)
            out.write(f"rule {name}: MATCHED -> {targets}{stop}\n    {verdict.outcome.reason}\n")
        else:
            out.write(f"rule {name}: no match\n    {verdict.outcome.reason}\n")
    dispatches = route(config.rules, event)
    if not dispatches:
        out.write("\nno destination would receive this event\n")
        return 0
    # Preview only: no HTTP session, so nothing can be sent by accident.
    senders = build_senders(config.destinations, SenderContext(http=None, stdout=out))
    status = 0
    for dispatch in dispatches:
        template = config.templates.get(dispatch.template) if dispatch.template else None
        header = f"\n--- {dispatch.destination} (rule {dispatch.rule}"
        header += f", template {dispatch.template})" if dispatch.template else ")"
        out.write(header + " ---\n")
        notification = build_notification(event, dispatch.rule, template)
        rule = config.rules_by_name[dispatch.rule]
        notification = _as_the_rule_sends_it(rule, notification, template, out)
        if notification.template_error:
            out.write(f"warning: {notification.template_error}; the default layout is used\n")
            status = 1
        out.write(senders[dispatch.destination].preview(notification))
    return status


def _as_the_rule_sends_it(
    rule: Rule, notification: Notification, template: Template | None, out: TextIO
) -> Notification:
    """Say what a digested or threaded rule does, and shape the preview as it would."""
    event = notification.event
    if rule.digest_s is not None:
        out.write(
            f"digest: {rule.digest_s:g}s: the conversation's events of that window go out"
            " together, as one transcript, when it closes (this event alone shown below)\n"
        )
        notification = as_digest(notification, (event,), template)
    if rule.thread is not None:
        out.write(_thread_note(event.session, rule.broadcast))
        if event.session is not None:  # as the conversation's first notification
            notification = dataclasses.replace(notification, conversation=event.session)
    return notification


def _thread_note(session: str | None, broadcast: bool) -> str:
    """Say what `thread: session` would do with this event: the preview shows the
    conversation's first notification, which starts the thread."""
    if session is None:
        return "thread: session, but the event has no data.session_id: sent unthreaded\n"
    also = " and also shown in the channel (broadcast)" if broadcast else ""
    return (
        f"thread: session: in the thread of conversation {printable(session)[:80]}; the"
        f" conversation's first notification starts it (shown below), later ones reply in"
        f" it{also}\n"
    )
