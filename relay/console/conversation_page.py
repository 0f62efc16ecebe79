"""A conversation's page (SPEC 8.1): its transcript, and beside each event where it went.

`/conversation?id=SESSION_ID`: the join, each message with its role, time and text, and
the signals relay raised (SPEC 4.4), in the order relay stored them; beside each event,
every destination it went to with that delivery's status, linked to the delivery's page.
Transcripts are kept while a console is set and relay watches conversations; the watch
gives the summary above the transcript. While the page is open, new events and status
changes appear without a reload (a stream, as the deliveries page has: live.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from relay.console import answers
from relay.console.filters import FilterError
from relay.console.keys import STATE
from relay.console.live import SEEN, stream, update_event
from relay.console.present import iso
from relay.conversations.watch import Watch
from relay.store import StoreUnavailable
from relay.store.base import EventDelivery, Store, TranscriptEvent

CONVERSATION_PATH = "/conversation"
LIVE_PATH = "/conversation/live"
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


@dataclass(frozen=True)
class Shown:
    """What a conversation's page shows: the watch's summary and the transcript."""

    watch: Watch | None
    lines: list[Line]
    earlier: bool


async def _read(store: Store, conversation: str) -> Shown:
    transcript = await store.transcript(conversation, TRANSCRIPT_LIMIT)
    watch = await store.watch(conversation)
    return Shown(watch, [line(event) for event in transcript.events], transcript.earlier)


def _render(env: jinja2.Environment, shown: Shown) -> tuple[Markup, str]:
    """The transcript's region as a reload renders it (autoescaped: messages are text),
    and a version naming that rendering (the stream's event id)."""
    context = {"lines": shown.lines, "earlier": shown.earlier, "limit": TRANSCRIPT_LIMIT}
    html = Markup(env.get_template("_transcript.html").render(context))
    return html, hashlib.sha256(str(html).encode()).hexdigest()[:20]


def _live_url(conversation: str, version: str) -> str:
    return f"{LIVE_PATH}?{urlencode({'id': conversation, SEEN: version})}"


async def conversation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    conversation_id = _conversation_id(request)
    shown = await _read(state.store, conversation_id)
    if not shown.lines and shown.watch is None:
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
                "watch": _watch_json(shown.watch),
                "events": [each.as_json() for each in shown.lines],
                "earlier": shown.earlier,
            }
        )
    transcript_html, version = _render(aiohttp_jinja2.get_env(request.app), shown)
    context = {
        "conversation": conversation_id,
        "watch": shown.watch,
        "transcript_html": transcript_html,
        "live_url": _live_url(conversation_id, version),
    }
    return answers.page(request, "conversation.html", context)


class _TranscriptWatch:
    """A stream of one conversation's transcript: sent again when it changed (a new event,
    a delivery's status)."""

    def __init__(self, request: web.Request, conversation: str, seen: str) -> None:
        self._app = request.app
        self._conversation = conversation
        self._seen = seen

    async def update(self) -> bytes | None:
        try:
            shown = await _read(self._app[STATE].store, self._conversation)
        except StoreUnavailable:
            return None  # read again next time; the page keeps what it shows
        html, version = _render(aiohttp_jinja2.get_env(self._app), shown)
        if version == self._seen:
            return None
        self._seen = version
        return update_event(version, {"transcript": str(html)})


async def conversation_live(request: web.Request) -> web.StreamResponse:
    """Stream a conversation's transcript as it changes."""
    conversation_id = _conversation_id(request)
    seen = request.headers.get("Last-Event-ID") or request.query.get(SEEN, "")
    return await stream(request, _TranscriptWatch(request, conversation_id, seen))
