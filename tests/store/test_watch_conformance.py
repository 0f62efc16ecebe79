"""The Store contract for conversation watches (SPEC 4.4), on every store.

The rules themselves (relay/conversations/watch.py) are the same Python for every store
but Redis, which runs them in Lua: so every figure is asserted exactly, on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any

import pytest

from relay.conversations.watch import (
    Forget,
    Observation,
    Role,
    Watch,
    due_signals,
    observe,
    signal_event_id,
)
from relay.store.base import NewDelivery, NewEvent, NewSignal, Store
from tests.store.conftest import Stores

WINDOW_S = 3600.0
A, B = "process-a", "process-b"
LEASE_S = 10.0
UNANSWERED_S, ENDED_S = 120.0, 600.0
_counter = iter(range(1_000_000))
Raised = tuple[str, int, dict[str, Any]]  # kind, number, data


async def see(
    store: Store,
    role: Role,
    *,
    at: float,
    timestamp: float | None = None,
    conversation: str = "s1",
    message: str | None = None,
    room: str | None = "room-1",
    agent: str = "A1",
    unanswered_after_s: float = UNANSWERED_S,
    ended_after_s: float = ENDED_S,
    event_id: str | None = None,
) -> bool:
    """Accept one event of a conversation; return whether it was a duplicate."""
    event_id = event_id or f"e{next(_counter)}"
    seen = Observation(
        conversation=conversation,
        agent_id=agent,
        room_name=room,
        role=role,
        message=message if role == "visitor" else None,
        timestamp=at if timestamp is None else timestamp,
        received_at=at,
        unanswered_after_s=unanswered_after_s,
        ended_after_s=ended_after_s,
    )
    result = await store.accept(
        NewEvent(event_id, b"{}", at), [], dedupe_window_s=WINDOW_S, observation=seen
    )
    return result.duplicate


async def raise_due(store: Store, now: float, owner: str = A) -> list[Raised]:
    """Claim what is due and raise it, as relay's raiser does; return (kind, number, data)."""
    claimed = await store.claim_watches(now, 100, owner=owner, lease_s=LEASE_S)
    return await raise_claimed(store, claimed, now, owner)


async def raise_claimed(store: Store, claimed: list[Watch], now: float, owner: str) -> list[Raised]:
    done: list[Raised] = []
    for watch in claimed:
        for due in due_signals(watch, now):
            body = json.dumps({"event_type": due.kind, "data": due.data}).encode()
            event = NewEvent(signal_event_id(watch, due.kind, due.number), body, now)
            signal = NewSignal(watch.conversation, due.kind, due.number, event)
            delivery = NewDelivery("slack", "r", None, watch.conversation)
            if await store.raise_signal(signal, [delivery], owner=owner, dedupe_window_s=WINDOW_S):
                done.append((due.kind, due.number, due.data))
    return done


async def test_a_first_event_opens_a_watch_that_both_processes_see(stores: Stores) -> None:
    assert await stores.one.watch("s1") is None
    await see(stores.one, "other", at=1000.0, timestamp=990.0)
    expected = Watch(
        conversation="s1",
        opened_at=1000.0,
        agent_id="A1",
        room_name="room-1",
        started_at=990.0,
        last_event_at=990.0,
        last_received_at=1000.0,
        end_due=1600.0,
    )
    assert await stores.one.watch("s1") == expected
    assert await stores.other.watch("s1") == expected
    assert expected.due_at == 1600.0


async def test_unanswered_is_due_after_the_window_and_not_before(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, timestamp=995.0, message="Hello, I need help")
    assert await stores.one.claim_watches(1119.9, 10, owner=A, lease_s=LEASE_S) == []
    assert await raise_due(stores.one, 1120.0) == [
        (
            "unanswered",
            1,
            {
                "session_id": "s1",
                "room_name": "room-1",
                "message": "Hello, I need help",
                "asked_at": 995.0,
                "waited_s": 120.0,
            },
        )
    ]
    watch = await stores.other.watch("s1")
    assert watch is not None and watch.stretch_raised and watch.due_at == 1600.0
    delivered = await stores.other.list_deliveries()
    assert [d.event_id for d in delivered] == [signal_event_id(watch, "unanswered", 1)]


