"""The Store contract for the console's listings (SPEC 8), on every store: filtered pages
newest first, and counts kept as deliveries change."""

from __future__ import annotations

import json

from relay.store.base import DeliveryFilter, NewDelivery, NewEvent, Store
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


def ids(found: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(d.event_id, d.destination) for d in found]


async def test_listings_are_newest_first_and_page_below_an_id(stores: Stores) -> None:
    await fill(stores.one)
    everything = await stores.other.find_deliveries(DeliveryFilter())
    assert ids(everything) == [
        ("e3", "crm"), ("e3", "slack"), ("e2", "crm"), ("e2", "slack"), ("e1", "crm"),
        ("e1", "slack"),
    ]  # fmt: skip
    first = await stores.other.find_deliveries(DeliveryFilter(), limit=4)
    rest = await stores.other.find_deliveries(DeliveryFilter(), before_id=first[-1].id)
    assert ids(first + rest) == ids(everything)


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
    assert await find(DeliveryFilter(text="nothing like it")) == []
    assert ids(await find(DeliveryFilter(status="pending", destination="slack"), limit=1)) == [
        ("e3", "slack")
    ]


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
