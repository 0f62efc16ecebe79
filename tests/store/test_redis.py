"""What only the Redis store does: say at start what in Redis's settings could lose an
event, and work for the command line's delivery log and replay. A real redis-server."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import redis.asyncio

from relay.activity.tally import Tally
from relay.store.base import AcceptResult, DeliveryFilter, NewDelivery, NewEvent
from relay.store.redis import PREFIX, RedisStore, durability_problems
from tests.support.processes import run_cli
from tests.support.redis_server import RedisServer


@pytest.mark.parametrize(
    ("settings", "problems"),
    [
        ({"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}, []),
        (
            {"appendonly": "no", "appendfsync": "always", "maxmemory-policy": "noeviction"},
            ["appendonly is not yes: without the AOF, a Redis restart loses every event"
             " accepted since its last snapshot"],
        ),
        (
            {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"},
            ["appendfsync is everysec, not always: a Redis crash can lose up to a second"
             " of accepted events"],
        ),
        (
            {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "allkeys-lru"},
            ["maxmemory-policy is allkeys-lru, not noeviction: Redis may evict queued events"
             " when it is full"],
        ),
    ],
    ids=["safe", "no aof", "everysec", "evicting"],
)  # fmt: skip
def test_durability_problems_name_each_unsafe_setting(
    settings: dict[str, str], problems: list[str]
) -> None:
    assert durability_problems(settings) == problems


async def test_open_warns_about_everysec_of_a_real_redis(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync="everysec").start()
    try:
        caplog.set_level(logging.WARNING, logger="relay.store.redis")
        store = RedisStore(server.url)
        await store.open()
        await store.close()
    finally:
        server.stop()
    assert caplog.messages == [
        f"Redis at redis://127.0.0.1:{server.port}/0: appendfsync is everysec, not always:"
        " a Redis crash can lose up to a second of accepted events"
    ]


async def test_open_says_when_config_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis", extra_args=("--rename-command", "CONFIG", "")).start()
    try:
        caplog.set_level(logging.WARNING, logger="relay.store.redis")
        store = RedisStore(server.url)
        await store.open()  # relay still starts: it could only not check
        await store.close()
    finally:
        server.stop()
    [message] = caplog.messages
    assert message.startswith("could not check Redis's durability settings (")
    assert message.endswith(
        "): make sure it runs with appendonly yes, appendfsync always and"
        " maxmemory-policy noeviction"
    )


async def test_relay_deliveries_and_replay_work_on_redis(tmp_path: Path, redis_url: str) -> None:
    store = RedisStore(redis_url)
    await store.open()
    await store.accept(
        NewEvent("e1", b"{}", 1000.0), [NewDelivery("ops", "r", None, "s1")], dedupe_window_s=60
    )
    [held] = await store.claim("ops", 1000.0, 1, owner="o", lease_s=10.0)
    assert await store.record_failure(
        held.id, "Slack answered 404", retry_at=None, now=1000.0, owner="o"
    )
    await store.close()
    config = tmp_path / "relay.yaml"
    config.write_text(
        f'store: {{ url: "{redis_url}" }}\ndestinations: {{ ops: {{ type: console }} }}\n'
    )

    status, out = await run_cli("deliveries", "-c", str(config), "--status", "dead")
    assert status == 0
    [header, row] = out.splitlines()
    assert header.split() == ["ID", "DESTINATION", "STATUS", "ATTEMPTS", "AGE", "LAST", "ERROR"]
    assert row.split()[:4] == [str(held.id), "ops", "dead", "1"]
    assert row.endswith("Slack answered 404")

    status, out = await run_cli("replay", "-c", str(config), "--dead")
    assert (status, out) == (0, "requeued 1 dead delivery\n")
    status, out = await run_cli("deliveries", "-c", str(config), "--status", "pending")
    assert out.splitlines()[1].split()[:3] == [str(held.id), "ops", "pending"]


async def test_accepts_go_on_after_redis_forgot_its_scripts(redis_url: str) -> None:
    """A restarted Redis without its scripts (or a SCRIPT FLUSH): a batch of accepts loads
    the script again and is stored once, each event answered for itself."""
    store = RedisStore(redis_url)
    await store.open()
    try:
        await accept_one(store, "before")
        client = redis.asyncio.from_url(redis_url)
        await client.script_flush()
        await client.aclose()
        results = await asyncio.gather(*(accept_one(store, f"after-{n}") for n in range(5)))
        assert [r.duplicate for r in results] == [False] * 5
        assert (await accept_one(store, "after-0")).duplicate
        assert len(await store.list_deliveries(limit=100)) == 6
    finally:
        await store.close()


async def accept_one(store: RedisStore, event_id: str) -> AcceptResult:
    return await store.accept(
        NewEvent(event_id, b"{}", 1000.0),
        [NewDelivery("slack", "r", None, event_id)],
        dedupe_window_s=60.0,
    )


async def test_a_delivery_purged_while_a_listing_reads_it_does_not_end_the_listing(
    redis_url: str,
) -> None:
    """A listing reads an index's members, then their hashes: a member whose hash went in
    between (a purge) is left out, and the listing goes on below it."""
    store = RedisStore(redis_url)
    await store.open()
    client = redis.asyncio.from_url(redis_url)
    try:
        for n in range(450):
            await accept_one(store, f"e{n}")
        newest = (await store.find_deliveries(DeliveryFilter(), limit=1)).deliveries[0].id
        await client.delete(f"{PREFIX}d:{newest - 10:016d}")  # its member stays in `all`
        for where in (DeliveryFilter(), DeliveryFilter(text="{}")):
            found = await store.find_deliveries(where, limit=500, scan=1000)
            assert len(found.deliveries) == 449 and found.stopped_at is None
    finally:
        await client.aclose()
        await store.close()


async def test_agent_counters_an_older_relay_wrote_a_field_each_still_count(
    redis_url: str,
) -> None:
    """An older relay kept a field per agent counter ('agent\\t<agent>\\t<counter>'), in
    hours and rolled-up days, and may still write them beside this one during a rolling
    upgrade: the pages count them with this relay's maps, and the roll-up carries them
    into the day's map."""
    hour = int(time.time() // 3600) - 24 * 5  # a day before yesterday: rolled up below
    store = RedisStore(redis_url)
    await store.open()
    client = redis.asyncio.from_url(redis_url)
    try:
        tally = Tally(hour, "A\t1", ("events", "visitor_messages"), ("r",), hour * 3600.0, 9e9)
        await store.accept(
            NewEvent("e1", b"{}", hour * 3600.0), [], dedupe_window_s=60.0, tally=tally
        )
        await client.hset(
            f"{PREFIX}counters:{hour}",
            mapping={"agent\tA\t1\tevents": 2, "agent\tA2\tconversations": 1},
        )
        await client.hset(f"{PREFIX}counters-day:{hour // 24 - 1}", "agent\tA2\tevents", 4)
        await client.zadd(f"{PREFIX}counter-days", {str(hour // 24 - 1): hour // 24 - 1})
        expected = {
            ("A\t1", "events", 3), ("A\t1", "visitor_messages", 1),
            ("A2", "conversations", 1), ("A2", "events", 4),
        }  # fmt: skip
        since = (hour // 24 - 1) * 24
        for rolled in (False, True):
            if rolled:
                await store.roll_up_counters(time.time())
                assert not await client.exists(f"{PREFIX}counters:{hour}")
            counted = {(c.agent_id, c.counter, c.value) for c in await store.agent_counts(since)}
            assert counted == expected, rolled
            events = await store.hourly_counts(since, "events")
            assert sum(c.value for c in events) == 7, rolled
    finally:
        await client.aclose()
        await store.close()