async def test_a_stretch_raises_once_whatever_follows_in_it(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="first")
    await see(stores.one, "visitor", at=1010.0, message="second")
    await see(stores.other, "visitor", at=1020.0, message="third")
    raised = await raise_due(stores.one, 1200.0)
    assert [(kind, number, data["message"]) for kind, number, data in raised] == [
        ("unanswered", 1, "first")
    ]
    assert raised[0][2]["waited_s"] == 200.0  # from the first message's receipt
    await see(stores.one, "visitor", at=1210.0, message="fourth")
    assert await raise_due(stores.other, 1400.0) == []
    assert len(await stores.one.list_deliveries()) == 1


async def test_an_answer_in_time_raises_nothing_and_a_new_stretch_raises_again(
    stores: Stores,
) -> None:
    await see(stores.one, "visitor", at=1000.0, message="one")
    await see(stores.one, "agent", at=1100.0)
    assert await raise_due(stores.one, 1500.0) == []
    await see(stores.other, "visitor", at=1500.0, message="two")
    raised = await raise_due(stores.one, 1620.0)
    assert [(kind, number, data["message"]) for kind, number, data in raised] == [
        ("unanswered", 2, "two")
    ]


async def test_an_answer_after_the_claim_wins(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="one")
    (watch,) = await stores.one.claim_watches(1130.0, 10, owner=A, lease_s=LEASE_S)
    await see(stores.other, "agent", at=1131.0)  # the answer comes before the raise
    assert [d.kind for d in due_signals(watch, 1130.0)] == ["unanswered"]
    event = NewEvent(signal_event_id(watch, "unanswered", 1), b"{}", 1132.0)
    signal = NewSignal("s1", "unanswered", 1, event)
    assert not await stores.one.raise_signal(signal, [], owner=A, dedupe_window_s=WINDOW_S)
    assert await stores.one.list_deliveries() == []
    # Nothing of it was stored: not even its dedupe key.
    again = await stores.one.accept(event, [], dedupe_window_s=WINDOW_S)
    assert not again.duplicate


