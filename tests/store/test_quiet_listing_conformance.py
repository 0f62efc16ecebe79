"""Listing watches by their quiet floor (Store.watches_by_quiet), one suite for every
store: highest first, read in steps from a cursor, each watch once, ties included."""

from __future__ import annotations

from relay.conversations.watch import Observation
from relay.store.base import QUIET_STEP_S, NewEvent, QuietWatch, Store
from tests.store.conftest import Stores


async def see(store: Store, conversation: str, at: float) -> None:
    seen = Observation(conversation, "A1", None, "other", None, at, at, 0.0, 600.0)
    event_id = f"{conversation}@{at}"
    result = await store.accept(
        NewEvent(event_id, b"{}", at), [], dedupe_window_s=60.0, observation=seen
    )
    assert not result.duplicate


async def read_all(store: Store, step: int) -> list[QuietWatch]:
    found: list[QuietWatch] = []
    below = None
    while batch := await store.watches_by_quiet(below, step):
        found += batch
        below = (batch[-1].quiet_at, batch[-1].watch.conversation)
    return found


async def test_watches_come_by_their_quiet_floor_highest_first_in_steps(stores: Stores) -> None:
    for n, at in enumerate([1000.0, 5000.0, 3000.0, 9000.0, 7000.0]):
        await see(stores.one, f"s{n}", at)
    await see(stores.other, "s0", 1100.0)  # within a step: its floor stays at 1000
    found = await read_all(stores.other, 2)
    assert [(q.watch.conversation, q.quiet_at) for q in found] == [
        ("s3", 9000.0), ("s4", 7000.0), ("s1", 5000.0), ("s2", 3000.0), ("s0", 1000.0),
    ]  # fmt: skip
    assert found[-1].watch.last_received_at == 1100.0
    assert all(q.quiet_at <= q.watch.last_received_at < q.quiet_at + QUIET_STEP_S for q in found)


async def test_ties_on_the_floor_are_each_listed_once(stores: Stores) -> None:
    names = [f"tie-{n}" for n in range(7)]
    for name in names:
        await see(stores.one, name, 2000.0)
    await see(stores.one, "later", 2500.0)
    for step in (1, 2, 3, 100):
        found = await read_all(stores.one, step)
        assert found[0].watch.conversation == "later"
        assert sorted(q.watch.conversation for q in found[1:]) == names
