"""The Activity page's figures from counters (relay/activity/figures.py)."""

from __future__ import annotations

from relay.activity.figures import DAY_S, Bar, Percentile, bars, by_agent, percentile
from relay.activity.tally import (
    CONVERSATIONS,
    FIRST_ANSWER_BOUNDS_S,
    FIRST_ANSWER_OVER,
    HOUR_S,
    AgentCount,
    HourCount,
    first_answer_counter,
)


def histogram(*seconds: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in seconds:
        name = first_answer_counter(value)
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_first_answers_of_4_and_12_seconds_give_a_median_at_its_bucket_bound() -> None:
    answers = histogram(4.0, 12.0)
    assert percentile(answers, 0.5) == Percentile(5)
    assert percentile(answers, 0.9) == Percentile(15)
    assert str(percentile(answers, 0.5)) == "≤ 5 s"


def test_percentiles_by_nearest_rank() -> None:
    answers = histogram(*([2.0] * 9), 400.0)
    assert percentile(answers, 0.5) == Percentile(2)
    assert percentile(answers, 0.9) == Percentile(2)
    assert percentile(answers, 0.91) == Percentile(600)
    assert percentile({}, 0.5) is None


def test_an_answer_past_the_last_bound_is_counted_over_it() -> None:
    assert first_answer_counter(3600.0) == "first_answer_le_3600"
    assert first_answer_counter(3600.5) == FIRST_ANSWER_OVER
    assert str(percentile(histogram(7200.0), 0.5)) == f"> {FIRST_ANSWER_BOUNDS_S[-1] // 3600} h"
    assert first_answer_counter(0.0) == "first_answer_le_1"


def test_agents_most_conversations_first_and_all_agents_together() -> None:
    agents, everyone = by_agent(
        [
            AgentCount("A1", CONVERSATIONS, 2),
            AgentCount("A2", CONVERSATIONS, 5),
            AgentCount("A1", first_answer_counter(4.0), 1),
            AgentCount("A2", first_answer_counter(12.0), 1),
        ]
    )
    assert [a.agent_id for a in agents] == ["A2", "A1"]
    assert everyone.conversations == 7
    assert everyone.first_answer_median == Percentile(5)


def test_bars_cover_every_step_with_the_empty_ones() -> None:
    start_hour = 480_000  # a day's first hour (UTC)
    now = (start_hour + 3) * HOUR_S + 10.0
    hourly = bars([HourCount(start_hour + 1, 2)], start_hour, now, HOUR_S)
    assert hourly == [Bar(float((start_hour + h) * HOUR_S), n) for h, n in enumerate([0, 2, 0, 0])]
    daily = bars(
        [HourCount(start_hour + 1, 2), HourCount(start_hour + 30, 1)],
        start_hour,
        (start_hour + 50) * HOUR_S,
        DAY_S,
    )
    assert [bar.conversations for bar in daily] == [2, 1, 0]
