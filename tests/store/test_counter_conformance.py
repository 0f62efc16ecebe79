"""The activity counters of the Store contract (SPEC 8.1), one suite for every store.

Counters are added in the transaction that stores their event, so a duplicate adds
nothing and two processes adding at once lose nothing; they outlive the retention purge.
"""

from __future__ import annotations

import asyncio

from relay.activity.tally import AGENT_MESSAGES, EVENTS, NO_RULE, VISITOR_MESSAGES, RuleHits, Tally
from relay.store.base import NewDelivery, NewEvent, Store
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
