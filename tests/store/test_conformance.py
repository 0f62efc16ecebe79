"""The Store contract (relay/store/base.py), one suite for every store.

Each test gets a `contract_store` opened on a fresh backend and a second handle on the same
data (`other`), as a second relay process would have. Every store must pass all of it; the
worker and ingest rely on nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from relay.request_record import SECRET_VERIFIED, RequestRecord
from relay.store.base import (
    Attempt,
    ClaimAtAccept,
    Claimed,
    NewDelivery,
    NewEvent,
    SentRecord,
    Store,
)
from tests.store.conftest import Stores

WINDOW_S = 3600.0
A, B = "process-a", "process-b"
LEASE_S = 10.0


async def accept(
    store: Store,
    event_id: str,
    sessions: Sequence[str] = ("s1",),
    at: float = 1000.0,
    destination: str = "slack",
) -> None:
    deliveries = [NewDelivery(destination, "r", None, session) for session in sessions]
    result = await store.accept(
        NewEvent(event_id, f'{{"id": "{event_id}"}}'.encode(), at),
        deliveries,
        dedupe_window_s=WINDOW_S,
    )
    assert not result.duplicate


async def claim(store: Store, owner: str, now: float = 1000.0, limit: int = 10) -> list[str]:
    """Claim for `owner`; return the claimed deliveries' event ids."""
    claimed = await store.claim("slack", now, limit, owner=owner, lease_s=LEASE_S)
    return [d.event_id for d in claimed]


async def test_accept_is_deduplicated_across_processes(stores: Stores) -> None:
    await accept(stores.one, "e1")
    again = await stores.other.accept(
        NewEvent("e1", b"{}", 1001.0), [NewDelivery("slack", "r", None, "s1")], dedupe_window_s=60
    )
    assert again.duplicate
    assert len(await stores.other.list_deliveries()) == 1


async def test_one_event_accepted_many_times_at_once_is_stored_once(stores: Stores) -> None:
    """Concurrent accepts of one event (a sender's retry racing its first try, on two
    processes) share commits or round trips; still exactly one of them is new."""
    body = b'{"id": "e1"}'
    results = await asyncio.gather(
        *(
            store.accept(
                NewEvent("e1", body, 1000.0), [NewDelivery("slack", "r", None, "s1")],
                dedupe_window_s=WINDOW_S,
            )
            for store in (stores.one, stores.other) * 10
        )
    )  # fmt: skip
    assert sorted(result.duplicate for result in results) == [False] + [True] * 19
    assert [d.event_id for d in await stores.one.list_deliveries()] == ["e1"]


