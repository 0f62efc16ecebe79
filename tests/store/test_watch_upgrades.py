"""Watches written by a relay of an older version, still running beside this one during a
rolling upgrade (SPEC 7), are claimed when due: the floors the indexes hold are made good
whatever wrote the watch last. A real SQLite file and a real redis-server."""

from __future__ import annotations

import sqlite3

import redis.asyncio

from relay.conversations.watch import Observation
from relay.store.base import NewEvent
from relay.store.redis import PREFIX, RedisStore, _conversation_part
from relay.store.sqlite import SqliteStore


def seen(at: float) -> Observation:
    return Observation("s1", "A1", None, "other", None, at, at, 120.0, 600.0)


async def test_a_watch_an_older_relay_wrote_to_sqlite_is_claimed_when_due(db_path: str) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        await store.accept(NewEvent("e1", b"{}", 1000.0), [], dedupe_window_s=60.0,
                           observation=seen(1000.0))  # fmt: skip
        with sqlite3.connect(db_path) as conn:  # what a version 9 relay writes: no floors
            conn.execute(
                "INSERT OR REPLACE INTO watches (conversation, opened_at, agent_id, started_at,"
                " last_event_at, last_received_at, visitor_messages, agent_messages, stretch,"
                " stretch_open, stretch_raised, ends, ended, end_due, due_at, claimed_by,"
                " lease_until) VALUES ('s1', 1000, 'A1', 1000, 1500, 1500, 0, 0, 0, 0, 0, 0, 0,"
                " 2100, 2100, NULL, 0)"
            )
        assert await store.claim_watches(2099.0, 10, owner="a", lease_s=10.0) == []
        [due] = await store.claim_watches(2100.0, 10, owner="a", lease_s=10.0)
        assert due.end_due == 2100.0
        assert (await store.purge(1499.0)).watches == 0
        assert (await store.purge(1501.0)).watches == 1
    finally:
        await store.close()


async def test_a_watch_an_older_relay_took_out_of_the_redis_index_is_put_back(
    redis_url: str,
) -> None:
    """An older relay that raised `ended` took the watch out of watches-due and kept no
    floor of its own; the conversation carries on through this one."""
    store = RedisStore(redis_url)
    await store.open()
    client = redis.asyncio.from_url(redis_url)
    try:
        await store.accept(NewEvent("e1", b"{}", 1000.0), [], dedupe_window_s=60.0,
                           observation=seen(1000.0))  # fmt: skip
        await client.zrem(f"{PREFIX}watches-due", _conversation_part("s1"))
        await store.accept(NewEvent("e2", b"{}", 1700.0), [], dedupe_window_s=60.0,
                           observation=seen(1700.0))  # fmt: skip
        assert await store.claim_watches(2299.0, 10, owner="a", lease_s=10.0) == []
        [due] = await store.claim_watches(2300.0, 10, owner="a", lease_s=10.0)
        assert due.end_due == 2300.0
    finally:
        await client.aclose()
        await store.close()
