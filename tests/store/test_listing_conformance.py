"""The Store contract for the console's listings (SPEC 8), on every store: filtered pages
newest first, searches that read a bounded stretch a call, and counts kept as deliveries
change."""

from __future__ import annotations

import json

from relay.store.base import DeliveryFilter, Found, NewDelivery, NewEvent, Store
from tests.store.conftest import Stores

WINDOW_S = 3600.0
A = "process-a"
LEASE_S = 10.0


def body(kind: str, message: str = "hello") -> bytes:
    data = {"session_id": "s1", "role": "user", "message": message}
    return json.dumps({"agent_id": "A1", "event_type": kind, "data": data}).encode()


async def accept(
    store: Store, event_id: str, raw: bytes, at: float, destinations: tuple[str, ...]
) -> None:
    deliveries = [NewDelivery(d, "r", None, event_id) for d in destinations]
    result = await store.accept(NewEvent(event_id, raw, at), deliveries, dedupe_window_s=WINDOW_S)
    assert not result.duplicate


async def fill(store: Store) -> None:
    """Six deliveries: e1..e3 to slack and crm, ids 1..6 in accepted order."""
    await accept(store, "e1", body("room_join"), 1000.0, ("slack", "crm"))
    await accept(store, "e2", body("chat.push", "I want a REFUND"), 2000.0, ("slack", "crm"))
    await accept(store, "e3", body("chat.push", "Ça va? café"), 3000.0, ("slack", "crm"))


def ids(found: Found) -> list[tuple[str, str]]:
    return [(d.event_id, d.destination) for d in found.deliveries]


async def test_listings_are_newest_first_and_page_below_an_id(stores: Stores) -> None:
    await fill(stores.one)
    everything = await stores.other.find_deliveries(DeliveryFilter())
    assert ids(everything) == [
        ("e3", "crm"), ("e3", "slack"), ("e2", "crm"), ("e2", "slack"), ("e1", "crm"),
        ("e1", "slack"),
    ]  # fmt: skip
    first = await stores.other.find_deliveries(DeliveryFilter(), limit=4)
    rest = await stores.other.find_deliveries(DeliveryFilter(), before_id=first.deliveries[-1].id)
    assert ids(first) + ids(rest) == ids(everything)
    assert (everything.stopped_at, first.stopped_at, rest.stopped_at) == (None, None, None)


async def test_each_filter_selects_alike(stores: Stores) -> None:
    await fill(stores.one)
    find = stores.other.find_deliveries
    assert ids(await find(DeliveryFilter(destination="crm"))) == [
        ("e3", "crm"), ("e2", "crm"), ("e1", "crm"),
    ]  # fmt: skip
    # Either spelling of a type, and a body that spelled it the other way.
    assert ids(await find(DeliveryFilter(event_type="room.join"))) == [
        ("e1", "crm"), ("e1", "slack"),
    ]  # fmt: skip
    assert ids(await find(DeliveryFilter(event_type="chat_push", destination="slack"))) == [
        ("e3", "slack"), ("e2", "slack"),
    ]  # fmt: skip
    assert ids(await find(DeliveryFilter(since=2000.0, until=3000.0))) == [
        ("e2", "crm"), ("e2", "slack"),
    ]  # fmt: skip
    # Text is found whatever its case, accents included.
    assert ids(await find(DeliveryFilter(text="refund"))) == [("e2", "crm"), ("e2", "slack")]
    assert ids(await find(DeliveryFilter(text="ÇA VA"))) == [("e3", "crm"), ("e3", "slack")]
    assert await find(DeliveryFilter(text="nothing like it")) == Found([])
    assert ids(await find(DeliveryFilter(status="pending", destination="slack"), limit=1)) == [
        ("e3", "slack")
    ]


