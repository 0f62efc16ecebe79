"""The activity counters of the Store contract (SPEC 8.1), one suite for every store.

Counters are added in the transaction that stores their event, so a duplicate adds
nothing and two processes adding at once lose nothing; they outlive the retention purge.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from importlib import resources

from relay.activity.tally import (
    AGENT_COUNTERS,
    AGENT_MESSAGES,
    CONVERSATIONS,
    EVENTS,
    FIRST_ANSWER_BOUNDS_S,
    FIRST_ANSWER_OVER,
    NO_RULE,
    UNANSWERED,
    VISITOR_MESSAGES,
    HourCount,
    RuleHits,
    Tally,
    first_answer_counter,
)
from relay.conversations.watch import Observation, Role, due_signals, signal_event_id
from relay.store.base import NewDelivery, NewEvent, NewSignal, Store
from tests.store.conftest import Stores

HOUR = 3600
DAY_S = 86400.0
HISTORY_S = 30 * DAY_S
T0 = 1_000_000 * HOUR  # a whole hour


def tally(at: float, rules: tuple[str, ...], counters: tuple[str, ...] = (EVENTS,)) -> Tally:
    hour = int(at // HOUR)
    return Tally(hour, "A1", counters, rules or (NO_RULE,), at, (hour + 1) * HOUR + HISTORY_S)


async def accept(store: Store, event_id: str, at: float, *rules: str) -> bool:
    result = await store.accept(
        NewEvent(event_id, b"{}", at),
        [NewDelivery("slack", rule, None, "s1") for rule in rules],
        dedupe_window_s=60.0,
        tally=tally(at, rules),
    )
    return not result.duplicate


def by_rule(hits: list[RuleHits]) -> dict[str, tuple[int, float | None]]:
    return {h.rule: (h.hits, h.last_at) for h in hits}


async def test_rule_hits_count_each_rule_and_the_events_no_rule_matched(stores: Stores) -> None:
    await accept(stores.one, "e1", T0 + 10, "joins", "all")
    await accept(stores.one, "e2", T0 + 20, "all")
    await accept(stores.one, "e3", T0 + 30)
    assert by_rule(await stores.other.rule_hits(int(T0 // HOUR))) == {
        "joins": (1, T0 + 10),
        "all": (2, T0 + 20),
        NO_RULE: (1, T0 + 30),
    }


async def test_a_duplicate_adds_nothing(stores: Stores) -> None:
    assert await accept(stores.one, "e1", T0 + 10, "all")
    assert not await accept(stores.other, "e1", T0 + 11, "all")
    assert by_rule(await stores.one.rule_hits(0)) == {"all": (1, T0 + 10)}


async def test_hits_count_from_the_hour_asked_and_the_last_match_from_all_kept(
    stores: Stores,
) -> None:
    await accept(stores.one, "old", T0 - 2 * DAY_S, "weekly")
    await accept(stores.one, "new", T0 + 5, "all")
    assert by_rule(await stores.one.rule_hits(int(T0 // HOUR))) == {
        "weekly": (0, T0 - 2 * DAY_S),
        "all": (1, T0 + 5),
    }
    assert by_rule(await stores.one.rule_hits(int((T0 - 3 * DAY_S) // HOUR))) == {
        "weekly": (1, T0 - 2 * DAY_S),
        "all": (1, T0 + 5),
    }


async def test_the_last_match_is_the_latest_whatever_the_order_events_came_in(
    stores: Stores,
) -> None:
    await accept(stores.one, "late", T0 + 50, "all")
    await accept(stores.other, "early", T0 + 40, "all")
    assert by_rule(await stores.one.rule_hits(0)) == {"all": (2, T0 + 50)}


async def test_two_processes_adding_at_once_lose_nothing(stores: Stores) -> None:
    await asyncio.gather(
        *(
            accept(store, f"{name}-{i}", T0 + i, "all", f"rule-{i % 3}")
            for name, store in (("one", stores.one), ("other", stores.other))
            for i in range(60)
        )
    )
    assert by_rule(await stores.one.rule_hits(0)) == {
        "all": (120, T0 + 59),
        "rule-0": (40, T0 + 57),
        "rule-1": (40, T0 + 58),
        "rule-2": (40, T0 + 59),
    }


async def test_counters_outlive_the_retention_purge(stores: Stores) -> None:
    await accept(stores.one, "e1", T0 + 10, "all")
    await accept(stores.one, "e2", T0 + 3 * DAY_S, "all")
    await stores.one.purge(T0 + 2 * DAY_S)  # the history of e1 goes, its counters stay
    assert by_rule(await stores.one.rule_hits(0)) == {"all": (2, T0 + 3 * DAY_S)}


async def test_an_event_without_a_tally_adds_nothing(stores: Stores) -> None:
    await stores.one.accept(
        NewEvent("e1", b"{}", T0), [NewDelivery("slack", "all", None, "s1")], dedupe_window_s=60
    )
    assert await stores.one.rule_hits(0) == []


async def test_agent_counters_are_kept_beside_the_rules(stores: Stores) -> None:
    """Agent counters do not show as rules (the Activity page reads them)."""
    await stores.one.accept(
        NewEvent("e1", b"{}", T0),
        [],
        dedupe_window_s=60,
        tally=tally(T0, (), (EVENTS, VISITOR_MESSAGES, AGENT_MESSAGES)),
    )
    assert by_rule(await stores.one.rule_hits(0)) == {NO_RULE: (1, T0)}


# The conversation counters, added from the watch (SPEC 8.1 with 4.4) ----------------------


def seen(
    conversation: str, role: Role, timestamp: float, received_at: float, agent: str = "A1"
) -> Observation:
    message = "hello?" if role == "visitor" else None
    return Observation(
        conversation, agent, None, role, message, timestamp, received_at, 120.0, 600.0
    )


async def event(store: Store, event_id: str, seen: Observation, counted: bool = True) -> None:
    hour = int(seen.received_at // HOUR)
    counters = {"visitor": (EVENTS, VISITOR_MESSAGES), "agent": (EVENTS, AGENT_MESSAGES)}
    tally = Tally(
        hour, seen.agent_id, counters.get(seen.role, (EVENTS,)), (NO_RULE,), seen.received_at,
        (hour + 1) * HOUR + HISTORY_S,
    )  # fmt: skip
    result = await store.accept(
        NewEvent(event_id, b"{}", seen.received_at),
        [],
        dedupe_window_s=60.0,
        observation=seen,
        tally=tally if counted else None,
    )
    assert not result.duplicate


async def counts(store: Store, since_hour: int = 0) -> dict[tuple[str, str], int]:
    return {(c.agent_id, c.counter): c.value for c in await store.agent_counts(since_hour)}


async def test_a_conversation_counts_as_started_once_and_its_first_answer_once(
    stores: Stores,
) -> None:
    await event(stores.one, "v1", seen("s1", "visitor", T0 + 100, T0 + 100))
    await event(stores.other, "a1", seen("s1", "agent", T0 + 104, T0 + 105))
    await event(stores.one, "v2", seen("s1", "visitor", T0 + 110, T0 + 110))
    await event(stores.other, "a2", seen("s1", "agent", T0 + 200, T0 + 200))
    await event(stores.one, "v3", seen("s2", "visitor", T0 + 300, T0 + 300, agent="A2"))
    await event(stores.other, "a3", seen("s2", "agent", T0 + 312, T0 + 313, agent="A2"))
    assert await counts(stores.one) == {
        ("A1", EVENTS): 4,
        ("A1", VISITOR_MESSAGES): 2,
        ("A1", AGENT_MESSAGES): 2,
        ("A1", CONVERSATIONS): 1,
        ("A1", first_answer_counter(4.0)): 1,  # from the events' own timestamps
        ("A2", EVENTS): 2,
        ("A2", VISITOR_MESSAGES): 1,
        ("A2", AGENT_MESSAGES): 1,
        ("A2", CONVERSATIONS): 1,
        ("A2", first_answer_counter(12.0)): 1,
    }
    assert first_answer_counter(4.0) == "first_answer_le_5"
    assert first_answer_counter(12.0) == "first_answer_le_15"


async def test_without_counters_the_watch_counts_nothing_and_counts_nothing_later(
    stores: Stores,
) -> None:
    """A conversation the counters did not see start is not counted as started later; its
    first answer, still to come, is."""
    await event(stores.one, "v1", seen("s1", "visitor", T0 + 100, T0 + 100), counted=False)
    await event(stores.one, "a1", seen("s1", "agent", T0 + 103, T0 + 103))
    assert await counts(stores.one) == {
        ("A1", EVENTS): 1,
        ("A1", AGENT_MESSAGES): 1,
        ("A1", first_answer_counter(3.0)): 1,
    }


async def test_a_conversation_counts_as_unanswered_once_however_many_stretches(
    stores: Stores,
) -> None:
    await event(stores.one, "v1", seen("s1", "visitor", T0, T0))
    await raise_unanswered(stores.one, T0 + 120, number=1)
    await event(stores.one, "a1", seen("s1", "agent", T0 + 130, T0 + 130))
    await event(stores.one, "v2", seen("s1", "visitor", T0 + 140, T0 + 140))
    await raise_unanswered(stores.other, T0 + 260, number=2)
    found = await counts(stores.one)
    assert found[("A1", UNANSWERED)] == 1
    assert found[("A1", CONVERSATIONS)] == 1


async def raise_unanswered(store: Store, now: float, number: int) -> None:
    [watch] = await store.claim_watches(now, 10, owner="p", lease_s=10.0)
    [due] = due_signals(watch, now)
    assert (due.kind, due.number) == ("unanswered", number)
    hour = int(now // HOUR)
    event = NewEvent(signal_event_id(watch, "unanswered", number), b"{}", now)
    tally = Tally(hour, "A1", (EVENTS,), (NO_RULE,), now, (hour + 1) * HOUR + HISTORY_S)
    raised = await store.raise_signal(
        NewSignal("s1", "unanswered", number, event), [], owner="p", dedupe_window_s=60.0,
        tally=tally,
    )  # fmt: skip
    assert raised


async def test_agent_counts_sum_the_hours_asked_and_hourly_counts_each_hour(
    stores: Stores,
) -> None:
    await event(stores.one, "old", seen("s-old", "visitor", T0 - 5 * HOUR, T0 - 5 * HOUR))
    await event(stores.one, "v1", seen("s1", "visitor", T0 + 10, T0 + 10))
    await event(stores.other, "v2", seen("s2", "visitor", T0 + 20, T0 + 20, agent="A2"))
    await event(stores.one, "v3", seen("s3", "visitor", T0 + 2 * HOUR, T0 + 2 * HOUR))
    now_hour = int(T0 // HOUR)
    recent = await counts(stores.other, now_hour)
    assert (recent[("A1", CONVERSATIONS)], recent[("A2", CONVERSATIONS)]) == (2, 1)
    assert (await counts(stores.other))[("A1", CONVERSATIONS)] == 3
    hourly = await stores.other.hourly_counts(now_hour - 10, CONVERSATIONS)
    assert hourly == [
        HourCount(now_hour - 5, 1),
        HourCount(now_hour, 2),
        HourCount(now_hour + 2, 1),
    ]
    assert await stores.one.hourly_counts(now_hour + 1, CONVERSATIONS) == [
        HourCount(now_hour + 2, 1)
    ]


def test_the_lua_first_answer_bounds_are_tally_py_s() -> None:
    """lib_tally.lua names a first answer's counter by the same bounds as tally.py."""
    lua = (resources.files("relay.store") / "lua" / "lib_tally.lua").read_text()
    found = re.search(r"local FIRST_ANSWER_BOUNDS_S = \{(.*?)\}", lua, re.S)
    assert found is not None
    assert tuple(int(n) for n in re.findall(r"\d+", found.group(1))) == FIRST_ANSWER_BOUNDS_S


