from __future__ import annotations

import asyncio
import resource
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import pytest

from relay.activity.tally import AGENT_COUNTERS, AgentCount, HourCount, Tally
from relay.conversations.watch import Observation
from relay.request_record import RequestRecord
from relay.store import sqlite_counters, sqlite_ops, sqlite_transcripts, sqlite_watches
from relay.store.base import Delivery, DeliveryFilter, NewDelivery, NewEvent, StoreUnavailable
from relay.store.sqlite import SqliteStore

WINDOW_S = 3600.0


def event(event_id: str, received_at: float = 1000.0, body: bytes = b'{"x":1}') -> NewEvent:
    return NewEvent(event_id=event_id, body=body, received_at=received_at)


def delivery(destination: str = "slack", session: str = "s1", rule: str = "r") -> NewDelivery:
    return NewDelivery(destination=destination, rule=rule, template=None, session_key=session)


OWNER = "test-process"


async def due(store: SqliteStore, destination: str, now: float, limit: int) -> list[Delivery]:
    """Claim what may be sent now with a lease that ends at once: what a reader of the
    queue at `now` would see, and each delivery's outcome may then be recorded."""
    return await store.claim(destination, now, limit, owner=OWNER, lease_s=0.0)


def count_rows(db_path: str, table: str) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_accept_then_due_returns_the_delivery_with_its_body(store: SqliteStore) -> None:
    result = await store.accept(
        event("e1", 1000.0, b"raw"),
        [delivery("slack"), delivery("discord")],
        dedupe_window_s=WINDOW_S,
    )
    assert (result.duplicate, result.event_id, result.deliveries) == (False, "e1", 2)

    assert await due(store, "slack", now=999.0, limit=10) == []
    [d] = await due(store, "slack", now=1000.0, limit=10)
    assert (d.event_id, d.destination, d.rule, d.template) == ("e1", "slack", "r", None)
    assert (d.status, d.attempts, d.last_error, d.body) == ("pending", 0, None, b"raw")
    assert d.created_at == d.next_attempt_at == 1000.0
    assert await store.next_due_at("slack", 999.0) == 1000.0
    assert await store.next_due_at("email", 999.0) is None


async def test_duplicate_within_window_stores_nothing(store: SqliteStore, db_path: str) -> None:
    await store.accept(event("e1", 1000.0), [delivery()], dedupe_window_s=60)
    again = await store.accept(event("e1", 1059.0), [delivery()], dedupe_window_s=60)
    assert (again.duplicate, again.event_id, again.deliveries) == (True, "e1", 0)
    assert len(await store.list_deliveries()) == 1
    assert count_rows(db_path, "events") == 1


async def test_same_id_after_window_is_accepted_again(store: SqliteStore) -> None:
    await store.accept(event("e1", 1000.0), [delivery()], dedupe_window_s=60)
    again = await store.accept(event("e1", 1060.0), [delivery()], dedupe_window_s=60)
    assert not again.duplicate
    # the window restarts from the second acceptance
    third = await store.accept(event("e1", 1100.0), [delivery()], dedupe_window_s=60)
    assert third.duplicate
    assert len(await store.list_deliveries()) == 2


async def test_same_id_twice_in_one_batch_is_accepted_once(store: SqliteStore) -> None:
    results = await asyncio.gather(
        *(store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S) for _ in range(5))
    )
    assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
    assert len(await store.list_deliveries()) == 1


async def test_concurrent_accepts_share_commits_and_survive_reopen(db_path: str) -> None:
    store = SqliteStore(db_path)
    await store.open()
    results = await asyncio.gather(
        *(
            store.accept(
                event(f"e{i}", 1000.0 + i), [delivery(session=f"s{i}")], dedupe_window_s=WINDOW_S
            )
            for i in range(200)
        )
    )
    assert not any(r.duplicate for r in results)
    assert store.stats.commits < 200
    await store.close()

    reopened = SqliteStore(db_path)
    await reopened.open()
    try:
        found = await due(reopened, "slack", now=5000.0, limit=500)
        assert [d.event_id for d in found] == [f"e{i}" for i in range(200)]
    finally:
        await reopened.close()


