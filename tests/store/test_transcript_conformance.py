"""Transcripts in the Store contract (SPEC 8.1), one suite for every store: the events
stored with a conversation, oldest first, each with the deliveries it is part of and their
statuses as they change."""

from __future__ import annotations

from relay.store.base import EventDelivery, NewDelivery, NewEvent, Store
from tests.store.conftest import Stores

LEASE_S = 10.0


async def accept(
    store: Store, event_id: str, at: float, conversation: str | None, *destinations: str,
    digest_s: float | None = None,
) -> None:  # fmt: skip
    result = await store.accept(
        NewEvent(event_id, f'{{"id": "{event_id}"}}'.encode(), at, conversation=conversation),
        [NewDelivery(d, "r", None, conversation or event_id, digest_s) for d in destinations],
        dedupe_window_s=60.0,
    )
    assert not result.duplicate


def shown(deliveries: tuple[EventDelivery, ...]) -> list[tuple[str, str]]:
    return [(d.destination, d.status) for d in deliveries]


async def test_a_transcript_lists_its_events_in_order_with_where_each_went(
    stores: Stores,
) -> None:
    await accept(stores.one, "join", 1000.0, "s1", "audit")
    await accept(stores.other, "ask", 1001.0, "s1", "audit", "crm")
    await accept(stores.one, "elsewhere", 1002.0, "s2", "audit")
    await accept(stores.one, "unlisted", 1003.0, None, "audit")
    await accept(stores.other, "answer", 1004.0, "s1")
    transcript = await stores.one.transcript("s1", 100)
    assert not transcript.earlier
    assert [e.event_id for e in transcript.events] == ["join", "ask", "answer"]
    assert [e.received_at for e in transcript.events] == [1000.0, 1001.0, 1004.0]
    assert transcript.events[1].body == b'{"id": "ask"}'
    assert [shown(e.deliveries) for e in transcript.events] == [
        [("audit", "pending")],
        [("audit", "pending"), ("crm", "pending")],
        [],
    ]
    # Statuses as they are when read: one sent, one dead.
    [crm] = await stores.other.claim("crm", 1010.0, 10, owner="p", lease_s=LEASE_S)
    assert await stores.other.record_failure(
        crm.id, "no such hook", retry_at=None, now=1010.0, owner="p"
    )
    # A session's deliveries to a destination go one at a time: send until none is left.
    while claimed := await stores.one.claim("audit", 1010.0, 10, owner="p", lease_s=LEASE_S):
        for delivery in claimed:
            assert await stores.one.record_sent(delivery.id, 1010.0, owner="p")
    ask = (await stores.other.transcript("s1", 100)).events[1]
    assert shown(ask.deliveries) == [("audit", "sent"), ("crm", "dead")]
    assert ask.deliveries[1].id == crm.id


async def test_a_transcript_gives_the_newest_events_and_says_earlier_ones_were_left(
    stores: Stores,
) -> None:
    for n in range(5):
        await accept(stores.one, f"e{n}", 1000.0 + n, "s1")
    transcript = await stores.one.transcript("s1", 3)
    assert [e.event_id for e in transcript.events] == ["e2", "e3", "e4"]
    assert transcript.earlier
    assert not (await stores.one.transcript("s1", 5)).earlier
    assert (await stores.one.transcript("nobody", 5)).events == []


async def test_an_event_that_joined_a_digest_shows_the_digest_beside_it(
    stores: Stores,
) -> None:
    await accept(stores.one, "first", 1000.0, "s1", "mail", digest_s=300.0)
    await accept(stores.other, "second", 1001.0, "s1", "mail", digest_s=300.0)
    first, second = (await stores.one.transcript("s1", 10)).events
    assert shown(first.deliveries) == [("mail", "pending")]
    assert second.deliveries == first.deliveries  # the one digest delivery
