"""A conversation's page (SPEC 8.1): its transcript, and beside each event where it went.

`/conversation?id=SESSION_ID`: the join, each message with its role, time and text, and
the signals relay raised (SPEC 4.4), in the order relay stored them; beside each event,
every destination it went to with that delivery's status, linked to the delivery's page.
Transcripts are kept while a console is set and relay watches conversations; the watch
gives the summary above the transcript.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from relay.console import answers
from relay.console.filters import FilterError
from relay.console.keys import STATE
from relay.console.present import iso
from relay.conversations.watch import Watch
from relay.store.base import EventDelivery, TranscriptEvent

CONVERSATION_PATH = "/conversation"
# The newest events a page shows: a conversation longer than this says so.
TRANSCRIPT_LIMIT = 500
_MAX_ID = 10_000  # a session id relay keeps whole is at most this long


def conversation_url(conversation: str) -> str:
    return f"{CONVERSATION_PATH}?{urlencode({'id': conversation})}"


@dataclass(frozen=True)
class Line:
    """One event as the transcript shows it."""

    event_id: str
    event_type: str
    who: str  # visitor, agent, relay (a signal), or the event type's own word
    text: str | None  # the message, or what a signal says
    timestamp: float | None  # the event's own
    received_at: float
    deliveries: tuple[EventDelivery, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "who": self.who,
            "text": self.text,
            "timestamp": self.timestamp,
            "received": iso(self.received_at),
            "deliveries": [
                {
                    "id": d.id,
                    "url": f"/deliveries/{d.id}",
                    "destination": d.destination,
                    "status": d.status,
                }
                for d in self.deliveries
            ],
        }


_ROLES = {"user": "visitor", "assistant": "agent"}


def line(event: TranscriptEvent) -> Line:
    """Read what a transcript shows of a stored event (its body is what bitHuman sent, or
    what relay raised)."""
    try:
        payload = json.loads(event.body)
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    event_type = str(payload.get("event_type") or payload.get("event") or "")
    timestamp = payload.get("timestamp")
    text = data.get("message")
    if event_type.startswith("conversation."):  # raised by relay (SPEC 4.4)
        who = "relay"
        if event_type == "conversation.unanswered":
            text = f"No answer after {data.get('waited_s')} s to: {data.get('message')}"
        else:
            text = (
                f"Ended: {data.get('visitor_messages')} visitor messages,"
                f" {data.get('agent_messages')} answers"
            )
    elif event_type == "chat.push":
        who = _ROLES.get(str(data.get("role")), str(data.get("role") or "someone"))
    else:
        who = "visitor" if event_type == "room.join" else event_type
        text = "joined" if event_type == "room.join" else text
    return Line(
        event_id=event.event_id,
        event_type=event_type,
        who=who,
        text=None if text is None else str(text),
        timestamp=float(timestamp) if isinstance(timestamp, int | float) else None,
        received_at=event.received_at,
        deliveries=event.deliveries,
    )


def _watch_json(watch: Watch | None) -> dict[str, Any] | None:
    if watch is None:
        return None
    return {
        "agent_id": watch.agent_id,
        "room_name": watch.room_name,
        "started_at": watch.started_at,
        "last_event_at": watch.last_event_at,
        "last_received": iso(watch.last_received_at),
        "visitor_messages": watch.visitor_messages,
        "agent_messages": watch.agent_messages,
        "unanswered": watch.stretch_open,
        "ended": watch.ended,
    }


def _conversation_id(request: web.Request) -> str:
    value = request.query.get("id", "")
    if not value or len(value) > _MAX_ID:
        raise FilterError("id", f"a session id of 1 to {_MAX_ID} characters is required")
    return value


async def conversation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    conversation_id = _conversation_id(request)
    transcript = await state.store.transcript(conversation_id, TRANSCRIPT_LIMIT)
    watch = await state.store.watch(conversation_id)
    lines = [line(event) for event in transcript.events]
    if not lines and watch is None:
        return answers.error(
            request,
            404,
            "no transcript of this conversation: relay keeps them while a console is set"
            " and `conversations:` watches them, until store.retention",
        )
    if answers.wants_json(request):
        return answers.data(
            {
                "conversation": conversation_id,
                "watch": _watch_json(watch),
                "events": [shown.as_json() for shown in lines],
                "earlier": transcript.earlier,
            }
        )
    context = {
        "conversation": conversation_id,
        "watch": watch,
        "lines": lines,
        "earlier": transcript.earlier,
        "limit": TRANSCRIPT_LIMIT,
    }
    return answers.page(request, "conversation.html", context)
