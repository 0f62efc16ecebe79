"""The Conversations page (SPEC 8.1): one entry per conversation, latest activity first.

Each shows its agent, room, start, latest activity, visitor and agent messages, and the
state of its deliveries (all sent, some pending or failing, some dead); filtered by agent
and by time of the latest activity, all in the URL. The list comes from the conversation
watches, so it holds the conversations relay watches (`conversations:`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from relay.console import answers
from relay.console.conversation_page import conversation_url
from relay.console.conversations_listing import read_conversations, read_conversations_query
from relay.console.keys import STATE
from relay.console.present import iso
from relay.conversations.watch import Watch
from relay.store.base import Store

# What a row says of a conversation's deliveries, worst first.
DeliveriesState = Literal["dead", "pending", "sent", "none"]
_STATE_WORDS = {
    "dead": "some dead",
    "pending": "some pending or failing",
    "sent": "all sent",
    "none": "none",
}
# The deliveries a row's state is read from: those of the conversation's newest events.
_STATE_EVENTS = 200


@dataclass(frozen=True)
class ConversationRow:
    watch: Watch
    deliveries: DeliveriesState

    @property
    def url(self) -> str:
        return conversation_url(self.watch.conversation)

    @property
    def deliveries_said(self) -> str:
        return _STATE_WORDS[self.deliveries]

    def as_json(self) -> dict[str, Any]:
        w = self.watch
        return {
            "session_id": w.conversation,
            "url": self.url,
            "agent_id": w.agent_id,
            "room_name": w.room_name,
            "started_at": w.started_at,
            "last_activity": iso(w.last_received_at),
            "visitor_messages": w.visitor_messages,
            "agent_messages": w.agent_messages,
            "deliveries": self.deliveries,
        }


async def _state(store: Store, conversation: str) -> DeliveriesState:
    transcript = await store.transcript(conversation, _STATE_EVENTS)
    statuses = {d.status for event in transcript.events for d in event.deliveries}
    if "dead" in statuses:
        return "dead"
    if statuses & {"pending", "failed"}:
        return "pending"
    return "sent" if statuses else "none"


async def conversations(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = read_conversations_query(request.query)
    page = await read_conversations(state.store, query)
    states = await asyncio.gather(*(_state(state.store, w.conversation) for w in page.watches))
    rows = [ConversationRow(w, s) for w, s in zip(page.watches, states, strict=True)]
    watched = state.config.conversations is not None
    if answers.wants_json(request):
        return answers.data(
            {
                "conversations": [r.as_json() for r in rows],
                "filter": {k: v for k, v in query.params().items() if not k.startswith("before")},
                "next": page.older.url() if page.older else None,
                "stopped": page.stopped,
                "conversations_watched": watched,
            }
        )
    context = {
        "rows": rows,
        "query": query,
        "form": {
            "agent": query.agent or "",
            "since": query.params().get("since", ""),
            "until": query.params().get("until", ""),
        },
        "older": page.older.url() if page.older else None,
        "stopped": page.stopped,
        "watched": watched,
    }
    return answers.page(request, "conversations.html", context)
