"""Watches written by a relay of an older version, still running beside this one during a
rolling upgrade (SPEC 7), are claimed when due: on SQLite the floors the indexes hold are
made good whatever wrote the watch last; on Redis an older relay's watch (a hash) is taken
over as this relay keeps them (packed). A real SQLite file and a real redis-server."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable
from importlib import resources
from typing import Any

import redis.asyncio
from redis.typing import EncodableT, FieldT

from relay.conversations.watch import WATCH_FIELDS, Observation
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


def older_hash(
    client: redis.asyncio.Redis, conversation: str, **fields: str
) -> Awaitable[list[Any]]:
    """Write a watch as a relay before the packed watches kept it in Redis: a hash of text
    fields (booleans '0' or '1', a None one absent), in watches-due by its due_at and in
    watches-quiet by its last event."""
    digest = _conversation_part(conversation)
    base: dict[FieldT, EncodableT] = {
        "conversation": conversation, "opened_at": "1000", "agent_id": "A1",
        "started_at": "1000", "last_event_at": "1500", "last_received_at": "1500",
        "visitor_messages": "1", "agent_messages": "0", "first_visitor_at": "1000",
        "stretch": "1", "stretch_open": "1", "stretch_raised": "0", "asked_at": "1000",
        "asked_received_at": "1000", "asked_message": "anyone?", "unanswered_due": "1120",
        "ends": "0", "ended": "0", "end_due": "2100", "due_at": "1120", "claimed_by": "",
        "lease_until": "0", "quiet_at": "1500",
    }  # fmt: skip
    base.update(fields)
    pipe = client.pipeline()
    pipe.hset(f"{PREFIX}watch:{digest}", mapping=base)
    pipe.zadd(f"{PREFIX}watches-due", {digest: float(str(base["due_at"]))})
    pipe.zadd(f"{PREFIX}watches-quiet", {digest: float(str(base["quiet_at"]))})
    return pipe.execute()


async def test_a_watch_an_older_relay_kept_as_a_hash_is_taken_over_at_start(
    redis_url: str,
) -> None:
    client = redis.asyncio.from_url(redis_url)
    await older_hash(client, "s-old")
    store = RedisStore(redis_url)
    await store.open()  # takes over every older watch
    try:
        assert await client.exists(f"{PREFIX}watch:{_conversation_part('s-old')}") == 0
        assert await client.zcard(f"{PREFIX}watches-due") == 0
        assert await client.zcard(f"{PREFIX}watches-quiet") == 0
        watch = await store.watch("s-old")
        assert watch is not None
        assert (watch.asked_message, watch.stretch, watch.stretch_open) == ("anyone?", 1, True)
        assert (watch.unanswered_due, watch.end_due, watch.ended) == (1120.0, 2100.0, False)
        assert await store.claim_watches(1119.0, 10, owner="a", lease_s=10.0) == []
        [due] = await store.claim_watches(1120.0, 10, owner="a", lease_s=10.0)
        assert due.conversation == "s-old"
        assert (await store.purge(1499.0)).watches == 0
        assert (await store.purge(1501.0)).watches == 1
        assert await store.watch("s-old") is None
    finally:
        await client.aclose()
        await store.close()


async def test_a_watch_an_older_relay_still_running_writes_is_taken_over_as_met(
    redis_url: str,
) -> None:
    """During a rolling upgrade an older relay keeps writing hashes: this relay's next event
    for the conversation carries that watch on, and a claim meets the others."""
    store = RedisStore(redis_url)
    await store.open()
    client = redis.asyncio.from_url(redis_url)
    try:
        await older_hash(client, "s-carried")
        await older_hash(client, "s-quiet", unanswered_due="1300", due_at="1300")
        answer = Observation("s-carried", "A1", None, "agent", None, 1001.0, 1600.0, 120.0, 600.0)
        await store.accept(NewEvent("e1", b"{}", 1600.0), [], dedupe_window_s=60.0,
                           observation=answer)  # fmt: skip
        carried = await store.watch("s-carried")
        assert carried is not None
        assert (carried.visitor_messages, carried.agent_messages) == (1, 1)
        assert (carried.stretch_open, carried.first_answer_at) == (False, 1001.0)
        assert carried.end_due == 2200.0
        [due] = await store.claim_watches(1300.0, 10, owner="a", lease_s=10.0)
        assert due.conversation == "s-quiet"
        assert await client.zcard(f"{PREFIX}watches-quiet") == 0
    finally:
        await client.aclose()
        await store.close()


def test_the_lua_watch_fields_are_watch_py_s() -> None:
    """lib_watch.lua packs a watch by the position of each field: its list must be
    WATCH_FIELDS, in order, then what the store keeps beside them."""
    lua = (resources.files("relay.store") / "lua" / "lib_watch.lua").read_text()
    found = re.search(r"local WATCH_FIELDS = \{(.*?)\}", lua, re.S)
    assert found is not None
    names = re.findall(r"'(\w+)'", found.group(1))
    kept_beside = ["claimed_by", "lease_until", "quiet_at"]
    counted = ["events", "answer_counted", "unanswered_counted"]  # sqlite_watches v13
    assert names == [*WATCH_FIELDS, *kept_beside, *counted]
