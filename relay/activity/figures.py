"""The Activity page's figures (SPEC 8.1), from the counters alone.

Per agent: conversations started, visitor and agent messages, the median and the 90th
percentile of the time to a conversation's first answer, and the conversations left
unanswered; and conversations started per hour or per day, for a chart. A percentile comes
from the first-answer histogram, so it is the bound of the bucket it falls in ("≤ 5 s").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from relay.activity.tally import (
    AGENT_MESSAGES,
    CONVERSATIONS,
    FIRST_ANSWER_BOUNDS_S,
    FIRST_ANSWER_OVER,
    HOUR_S,
    UNANSWERED,
    VISITOR_MESSAGES,
    AgentCount,
    HourCount,
    first_answer_counter,
)

DAY_S = 86400

# Each histogram counter with the bound it stands for (None: over the last bound).
_BUCKETS: tuple[tuple[str, int | None], ...] = (
    *((first_answer_counter(bound), bound) for bound in FIRST_ANSWER_BOUNDS_S),
    (FIRST_ANSWER_OVER, None),
)


@dataclass(frozen=True)
class Percentile:
    """A percentile of first-answer times, to its bucket: at most `bound_s` seconds, or
    over the last bound (`bound_s` None)."""

    bound_s: int | None

    def __str__(self) -> str:
        if self.bound_s is None:
            return f"> {_seconds(FIRST_ANSWER_BOUNDS_S[-1])}"
        return f"≤ {_seconds(self.bound_s)}"

    def as_json(self) -> dict[str, object]:
        if self.bound_s is None:
            return {"at_most_s": None, "over_s": FIRST_ANSWER_BOUNDS_S[-1]}
        return {"at_most_s": self.bound_s, "over_s": None}


def _seconds(value: int) -> str:
    if value % 3600 == 0:
        return f"{value // 3600} h"
    if value % 60 == 0 and value >= 120:
        return f"{value // 60} min"
    return f"{value} s"


def percentile(histogram: dict[str, int], q: float) -> Percentile | None:
    """The q-quantile (0 < q <= 1) of the first answers counted in `histogram` (counter
    name to count), by the nearest-rank method; None when none was counted."""
    total = sum(histogram.get(name, 0) for name, _ in _BUCKETS)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for name, bound in _BUCKETS:
        seen += histogram.get(name, 0)
        if seen >= rank:
            return Percentile(bound)
    raise AssertionError("unreachable: the ranks add up to the total")


@dataclass(frozen=True)
class AgentFigures:
    """One agent's activity in a period (or every agent's, as `agent_id` None)."""

    agent_id: str | None
    conversations: int
    visitor_messages: int
    agent_messages: int
    first_answer_median: Percentile | None
    first_answer_p90: Percentile | None
    unanswered: int

    @classmethod
    def of(cls, agent_id: str | None, counts: dict[str, int]) -> AgentFigures:
        return cls(
            agent_id=agent_id,
            conversations=counts.get(CONVERSATIONS, 0),
            visitor_messages=counts.get(VISITOR_MESSAGES, 0),
            agent_messages=counts.get(AGENT_MESSAGES, 0),
            first_answer_median=percentile(counts, 0.5),
            first_answer_p90=percentile(counts, 0.9),
            unanswered=counts.get(UNANSWERED, 0),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "agent_id": self.agent_id,
            "conversations": self.conversations,
            "visitor_messages": self.visitor_messages,
            "agent_messages": self.agent_messages,
            "first_answer_median": _json(self.first_answer_median),
            "first_answer_p90": _json(self.first_answer_p90),
            "unanswered": self.unanswered,
        }


def _json(value: Percentile | None) -> dict[str, object] | None:
    return None if value is None else value.as_json()


def by_agent(counts: Iterable[AgentCount]) -> tuple[list[AgentFigures], AgentFigures]:
    """Each agent's figures, most conversations first (then by agent id), and all agents'
    together."""
    agents: dict[str, dict[str, int]] = {}
    everyone: dict[str, int] = {}
    for count in counts:
        own = agents.setdefault(count.agent_id, {})
        own[count.counter] = own.get(count.counter, 0) + count.value
        everyone[count.counter] = everyone.get(count.counter, 0) + count.value
    figures = [AgentFigures.of(agent, own) for agent, own in agents.items()]
    figures.sort(key=lambda f: (-f.conversations, -f.visitor_messages, f.agent_id or ""))
    return figures, AgentFigures.of(None, everyone)


@dataclass(frozen=True)
class Bar:
    """Conversations started in one hour or one day (UTC) starting at `start`."""

    start: float
    conversations: int


def bars(hours: Iterable[HourCount], since_hour: int, now: float, step_s: int) -> list[Bar]:
    """Conversations started per `step_s` (an hour or a day, UTC) from the step holding
    `since_hour` to the one holding `now`, with the empty ones: a chart's bars."""
    first = since_hour * HOUR_S // step_s
    last = int(now // step_s)
    totals = dict.fromkeys(range(first, last + 1), 0)
    for count in hours:
        step = count.hour * HOUR_S // step_s
        if step in totals:
            totals[step] += count.value
    return [Bar(float(step * step_s), n) for step, n in totals.items()]