async def test_a_claimed_delivery_is_claimed_by_no_one_else(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    await accept(stores.one, "e2", ["s2"])
    assert await claim(stores.one, A, limit=1) == ["e1"]
    assert await claim(stores.other, B) == ["e2"]
    assert await claim(stores.one, A) == []
    assert await claim(stores.other, B) == []


async def test_one_session_is_claimed_one_delivery_at_a_time_in_order(stores: Stores) -> None:
    for n in range(3):
        await accept(stores.one, f"e{n}", ["s1"])
    [first] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert first.event_id == "e0"
    assert await claim(stores.other, B) == []  # e1 waits for e0, whoever holds it
    assert await stores.one.record_sent(first.id, 1001.0, owner=A)
    assert await claim(stores.other, B, now=1001.0) == ["e1"]


async def test_a_retry_holds_back_its_session_but_not_others(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    await accept(stores.one, "e2", ["s1"])
    await accept(stores.one, "e3", ["s2"])
    held = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert [d.event_id for d in held] == ["e1", "e3"]  # one per session: e2 follows e1
    assert await stores.one.record_failure(held[0].id, "503", retry_at=2000.0, now=1000.0, owner=A)
    assert await stores.one.record_sent(held[1].id, 1000.0, owner=A)
    assert await claim(stores.other, B, now=1500.0) == []
    assert await stores.other.next_due_at("slack", 1500.0) == 2000.0
    assert await claim(stores.other, B, now=2000.0) == ["e1"]


async def test_claim_or_next_due_claims_or_tells_when_the_next_is_due(stores: Stores) -> None:
    """What a lane asks after each send, in one step: the deliveries it may send now, and
    only when there are none, when the next can be (None: nothing is queued)."""
    assert await stores.one.claim_or_next_due("slack", 1000.0, 10, owner=A, lease_s=LEASE_S) == (
        Claimed([], None)
    )
    await accept(stores.one, "e1", ["s1"])
    await accept(stores.one, "e2", ["s1"])
    got = await stores.one.claim_or_next_due("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert [d.event_id for d in got.deliveries] == ["e1"]  # e2 follows e1
    assert got.next_due_at is None  # not asked: something was claimed
    assert await stores.one.record_failure(
        got.deliveries[0].id, "503", retry_at=2000.0, now=1000.0, owner=A
    )
    waiting = await stores.other.claim_or_next_due("slack", 1500.0, 10, owner=B, lease_s=LEASE_S)
    assert waiting == Claimed([], 2000.0)
    retried = await stores.other.claim_or_next_due("slack", 2000.0, 10, owner=B, lease_s=LEASE_S)
    assert [d.event_id for d in retried.deliveries] == ["e1"]
    assert await claim(stores.one, A, now=2000.0) == []  # B holds it


async def test_a_recorded_send_says_whether_anything_else_of_its_destination_is_queued(
    stores: Stores,
) -> None:
    """RECORDED_IDLE only when every unfinished delivery of the destination left is one
    the owner holds under a live lease (its sends in flight): a session's next delivery,
    one nobody holds, another process's claim and a retry waiting each make it RECORDED;
    another destination's deliveries do not count."""
    await accept(stores.one, "e1", ["s1", "s2"])
    await accept(stores.one, "other", ["s9"], destination="mail")
    first, second = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    # The second is A's own, in flight.
    assert await stores.one.record_sent(first.id, 1001.0, owner=A) is SentRecord.RECORDED_IDLE
    await accept(stores.one, "e2", ["s2"])  # follows the second in its session
    assert await stores.other.record_sent(second.id, 1002.0, owner=A) is SentRecord.RECORDED
    [follower] = await stores.one.claim("slack", 1002.0, 10, owner=A, lease_s=LEASE_S)
    await accept(stores.one, "e3", ["s3"])  # nobody holds it yet
    assert await stores.one.record_sent(follower.id, 1003.0, owner=A) is SentRecord.RECORDED
    [by_b] = await stores.other.claim("slack", 1003.0, 10, owner=B, lease_s=LEASE_S)
    await accept(stores.one, "e4", ["s4"])
    [by_a] = await stores.one.claim("slack", 1003.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_sent(by_a.id, 1004.0, owner=A) is SentRecord.RECORDED  # B's
    assert await stores.other.record_failure(by_b.id, "503", retry_at=2000.0, now=1004.0, owner=B)
    await accept(stores.one, "e5", ["s5"])
    [last] = await stores.one.claim("slack", 1004.0, 10, owner=A, lease_s=LEASE_S)
    assert (
        await stores.one.record_sent(last.id, 1005.0, owner=A) is SentRecord.RECORDED
    )  # e3's retry
    [retried] = await stores.one.claim("slack", 2000.0, 10, owner=A, lease_s=LEASE_S)
    assert retried.event_id == "e3"
    assert await stores.one.record_sent(retried.id, 2001.0, owner=A) is SentRecord.RECORDED_IDLE
    assert await stores.one.record_sent(retried.id, 2002.0, owner=A) is SentRecord.NOT_HELD


def claiming(owner: str, *destinations: str, until: float = 1000.0 + LEASE_S) -> ClaimAtAccept:
    return ClaimAtAccept(owner, until, frozenset(destinations))


async def test_an_accept_claims_a_new_session_head_for_its_own_process(stores: Stores) -> None:
    """Held as a claim holds it: by no one else, nor claimed again by its owner, until its
    lease runs out (its process died) or its owner releases it."""
    body = b'{"id": "e1"}'
    result = await stores.one.accept(
        NewEvent("e1", body, 1000.0),
        [NewDelivery("slack", "r", "t", "s1")],
        dedupe_window_s=WINDOW_S,
        claim=claiming(A, "slack"),
    )
    [taken] = result.claimed
    [stored] = await stores.other.list_deliveries()
    assert taken == dataclasses.replace(stored, body=body)  # as a claim reads it back
    assert (taken.event_id, taken.destination, taken.rule, taken.template) == (
        "e1", "slack", "r", "t",
    )  # fmt: skip
    assert (taken.status, taken.attempts, taken.next_attempt_at) == ("pending", 0, 1000.0)
    assert await claim(stores.other, B) == []
    assert await claim(stores.one, A) == []
    assert await claim(stores.other, B, now=1000.0 + LEASE_S) == ["e1"]
    # Released by its owner, it is anyone's at once.
    again = await stores.one.accept(
        NewEvent("e2", b"{}", 1000.0), [NewDelivery("slack", "r", None, "s2")],
        dedupe_window_s=WINDOW_S, claim=claiming(A, "slack"),
    )  # fmt: skip
    assert [d.event_id for d in again.claimed] == ["e2"]
    assert await claim(stores.other, B) == []
    assert await stores.one.release(A) == 1
    assert await claim(stores.other, B) == ["e2"]


async def test_an_accept_claims_only_session_heads_of_the_destinations_named(
    stores: Stores,
) -> None:
    """Not a delivery whose session has one unfinished before it, nor one of another
    destination, nor a digest's: those wait for a claim, as without."""
    await accept(stores.one, "e0", ["s1"])
    result = await stores.one.accept(
        NewEvent("e1", b"{}", 1000.0),
        [
            NewDelivery("slack", "follows-e0", None, "s1"),
            NewDelivery("slack", "head", None, "s2"),
            NewDelivery("slack", "second-of-s2", None, "s2"),
            NewDelivery("mail", "other-destination", None, "s1"),
            NewDelivery("slack", "digest", None, "s3", digest_s=60.0),
            NewDelivery("slack", "head-of-s4", None, "s4"),  # one a destination: taken
        ],
        dedupe_window_s=WINDOW_S,
        claim=claiming(A, "slack"),
    )
    assert [d.rule for d in result.claimed] == ["head"]
    assert result.deliveries == 6
    claimed = await stores.other.claim("slack", 1000.0, 10, owner=B, lease_s=LEASE_S)
    # s1's head, and s4's; s2's is A's; s3's digest is not due.
    assert [d.rule for d in claimed] == ["r", "head-of-s4"]
    for taken in claimed:
        assert await stores.other.record_sent(taken.id, 1001.0, owner=B)
    [mail] = await stores.other.claim("mail", 1000.0, 10, owner=B, lease_s=LEASE_S)
    assert mail.rule == "other-destination"
    assert await stores.one.record_sent(result.claimed[0].id, 1001.0, owner=A) is (
        SentRecord.RECORDED
    )
    later = await stores.other.claim("slack", 1061.0, 10, owner=B, lease_s=LEASE_S)
    assert sorted(d.rule for d in later) == ["digest", "follows-e0", "second-of-s2"]


async def test_an_accept_claims_nothing_of_a_duplicate(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    [queued] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_sent(queued.id, 1000.0, owner=A)
    again = await stores.other.accept(
        NewEvent("e1", b"{}", 1000.0), [NewDelivery("slack", "r", None, "s9")],
        dedupe_window_s=WINDOW_S, claim=claiming(B, "slack"),
    )  # fmt: skip
    assert (again.duplicate, again.claimed) == (True, ())
    assert await claim(stores.other, B) == []


async def test_a_send_claimed_at_accept_is_recorded_like_any_claim(stores: Stores) -> None:
    first = await stores.one.accept(
        NewEvent("e1", b"{}", 1000.0), [NewDelivery("slack", "r", None, "s1")],
        dedupe_window_s=WINDOW_S, claim=claiming(A, "slack"),
    )  # fmt: skip
    second = await stores.one.accept(
        NewEvent("e2", b"{}", 1000.0), [NewDelivery("slack", "r", None, "s1")],
        dedupe_window_s=WINDOW_S, claim=claiming(A, "slack"),
    )  # fmt: skip
    assert second.claimed == ()  # e1 is its session's head
    [taken] = first.claimed
    assert await stores.other.record_sent(taken.id, 1001.0, owner=B) is SentRecord.NOT_HELD
    assert await stores.one.renew(A, [taken.id], 1020.0) == {taken.id}
    assert await stores.one.record_sent(taken.id, 1001.0, owner=A) is SentRecord.RECORDED
    assert await claim(stores.other, B, now=1001.0) == ["e2"]


async def test_a_send_of_its_own_whose_lease_ran_out_counts_as_queued(stores: Stores) -> None:
    """A lease that ran out may be anyone's to claim: not the owner's send in flight."""
    await accept(stores.one, "e1", ["s1", "s2"])
    first, second = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    late = 1000.0 + LEASE_S
    assert await stores.one.record_sent(first.id, late, owner=A) is SentRecord.RECORDED
    assert await stores.one.record_sent(second.id, late, owner=A) is SentRecord.RECORDED_IDLE


async def test_sessions_of_two_destinations_never_mix_whatever_their_names(
    stores: Stores,
) -> None:
    for event_id, destination, session in (("e1", "a", "b:c"), ("e2", "a:b", "c")):
        delivery = NewDelivery(destination, "r", None, session)
        await stores.one.accept(
            NewEvent(event_id, b"{}", 1000.0), [delivery], dedupe_window_s=WINDOW_S
        )
    [first] = await stores.one.claim("a", 1000.0, 10, owner=A, lease_s=LEASE_S)
    [second] = await stores.other.claim("a:b", 1000.0, 10, owner=B, lease_s=LEASE_S)
    assert (first.event_id, second.event_id) == ("e1", "e2")


async def test_the_oldest_of_what_is_due_is_claimed_first(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    [first] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_failure(first.id, "503", retry_at=1500.0, now=1000.0, owner=A)
    await accept(stores.one, "e2", ["s2"], at=1200.0)
    # e2 was due first (1200), but e1 is older: as on a queue, it goes first.
    assert await claim(stores.other, B, now=2000.0, limit=1) == ["e1"]
    assert await claim(stores.other, B, now=2000.0, limit=1) == ["e2"]


async def test_limit_caps_how_many_sessions_are_claimed(stores: Stores) -> None:
    for n in range(6):
        await accept(stores.one, f"e{n}", [f"s{n}"])
    assert await claim(stores.one, A, limit=4) == ["e0", "e1", "e2", "e3"]
    assert await claim(stores.one, A, limit=4) == ["e4", "e5"]


async def test_a_lease_that_runs_out_lets_another_process_take_over(stores: Stores) -> None:
    await accept(stores.one, "e1")
    [held] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await claim(stores.other, B, now=1000.0 + LEASE_S - 0.1) == []
    assert await stores.other.next_due_at("slack", 1001.0) == 1000.0 + LEASE_S
    [taken] = await stores.other.claim("slack", 1000.0 + LEASE_S, 10, owner=B, lease_s=LEASE_S)
    assert taken.id == held.id
    # The first process comes back: its outcome is no longer its to record.
    assert not await stores.one.record_sent(held.id, 1011.0, owner=A)
    assert await stores.other.record_sent(taken.id, 1011.0, owner=B)
    [row] = await stores.one.list_deliveries()
    assert (row.status, row.attempts) == ("sent", 1)


async def test_renewing_keeps_a_claim(stores: Stores) -> None:
    await accept(stores.one, "e1")
    [held] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.renew(A, [held.id], 1000.0 + 3 * LEASE_S) == {held.id}
    assert await stores.other.renew(B, [held.id], 9999.0) == set()  # not B's to renew
    assert await claim(stores.other, B, now=1000.0 + 2 * LEASE_S) == []
    assert await stores.one.record_failure(held.id, "x", retry_at=None, now=1020.0, owner=A)
    assert await stores.one.renew(A, [held.id], 9999.0) == set()  # finished: nothing held


async def test_a_renewed_lease_holds_though_a_claim_with_a_small_limit_passed_it_over(
    stores: Stores,
) -> None:
    """A stalled process's lease runs out; another claims with room for one only, then the
    first comes back and renews: what it renewed is its own again, never sent twice."""
    for n in range(3):
        await accept(stores.one, f"e{n}", [f"s{n}"])
    held = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await claim(stores.other, B, now=1000.0 + LEASE_S + 1, limit=1) == ["e0"]
    assert await stores.one.renew(A, [held[1].id], 1100.0) == {held[1].id}
    assert await claim(stores.other, B, now=1000.0 + LEASE_S + 2) == ["e2"]


async def test_a_retry_waits_its_time_though_a_claim_passed_it_over(stores: Stores) -> None:
    for n in range(2):
        await accept(stores.one, f"e{n}", [f"s{n}"])
    held = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    [taken] = await stores.other.claim("slack", 1000.0 + LEASE_S + 1, 1, owner=B, lease_s=LEASE_S)
    assert await stores.other.record_sent(taken.id, 1000.0 + LEASE_S + 1, owner=B)
    assert await stores.one.record_failure(
        held[1].id, "503", retry_at=5000.0, now=1000.0 + LEASE_S + 1, owner=A
    )
    assert await claim(stores.other, B, now=1000.0 + LEASE_S + 2) == []
    assert await claim(stores.other, B, now=5000.0) == ["e1"]


async def test_released_claims_go_to_another_process_at_once(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    await accept(stores.one, "e2", ["s2"])
    assert await claim(stores.one, A) == ["e1", "e2"]
    assert await stores.one.release(A) == 2
    assert await claim(stores.other, B) == ["e1", "e2"]
    assert await stores.one.release(A) == 0


async def test_an_outcome_is_recorded_only_by_the_holder(stores: Stores) -> None:
    await accept(stores.one, "e1")
    [held] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert not await stores.other.record_sent(held.id, 1001.0, owner=B)
    assert not await stores.other.record_failure(held.id, "x", retry_at=None, now=1001.0, owner=B)
    [row] = await stores.one.list_deliveries()
    assert (row.status, row.attempts) == ("pending", 0)


async def test_dead_letters_are_replayed_unclaimed(stores: Stores) -> None:
    await accept(stores.one, "e1")
    [held] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_failure(held.id, "404", retry_at=None, now=1000.0, owner=A)
    assert await stores.other.replay(None, 1001.0) == 1
    assert await claim(stores.other, B, now=1001.0) == ["e1"]


async def replayed_before_a_send_in_flight(stores: Stores) -> None:
    """e1, e2 and e3 of one session: e1 and e2 dead, then e3 claimed by A (in flight);
    then e2 and e1 replayed, each going back before e3."""
    for n in (1, 2, 3):
        await accept(stores.one, f"e{n}")
    for _ in range(2):
        [dead] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
        assert await stores.one.record_failure(dead.id, "404", retry_at=None, now=1000.0, owner=A)
    assert await claim(stores.one, A) == ["e3"]
    dead_ids = {d.event_id: d.id for d in await stores.one.list_deliveries("dead")}
    assert await stores.other.replay([dead_ids["e2"]], 1001.0) == 1
    assert await stores.other.replay([dead_ids["e1"]], 1001.0) == 1


async def test_a_replayed_delivery_waits_for_its_sessions_send_in_flight(stores: Stores) -> None:
    """One send at a time per session, replays included: what is replayed goes back
    before later deliveries of its session, but not beside one being sent."""
    await replayed_before_a_send_in_flight(stores)
    assert await claim(stores.other, B, now=1002.0) == []
    claimed = await stores.other.claim_or_next_due("slack", 1002.0, 10, owner=B, lease_s=LEASE_S)
    assert (list(claimed.deliveries), claimed.next_due_at) == ([], 1000.0 + LEASE_S)
    [in_flight] = [d for d in await stores.one.list_deliveries() if d.event_id == "e3"]
    assert await stores.one.record_sent(in_flight.id, 1003.0, owner=A)
    assert await claim(stores.other, B, now=1003.0) == ["e1"]


@pytest.mark.parametrize("ends", ["failure", "release", "lease"])
async def test_a_replayed_delivery_goes_out_when_its_sessions_claim_ends(
    stores: Stores, ends: str
) -> None:
    await replayed_before_a_send_in_flight(stores)
    [in_flight] = [d for d in await stores.one.list_deliveries() if d.event_id == "e3"]
    now = 1002.0
    if ends == "failure":  # retried later: the replayed ones, before it, go first
        assert await stores.one.record_failure(
            in_flight.id, "503", retry_at=5000.0, now=now, owner=A
        )
    elif ends == "release":
        assert await stores.one.release(A) == 1
    else:
        now = 1000.0 + LEASE_S + 1
    assert await claim(stores.other, B, now=now) == ["e1"]
    assert await claim(stores.other, B, now=now) == []


async def test_every_dead_letter_is_replayed_however_many(stores: Stores) -> None:
    count = 501  # past one step of a store that replays in steps
    for n in range(count):
        await accept(stores.one, f"e{n}", [f"s{n}"])
    held = await stores.one.claim("slack", 1000.0, count, owner=A, lease_s=LEASE_S)
    for delivery in held:
        assert await stores.one.record_failure(
            delivery.id, "404", retry_at=None, now=1000.0, owner=A
        )
    assert await stores.other.replay(None, 1001.0) == count
    assert await stores.one.list_deliveries("dead") == []
    assert len(await claim(stores.other, B, now=1001.0, limit=count)) == count


async def test_a_listing_of_no_deliveries_is_empty(stores: Stores) -> None:
    await accept(stores.one, "e1")
    assert await stores.one.list_deliveries(limit=0) == []
    assert [d.event_id for d in await stores.other.list_deliveries(limit=1)] == ["e1"]


async def test_a_dedupe_key_lasts_its_window_in_relays_time(stores: Stores) -> None:
    new = NewEvent("e1", b"{}", 1000.0)
    assert not (await stores.one.accept(new, [], dedupe_window_s=60)).duplicate
    again = NewEvent("e1", b"{}", 1059.0)
    assert (await stores.other.accept(again, [], dedupe_window_s=60)).duplicate
    later = NewEvent("e1", b"{}", 1060.0)
    assert not (await stores.other.accept(later, [], dedupe_window_s=60)).duplicate


async def test_the_delivery_log_and_queue_depths(stores: Stores) -> None:
    await accept(stores.one, "e1", ["s1"])
    await accept(stores.one, "e2", ["s2"])
    await accept(stores.one, "e3", ["s3"], destination="email")
    [first, _] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_failure(first.id, "404", retry_at=None, now=1000.0, owner=A)
    assert await stores.other.queue_depths() == {"slack": 1, "email": 1}
    newest = await stores.other.list_deliveries()
    assert [(d.event_id, d.status) for d in newest] == [
        ("e3", "pending"),
        ("e2", "pending"),
        ("e1", "dead"),
    ]
    [dead] = await stores.other.list_deliveries("dead")
    assert (dead.event_id, dead.attempts, dead.last_error) == ("e1", 1, "404")
    assert dead.body == b'{"id": "e1"}'
    assert [d.event_id for d in await stores.other.list_deliveries(limit=1)] == ["e3"]


async def test_retention_purges_finished_history_and_keeps_the_rest(stores: Stores) -> None:
    await accept(stores.one, "sent", ["s1"])
    await accept(stores.one, "retrying", ["s2"])
    await stores.one.accept(NewEvent("unrouted", b"{}", 1000.0), [], dedupe_window_s=WINDOW_S)
    await accept(stores.one, "recent", ["s3"], at=5000.0)
    sent, retrying = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_sent(sent.id, 1001.0, owner=A)
    assert await stores.one.record_failure(retrying.id, "503", retry_at=9000.0, now=1001.0, owner=A)

    assert await stores.other.purge(2000.0) == (1, 1, 0, 0)  # the sent delivery, and its event

    assert [d.event_id for d in await stores.one.list_deliveries()] == ["recent", "retrying"]
    assert await stores.one.purge(2000.0) == (0, 0, 0, 0)  # the retried one holds back the rest


async def test_a_paced_target_is_shared_by_every_process(stores: Stores) -> None:
    key, rate, burst = "target-1", 1.0, 3
    waits = [
        await store.reserve(key, 1000.0, rate, burst) for store in (stores.one, stores.other) * 2
    ]
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst, taken from both
    assert waits[3] == pytest.approx(1.0)  # nothing taken: no token was free
    assert await stores.other.reserve(key, 1001.0, rate, burst) == 0.0
    assert await stores.one.reserve("another", 1001.0, rate, burst) == 0.0


async def test_a_pause_holds_every_process_until_it_ends(stores: Stores) -> None:
    await stores.one.pause("target-1", 1030.0)
    await stores.other.pause("target-1", 1010.0)  # an earlier end does not shorten it
    assert await stores.other.reserve("target-1", 1000.0, None, 1) == pytest.approx(30.0)
    assert await stores.one.reserve("target-1", 1000.0, 1.0, 3) == pytest.approx(30.0)
    assert await stores.one.reserve("target-1", 1030.0, None, 1) == 0.0
    assert await stores.other.reserve("target-2", 1000.0, None, 1) == 0.0


async def test_a_conversations_thread_is_kept_once_and_shared(stores: Stores) -> None:
    assert await stores.one.thread("mail", "c1") is None
    assert await stores.one.start_thread("mail", "c1", "first", 1000.0) == "first"
    assert await stores.other.start_thread("mail", "c1", "second", 1000.0) == "first"
    assert await stores.other.thread("mail", "c1") == "first"
    assert await stores.other.thread("slack", "c1") is None  # one thread per destination


async def test_a_threads_messages_are_counted_across_processes(stores: Stores) -> None:
    assert await stores.one.count_message("slack", "c1", 1000.0) == 0  # no thread: nothing counted
    await stores.one.start_thread("slack", "c1", "parent", 1000.0)
    assert await stores.one.count_message("slack", "c1", 1000.0) == 2
    assert await stores.other.count_message("slack", "c1", 1000.0) == 3
    await stores.other.start_thread("slack", "c1", "another", 1000.0)  # kept: the count stays
    assert await stores.one.count_message("slack", "c1", 1000.0) == 4


async def test_a_gone_thread_is_replaced_for_every_process(stores: Stores) -> None:
    await stores.one.start_thread("slack", "c1", "old parent", 1000.0)
    assert await stores.one.count_message("slack", "c1", 1000.0) == 2
    await stores.other.replace_thread("slack", "c1", "new parent", 1000.0)
    assert await stores.one.thread("slack", "c1") == "new parent"
    assert await stores.one.count_message("slack", "c1", 1000.0) == 2  # counted afresh


async def test_retention_forgets_the_threads_of_conversations_long_quiet(stores: Stores) -> None:
    await stores.one.start_thread("mail", "over", "first email", 1000.0)
    await stores.one.start_thread("slack", "going on", "parent", 1000.0)
    assert await stores.other.count_message("slack", "going on", 4000.0) == 2  # a reply
    await stores.other.start_thread("slack", "replaced", "old parent", 1000.0)
    await stores.other.replace_thread("slack", "replaced", "new parent", 4500.0)

    assert (await stores.other.purge(2000.0)).threads == 1
    assert await stores.one.thread("mail", "over") is None  # its next message starts anew
    assert await stores.one.count_message("mail", "over", 5000.0) == 0
    assert await stores.one.thread("slack", "going on") == "parent"
    assert await stores.one.thread("slack", "replaced") == "new parent"
    assert (await stores.one.purge(2000.0)).threads == 0

    assert (await stores.one.purge(4200.0)).threads == 1  # quiet since its reply at 4000
    assert await stores.other.thread("slack", "going on") is None
    assert await stores.other.start_thread("slack", "going on", "a new parent", 5000.0) == (
        "a new parent"
    )
    assert await stores.other.count_message("slack", "going on", 5001.0) == 2  # counted afresh


async def accept_digested(store: Store, event_id: str, at: float, window_s: float = 3.0) -> None:
    delivery = NewDelivery("mail", "transcripts", None, "s1", digest_s=window_s)
    body = f'{{"id": "{event_id}"}}'.encode()
    result = await store.accept(NewEvent(event_id, body, at), [delivery], dedupe_window_s=60)
    assert (result.duplicate, result.deliveries) == (False, 1)


async def test_a_digest_gathers_a_conversations_window_into_one_delivery(stores: Stores) -> None:
    await accept_digested(stores.one, "e1", 1000.0)
    await accept_digested(stores.other, "e2", 1001.0)
    await accept_digested(stores.one, "e3", 1002.5)
    assert await stores.one.claim("mail", 1002.9, 10, owner=A, lease_s=LEASE_S) == []
    assert await stores.other.next_due_at("mail", 1002.0) == 1003.0

    [digest] = await stores.other.claim("mail", 1003.0, 10, owner=B, lease_s=LEASE_S)
    assert digest.digest and digest.event_id == "e1"
    events = await stores.one.digest_events(digest.id)
    assert [event_id for event_id, _ in events] == ["e1", "e2", "e3"]
    assert events[1][1] == b'{"id": "e2"}'

    # The window has closed: a later event opens the next digest, due after its own window.
    await accept_digested(stores.one, "e4", 1003.5)
    assert await stores.one.claim("mail", 1006.0, 10, owner=A, lease_s=LEASE_S) == []  # e1's first
    assert await stores.other.record_sent(digest.id, 1004.0, owner=B)
    [second] = await stores.one.claim("mail", 1006.5, 10, owner=A, lease_s=LEASE_S)
    assert [e for e, _ in await stores.one.digest_events(second.id)] == ["e4"]
    assert [d.status for d in await stores.one.list_deliveries()] == ["pending", "sent"]


async def test_a_purged_digest_takes_its_events_with_it(stores: Stores) -> None:
    await accept_digested(stores.one, "e1", 1000.0)
    await accept_digested(stores.one, "e2", 1001.0)
    await accept(stores.one, "later", ["s9"], at=9000.0)  # the newest, still to be sent
    [digest] = await stores.one.claim("mail", 1003.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.purge(5000.0) == (0, 0, 0, 0)  # unfinished: its events stay
    assert len(await stores.one.digest_events(digest.id)) == 2
    assert await stores.one.record_sent(digest.id, 1004.0, owner=A)
    assert await stores.other.purge(5000.0) == (1, 2, 0, 0)


# Attempts (SPEC 5: every attempt is recorded) ----------------------------------------


async def attempt(
    store: Store, owner: str, now: float, error: str | None, retry_at: float | None = None
) -> int:
    """Claim the one due delivery and record one attempt at it, begun 0.25 s before `now`:
    sent when `error` is None, else failed (retried at `retry_at`, or dead)."""
    [held] = await store.claim("slack", now, 10, owner=owner, lease_s=LEASE_S)
    if error is None:
        assert await store.record_sent(held.id, now, owner=owner, started_at=now - 0.25)
    else:
        assert await store.record_failure(
            held.id, error, retry_at=retry_at, now=now, owner=owner, started_at=now - 0.25
        )
    return held.id


async def test_every_attempt_is_kept_in_order_with_its_outcome_and_duration(
    stores: Stores,
) -> None:
    await accept(stores.one, "e1")
    for n, error in enumerate(("Slack answered 500", "Discord answered 429", "timed out")):
        delivery_id = await attempt(stores.one, A, 1000.0 + 10 * n, error, retry_at=1005 + 10 * n)
    await attempt(stores.other, B, 1030.0, None)

    kept = await stores.one.attempts(delivery_id)
    assert [(a.number, a.started_at, a.outcome, a.detail) for a in kept] == [
        (1, 999.75, "retried", "Slack answered 500"),
        (2, 1009.75, "retried", "Discord answered 429"),
        (3, 1019.75, "retried", "timed out"),
        (4, 1029.75, "sent", None),
    ]
    assert [a.duration_s for a in kept] == pytest.approx([0.25] * 4)
    assert await stores.other.attempts(delivery_id) == kept


async def test_a_replayed_dead_letter_shows_all_of_its_attempts(stores: Stores) -> None:
    await accept(stores.one, "e1")
    delivery_id = await attempt(stores.one, A, 1000.0, "SMTP 451 try later", retry_at=1001.0)
    await attempt(stores.one, A, 1001.0, "webhook answered 410: gone")  # dead
    assert await stores.other.replay([delivery_id], 1002.0) == 1
    await attempt(stores.other, B, 1003.0, None)

    kept = await stores.one.attempts(delivery_id)
    assert [(a.number, a.outcome) for a in kept] == [(1, "retried"), (2, "dead"), (3, "sent")]
    delivery = await stores.one.get_delivery(delivery_id)
    assert delivery is not None and (delivery.status, delivery.event_id) == ("sent", "e1")
    assert await stores.one.get_delivery(delivery_id + 1000) is None


async def test_retention_purges_attempts_with_their_delivery(stores: Stores) -> None:
    await accept(stores.one, "old", ["s1"])
    await accept(stores.one, "new", ["s2"], at=5000.0)
    old = await attempt(stores.one, A, 1001.0, None)

    assert (await stores.other.purge(2000.0)).deliveries == 1

    assert await stores.one.attempts(old) == []
    assert await stores.one.get_delivery(old) is None


async def test_an_attempt_without_a_start_took_no_time(stores: Stores) -> None:
    await accept(stores.one, "e1")
    [held] = await stores.one.claim("slack", 1000.0, 10, owner=A, lease_s=LEASE_S)
    assert await stores.one.record_sent(held.id, 1001.0, "1 recipient refused", owner=A)

    assert await stores.other.attempts(held.id) == [
        Attempt(1, 1001.0, 0.0, "sent", "1 recipient refused")
    ]


async def test_the_request_kept_with_an_event_is_given_back_exactly(stores: Stores) -> None:
    """The delivery's page shows what ingest kept of the request: every character of it,
    and nothing where an event was stored without one (a signal, or before relay kept
    them)."""
    kept = RequestRecord(
        "[2001:db8::7]:51234",
        (
            ("Content-Type", "application/json; charset=utf-8"),
            ("User-Agent", 'bitHuman/1.0 (ünïcødé; "quoted", \\ \t tab) ' + "x" * 150 + "…"),
            ("X-bitHuman-Event-Id", "evt-1"),
            ("X-Webhook-Secret", SECRET_VERIFIED),
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
        ),
    )
    slack = [NewDelivery("slack", "r", None, "s1")]
    for event_id, request in (
        ("with", kept),
        ("without", None),
        ("empty", RequestRecord(None, ())),
    ):
        event = NewEvent(event_id, b"{}", 1000.0, request)
        assert not (await stores.one.accept(event, slack, dedupe_window_s=WINDOW_S)).duplicate
    # A digest shows its first event's request.
    mail = [NewDelivery("mail", "r", None, "s1", digest_s=5.0)]
    for event_id, request in (("first", kept), ("second", RequestRecord("10.0.0.9", ()))):
        event = NewEvent(event_id, b"{}", 1001.0, request)
        await stores.one.accept(event, mail, dedupe_window_s=WINDOW_S)

    listed = await stores.other.list_deliveries()
    by_event = {d.event_id: d.id for d in listed}
    assert {d.request for d in listed} == {None}  # a listing does not read it
    found = {name: await stores.other.get_delivery(n) for name, n in by_event.items()}
    assert {name: d.request if d else "gone" for name, d in found.items()} == {
        "with": kept,
        "without": None,
        "empty": RequestRecord(None, ()),
        "first": kept,
    }
