"""The default store: one SQLite file, with group commit.

Callers queue operations. Whatever is queued when a batch starts runs in one transaction
(each operation in its own savepoint, so a bad one fails alone) and is committed once, so
many concurrent webhooks share one fsync: the 200 still goes out only after the commit, but
durability does not cap throughput.

The statements run on the event loop: they take microseconds, and a writer thread would
have to win the GIL back from the busy loop after each one, which made a batch take tens
of milliseconds. Only what can block, BEGIN (another process may hold the lock) and COMMIT
(the fsync), runs on a worker thread; meanwhile the loop serves requests and queues the
next batch. The connection is used by one side at a time, never both.

What operators read (the console's lists, counts and pages, `relay deliveries`, /metrics)
is not queued here: it runs on a reader of its own (sqlite_reader.py), so a long read
never holds up a webhook. The worker's reads that go with its writes (a thread, when the
next delivery is due, a watch) stay in the queue, ordered with them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay.activity.tally import ActivityCounts, AgentCount, HourCount, RuleHits, Tally
from relay.conversations.watch import Forget, Observation, Watch
from relay.store import sqlite_counters, sqlite_listing, sqlite_transcripts, sqlite_watches
from relay.store import sqlite_ops as ops
from relay.store.base import (
    SCAN_ROWS,
    AcceptResult,
    Attempt,
    ClaimAtAccept,
    Claimed,
    Delivery,
    DeliveryCounts,
    DeliveryFilter,
    DeliveryStatus,
    Found,
    NewDelivery,
    NewEvent,
    NewSignal,
    Purged,
    QuietWatch,
    SentRecord,
    StoreUnavailable,
    Transcript,
)
from relay.store.sqlite_reader import Reader

log = logging.getLogger(__name__)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

MAX_BATCH_OPS = 256
# A batch of webhooks writes some tens of pages; this keeps the WAL near SQLite's default
# checkpoint size of 1,000 pages.
CHECKPOINT_EVERY_COMMITS = 50
_PURGE_DEDUPE_EVERY_BATCHES = 64
# History (store.retention) goes in small steps, often: at steady load a step removes
# what 8 batches added, and it stays short on the event loop (500 small events take a few
# milliseconds; the byte cap bounds a step of large bodies, which SQLite's secure_delete
# overwrites).
_PURGE_HISTORY_EVERY_BATCHES = 8
_PURGE_HISTORY_ROWS = 500
_PURGE_HISTORY_BYTES = 4 * 1024 * 1024


@dataclass
class StoreStats:
    """Counters of the writer thread (read them for metrics and tests)."""

    batches: int = 0
    commits: int = 0
    ops: int = 0
    failed_batches: int = 0
    purged_deliveries: int = 0
    purged_events: int = 0
    purged_threads: int = 0
    purged_watches: int = 0
    purged_counters: int = 0


@dataclass(eq=False)
class _Job:
    op: _Op
    future: asyncio.Future[Any] | None  # None for the store's own housekeeping
    # Set for accept(): a batch runs all its accepts in one savepoint (_accept_together),
    # and in one savepoint each only if that fails.
    accept: bool = False


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None


class _BatchFailed(Exception):
    """The whole transaction is gone; every operation of the batch failed."""


class SqliteStore:
    """A Store on one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: str, *, retention_s: float = 0.0, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.stats = StoreStats()
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="relay-sqlite")
        self._checkpointer = Checkpointer(path)
        self._reader = Reader(path, busy_timeout_ms=busy_timeout_ms)
        self._pending: list[_Job] = []
        # What the accepts of the batch under way add to the activity counters, written
        # once per batch (_accept_together); batches run one at a time, so one is enough.
        self._adding = sqlite_counters.Adding()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = True
        self._retention_s = retention_s  # 0: keep history for ever
        # The store's clock for housekeeping: the latest received_at accepted.
        self._latest_received_at = float("-inf")

    async def open(self) -> None:
        """Create or migrate the schema; the store then takes operations."""
        if not self._closed:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn = await self._blocking(self._connect)
            await self._checkpointer.open()
            await self._reader.open()
            # Housekeeping after a restart goes on from the last event stored, not from
            # the first one to arrive.
            latest = await self._blocking(lambda: ops.latest_received_at(conn))
            self._latest_received_at = max(self._latest_received_at, latest)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open sqlite store {self.path}: {e}") from e
        self._closed = False

    async def close(self) -> None:
        """Finish queued operations and close the file."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        # The reader first: the writer's connection is then the last, and closing it
        # checkpoints the WAL into the database.
        await self._reader.close()
        await self._checkpointer.close()
        if self._conn is not None:
            await self._blocking(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=False)
        stats = self.stats
        log.info(
            "closed sqlite store %s: %d operations in %d commits (%d failed batches)",
            self.path,
            stats.ops,
            stats.commits,
            stats.failed_batches,
        )

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        await self._submit(ops.ping)

    async def accept(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        *,
        dedupe_window_s: float,
        observation: Observation | Forget | None = None,
        tally: Tally | None = None,
        claim: ClaimAtAccept | None = None,
    ) -> AcceptResult:
        """Store an event, its deliveries and its dedupe key once the commit is durable."""
        deliveries = tuple(deliveries)
        self._latest_received_at = max(self._latest_received_at, event.received_at)

        def op(conn: sqlite3.Connection) -> AcceptResult:
            return ops.accept(
                conn, event, deliveries, dedupe_window_s, observation, tally, self._adding,
                claim=claim,
            )  # fmt: skip

        return await self._submit(op, accept=True)

    async def claim_watches(
        self, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Watch]:
        """Claim up to `limit` due watches for `owner` (sqlite_watches.claim)."""
        until = now + lease_s
        return await self._submit(lambda conn: sqlite_watches.claim(conn, now, limit, owner, until))

    async def raise_signal(
        self,
        signal: NewSignal,
        deliveries: Sequence[NewDelivery],
        *,
        owner: str,
        dedupe_window_s: float,
        tally: Tally | None = None,
    ) -> bool:
        """Store a signal its watch still owes; release the owner's claim on the watch."""
        deliveries = tuple(deliveries)
        return await self._submit(
            lambda conn: ops.raise_signal(conn, signal, deliveries, dedupe_window_s, owner, tally)
        )

    async def watch(self, conversation: str) -> Watch | None:
        """Return a conversation's watch, if it has one: on the reader (a conversation's
        page asks for it at every look of its live stream)."""
        return await self._reader.run(lambda conn: sqlite_watches.find(conn, conversation))

    async def claim(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Delivery]:
        """Claim up to `limit` sendable deliveries for `owner`, oldest first."""
        until = now + lease_s
        return await self._submit(
            lambda conn: ops.claim(conn, destination, now, limit, owner, until)
        )

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        """Extend the owner's leases on these deliveries; return the ids it still holds."""
        ids = tuple(ids)
        return await self._submit(lambda conn: ops.renew(conn, owner, ids, until))

    async def release(self, owner: str) -> int:
        """Give up every claim the owner holds; return how many."""
        return await self._submit(lambda conn: ops.release(conn, owner))

    async def next_due_at(self, destination: str, now: float) -> float | None:
        """Return when the destination's next delivery can be claimed, if any."""
        return await self._submit(lambda conn: ops.next_due_at(conn, destination, now))

    async def claim_or_next_due(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> Claimed:
        """Claim, or tell the next due time when nothing is claimable: one operation."""
        until = now + lease_s

        def claim_or_next_due(conn: sqlite3.Connection) -> Claimed:
            claimed = ops.claim(conn, destination, now, limit, owner, until)
            next_due = None if claimed else ops.next_due_at(conn, destination, now)
            return Claimed(claimed, next_due)

        return await self._submit(claim_or_next_due)

    async def record_sent(
        self,
        delivery_id: int,
        now: float,
        note: str | None = None,
        *,
        owner: str,
        started_at: float | None = None,
    ) -> SentRecord:
        """Mark a delivery the owner holds sent; NOT_HELD when it no longer holds it."""
        began = now if started_at is None else started_at
        return await self._submit(
            lambda conn: ops.record_sent(conn, delivery_id, owner, now, note, began)
        )

    async def record_failure(
        self,
        delivery_id: int,
        error: str,
        *,
        retry_at: float | None,
        now: float,
        owner: str,
        started_at: float | None = None,
    ) -> bool:
        """Record a failed attempt of a delivery the owner holds; False when it does not."""
        began = now if started_at is None else started_at
        return await self._submit(
            lambda conn: ops.record_failure(conn, delivery_id, owner, error, retry_at, now, began)
        )

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        return await self._reader.run(lambda conn: ops.attempts(conn, delivery_id))

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        return await self._reader.run(lambda conn: ops.get_delivery(conn, delivery_id))

    async def reserve(self, key: str, now: float, rate_per_s: float | None, burst: int) -> float:
        """Take a turn at a limited target: 0 to send now, else how long to wait."""
        return await self._submit(lambda conn: ops.reserve(conn, key, now, rate_per_s, burst))

    async def pause(self, key: str, until: float) -> None:
        """Pause a limited target, for every process, until `until`."""
        await self._submit(lambda conn: ops.pause(conn, key, until))

    async def thread(self, destination: str, conversation: str) -> str | None:
        """Return a conversation's thread at a destination, if it has one."""
        return await self._submit(lambda conn: ops.thread(conn, destination, conversation))

    async def start_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> str:
        """Keep a conversation's thread unless it has one; return the one it has now."""
        return await self._submit(
            lambda conn: ops.start_thread(conn, destination, conversation, value, now)
        )

    async def digest_events(self, delivery_id: int) -> list[tuple[str, bytes]]:
        """Return a digest's events, as (event id, raw body), in accepted order."""
        # On the reader: the worker reads them after its claim committed, the console
        # and `relay deliveries` whenever.
        return await self._reader.run(lambda conn: ops.digest_events(conn, delivery_id))

    async def replace_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> None:
        """Give a conversation a new thread: its old one is gone."""
        await self._submit(
            lambda conn: ops.replace_thread(conn, destination, conversation, value, now)
        )

    async def count_message(self, destination: str, conversation: str, now: float) -> int:
        """Count one more message in a conversation's thread; return how many it has."""
        return await self._submit(
            lambda conn: ops.count_message(conn, destination, conversation, now)
        )

    async def queue_depths(self) -> dict[str, int]:
        """Return how many deliveries wait (pending or failed), per destination."""
        return await self._reader.run(ops.queue_depths)

    async def list_deliveries(
        self, status: DeliveryStatus | None = None, limit: int = 50
    ) -> list[Delivery]:
        """Return the newest deliveries, optionally of one status."""
        return await self._reader.run(lambda conn: ops.list_deliveries(conn, status, limit))

    async def find_deliveries(
        self,
        where: DeliveryFilter,
        *,
        before_id: int | None = None,
        limit: int = 50,
        scan: int = SCAN_ROWS,
    ) -> Found:
        """Return up to `limit` deliveries `where` selects, newest first, below `before_id`;
        an unindexed filter examines the `scan` ids below it at most."""
        return await self._reader.run(
            lambda conn: sqlite_listing.find(conn, where, before_id, limit, scan)
        )

    async def delivery_counts(self) -> DeliveryCounts:
        """Return how many deliveries there are, by status and by destination."""
        return await self._reader.run(sqlite_listing.counts)

    async def watches_by_quiet(
        self, below: tuple[float, str] | None, limit: int
    ) -> list[QuietWatch]:
        """Watches by their quiet floor, highest first, on the reader."""
        return await self._reader.run(lambda conn: sqlite_watches.by_quiet(conn, below, limit))

    async def transcript(self, conversation: str, limit: int) -> Transcript:
        """A conversation's newest events and their deliveries, on the reader."""
        return await self._reader.run(
            lambda conn: sqlite_transcripts.transcript(conn, conversation, limit)
        )

    async def roll_up_counters(self, now: float) -> None:
        """Roll every day due up (the housekeeping does one a batch as it runs)."""
        while await self._submit(lambda conn: sqlite_counters.roll_up(conn, now)):
            pass

    async def rule_hits(self, since_hour: int) -> list[RuleHits]:
        """Each rule's hits from `since_hour` on, on the reader (sqlite_counters)."""
        return await self._reader.run(lambda conn: sqlite_counters.rule_hits(conn, since_hour))

    async def agent_counts(self, since_hour: int) -> list[AgentCount]:
        """Each agent's counters from `since_hour` on, on the reader (sqlite_counters)."""
        return await self._reader.run(lambda conn: sqlite_counters.agent_counts(conn, since_hour))

    async def hourly_counts(self, since_hour: int, counter: str) -> list[HourCount]:
        """One counter of all agents, hour by hour, on the reader (sqlite_counters)."""
        return await self._reader.run(
            lambda conn: sqlite_counters.hourly_counts(conn, since_hour, counter)
        )

    async def activity_counts(self, since_hour: int, counter: str) -> ActivityCounts:
        """Both, in one read transaction on the reader (sqlite_counters)."""
        return await self._reader.run(
            lambda conn: ActivityCounts(
                sqlite_counters.agent_counts(conn, since_hour),
                sqlite_counters.hourly_counts(conn, since_hour, counter),
            )
        )

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """Put dead deliveries (the given ones, or all when None) back in the queue.

        They keep their id, so a replayed delivery goes out before later deliveries of its
        session; their last_error is kept until the next attempt.
        """
        ids = None if ids is None else tuple(ids)
        return await self._submit(lambda conn: ops.replay(conn, ids, now))

    async def purge(self, before: float) -> Purged:
        """Delete one bounded step of history, and of threads, from before `before`
        (store.retention)."""
        return await self._submit(lambda conn: self._purge_history(conn, before))

    async def _submit(
        self,
        op: Callable[[sqlite3.Connection], T],
        accept: bool = False,
    ) -> T:
        if self._closed:
            raise StoreUnavailable(f"sqlite store {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(op, future, accept))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="relay-sqlite-flush")
        return await future

    # --- batches ---------------------------------------------------------------------------

    async def _blocking(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def _flush(self) -> None:
        """Run batches until nothing is queued; each takes what was queued when it began."""
        try:
            while self._pending:
                jobs = self._pending[:MAX_BATCH_OPS]
                del self._pending[:MAX_BATCH_OPS]
                await self._run_batch(jobs)
        finally:
            self._flusher = None

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the store issues BEGIN/COMMIT itself. check_same_thread is
        # off because BEGIN and COMMIT run on the worker thread, the rest on the loop.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")  # for migrate
            mode = _switch_to_wal(conn, self._busy_timeout_ms / 1000)
            if mode != "wal":
                raise StoreUnavailable(f"cannot switch {self.path} to WAL (got {mode})")
            # FULL: a 200 promises the event survives a power cut, so every commit fsyncs.
            conn.execute("PRAGMA synchronous = FULL")
            # 32 MB of page cache: dedupe keys are random, so inserts touch pages all over.
            conn.execute("PRAGMA cache_size = -32000")
            # Checkpoints run beside the commits, on a connection of their own (Checkpointer):
            # inside a COMMIT, one would hold up every webhook of the next batch.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            sqlite_listing.register_functions(conn)
            ops.migrate(conn)
            # From now on BEGIN is the only statement that can wait for a lock; _begin
            # asks again for it, up to busy_timeout, off the event loop.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _begin(self, conn: sqlite3.Connection) -> None:
        """Start a write transaction: at once on the loop, or, when another process holds
        the lock (another `relay serve` on the file, `relay replay`), on the thread,
        waiting up to busy_timeout for it."""
        try:
            conn.execute("BEGIN IMMEDIATE")  # the connection's busy_timeout is 0: no wait
            return
        except sqlite3.OperationalError as e:
            if not _locked(e):
                raise
        # Not SQLite's busy handler: it sleeps ever longer between tries (up to 100 ms), and
        # a process that commits batch after batch takes the lock again before the sleeper
        # wakes. Two processes on one file under load then waited up to 0.85-1.05 s for a
        # lock held a few milliseconds at a time (0.35 s at the 99th percentile), enough,
        # on a busier machine, for renewals to miss a lease and another process to repeat
        # a send. Asking every millisecond: 0.10 s at most, 0.07 s at the 99th percentile
        # (bench/sqlite_lock.py measures it from outside).
        await self._blocking(
            lambda: _ask_while_locked(
                lambda: conn.execute("BEGIN IMMEDIATE"),
                self._busy_timeout_ms / 1000,
                _BEGIN_RETRY_S,
            )
        )

    async def _run_batch(self, jobs: list[_Job]) -> None:
        conn = self._conn
        assert conn is not None
        self.stats.batches += 1
        self.stats.ops += len(jobs)
        jobs = [*jobs, *self._housekeeping()]
        try:
            outcomes = await self._transaction(conn, jobs)
        except (sqlite3.Error, _BatchFailed) as e:
            self.stats.failed_batches += 1
            _rollback(conn)
            log.warning("sqlite store %s: batch of %d failed: %s", self.path, len(jobs), e)
            error = StoreUnavailable(f"sqlite store {self.path}: {e}")
            outcomes = [_Outcome(error=error)] * len(jobs)
        else:
            self.stats.commits += 1
            if self.stats.commits % CHECKPOINT_EVERY_COMMITS == 0:
                self._checkpointer.start()
        for job, outcome in zip(jobs, outcomes, strict=True):
            _resolve(job, outcome)

    def _housekeeping(self) -> list[_Job]:
        """The store's own operations that ride along with some batches."""
        # The latest event's receive time, but never ahead of the clock: after a clock that
        # jumped forward comes back, keys and history are not purged early for good.
        batches, latest = self.stats.batches, min(self._latest_received_at, time.time())
        jobs = []
        if batches % _PURGE_DEDUPE_EVERY_BATCHES == 0:
            jobs.append(_Job(lambda conn: ops.purge_dedupe(conn, latest), None))
            jobs.append(_Job(lambda conn: self._purge_counters(conn, latest), None))
        if self._retention_s > 0 and batches % _PURGE_HISTORY_EVERY_BATCHES == 0:
            before = latest - self._retention_s
            jobs.append(_Job(lambda conn: self._purge_history(conn, before), None))
        return jobs

    def _purge_counters(self, conn: sqlite3.Connection, now: float) -> int:
        if now == float("-inf"):  # no event in the store yet: no hour to measure days by
            return 0
        # A day at a time: after an upgrade or a long stop, the next batches roll the rest.
        sqlite_counters.roll_up(conn, now)
        counters = sqlite_counters.purge(conn, now, _PURGE_HISTORY_ROWS)
        self.stats.purged_counters += counters
        return counters

    def _purge_history(self, conn: sqlite3.Connection, before: float) -> Purged:
        deliveries, events = ops.purge_history(
            conn, before, _PURGE_HISTORY_ROWS, _PURGE_HISTORY_BYTES
        )
        threads = ops.purge_threads(conn, before, _PURGE_HISTORY_ROWS)
        watches = sqlite_watches.purge(conn, before, _PURGE_HISTORY_ROWS)
        self.stats.purged_deliveries += deliveries
        self.stats.purged_events += events
        self.stats.purged_threads += threads
        self.stats.purged_watches += watches
        purged = Purged(deliveries, events, threads, watches)
        if any(purged):
            log.debug("purged past retention: %s", purged)
        return purged

    async def _transaction(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Outcome]:
        try:
            await self._begin(conn)
        except sqlite3.Error as e:
            raise _BatchFailed(f"cannot start a transaction: {e}") from e
        outcomes = _accept_together(conn, [job for job in jobs if job.accept], self._adding)
        outcomes |= {job: _run_in_savepoint(conn, job) for job in jobs if not job.accept}
        try:
            await self._blocking(lambda: conn.execute("COMMIT"))
        except sqlite3.Error as e:
            raise _BatchFailed(f"commit failed, nothing of this batch was stored: {e}") from e
        return [outcomes[job] for job in jobs]


def _accept_together(
    conn: sqlite3.Connection, jobs: list[_Job], adding: sqlite_counters.Adding
) -> dict[_Job, _Outcome]:
    """Run a batch's accepts in one shared savepoint, not one each, and write the counters
    their tallies add (counted in `adding`) once for them all.

    Savepoints isolate an operation that fails; accepts do not fail one by one (only the
    disk fails them, and then it fails them all), and two statements less per webhook
    show on the ingest path. (Measured too, and slower: multi-row INSERTs, since every
    batch size is a new statement for SQLite to prepare.)
    """
    if not jobs:
        return {}
    accepts = [job.op for job in jobs]
    together = _run_in_savepoint(
        conn,
        _Job(functools.partial(_with_counters, lambda c: [a(c) for a in accepts], adding), None),
    )
    if together.error is None:
        return {job: _Outcome(result=r) for job, r in zip(jobs, together.result, strict=True)}
    # Find and fail only the bad one: one by one, each in its own savepoint.
    return {
        job: _run_in_savepoint(conn, _Job(functools.partial(_with_counters, job.op, adding), None))
        for job in jobs
    }


def _with_counters(
    op: Callable[[sqlite3.Connection], T], adding: sqlite_counters.Adding, conn: sqlite3.Connection
) -> T:
    """Run accepts, then write the counters they counted, in the caller's savepoint: if
    it rolls back, none of them counted."""
    adding.clear()
    result = op(conn)
    adding.write(conn)
    return result


# How often a writer asks again for the lock another process holds (_begin).
_BEGIN_RETRY_S = 0.001
# How often a connection asks again for WAL while another process creates the file.
_WAL_RETRY_S = 0.01


def _switch_to_wal(conn: sqlite3.Connection, timeout_s: float) -> str:
    """Put the database in WAL mode; return the journal mode it is in.

    Switching needs a lock that SQLite does not wait for (its busy handler is not called):
    while another process creates the same new file (two workers or replicas starting
    together), the switch fails at once with "database is locked". Ask again, up to the
    busy timeout.
    """
    mode = _ask_while_locked(
        lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0], timeout_s, _WAL_RETRY_S
    )
    return str(mode)


def _ask_while_locked(ask: Callable[[], T], timeout_s: float, every_s: float) -> T:
    """Call `ask` again every `every_s` while SQLite answers that another connection
    holds the lock, up to `timeout_s`; then its error stands. Sleeps: run it on the store's
    thread, never on the event loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ask()
        except sqlite3.OperationalError as e:
            if not _locked(e) or time.monotonic() >= deadline:
                raise
        time.sleep(every_s)


def _locked(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite said that another connection holds the lock it needs."""
    return "locked" in str(error) or "busy" in str(error)


class Checkpointer:
    """Copies the WAL back into the database on a thread and a connection of its own.

    A PASSIVE checkpoint never blocks the writer and is never blocked by it, so the
    commits that 202s wait for no longer include one.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="relay-sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._running: asyncio.Future[None] | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            return sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

        self._conn = await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    def start(self) -> None:
        """Start a checkpoint unless one is running."""
        if self._conn is None or (self._running is not None and not self._running.done()):
            return
        loop = asyncio.get_running_loop()
        self._running = loop.run_in_executor(self._thread, self._checkpoint, self._conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:  # the next one will catch up; writes are unaffected
            log.warning("sqlite store %s: checkpoint failed: %s", self._path, e)

    def _last_checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            self._checkpoint(conn)
        finally:
            conn.close()

    async def close(self) -> None:
        """Finish the running checkpoint, take a last one, and close."""
        if self._conn is None:
            return
        if self._running is not None:
            await self._running
        conn, self._conn = self._conn, None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._last_checkpoint, conn)
        self._thread.shutdown(wait=False)


def _run_in_savepoint(conn: sqlite3.Connection, job: _Job) -> _Outcome:
    conn.execute("SAVEPOINT op")
    try:
        result = job.op(conn)
    except Exception as e:
        if not conn.in_transaction:
            # SQLite rolled back the whole transaction (I/O error, disk full): earlier
            # operations of the batch are gone too.
            raise _BatchFailed(f"transaction rolled back: {e}") from e
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return _Outcome(error=_translate(e))
    conn.execute("RELEASE op")
    return _Outcome(result=result)


def _translate(error: Exception) -> BaseException:
    """Turn database trouble (disk full, I/O, locked) into StoreUnavailable; keep bugs as is."""
    if isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError:
        unavailable = StoreUnavailable(f"sqlite: {error}")
        unavailable.__cause__ = error
        return unavailable
    return error


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("sqlite rollback failed")


def _resolve(job: _Job, outcome: _Outcome) -> None:
    if job.future is None:
        if outcome.error is not None:
            log.warning("sqlite housekeeping failed: %s", outcome.error)
        return
    if job.future.done():  # the caller gave up waiting; the operation ran anyway
        return
    if outcome.error is not None:
        job.future.set_exception(outcome.error)
    else:
        job.future.set_result(outcome.result)
