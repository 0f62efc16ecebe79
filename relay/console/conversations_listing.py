"""The conversations a list page shows (SPEC 8.1): latest activity first, from the watches.

The stores keep no index of each watch's exact latest activity (an event would move its
entry every time: a page written per event); they index a floor of it that moves once in
QUIET_STEP_S (Store.watches_by_quiet). So the list reads watches by that floor, highest
first, until nothing further down can be later than the page's last: a watch whose floor
is F had its latest event before F + QUIET_STEP_S. With a filter that few watches pass,
a request reads at most SCAN_ROWS of them, and the page says how far it got.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from relay.console.filters import FilterError, format_time, read_time
from relay.conversations.watch import Watch
from relay.store.base import QUIET_STEP_S, SCAN_ROWS, Store

CONVERSATIONS_PATH = "/conversations"
PAGE_SIZE = 50
_STEP = 200  # watches read a round trip
_MAX_AGENT = 200

Key = tuple[float, str]  # (last_received_at, conversation): the list's order, newest first


def _key(watch: Watch) -> Key:
    return (watch.last_received_at, watch.conversation)


@dataclass(frozen=True)
class ConversationsQuery:
    agent: str | None = None
    since: float | None = None  # latest activity at or after
    until: float | None = None  # latest activity before
    before: Key | None = None  # the page holds conversations below this key

    def params(self) -> dict[str, str]:
        values = {
            "agent": self.agent,
            "since": None if self.since is None else format_time(self.since),
            "until": None if self.until is None else format_time(self.until),
            "before_at": None if self.before is None else repr(self.before[0]),
            "before_id": None if self.before is None else self.before[1],
        }
        return {name: value for name, value in values.items() if value is not None}

    def url(self) -> str:
        params = self.params()
        return f"{CONVERSATIONS_PATH}?{urlencode(params)}" if params else CONVERSATIONS_PATH

    def below(self, key: Key) -> ConversationsQuery:
        return ConversationsQuery(self.agent, self.since, self.until, key)

    def matches(self, watch: Watch) -> bool:
        if self.before is not None and _key(watch) >= self.before:
            return False
        if self.until is not None and watch.last_received_at >= self.until:
            return False
        if self.since is not None and watch.last_received_at < self.since:
            return False
        return self.agent is None or watch.agent_id == self.agent


def read_conversations_query(query: Mapping[str, str]) -> ConversationsQuery:
    """Read the list's URL; a value it cannot read is an error naming its parameter."""
    agent = query.get("agent", "").strip() or None
    if agent is not None and len(agent) > _MAX_AGENT:
        raise FilterError("agent", f"at most {_MAX_AGENT} characters")
    before = None
    at, conversation = query.get("before_at", ""), query.get("before_id", "")
    if at or conversation:
        seconds = read_time("before_at", at)
        if seconds is None or not conversation:
            raise FilterError("before_at", "a cursor needs before_at and before_id")
        before = (seconds, conversation)
    return ConversationsQuery(
        agent,
        read_time("since", query.get("since", "")),
        read_time("until", query.get("until", "")),
        before,
    )


@dataclass(frozen=True)
class ConversationsPage:
    watches: list[Watch]  # newest activity first
    older: ConversationsQuery | None  # the next page, when there may be one
    stopped: bool  # the search read SCAN_ROWS watches and stopped: `older` goes on


async def read_conversations(store: Store, query: ConversationsQuery) -> ConversationsPage:
    """One page of conversations, newest activity first."""
    # Every watch this page may show has its latest event below `top`: its floor is too.
    top = min(
        query.before[0] if query.before is not None else math.inf,
        query.until if query.until is not None else math.inf,
    )
    below = None if top == math.inf else (math.nextafter(top, math.inf), "")
    found: list[Watch] = []
    scanned, floor, exhausted = 0, math.inf, False
    while scanned < SCAN_ROWS:
        batch = await store.watches_by_quiet(below, _STEP)
        if not batch:
            exhausted = True
            break
        scanned += len(batch)
        found += [quiet.watch for quiet in batch if query.matches(quiet.watch)]
        floor = batch[-1].quiet_at
        below = (floor, batch[-1].watch.conversation)
        # Watches further down had their latest event before floor + QUIET_STEP_S.
        latest_below = floor + QUIET_STEP_S
        if query.since is not None and latest_below <= query.since:
            exhausted = True
            break
        if len(found) >= PAGE_SIZE:
            found.sort(key=_key, reverse=True)
            if latest_below <= found[PAGE_SIZE - 1].last_received_at:
                break
    found.sort(key=_key, reverse=True)
    page = found[:PAGE_SIZE]
    stopped = scanned >= SCAN_ROWS and len(found) < PAGE_SIZE and not exhausted
    older = None
    if len(found) > PAGE_SIZE or stopped or (not exhausted and page):
        # Below the last shown; after a stopped search, below what it had read as well.
        cursor = _key(page[-1]) if page else (math.inf, "")
        if stopped:
            cursor = min(cursor, (floor + QUIET_STEP_S, ""))
        older = query.below(cursor)
    return ConversationsPage(page, older, stopped)