async def test_a_bad_operation_fails_alone_in_its_batch(store: SqliteStore, db_path: str) -> None:
    bad = NewDelivery(destination=cast(str, None), rule="r", template=None, session_key="s")
    results = await asyncio.gather(
        store.accept(event("good1"), [delivery()], dedupe_window_s=WINDOW_S),
        store.accept(event("bad"), [bad], dedupe_window_s=WINDOW_S),
        store.accept(event("good2"), [delivery()], dedupe_window_s=WINDOW_S),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert store.stats.commits < 3  # they did share a transaction
    ids = sorted(d.event_id for d in await store.list_deliveries())
    assert ids == ["good1", "good2"]
    assert count_rows(db_path, "events") == 2  # the bad one's event row was rolled back
    # the bad event left no dedupe key behind
    retry = await store.accept(event("bad"), [delivery()], dedupe_window_s=WINDOW_S)
    assert not retry.duplicate


async def test_failed_delivery_holds_back_its_session_only(store: SqliteStore) -> None:
    for i, (dest, session) in enumerate(
        [("slack", "a"), ("slack", "a"), ("slack", "b"), ("discord", "a")]
    ):
        await store.accept(
            event(f"e{i}", 1000.0 + i), [delivery(dest, session)], dedupe_window_s=WINDOW_S
        )
    first = await due(store, "slack", now=2000.0, limit=10)
    assert [d.event_id for d in first] == ["e0", "e2"]  # e1 waits for e0

    await store.record_failure(first[0].id, "503", retry_at=3000.0, now=2000.0, owner=OWNER)
    assert [d.event_id for d in await due(store, "slack", now=2001.0, limit=10)] == ["e2"]
    assert [d.event_id for d in await due(store, "discord", now=2001.0, limit=10)] == ["e3"]
    # e1's own next_attempt_at (1001) is past, but it cannot go before e0's retry
    await store.record_sent(first[1].id, now=2001.0, owner=OWNER)
    assert await store.next_due_at("slack", 2001.0) == 3000.0

    [retried] = await due(store, "slack", now=3000.0, limit=10)
    assert (retried.event_id, retried.status, retried.attempts) == ("e0", "failed", 1)
    assert retried.last_error == "503"
    await store.record_sent(retried.id, now=3000.0, owner=OWNER)
    assert [d.event_id for d in await due(store, "slack", now=3000.0, limit=10)] == ["e1"]


async def test_due_respects_limit_in_accepted_order(store: SqliteStore) -> None:
    for i in range(5):
        await store.accept(
            event(f"e{i}", 1000.0 + i), [delivery(session=f"s{i}")], dedupe_window_s=WINDOW_S
        )
    found = await due(store, "slack", now=2000.0, limit=3)
    assert [d.event_id for d in found] == ["e0", "e1", "e2"]


async def test_dead_letter_list_and_replay(store: SqliteStore) -> None:
    for i in range(3):
        await store.accept(
            event(f"e{i}", 1000.0 + i), [delivery(session=f"s{i}")], dedupe_window_s=WINDOW_S
        )
    d0, d1, d2 = await due(store, "slack", now=2000.0, limit=10)
    await store.record_failure(d0.id, "404 not found", retry_at=None, now=2000.0, owner=OWNER)
    await store.record_failure(d1.id, "invalid_auth", retry_at=None, now=2000.0, owner=OWNER)
    await store.record_sent(d2.id, now=2000.0, owner=OWNER)

    dead = await store.list_deliveries("dead")
    assert [(d.event_id, d.last_error, d.attempts) for d in dead] == [
        ("e1", "invalid_auth", 1),
        ("e0", "404 not found", 1),
    ]
    assert [d.event_id for d in await store.list_deliveries("sent")] == ["e2"]
    assert [d.event_id for d in await store.list_deliveries(limit=2)] == ["e2", "e1"]
    assert await due(store, "slack", now=9999.0, limit=10) == []

    assert await store.replay([d0.id, d2.id], now=3000.0) == 1  # d2 is sent: left alone
    [replayed] = await due(store, "slack", now=3000.0, limit=10)
    assert (replayed.id, replayed.status, replayed.attempts) == (d0.id, "pending", 0)
    assert replayed.next_attempt_at == 3000.0
    assert replayed.last_error == "404 not found"  # kept for history
    assert [d.status for d in await store.list_deliveries("sent")] == ["sent"]

    assert await store.replay(None, now=3000.0) == 1  # all dead: d1
    assert await store.list_deliveries("dead") == []
    assert len(await due(store, "slack", now=3000.0, limit=10)) == 2


async def test_restart_keeps_unfinished_deliveries(db_path: str) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
    await store.accept(event("e2"), [delivery(session="s2")], dedupe_window_s=WINDOW_S)
    [d1, _] = await due(store, "slack", now=2000.0, limit=10)
    await store.record_failure(d1.id, "timeout", retry_at=2500.0, now=2000.0, owner=OWNER)
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ping()

    store = SqliteStore(db_path)
    await store.open()
    try:
        assert [d.event_id for d in await due(store, "slack", now=2000.0, limit=10)] == ["e2"]
        assert [d.event_id for d in await due(store, "slack", now=2500.0, limit=10)] == ["e1", "e2"]
        dup = await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
        assert dup.duplicate  # dedupe keys survive a restart too
    finally:
        await store.close()


async def test_locked_database_is_unavailable_then_recovers(
    store: SqliteStore, db_path: str
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past busy_timeout
    try:
        with pytest.raises(
            StoreUnavailable, match="cannot start a transaction: database is locked"
        ):
            await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        other.execute("ROLLBACK")
        other.close()
    result = await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
    assert not result.duplicate
    await store.ping()


async def test_disk_full_at_commit_is_unavailable_then_recovers(store: SqliteStore) -> None:
    await store.ping()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Writes past 4 KiB now fail with EFBIG, as on a full disk (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(StoreUnavailable, match=r"commit failed.*disk I/O error"):
            await store.accept(
                event("e1", body=b"x" * 20000), [delivery()], dedupe_window_s=WINDOW_S
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    result = await store.accept(
        event("e1", body=b"x" * 20000), [delivery()], dedupe_window_s=WINDOW_S
    )
    assert not result.duplicate  # the failed batch left no dedupe key
    assert len(await store.list_deliveries()) == 1


async def test_expired_dedupe_keys_are_purged(store: SqliteStore, db_path: str) -> None:
    await store.accept(event("old", 1000.0), [], dedupe_window_s=10)
    for i in range(70):  # one batch each: the purge runs every 64 batches
        await store.accept(event(f"new{i}", 2000.0 + i), [], dedupe_window_s=10)
    keys = {row[0] for row in sqlite3.connect(db_path).execute("SELECT event_id FROM dedupe")}
    assert "old" not in keys
    assert "new69" in keys


async def test_schema_from_a_newer_relay_is_refused(db_path: str) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_ops.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreUnavailable, match="newer than this relay"):
        await SqliteStore(db_path).open()


async def test_a_schema_created_by_another_process_meanwhile_is_used_as_is(
    db_path: str,
) -> None:
    # Two relay processes start on a new file: the second reads version 0, then waits for
    # the write lock while the first creates the schema. It must not create it again.
    Path(db_path).parent.mkdir(parents=True)
    first = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    first.execute("PRAGMA journal_mode = WAL")
    first.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    second_open = loop.create_task(SqliteStore(db_path).open())
    await asyncio.sleep(0.3)  # the second store has read version 0 and waits for the lock
    assert not second_open.done()
    sqlite_ops.upgrade_schema(first, 0)
    first.execute("COMMIT")
    first.close()
    await second_open  # before the fix: "table events already exists"
    store = SqliteStore(db_path)
    await store.open()
    result = await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
    await store.close()
    assert not result.duplicate
    assert count_rows(db_path, "events") == 1


# --- retention ----------------------------------------------------------------------------


def history(db_path: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the stored event ids, and each delivery's (event id, status), in order."""
    with sqlite3.connect(db_path) as conn:
        events = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY id")]
        deliveries = conn.execute(
            "SELECT e.event_id, d.status FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_ref ORDER BY d.id"
        ).fetchall()
    return events, [(str(e), str(s)) for e, s in deliveries]


def purge(
    db_path: str, before: float, limit: int = 500, max_body_bytes: int = 2**30
) -> tuple[int, int]:
    with sqlite3.connect(db_path, isolation_level=None) as conn:
        conn.execute("BEGIN IMMEDIATE")
        purged = sqlite_ops.purge_history(conn, before, limit, max_body_bytes)
        conn.execute("COMMIT")
    return purged


async def accept_finished(
    store: SqliteStore, event_id: str, received_at: float, status: str | None, body: bytes = b"{}"
) -> None:
    """Accept an event with one delivery, then, a second later, send it (sent), kill it
    (dead), fail it for a retry (failed), or leave it pending (None); status "none"
    accepts it with no delivery at all."""
    deliveries = [] if status == "none" else [delivery(session=event_id)]
    await store.accept(event(event_id, received_at, body), deliveries, dedupe_window_s=WINDOW_S)
    if status in ("sent", "dead", "failed"):
        (found,) = [d for d in await due(store, "slack", 1e12, 100) if d.event_id == event_id]
        finished = received_at + 1
        if status == "sent":
            await store.record_sent(found.id, finished, owner=OWNER)
        else:
            retry_at = None if status == "dead" else 1e12
            await store.record_failure(
                found.id, "503", retry_at=retry_at, now=finished, owner=OWNER
            )


async def test_history_past_retention_goes_oldest_first_up_to_the_first_unfinished(
    store: SqliteStore, db_path: str
) -> None:
    for event_id, received_at, status in [
        ("old-sent", 1000.0, "sent"),
        ("old-dead", 1001.0, "dead"),
        ("old-unrouted", 1002.0, "none"),
        ("old-pending", 1003.0, None),
        ("old-sent-after-pending", 1004.0, "sent"),
        ("young-sent", 9000.0, "sent"),
    ]:
        await accept_finished(store, event_id, received_at, status)

    assert purge(db_path, before=5000.0) == (2, 3)
    events, deliveries = history(db_path)
    # The pending delivery holds back itself, its event and everything accepted after it.
    assert events == ["old-pending", "old-sent-after-pending", "young-sent"]
    assert deliveries == [
        ("old-pending", "pending"),
        ("old-sent-after-pending", "sent"),
        ("young-sent", "sent"),
    ]

    (pending,) = await due(store, "slack", 1e12, 100)
    await store.record_sent(pending.id, 4000.0, owner=OWNER)
    assert purge(db_path, before=5000.0) == (2, 2)
    assert history(db_path) == (["young-sent"], [("young-sent", "sent")])
    assert purge(db_path, before=5000.0) == (0, 0)


@pytest.mark.parametrize("status", ["failed", "finished late", "replayed"])
async def test_a_delivery_not_finished_before_the_cutoff_holds_back_the_purge(
    store: SqliteStore, db_path: str, status: str
) -> None:
    await accept_finished(store, "old-sent", 1000.0, "sent")
    if status == "failed":
        await accept_finished(store, "old-held", 1001.0, "failed")
    elif status == "finished late":  # retried for hours: kept for the retention after that
        await accept_finished(store, "old-held", 1001.0, None)
        (found,) = await due(store, "slack", 1e12, 100)
        await store.record_sent(found.id, 6000.0, owner=OWNER)
    else:  # dead-lettered, then put back in the queue by `relay replay`
        await accept_finished(store, "old-held", 1001.0, "dead")
        assert await store.replay(None, now=1100.0) == 1
    await accept_finished(store, "old-after", 1002.0, "sent")
    await accept_finished(store, "newest", 1003.0, "sent")

    assert purge(db_path, before=5000.0) == (1, 1)
    assert history(db_path)[0] == ["old-held", "old-after", "newest"]


async def test_the_newest_rows_stay_so_ids_are_never_reused(
    store: SqliteStore, db_path: str
) -> None:
    for n in range(3):
        await accept_finished(store, f"e{n}", 1000.0 + n, "sent")
    highest = max(d.id for d in await store.list_deliveries())
    assert purge(db_path, before=9e9) == (2, 2)
    assert history(db_path) == (["e2"], [("e2", "sent")])
    await accept_finished(store, "later", 2000.0, "sent")
    assert min(d.id for d in await store.list_deliveries()) == highest
    assert max(d.id for d in await store.list_deliveries()) == highest + 1


async def test_one_purge_step_takes_event_bodies_up_to_about_max_bytes(
    store: SqliteStore, db_path: str
) -> None:
    for n in range(6):
        await accept_finished(store, f"e{n}", 1000.0 + n, "sent", body=b"x" * 1000)
    # Two bodies reach 1,500 bytes: the step ends there; deliveries carry no body.
    assert purge(db_path, before=9e9, max_body_bytes=1500) == (5, 2)
    assert purge(db_path, before=9e9, max_body_bytes=1500) == (0, 2)
    assert history(db_path)[0] == ["e4", "e5"]


async def test_an_event_whose_deliveries_a_step_splits_waits_for_the_last_of_them(
    store: SqliteStore, db_path: str
) -> None:
    three = [delivery(destination) for destination in ("slack", "discord", "mail")]
    await store.accept(event("split", 1000.0), three, dedupe_window_s=WINDOW_S)
    for destination in ("slack", "discord", "mail"):
        (found,) = await due(store, destination, 1e12, 10)
        await store.record_sent(found.id, 1001.0, owner=OWNER)
    await accept_finished(store, "newest", 2000.0, "sent")
    assert purge(db_path, before=5000.0, limit=2) == (2, 0)
    assert purge(db_path, before=5000.0, limit=2) == (1, 1)
    assert history(db_path)[0] == ["newest"]


async def test_one_purge_step_deletes_at_most_limit_rows_of_each_table(
    store: SqliteStore, db_path: str
) -> None:
    for n in range(5):
        await accept_finished(store, f"e{n}", 1000.0 + n, "sent")
    assert purge(db_path, before=5000.0, limit=2) == (2, 2)
    assert history(db_path)[0] == ["e2", "e3", "e4"]


async def test_the_store_purges_history_past_retention_as_it_runs(db_path: str) -> None:
    store = SqliteStore(db_path, retention_s=3600.0)
    await store.open()
    await accept_finished(store, "old", 1000.0, "sent")
    await accept_finished(store, "old-pending", 1001.0, None)
    for n in range(20):  # one batch each; the purge rides along with some of them
        await store.accept(event(f"new{n}", 9000.0), [], dedupe_window_s=WINDOW_S)
    await store.close()
    events, deliveries = history(db_path)
    assert "old" not in events
    assert events[:2] == ["old-pending", "new0"]
    assert deliveries == [("old-pending", "pending")]
    assert (store.stats.purged_deliveries, store.stats.purged_events) == (1, 1)


async def test_an_event_stamped_by_a_clock_ahead_does_not_purge_recent_history(
    db_path: str,
) -> None:
    now = time.time()
    store = SqliteStore(db_path, retention_s=3600.0)
    await store.open()
    await accept_finished(store, "half an hour ago", now - 1800, "sent")
    await accept_finished(store, "a minute ago", now - 60, "sent")
    # Received while the clock was a year ahead; it has been set right since.
    await store.accept(event("from the future", now + 365 * 86400), [], dedupe_window_s=60)
    for n in range(20):
        await store.accept(event(f"now{n}", now), [], dedupe_window_s=WINDOW_S)
    await store.close()
    assert history(db_path)[1] == [("half an hour ago", "sent"), ("a minute ago", "sent")]


async def test_after_a_restart_the_purge_goes_on_before_any_new_event(db_path: str) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await accept_finished(store, "old", 1000.0, "sent")
    await accept_finished(store, "newer", 9000.0, "sent")
    await store.close()

    store = SqliteStore(db_path, retention_s=3600.0)
    await store.open()
    for _ in range(20):  # the delivery worker's queries: batches, but no new event
        await due(store, "slack", 1e12, 10)
    await store.close()
    assert history(db_path)[0] == ["newer"]


async def test_no_retention_keeps_history(db_path: str) -> None:
    store = SqliteStore(db_path)  # retention_s=0, as the one-shot commands open it
    await store.open()
    await accept_finished(store, "old", 1000.0, "sent")
    for n in range(20):
        await store.accept(event(f"new{n}", 9e9), [], dedupe_window_s=WINDOW_S)
    await store.close()
    assert history(db_path)[1] == [("old", "sent")]


@pytest.mark.parametrize(
    ("sql", "params", "indexes"),
    [
        (
            sqlite_ops.CLAIM_SQL,
            {"owner": "o", "until": 1.0, "destination": "slack", "now": 1e12, "limit": 10},
            ["deliveries_queue", "deliveries_session", "deliveries_leases"],
        ),
        (
            sqlite_ops.NEXT_DUE_SQL,
            ("slack", 1e12, 1e12),
            ["deliveries_next", "deliveries_session", "deliveries_leases"],
        ),
        (sqlite_ops.LEASE_ENDS_SQL, ("slack", 1e12), ["deliveries_leases"]),
        (sqlite_transcripts._EVENTS_SQL, ("s1", 10), ["events_by_session"]),
        (
            sqlite_watches._BY_QUIET_SQL,
            {"quiet_at": 5.0, "conversation": "s1", "limit": 10},
            ["watches_quiet"],
        ),
        (
            sqlite_transcripts._DELIVERIES_SQL,
            {"refs": "[1, 2]"},
            ["deliveries_by_event", "digest_events_by_event"],
        ),
    ],
)
async def test_queue_queries_use_their_indexes(
    store: SqliteStore,
    db_path: str,
    sql: str,
    params: tuple[object, ...] | dict[str, object],
    indexes: list[str],
) -> None:
    with sqlite3.connect(db_path) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    for index in indexes:
        assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_a_batch_of_accepts_matches_accepting_one_by_one(
    store: SqliteStore, db_path: str
) -> None:
    await store.accept(event("old", 1000.0), [delivery()], dedupe_window_s=10)
    await store.accept(event("live", 1000.0), [delivery()], dedupe_window_s=10)
    # One batch: a renewed expired key, a live key, a new key twice, and another window.
    results = await asyncio.gather(
        store.accept(event("old", 1011.0), [delivery(), delivery("d2")], dedupe_window_s=10),
        store.accept(event("live", 1005.0), [delivery()], dedupe_window_s=10),
        store.accept(event("new", 1005.0), [delivery()], dedupe_window_s=10),
        store.accept(event("new", 1005.0), [delivery()], dedupe_window_s=10),
        store.accept(event("other", 1005.0), [], dedupe_window_s=99),
    )
    assert [(r.event_id, r.duplicate, r.deliveries) for r in results] == [
        ("old", False, 2),
        ("live", True, 0),
        ("new", False, 1),
        ("new", True, 0),
        ("other", False, 0),
    ]
    assert store.stats.batches == 3  # the five shared one batch
    assert count_rows(db_path, "events") == 5
    assert count_rows(db_path, "deliveries") == 5


async def test_checkpoints_keep_the_wal_small_and_move_data_into_the_database(
    db_path: str,
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    body = b"x" * 2000  # big rows: a thousand of them would make a 2 MB+ WAL
    for i in range(commits := 3 * 50):
        await store.accept(event(f"e{i}", 1000.0 + i, body), [], dedupe_window_s=WINDOW_S)
    assert store.stats.commits >= commits
    await store.close()
    wal = Path(db_path + "-wal")
    database = Path(db_path)
    # Everything reached the database file itself; the WAL is reused, not grown forever.
    assert database.stat().st_size > len(body) * commits
    assert not wal.exists() or wal.stat().st_size < 2 * 1024 * 1024


async def test_a_version_1_database_is_upgraded_in_place(db_path: str) -> None:
    """A file written before claims existed keeps its queue and gains claims."""
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(sqlite_ops._MIGRATIONS[1])
        conn.execute("INSERT INTO events VALUES (1, 'e1', x'7b7d', 1000.0)")
        conn.execute(
            "INSERT INTO deliveries (id, event_ref, destination, rule, session_key, status,"
            " created_at, next_attempt_at) VALUES (1, 1, 'slack', 'r', 's1', 'pending', 1000, 1000)"
        )
        conn.execute("PRAGMA user_version = 1")
    store = SqliteStore(db_path)
    await store.open()
    [found] = await store.claim("slack", 1000.0, 10, owner=OWNER, lease_s=10.0)
    assert (found.event_id, found.body) == ("e1", b"{}")
    assert await store.record_sent(found.id, 1001.0, owner=OWNER)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_ops.SCHEMA_VERSION


async def test_threads_kept_before_version_6_count_as_active_at_the_upgrade(
    db_path: str,
) -> None:
    """Upgrading must not make the retention purge forget ongoing conversations' threads."""
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        for version in range(1, 6):
            conn.executescript(sqlite_ops._MIGRATIONS[version])
        conn.execute("INSERT INTO threads VALUES ('slack', 's1', 'parent', 3)")
        conn.execute("PRAGMA user_version = 5")
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert (await store.purge(time.time() - 60)).threads == 0
        assert await store.count_message("slack", "s1", time.time()) == 4
        assert (await store.purge(time.time() + 60)).threads == 1
        assert await store.thread("slack", "s1") is None
    finally:
        await store.close()


async def test_watches_kept_before_version_10_are_claimed_and_purged_after_the_upgrade(
    db_path: str,
) -> None:
    """Version 10 indexes bounds instead of deadlines: a watch written before it is still
    claimed when due, not before, and still forgotten by the purge."""
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        for version in range(1, 10):
            for statement in sqlite_ops._statements(sqlite_ops._MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO watches (conversation, opened_at, agent_id, started_at, last_event_at,"
            " last_received_at, visitor_messages, agent_messages, stretch, stretch_open,"
            " stretch_raised, ends, ended, end_due, due_at)"
            " VALUES ('s1', 1000, 'A1', 1000, 1000, 1000, 0, 0, 0, 0, 0, 0, 0, 1600, 1600)"
        )
        conn.execute("PRAGMA user_version = 9")
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.claim_watches(1599.0, 10, owner="a", lease_s=10.0) == []
        [due] = await store.claim_watches(1600.0, 10, owner="a", lease_s=10.0)
        assert (due.conversation, due.end_due) == ("s1", 1600.0)
        assert (await store.purge(1000.5)).watches == 1
        assert await store.watch("s1") is None
    finally:
        await store.close()


async def test_a_version_10_database_keeps_its_events_and_then_their_requests(
    db_path: str,
) -> None:
    """Version 11 keeps the request each event came in: an event stored before it has none
    (and still goes out), one accepted after it has its own."""
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        for version in range(1, 11):
            for statement in sqlite_ops._statements(sqlite_ops._MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute("INSERT INTO events VALUES (1, 'old', x'7b7d', 1000.0)")
        conn.execute(
            "INSERT INTO deliveries (id, event_ref, destination, rule, session_key, status,"
            " created_at, next_attempt_at) VALUES (1, 1, 'slack', 'r', 's1', 'pending', 1000, 1000)"
        )
        conn.execute("PRAGMA user_version = 10")
    kept = RequestRecord("10.0.0.2", (("User-Agent", "bitHuman/1.0"),))
    store = SqliteStore(db_path)
    await store.open()
    try:
        old = await store.get_delivery(1)
        assert old is not None and (old.event_id, old.request) == ("old", None)
        await store.accept(NewEvent("new", b"{}", 1001.0, kept), [delivery()], dedupe_window_s=60)
        new = await store.get_delivery(2)
        assert new is not None and (new.event_id, new.request) == ("new", kept)
        sent = await store.claim("slack", 1001.0, 10, owner=OWNER, lease_s=10.0)
        assert [d.event_id for d in sent] == ["old"]  # the session's first, unchanged
    finally:
        await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_ops.SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        assert columns == ["id", "event_id", "body", "received_at", "request", "session"]


# --- the reader: operators' reads beside the writer ---------------------------------------

# The store's pure reads, as the console, `relay deliveries` and /metrics make them: each
# runs on the reader (sqlite_reader.py), never in the writer's batches.
READS: dict[str, Callable[[SqliteStore], Awaitable[object]]] = {
    "find_deliveries": lambda s: s.find_deliveries(DeliveryFilter(text="refund")),
    "delivery_counts": lambda s: s.delivery_counts(),
    "list_deliveries": lambda s: s.list_deliveries(),
    "get_delivery": lambda s: s.get_delivery(1),
    "attempts": lambda s: s.attempts(1),
    "digest_events": lambda s: s.digest_events(1),
    "queue_depths": lambda s: s.queue_depths(),
}


class HeldRead:
    """A read that holds the store's reader until the test releases it: it counts the
    deliveries, waits, and counts them again, in its one transaction."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> tuple[int, int]:
        first = int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
        self.inside.set()
        if not self.release.wait(10):
            raise AssertionError("the test never released the read")
        return first, int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])

    async def hold(self, store: SqliteStore) -> asyncio.Future[tuple[int, int]]:
        """Start the read on the store's reader (the internal hook: Reader.run), and
        return once it holds it."""
        holding = asyncio.ensure_future(store._reader.run(self))
        assert await asyncio.to_thread(self.inside.wait, 10), "the read never started"
        return holding


@pytest.mark.parametrize("read", READS)
async def test_a_long_read_holds_up_no_webhook_only_the_reads_after_it(
    store: SqliteStore, read: str
) -> None:
    await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
    held = HeldRead()
    holding = await held.hold(store)
    queued = asyncio.ensure_future(READS[read](store))
    # The reader is busy: an accept, and a claim, go through the writer all the same.
    accepted = await asyncio.wait_for(
        store.accept(event("e2"), [delivery(session="s2")], dedupe_window_s=WINDOW_S), 10
    )
    assert not accepted.duplicate
    assert len(await asyncio.wait_for(due(store, "slack", 2000.0, 10), 10)) == 2
    assert not queued.done() and not holding.done()  # reads wait for the read before them
    held.release.set()
    assert await holding == (1, 1)  # one snapshot, taken before the accept committed
    await queued
    # A read that begins after a commit sees it.
    assert [d.event_id for d in await store.list_deliveries()] == ["e2", "e1"]


async def test_close_lets_the_reads_under_way_finish_then_closes_the_reader(
    db_path: str,
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.accept(event("e1"), [delivery()], dedupe_window_s=WINDOW_S)
    held = HeldRead()
    holding = await held.hold(store)
    closed = asyncio.ensure_future(store.close())
    held.release.set()
    assert await holding == (1, 1)
    await asyncio.wait_for(closed, 10)
    for read in READS.values():
        with pytest.raises(StoreUnavailable, match="closed"):
            await read(store)
    # Every connection is closed: the last one moved the WAL into the database and
    # removed it (an open reader would have kept it).
    assert not Path(db_path + "-wal").exists()
    assert count_rows(db_path, "deliveries") == 1


async def test_counters_past_their_history_are_purged_as_the_store_runs(
    store: SqliteStore, db_path: str
) -> None:
    def tally(at: float) -> Tally:
        hour = int(at // 3600)
        return Tally(hour, "A1", ("events",), ("all",), at, (hour + 1) * 3600 + 3600.0)

    old = 400_000 * 3600.0  # in 2015; counters kept an hour after their hour: until old + 2 h
    await store.accept(event("old", old), [], dedupe_window_s=10, tally=tally(old))
    kept = old + 2 * 3600.0 + 1
    for i in range(70):  # one batch each: the purge runs every 64 batches
        await store.accept(event(f"new{i}", kept), [], dedupe_window_s=10, tally=tally(kept))
    conn = sqlite3.connect(db_path)
    for table in ("counters", "agent_hours"):
        hours = conn.execute(f"SELECT DISTINCT hour FROM {table}").fetchall()
        assert hours == [(int(kept // 3600),)], table
    assert store.stats.purged_counters == 2  # the old hour's agent row and its 'all' hit


async def test_a_batch_adds_its_counters_together_and_a_failed_accept_adds_none(
    store: SqliteStore, db_path: str
) -> None:
    """Accepts that share a commit write their counters together, a row per agent and
    hour and per rule and hour; one that fails in the batch is stored and counted not at
    all, and the others are counted once each."""
    hour = 500_000

    def tally(*counters: str) -> Tally:
        return Tally(hour, "A1", counters, ("r",), hour * 3600.0 + 1, 9e9)

    accepts = [
        store.accept(event(f"e{n}", hour * 3600.0 + 1), [], dedupe_window_s=10,
                     tally=tally("events", "visitor_messages"))
        for n in range(20)
    ]  # fmt: skip
    bad = store.accept(event("bad", hour * 3600.0 + 1), [], dedupe_window_s=10,
                       tally=tally("events", "nonsense"))  # fmt: skip
    batches = store.stats.batches
    *results, failed = await asyncio.gather(*accepts, bad, return_exceptions=True)
    assert store.stats.batches - batches == 1  # one commit for all of them
    assert isinstance(failed, ValueError)
    assert str(failed) == "unknown agent counter 'nonsense'"
    assert all(not isinstance(r, BaseException) and not r.duplicate for r in results)
    counted = {(c.counter, c.value) for c in await store.agent_counts(0)}
    assert counted == {("events", 20), ("visitor_messages", 20)}
    assert [(r.rule, r.hits) for r in await store.rule_hits(0)] == [("r", 20)]
    assert count_rows(db_path, "events") == 20
    assert count_rows(db_path, "agent_hours") == 1


def test_the_agent_counters_are_the_columns_schema_version_16_made() -> None:
    """Schema version 16 made a column for each agent counter, from AGENT_COUNTERS: a
    counter added there needs a schema version that adds its column to databases made
    before, and one taken away leaves its column."""
    bounds = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600)
    made = (
        "events", "visitor_messages", "agent_messages", "conversations", "unanswered",
        *(f"first_answer_le_{bound}" for bound in bounds), "first_answer_over",
    )  # fmt: skip
    assert made == AGENT_COUNTERS


# How relay 15 (schema version 15) added a counter: one row per agent counter and hour.
_VERSION_15_ADD_SQL = """
INSERT INTO counters (hour, scope, key, name, value, last_at, keep_until)
VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (hour, scope, key, name)
DO UPDATE SET value = value + 1, last_at = max(last_at, excluded.last_at)
"""


def _version_15_store(db_path: str) -> sqlite3.Connection:
    Path(db_path).parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    for version in range(1, 16):
        for statement in sqlite_ops._statements(sqlite_ops._MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 15")
    return conn


async def test_agent_counters_of_version_15_move_into_one_row_per_agent_and_hour(
    db_path: str,
) -> None:
    """Version 16 keeps an agent's counters of an hour in one row: the rows an older relay
    kept, hours and days alike, give the same figures after the upgrade."""
    hour = 490_000  # days before yesterday are rolled up; this hour and its day are kept
    with closing(_version_15_store(db_path)) as conn:
        for name, key, count in (
            ("events", "A1", 3), ("visitor_messages", "A1", 2), ("conversations", "A1", 1),
            ("events", "A2", 1), ("hits", "rule-1", 4),
        ):  # fmt: skip
            scope = "rule" if name == "hits" else "agent"
            for _ in range(count):
                conn.execute(_VERSION_15_ADD_SQL, (hour, scope, key, name, 1.0, 9e9))
        conn.execute(
            "INSERT INTO counters_daily VALUES (?, 'agent', 'A1', 'events', 5, 1.0, 9e9)",
            (hour // 24 - 1,),
        )
    store = SqliteStore(db_path)
    await store.open()
    try:
        counted = {(c.agent_id, c.counter, c.value) for c in await store.agent_counts(0)}
        assert counted == {
            ("A1", "events", 8), ("A1", "visitor_messages", 2), ("A1", "conversations", 1),
            ("A2", "events", 1),
        }  # fmt: skip
        assert await store.hourly_counts(0, "events") == [
            HourCount((hour // 24 - 1) * 24, 5),
            HourCount(hour, 4),
        ]
        assert [(r.rule, r.hits) for r in await store.rule_hits(0)] == [("rule-1", 4)]
    finally:
        await store.close()
    conn = sqlite3.connect(db_path)
    for table in ("counters", "counters_daily"):
        left = conn.execute(f"SELECT count(*) FROM {table} WHERE scope = 'agent'").fetchone()
        assert left == (0,), table


async def test_agent_counters_a_version_15_relay_adds_after_the_upgrade_are_counted(
    db_path: str,
) -> None:
    """During a rolling upgrade a relay of version 15 still adds each agent counter as a
    row of `counters`: it moves into the agent's row of its hour at once."""
    _version_15_store(db_path).close()
    store = SqliteStore(db_path)
    await store.open()
    try:
        tally = Tally(500_000, "A1", ("events",), ("all",), 1.0, 9e9)
        await store.accept(event("e1", 500_000 * 3600.0), [], dedupe_window_s=10, tally=tally)
        with closing(sqlite3.connect(db_path, isolation_level=None)) as older:
            for name in ("events", "events", "agent_messages"):
                older.execute(_VERSION_15_ADD_SQL, (500_000, "agent", "A1", name, 1.0, 9e9))
        counted = {(c.counter, c.value) for c in await store.agent_counts(0)}
        assert counted == {("events", 3), ("agent_messages", 1)}
    finally:
        await store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM counters WHERE scope = 'agent'").fetchone() == (0,)


def _hours_by_day(conn: sqlite3.Connection) -> dict[tuple[str, int], list[int]]:
    """agent_hours_by_day's rows, and what they must be: the kept hours' sums."""
    columns = ", ".join(AGENT_COUNTERS)
    sums = ", ".join(f"sum({name})" for name in AGENT_COUNTERS)
    kept = conn.execute(f"SELECT agent_id, day, {columns} FROM agent_hours_by_day").fetchall()
    made = conn.execute(
        f"SELECT agent_id, hour / 24, {sums} FROM agent_hours GROUP BY agent_id, hour / 24"
    ).fetchall()

    def as_dict(rows: list[tuple[Any, ...]]) -> dict[tuple[str, int], list[int]]:
        return {(row[0], row[1]): list(row[2:]) for row in rows}

    assert as_dict(kept) == as_dict(made)
    return as_dict(kept)


async def test_a_version_16_database_sums_its_kept_hours_by_day_and_keeps_them_summed(
    db_path: str,
) -> None:
    """Version 17 sums each day's kept hours: the hours kept before the upgrade, and those
    added after it, by this relay and by one of version 16 (the same statement)."""
    day = 20_000
    add_16 = sqlite_counters._AGENTS_ADD_SQL  # version 16's, unchanged
    events = [1] + [0] * (len(AGENT_COUNTERS) - 1)  # one event, nothing else
    Path(db_path).parent.mkdir(parents=True)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for version in range(1, 17):
            for statement in sqlite_ops._statements(sqlite_ops._MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 16")
        for hour, agent in ((day * 24 + 1, "A1"), (day * 24 + 2, "A1"), (day * 24 + 30, "A2")):
            conn.execute(add_16, (hour, agent, 9e9, *events))
    store = SqliteStore(db_path)
    await store.open()
    try:
        tally = Tally(day * 24 + 3, "A1", ("events",), ("r",), 1.0, 9e9)
        await store.accept(
            event("e1", (day * 24 + 3) * 3600.0), [], dedupe_window_s=10, tally=tally
        )
        with closing(sqlite3.connect(db_path, isolation_level=None)) as older:
            older.execute(add_16, (day * 24 + 2, "A1", 9e9, *events))  # its update
            older.execute(add_16, (day * 24 + 31, "A1", 9e9, *events))  # its new hour
        assert {
            (c.agent_id, c.counter, c.value) for c in await store.agent_counts(day * 24 + 2)
        } == {("A1", "events", 4), ("A2", "events", 1)}
    finally:
        await store.close()
    with closing(sqlite3.connect(db_path)) as conn:
        sums = _hours_by_day(conn)
    assert {key: values[0] for key, values in sums.items()} == {
        ("A1", day): 4,
        ("A2", day + 1): 1,
        ("A1", day + 1): 1,
    }


async def test_a_roll_up_forgets_the_sums_of_the_days_it_rolls_and_of_a_version_16_roll_up(
    store: SqliteStore, db_path: str
) -> None:
    """Each step of a roll-up forgets its day's sum with its hours, so no figure counts
    them twice in between; a relay of version 16 rolls a day up without forgetting its
    sum, and this one forgets it at its next roll-up."""
    day = 20_000
    for n, hour in enumerate((day * 24 + 1, (day + 1) * 24 + 1, (day + 2) * 24 + 1)):
        tally = Tally(hour, "A1", ("events",), ("r",), hour * 3600.0, 9e9)
        await store.accept(event(f"e{n}", hour * 3600.0), [], dedupe_window_s=10, tally=tally)
    now = (day + 3) * 86400.0  # days 0 and 1 are before yesterday
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        assert sqlite_counters.roll_up(conn, now) == 2  # day 0: its agent row, its rule row
        assert sqlite_counters.agent_counts(conn, 0) == [AgentCount("A1", "events", 3)]
        assert set(_hours_by_day(conn)) == {("A1", day + 1), ("A1", day + 2)}
        # Version 16's roll-up of day 1: into its day, its hours gone, its sum left.
        bounds = {"day": day + 1, "first": (day + 1) * 24, "end": (day + 2) * 24}
        for rolled, table in (("RULES", "counters"), ("AGENTS", "agent_hours")):
            conn.execute(getattr(sqlite_counters, f"_ROLL_UP_{rolled}_SQL"), bounds)
            conn.execute(f"DELETE FROM {table} WHERE hour >= :first AND hour < :end", bounds)
        assert sqlite_counters.agent_counts(conn, 0) == [AgentCount("A1", "events", 4)]
        assert sqlite_counters.roll_up(conn, now) == 0
        assert sqlite_counters.agent_counts(conn, 0) == [AgentCount("A1", "events", 3)]
        assert set(_hours_by_day(conn)) == {("A1", day + 2)}
        conn.execute("COMMIT")


async def test_watches_kept_before_version_13_count_as_started_and_as_counted(
    db_path: str,
) -> None:
    """Version 13 keeps what the activity counters need of a conversation: a watch kept
    before it is no new conversation, and its first answer was already had."""
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        for version in range(1, 13):
            for statement in sqlite_ops._statements(sqlite_ops._MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO watches (conversation, opened_at, agent_id, started_at, last_event_at,"
            " last_received_at, visitor_messages, agent_messages, first_visitor_at,"
            " first_answer_at, first_agent_at, last_agent_at, stretch, stretch_open,"
            " stretch_raised, ends, ended, end_due, due_at, due_floor, quiet_at)"
            " VALUES ('s1', 1000, 'A1', 1000, 1004, 1004, 1, 1, 1000, 1004, 1004, 1004, 1, 0,"
            " 0, 0, 0, 1604, 1604, 1604, 1004)"
        )
        conn.execute("PRAGMA user_version = 12")
    store = SqliteStore(db_path)
    await store.open()
    try:
        hour = int(1010.0 // 3600)
        tally = Tally(hour, "A1", ("events", "agent_messages"), ("all",), 1010.0, 1e9)
        seen = Observation("s1", "A1", None, "agent", None, 1010.0, 1010.0, 120.0, 600.0)
        await store.accept(event("e1", 1010.0), [], dedupe_window_s=10, observation=seen,
                           tally=tally)  # fmt: skip
        counted = {(c.counter, c.value) for c in await store.agent_counts(0)}
        assert counted == {("events", 1), ("agent_messages", 1)}  # no start, no first answer
    finally:
        await store.close()


async def test_housekeeping_before_any_event_fails_nothing(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that has only claims to run (lanes of a relay that has accepted nothing
    yet) reaches the batches that purge and roll up counters: with no event there is no
    hour to measure days by, and housekeeping must not fail on that."""
    for _ in range(70):  # past _PURGE_DEDUPE_EVERY_BATCHES (64)
        assert await store.claim("nowhere", time.time(), 1, owner="me", lease_s=5.0) == []
    assert store.stats.batches >= 64
    assert [r.getMessage() for r in caplog.records if "housekeeping" in r.getMessage()] == []


async def test_stores_opening_one_new_file_together_all_open(tmp_path: Path) -> None:
    """Workers or replicas started together each open the same new file: switching it to
    WAL fails at once with "database is locked" while another creates it, and must be
    asked again, not reported as a store that cannot be opened."""
    for attempt in range(20):
        path = str(tmp_path / f"new-{attempt}.db")
        stores = [SqliteStore(path) for _ in range(4)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
        finally:
            await asyncio.gather(*(store.close() for store in stores))