def test_the_lua_agent_counters_are_tally_py_s_in_its_order() -> None:
    """An agent's counters are one map in Redis, keyed by their place: lib_tally.lua must
    list tally.py's AGENT_COUNTERS in the same order."""
    lua = (resources.files("relay.store") / "lua" / "lib_tally.lua").read_text()
    found = re.search(r"local AGENT_COUNTERS = \{(.*?)\}", lua, re.S)
    assert found is not None
    named = re.findall(r"'(\w+)'", found.group(1))
    bounds = tuple(f"first_answer_le_{bound}" for bound in FIRST_ANSWER_BOUNDS_S)
    assert (*named, *bounds, FIRST_ANSWER_OVER) == AGENT_COUNTERS
    assert "'first_answer_le_' .. bound" in lua and "= 'first_answer_over'" in lua


# Days: the hours before yesterday rolled up ------------------------------------------------


async def test_rolled_up_days_give_the_same_figures_a_day_overlapping_a_period_whole(
    stores: Stores,
) -> None:
    day = 24 * HOUR
    base = 20_000 * day  # a UTC midnight
    for n, at in enumerate((base + 1 * HOUR, base + 5 * HOUR, base + day + 2 * HOUR)):
        await event(stores.one, f"old{n}", seen(f"s{n}", "visitor", at, at))
    await accept(stores.one, "r-old", base + 7 * HOUR, "weekly")
    await accept(stores.other, "r-late", base + 6 * HOUR, "weekly")  # earlier, accepted later
    await event(stores.one, "new", seen("s-new", "visitor", base + 3 * day, base + 3 * day))
    first_hour = int(base // HOUR)
    hourly_before = await stores.one.hourly_counts(first_hour, CONVERSATIONS)
    counts_before = await counts(stores.one, first_hour)
    rules_before = by_rule(await stores.one.rule_hits(first_hour))

    await stores.one.roll_up_counters(base + 3 * day)  # the first two days go
    await stores.other.roll_up_counters(base + 3 * day)  # again, from another process: nothing
    assert await counts(stores.other, first_hour) == counts_before
    assert by_rule(await stores.other.rule_hits(first_hour)) == rules_before
    assert rules_before["weekly"] == (2, base + 7 * HOUR)
    # A day counts as its first hour, whole.
    assert hourly_before == [
        HourCount(first_hour + 1, 1),
        HourCount(first_hour + 5, 1),
        HourCount(first_hour + 26, 1),
        HourCount(first_hour + 72, 1),
    ]
    assert await stores.other.hourly_counts(first_hour, CONVERSATIONS) == [
        HourCount(first_hour, 2),
        HourCount(first_hour + 24, 1),
        HourCount(first_hour + 72, 1),
    ]
    # A period from the middle of the first day counts it whole.
    assert (await counts(stores.one, first_hour + 12))[("A1", CONVERSATIONS)] == 4
    assert (await counts(stores.one, first_hour + 25))[("A1", CONVERSATIONS)] == 2

    # An event accepted later for an hour already rolled up joins its day at the next go.
    late = base + 4 * HOUR
    await event(stores.other, "late", seen("s-late", "visitor", late, late))
    await stores.other.roll_up_counters(base + 3 * day)
    assert (await stores.one.hourly_counts(first_hour, CONVERSATIONS))[0] == HourCount(
        first_hour, 3
    )


async def test_any_period_counts_the_hours_from_its_start_and_rolled_days_whole(
    stores: Stores,
) -> None:
    """Whatever hour a period starts at, an agent's figures are those of the hours from
    it on, and, once rolled up, of each day it reaches, whole: computed here from the
    tallies themselves, for events of three agents spread over four days."""
    day_hours = 24
    first_day = 20_000
    chosen = random.Random(17)
    tallies = []
    for n in range(120):
        hour = first_day * day_hours + chosen.randrange(4 * day_hours)
        agent = chosen.choice(("A1", "A2", "A3"))
        counters = chosen.choice(((EVENTS,), (EVENTS, VISITOR_MESSAGES), (EVENTS, AGENT_MESSAGES)))
        tallies.append(Tally(hour, agent, counters, ("r",), hour * HOUR + 1.0, 9e9))
        await (stores.one, stores.other)[n % 2].accept(
            NewEvent(f"e{n}", b"{}", hour * HOUR + 1.0), [], dedupe_window_s=60, tally=tallies[-1]
        )

    def expected(since_hour: int, rolled_days: int) -> dict[tuple[str, str], int]:
        totals: dict[tuple[str, str], int] = {}
        for t in tallies:
            day = t.hour // day_hours
            rolled = day < first_day + rolled_days
            if t.hour >= since_hour or (rolled and day >= since_hour // day_hours):
                for counter in t.counters:
                    totals[(t.agent_id, counter)] = totals.get((t.agent_id, counter), 0) + 1
        return totals

    hours = range((first_day - 1) * day_hours, (first_day + 5) * day_hours, 5)
    for since in hours:
        assert await counts(stores.other, since) == expected(since, 0), since
    await stores.one.roll_up_counters((first_day + 3) * DAY_S)  # days 0 and 1 (not 2, 3)
    for since in hours:
        assert await counts(stores.other, since) == expected(since, 2), since


async def test_activity_counts_are_agent_counts_and_hourly_counts_in_one_read(
    stores: Stores,
) -> None:
    """The Activity page reads both at once: the same figures as the two reads apart."""
    now_hour = int(time.time() // HOUR)
    for n, (hour, agent, counters) in enumerate(
        [
            (now_hour - 3, "A1", (EVENTS, CONVERSATIONS, VISITOR_MESSAGES)),
            (now_hour - 3, "A2", (EVENTS, CONVERSATIONS)),
            (now_hour - 1, "A1", (EVENTS, AGENT_MESSAGES, first_answer_counter(4))),
            (now_hour, "A2", (EVENTS, CONVERSATIONS)),
        ]
    ):
        tally = Tally(hour, agent, counters, ("r",), hour * HOUR + 1.0, 9e9)
        await stores.one.accept(
            NewEvent(f"e{n}", b"{}", hour * HOUR + 1.0), [], dedupe_window_s=60, tally=tally
        )
    for since in (now_hour - 3, now_hour - 1, now_hour + 1):
        both = await stores.other.activity_counts(since, CONVERSATIONS)
        assert sorted(both.agents, key=str) == sorted(
            await stores.other.agent_counts(since), key=str
        )
        assert both.hours == await stores.other.hourly_counts(since, CONVERSATIONS)
    both = await stores.one.activity_counts(now_hour - 3, CONVERSATIONS)
    assert both.hours == [HourCount(now_hour - 3, 2), HourCount(now_hour, 1)]
    assert {(c.agent_id, c.counter, c.value) for c in both.agents} == {
        ("A1", EVENTS, 2), ("A1", CONVERSATIONS, 1), ("A1", VISITOR_MESSAGES, 1),
        ("A1", AGENT_MESSAGES, 1), ("A1", first_answer_counter(4), 1),
        ("A2", EVENTS, 2), ("A2", CONVERSATIONS, 2),
    }  # fmt: skip