async def test_an_unindexed_search_reads_a_stretch_of_ids_a_call_and_says_where_it_stopped(
    stores: Stores,
) -> None:
    find = stores.other.find_deliveries
    refund = DeliveryFilter(text="refund")
    assert await find(refund, scan=2) == Found([])  # an empty store: nothing to go on with
    await fill(stores.one)
    newest = (await find(DeliveryFilter(), limit=1)).deliveries[0].id
    # The newest two ids hold no refund (e3's): the next call goes on below them.
    first = await find(refund, scan=2)
    assert first == Found([], stopped_at=newest - 1)
    second = await find(refund, before_id=first.stopped_at, scan=2)
    assert ids(second) == [("e2", "crm"), ("e2", "slack")]
    assert second.stopped_at == newest - 3  # fewer than `limit`, and e1's are older
    # Down to the oldest delivery: nothing is left to search.
    assert await find(refund, before_id=second.stopped_at, scan=2) == Found([])
    # Beside an index: the pending ones among the newest three ids.
    pending = await find(DeliveryFilter(status="pending", text="refund"), scan=3)
    assert (ids(pending), pending.stopped_at) == ([("e2", "crm")], newest - 2)
    # A time filter is tested per delivery too.
    early = await find(DeliveryFilter(until=2000.0), scan=4)
    assert early == Found([], stopped_at=newest - 3)
    assert ids(await find(DeliveryFilter(until=2000.0), before_id=early.stopped_at, scan=4)) == [
        ("e1", "crm"), ("e1", "slack"),
    ]  # fmt: skip


async def test_a_search_that_finds_its_limit_within_its_stretch_is_the_page_as_ever(
    stores: Stores,
) -> None:
    await fill(stores.one)
    find = stores.other.find_deliveries
    page = await find(DeliveryFilter(event_type="chat.push"), limit=2, scan=2)
    assert page == Found(page.deliveries) and ids(page) == [("e3", "crm"), ("e3", "slack")]
    rest = await find(
        DeliveryFilter(event_type="chat.push"), before_id=page.deliveries[-1].id, scan=100
    )
    assert ids(rest) == [("e2", "crm"), ("e2", "slack")] and rest.stopped_at is None
    # An index answers status: however small `scan`, it never stops short.
    assert len((await find(DeliveryFilter(status="pending"), scan=1)).deliveries) == 6
    # A store without an index for a filter (Redis: destination) may stop short; then
    # searching on from where it stopped finds exactly the rest, in order.
    crm: list[tuple[str, str]] = []
    before = None
    for _ in range(10):
        step = await find(DeliveryFilter(destination="crm"), before_id=before, scan=1)
        crm += ids(step)
        if step.stopped_at is None:
            break
        before = step.stopped_at
    assert crm == [("e3", "crm"), ("e2", "crm"), ("e1", "crm")]


async def test_a_search_from_far_above_the_newest_id_starts_at_the_newest(
    stores: Stores,
) -> None:
    """A cursor above every id (a hand-made URL, a replay's `upto` near MAX_ID) searches
    the stretch below the newest delivery, not empty stretches down from the cursor."""
    find = stores.other.find_deliveries
    assert await find(DeliveryFilter(text="refund"), before_id=2**62, scan=2) == Found([])
    await fill(stores.one)
    newest = (await find(DeliveryFilter(), limit=1)).deliveries[0].id
    found = await find(DeliveryFilter(text="refund"), before_id=2**62, scan=4)
    assert ids(found) == [("e2", "crm"), ("e2", "slack")]
    assert found.stopped_at == newest - 3


async def test_counts_follow_every_change_of_status(stores: Stores) -> None:
    empty = await stores.one.delivery_counts()
    assert empty.by_status == {"pending": 0, "failed": 0, "dead": 0, "sent": 0}
    assert empty.by_destination == {}
    await fill(stores.one)
    claimed = await stores.one.claim("slack", 5000.0, 10, owner=A, lease_s=LEASE_S)
    first, second, third = sorted(claimed, key=lambda d: d.id)
    assert await stores.one.record_sent(first.id, 5001.0, owner=A)
    assert await stores.one.record_failure(second.id, "503", retry_at=9000.0, now=5001.0, owner=A)
    assert await stores.one.record_failure(third.id, "400", retry_at=None, now=5001.0, owner=A)
    counts = await stores.other.delivery_counts()
    assert counts.by_status == {"pending": 3, "failed": 1, "dead": 1, "sent": 1}
    assert counts.by_destination == {
        "crm": {"pending": 3},
        "slack": {"sent": 1, "failed": 1, "dead": 1},
    }
    assert await stores.other.replay([third.id], 6000.0) == 1
    counts = await stores.one.delivery_counts()
    assert counts.by_status == {"pending": 4, "failed": 1, "dead": 0, "sent": 1}
    assert counts.by_destination["slack"] == {"sent": 1, "failed": 1, "pending": 1}
    # The retention purge takes the sent one: it is no longer counted.
    assert (await stores.one.purge(9e9)).deliveries == 1
    assert (await stores.other.delivery_counts()).by_status["sent"] == 0