async def test_a_claimed_watch_is_raised_by_its_claimant_only(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="one")
    (watch,) = await stores.one.claim_watches(1130.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.other.claim_watches(1135.0, 10, owner=B, lease_s=LEASE_S) == []
    # A died without raising: its claim runs out and B takes over.
    (taken,) = await stores.other.claim_watches(1140.0, 10, owner=B, lease_s=LEASE_S)
    assert taken == watch
    raised = await raise_claimed(stores.other, [taken], 1141.0, owner=B)
    assert [r[:2] for r in raised] == [("unanswered", 1)]


async def test_two_processes_raising_the_same_signal_store_it_once(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="one")
    (watch,) = await stores.one.claim_watches(1130.0, 10, owner=A, lease_s=LEASE_S)
    event = NewEvent(signal_event_id(watch, "unanswered", 1), b"{}", 1130.0)
    signal = NewSignal("s1", "unanswered", 1, event)
    delivery = [NewDelivery("slack", "r", None, "s1")]
    raised = await asyncio.gather(
        stores.one.raise_signal(signal, delivery, owner=A, dedupe_window_s=WINDOW_S),
        stores.other.raise_signal(signal, delivery, owner=B, dedupe_window_s=WINDOW_S),
    )
    assert sorted(raised) == [False, True]
    assert len(await stores.one.list_deliveries()) == 1


async def test_raising_releases_the_claim(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="one", ended_after_s=150.0)
    assert [r[:2] for r in await raise_due(stores.one, 1130.0)] == [("unanswered", 1)]
    # The watch's end is still to come; once due, anyone may claim it at once.
    (watch,) = await stores.other.claim_watches(1150.0, 10, owner=B, lease_s=LEASE_S)
    assert watch.due_at == 1150.0


async def test_ended_carries_the_conversations_figures(stores: Stores) -> None:
    # Timestamps are the events' own (figures); receipt times are relay's (deadlines).
    await see(stores.one, "other", at=1000.0, timestamp=500.0)  # room.join
    await see(stores.one, "visitor", at=1001.0, timestamp=510.0, message="hi")
    await see(stores.other, "agent", at=1002.0, timestamp=514.0)  # first answer after 4 s
    await see(stores.one, "visitor", at=1003.0, timestamp=520.0, message="and?")
    await see(stores.one, "agent", at=1004.0, timestamp=530.0)
    await see(stores.one, "visitor", at=1005.0, timestamp=740.0, message="hello?")
    assert [r[:2] for r in await raise_due(stores.one, 1125.0)] == [("unanswered", 3)]
    assert await raise_due(stores.one, 1604.9) == []
    assert await raise_due(stores.other, 1605.0, owner=B) == [
        (
            "ended",
            1,
            {
                "session_id": "s1",
                "room_name": "room-1",
                "started_at": 500.0,
                "last_event_at": 740.0,
                "duration_s": 240.0,
                "visitor_messages": 3,
                "agent_messages": 2,
                "first_answer_s": 4.0,
                "unanswered": True,
            },
        )
    ]
    assert await raise_due(stores.one, 9999.0) == []  # once


async def test_both_signals_due_at_once_are_raised_unanswered_first(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="anyone?")
    raised = await raise_due(stores.one, 5000.0)  # relay was down past both deadlines
    assert [r[:2] for r in raised] == [("unanswered", 1), ("ended", 1)]
    assert raised[0][2]["waited_s"] == 4000.0
    assert raised[1][2]["first_answer_s"] is None and raised[1][2]["unanswered"] is True


async def test_a_conversation_that_carries_on_ends_again_with_figures_from_its_start(
    stores: Stores,
) -> None:
    await see(stores.one, "visitor", at=1000.0, timestamp=100.0, message="hi")
    await see(stores.one, "agent", at=1001.0, timestamp=104.0)
    assert [r[:2] for r in await raise_due(stores.one, 1601.0)] == [("ended", 1)]
    await see(stores.other, "visitor", at=2000.0, timestamp=1100.0, message="back again")
    await see(stores.other, "agent", at=2001.0, timestamp=1110.0)
    (ended,) = await raise_due(stores.one, 2601.0)
    assert ended[:2] == ("ended", 2)
    assert ended[2]["started_at"] == 100.0 and ended[2]["duration_s"] == 1010.0
    assert (ended[2]["visitor_messages"], ended[2]["agent_messages"]) == (2, 2)
    assert ended[2]["first_answer_s"] == 4.0 and ended[2]["unanswered"] is False
    ids = {d.event_id for d in await stores.one.list_deliveries()}
    assert len(ids) == 2  # two ends, two event ids


async def test_zero_windows_raise_nothing(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, unanswered_after_s=0.0, ended_after_s=0.0)
    watch = await stores.one.watch("s1")
    assert watch is not None and watch.due_at is None and watch.visitor_messages == 1
    assert await raise_due(stores.one, 1e9) == []


async def test_a_duplicate_event_does_not_move_the_watch(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, message="hi", event_id="same")
    assert await see(stores.other, "visitor", at=1001.0, message="hi", event_id="same")
    watch = await stores.one.watch("s1")
    assert watch is not None and watch.visitor_messages == 1 and watch.last_received_at == 1000.0


async def test_conversations_are_watched_apart(stores: Stores) -> None:
    await see(stores.one, "visitor", at=1000.0, conversation="s1", message="one")
    await see(stores.one, "visitor", at=1050.0, conversation="s2", message="two")
    await see(stores.one, "agent", at=1060.0, conversation="s2")
    raised = await raise_due(stores.one, 1200.0)
    assert [(r[0], r[2]["session_id"]) for r in raised] == [("unanswered", "s1")]


async def test_claims_take_the_earliest_due_first_up_to_the_limit(stores: Stores) -> None:
    for i in range(5):
        await see(stores.one, "visitor", at=1000.0 + i, conversation=f"s{i}", message="?")
    claimed = await stores.other.claim_watches(2000.0, 3, owner=B, lease_s=LEASE_S)
    assert [w.conversation for w in claimed] == ["s0", "s1", "s2"]
    rest = await stores.one.claim_watches(2000.0, 10, owner=A, lease_s=LEASE_S)
    assert [w.conversation for w in rest] == ["s3", "s4"]


async def test_a_conversation_kept_alive_is_not_due_at_its_old_deadlines(stores: Stores) -> None:
    """Each event pushes the end away: the first event's deadline, passed, claims nothing."""
    for at in (1000.0, 1500.0, 2000.0):
        await see(stores.one, "other", at=at)
    for now in (1600.0, 2100.0, 2599.9):
        assert await stores.other.claim_watches(now, 10, owner=B, lease_s=LEASE_S) == []
    assert [kind for kind, _, _ in await raise_due(stores.one, 2600.0)] == ["ended"]


async def test_passed_deadlines_beyond_a_claims_limit_do_not_hide_the_due(stores: Stores) -> None:
    for i in range(6):  # six conversations kept alive past their first deadline
        await see(stores.one, "other", at=1000.0 + i, conversation=f"alive{i}")
        await see(stores.one, "other", at=1500.0 + i, conversation=f"alive{i}")
    await see(stores.one, "other", at=1590.0, conversation="quiet")
    await see(stores.one, "other", at=1000.0, conversation="early")
    # At 1,700 the six first deadlines have passed, but only "early" is due.
    claimed = await stores.other.claim_watches(1700.0, 1, owner=B, lease_s=LEASE_S)
    assert [w.conversation for w in claimed] == ["early"]
    assert [kind for kind, _, _ in await raise_claimed(stores.other, claimed, 1700.0, B)] == [
        "ended"
    ]
    assert await stores.other.claim_watches(2099.0, 1, owner=B, lease_s=LEASE_S) == []
    claimed = await stores.one.claim_watches(2110.0, 10, owner=A, lease_s=LEASE_S)
    assert [w.conversation for w in claimed] == [f"alive{i}" for i in range(6)]
    assert len(await raise_claimed(stores.one, claimed, 2110.0, A)) == 6
    claimed = await stores.one.claim_watches(2190.0, 10, owner=A, lease_s=LEASE_S)
    assert [w.conversation for w in claimed] == ["quiet"]


async def test_a_backlog_of_answered_questions_does_not_delay_a_due_watch(
    stores: Stores,
) -> None:
    """Each question answered in time leaves a floor that passes before its watch is due;
    more of them than a claim reads at once must not hold a due watch back a poll."""
    for i in range(1200):
        await see(stores.one, "visitor", at=1000.0, conversation=f"asked{i}", message="?")
        await see(stores.one, "agent", at=1001.0, conversation=f"asked{i}")
    await see(stores.one, "other", at=1000.0, conversation="quiet")
    claimed = await stores.other.claim_watches(1600.5, 1, owner=B, lease_s=LEASE_S)
    assert [w.conversation for w in claimed] == ["quiet"]


async def test_retention_keeps_a_watch_with_a_recent_event(stores: Stores) -> None:
    await see(stores.one, "other", at=1000.0, conversation="alive")
    await see(stores.one, "other", at=1550.0, conversation="alive")
    assert (await stores.other.purge(1500.0)).watches == 0
    assert await stores.one.watch("alive") is not None
    assert (await stores.other.purge(1551.0)).watches == 1
    assert await stores.one.watch("alive") is None


async def test_retention_forgets_quiet_watches(stores: Stores) -> None:
    await see(stores.one, "other", at=1000.0, conversation="old")
    await see(stores.one, "other", at=3000.0, conversation="new")
    purged = await stores.other.purge(2000.0)
    assert purged.watches == 1
    assert await stores.one.watch("old") is None
    assert await stores.one.watch("new") is not None


@pytest.mark.parametrize("conversation", ["a:b\0c", "é" * 300, "s1"])
async def test_any_session_id_is_a_conversation(stores: Stores, conversation: str) -> None:
    await see(stores.one, "visitor", at=1000.0, conversation=conversation, message="?")
    watch = await stores.other.watch(conversation)
    assert watch is not None and watch.conversation == conversation
    (raised,) = await raise_due(stores.other, 1120.0, owner=B)
    assert raised[2]["session_id"] == conversation


async def test_out_of_order_events_answer_by_their_timestamps(stores: Stores) -> None:
    # The answer (ts 504) is received before the question it answers (ts 500).
    await see(stores.one, "agent", at=1000.0, timestamp=504.0)
    await see(stores.other, "visitor", at=1000.5, timestamp=500.0, message="hi")
    watch = await stores.one.watch("s1")
    assert watch is not None and not watch.stretch_open
    assert await raise_due(stores.one, 1200.0) == []  # no false alarm
    (ended,) = await raise_due(stores.one, 1601.0)
    assert ended[2]["first_answer_s"] == 4.0 and ended[2]["unanswered"] is False
    # An answer older than the open question does not close it.
    await see(stores.one, "visitor", at=2000.0, timestamp=600.0, message="and now?")
    await see(stores.other, "agent", at=2001.0, timestamp=590.0)
    assert [r[:2] for r in await raise_due(stores.one, 2121.0)] == [("unanswered", 1)]


async def test_an_event_received_by_a_slower_clock_does_not_pull_the_end_back(
    stores: Stores,
) -> None:
    await see(stores.one, "visitor", at=1000.0, message="hi")
    await see(stores.other, "agent", at=100.0)  # a replica 900 s behind
    watch = await stores.one.watch("s1")
    assert watch is not None and watch.end_due == 1600.0


async def test_every_store_moves_a_watch_on_exactly_as_watch_py_says(stores: Stores) -> None:
    """Random conversations with realistic times, through each store and through
    relay/conversations/watch.py: the same watch after every event."""
    rng = random.Random(1605)
    for round_ in range(6):
        conversation, expected = f"r{round_}", None
        received, stamp = 1_790_000_000.0 + rng.random(), 1_790_000_000.0 + rng.random()
        for _ in range(40):
            received += rng.choice([0.001, 0.37, 1.5, 61.25])
            stamp += rng.uniform(-3.0, 30.0)  # sometimes older than the one before
            seen = Observation(
                conversation=conversation,
                agent_id=rng.choice(["A1", "", "A2"]),
                room_name=rng.choice([None, "", "room-9"]),
                role=rng.choice(["visitor", "agent", "other"]),
                message=None,
                timestamp=round(stamp, rng.choice([0, 3, 6])),
                received_at=received,
                unanswered_after_s=rng.choice([0.0, 120.0, 7.5]),
                ended_after_s=rng.choice([0.0, 600.0]),
            )
            if seen.role == "visitor":
                seen = dataclasses.replace(seen, message=rng.choice(["", "hi", "é\n?"]))
            store = rng.choice([stores.one, stores.other])
            result = await store.accept(
                NewEvent(f"{conversation}-{received!r}", b"{}", received),
                [],
                dedupe_window_s=WINDOW_S,
                observation=seen,
            )
            assert not result.duplicate
            expected = observe(expected, seen)
            assert await store.watch(conversation) == expected


async def test_an_event_while_relay_does_not_watch_forgets_the_conversation(
    stores: Stores,
) -> None:
    await see(stores.one, "visitor", at=1000.0, message="hi")
    await see(stores.one, "visitor", at=1000.0, conversation="s2", message="hi")
    forget = Forget("s1")
    result = await stores.other.accept(
        NewEvent("answer", b"{}", 1100.0), [], dedupe_window_s=WINDOW_S, observation=forget
    )
    assert not result.duplicate
    assert await stores.one.watch("s1") is None
    raised = await raise_due(stores.one, 5000.0)  # s1 owes nothing; s2 had no event since
    assert [(r[0], r[2]["session_id"]) for r in raised] == [
        ("unanswered", "s2"),
        ("ended", "s2"),
    ]
    assert (await stores.one.purge(9e9)).watches == 1  # only s2's was left
