"""What one accepted event adds to the activity counters (SPEC 8.1).

The console's Activity and Rules pages read counters, never the stored events, so that a
page costs the same behind a thousand events or ten million, and the figures outlive
`store.retention`. The counters are hourly: each event adds one to some counters of its
agent, and one hit to each rule it matched (or to the events that matched none), in the
hour relay received it. The store adds a Tally in the transaction that stores its event,
so several processes add to the same counters and a duplicate adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.config.model import ConsoleConfig
from relay.events import Event

HOUR_S = 3600

# An agent's counters. The first three count events; the others count conversations, and
# the store adds them from the conversation's watch (SPEC 4.4), so only while
# `conversations` is set: a conversation's first event (CONVERSATIONS), its first answer
# (one first-answer counter, by how long it took), and its first conversation.unanswered.
EVENTS = "events"
VISITOR_MESSAGES = "visitor_messages"
AGENT_MESSAGES = "agent_messages"
CONVERSATIONS = "conversations"
UNANSWERED = "unanswered"

# The first-answer histogram's bucket bounds, in seconds: a first answer counts in the
# first bucket whose bound it does not pass, or in the last (over an hour). Bounded, so an
# agent's counters stay a few dozen whatever the answers; a percentile is read to its
# bucket's bound. store/lua/lib_tally.lua repeats them (a test holds both equal).
FIRST_ANSWER_BOUNDS_S = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600)
FIRST_ANSWER_OVER = "first_answer_over"


def first_answer_counter(seconds: float) -> str:
    """The counter a first answer after `seconds` adds one to."""
    for bound in FIRST_ANSWER_BOUNDS_S:
        if seconds <= bound:
            return f"first_answer_le_{bound}"
    return FIRST_ANSWER_OVER


# Every agent counter, in a fixed order: the SQLite store keeps them as columns of one row
# per agent and hour (store/sqlite_counters.py), made by its schema version 16, and Redis
# by their place here (store/lua/lib_tally.lua). A new one needs a schema version that adds
# its column, and an old one stays (tests/store/test_sqlite.py holds version 16's list).
AGENT_COUNTERS = (
    EVENTS,
    VISITOR_MESSAGES,
    AGENT_MESSAGES,
    CONVERSATIONS,
    UNANSWERED,
    *(first_answer_counter(bound) for bound in FIRST_ANSWER_BOUNDS_S),
    FIRST_ANSWER_OVER,
)

# The rule hit counted for an event that matched no rule: no rule can have this name
# (a rule name is never empty).
NO_RULE = ""


@dataclass(frozen=True)
class Tally:
    """One event's part in the counters."""

    hour: int  # the hour it was received in: received_at // HOUR_S
    agent_id: str
    counters: tuple[str, ...]  # the agent's counters it adds one to
    rules: tuple[str, ...]  # the rules it matched, each once; (NO_RULE,) for none
    at: float  # when it was received: a rule's latest match
    keep_until: float  # when its hour's counters may go: console.history after the hour

    @classmethod
    def of(cls, event: Event, matched: Sequence[str], history_s: float) -> Tally:
        """Return what `event`, which matched the rules named `matched`, adds."""
        hour = int(event.received_at // HOUR_S)
        counters = [EVENTS]
        if event.kind == "chat.push":
            if event.role == "user":
                counters.append(VISITOR_MESSAGES)
            elif event.role == "assistant":
                counters.append(AGENT_MESSAGES)
        return cls(
            hour=hour,
            agent_id=event.agent_id,
            counters=tuple(counters),
            rules=tuple(dict.fromkeys(matched)) or (NO_RULE,),
            at=event.received_at,
            keep_until=(hour + 1) * HOUR_S + history_s,
        )


@dataclass(frozen=True)
class RuleHits:
    """How often a rule matched in a period, and when it last did within the figures
    kept (which may be before the period)."""

    rule: str  # NO_RULE: the events that matched no rule
    hits: int
    last_at: float | None


def tally_of(event: Event, matched: Sequence[str], console: ConsoleConfig | None) -> Tally | None:
    """Return what an event that matched the rules named `matched` adds to the counters,
    or None: relay keeps them only for a console to show."""
    if console is None:
        return None
    return Tally.of(event, matched, console.history_s)


@dataclass(frozen=True)
class AgentCount:
    """One of an agent's counters, summed over a period."""

    agent_id: str
    counter: str
    value: int


@dataclass(frozen=True)
class HourCount:
    """One counter of every agent together, in one hour."""

    hour: int
    value: int


@dataclass(frozen=True)
class ActivityCounts:
    """What the Activity page reads, in one go: each agent's counters summed over a
    period, and one of them over every agent, hour by hour."""

    agents: list[AgentCount]
    hours: list[HourCount]
