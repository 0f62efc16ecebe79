"""The default store: one SQLite file, written by one thread with group commit.

Callers queue operations; the writer thread takes everything queued so far, runs it in one
transaction (each operation in its own savepoint, so a bad one fails alone), commits once
and answers every caller. Many concurrent webhooks thus share one fsync: the 202 still goes
out only after the commit, but durability does not cap throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay.store import sqlite_ops as ops
from relay.store.base import (
    AcceptResult,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

MAX_BATCH_OPS = 256
_PURGE_EVERY_BATCHES = 64


@dataclass
class StoreStats:
    """Counters of the writer thread (read them for metrics and tests)."""

    batches: int = 0
    commits: int = 0
    ops: int = 0
    failed_batches: int = 0


@dataclass(eq=False)
class _Job:
    op: _Op
    future: asyncio.Future[Any] | None  # None for the store's own housekeeping
    loop: asyncio.AbstractEventLoop | None


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None


class _BatchFailed(Exception):
    """The whole transaction is gone; every operation of the batch failed."""


_STOP = object()


class SqliteStore:
    """A Store on one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.stats = StoreStats()
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = True
        self._dedupe_horizon = float("-inf")  # latest received_at accepted

    async def open(self) -> None:
        """Create or migrate the schema and start the writer thread."""
        if not self._closed:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(loop, ready), name=f"sqlite-writer:{self.path}", daemon=True
        )
        self._thread.start()
        await ready
        self._closed = False

    async def close(self) -> None:
        """Finish queued operations, stop the writer thread and close the file."""
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        await self._submit(ops.ping)

    async def accept(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        *,
        dedupe_window_s: float,
    ) -> AcceptResult:
        """Store an event, its deliveries and its dedupe key once the commit is durable."""
        deliveries = tuple(deliveries)

        def op(conn: sqlite3.Connection) -> AcceptResult:
            result = ops.accept(conn, event, deliveries, dedupe_window_s)
            self._dedupe_horizon = max(self._dedupe_horizon, event.received_at)
            return result

        return await self._submit(op)

    async def due(self, destination: str, now: float, limit: int) -> list[Delivery]:
        """Return the destination's deliveries that may be sent now, oldest first."""
        return await self._submit(lambda conn: ops.due(conn, destination, now, limit))

    async def next_due_at(self, destination: str) -> float | None:
        """Return when the destination's next sendable delivery is due, if any."""
        return await self._submit(lambda conn: ops.next_due_at(conn, destination))

    async def record_sent(self, delivery_id: int, now: float, note: str | None = None) -> None:
        """Mark a delivery sent, with an optional note (an unknown id is ignored)."""
        await self._submit(lambda conn: ops.record_sent(conn, delivery_id, now, note))

    async def record_failure(
        self, delivery_id: int, error: str, *, retry_at: float | None, now: float
    ) -> None:
        """Record a failed attempt: retry at `retry_at`, or dead-letter when it is None."""
        await self._submit(lambda conn: ops.record_failure(conn, delivery_id, error, retry_at, now))

    async def queue_depths(self) -> dict[str, int]:
        """Return how many deliveries wait (pending or failed), per destination."""
        return await self._submit(ops.queue_depths)

    async def list_deliveries(
        self, status: DeliveryStatus | None = None, limit: int = 50
    ) -> list[Delivery]:
        """Return the newest deliveries, optionally of one status."""
        return await self._submit(lambda conn: ops.list_deliveries(conn, status, limit))

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """Put dead deliveries (the given ones, or all when None) back in the queue.

        They keep their id, so a replayed delivery goes out before later deliveries of its
        session; their last_error is kept until the next attempt.
        """
        ids = None if ids is None else tuple(ids)
        return await self._submit(lambda conn: ops.replay(conn, ids, now))

    async def _submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"sqlite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(op, future, loop))
        return await future

    # --- the writer thread -----------------------------------------------------------------

    def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except Exception as e:
            error = StoreUnavailable(f"cannot open sqlite store {self.path}: {e}")
            _resolve(_Job(ops.ping, ready, loop), _Outcome(error=error))
            return
        _resolve(_Job(ops.ping, ready, loop), _Outcome())
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the thread issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailable(f"cannot switch {self.path} to WAL (got {mode})")
            # FULL: a 202 promises the event survives a power cut, so every commit fsyncs.
            conn.execute("PRAGMA synchronous = FULL")
            ops.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            jobs, stopping = self._take_batch()
            if not jobs:
                continue
            try:
                self._run_batch(conn, jobs)
            except Exception as e:  # a bug, not a database error: keep serving
                log.exception("sqlite writer: unexpected error")
                _fail_all(jobs, StoreUnavailable(f"sqlite store {self.path}: {e!r}"))

    def _take_batch(self) -> tuple[list[_Job], bool]:
        """Block for one operation, then take whatever else is already queued."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Job)
        jobs = [first]
        while len(jobs) < MAX_BATCH_OPS:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return jobs, True
            assert isinstance(item, _Job)
            jobs.append(item)
        return jobs, False

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.ops += len(jobs)
        if self.stats.batches % _PURGE_EVERY_BATCHES == 0:
            horizon = self._dedupe_horizon
            jobs = [*jobs, _Job(lambda c: ops.purge_dedupe(c, horizon), None, None)]
        try:
            outcomes = self._transaction(conn, jobs)
        except (sqlite3.Error, _BatchFailed) as e:
            self.stats.failed_batches += 1
            _rollback(conn)
            log.warning("sqlite store %s: batch of %d failed: %s", self.path, len(jobs), e)
            _fail_all(jobs, StoreUnavailable(f"sqlite store {self.path}: {e}"))
            return
        self.stats.commits += 1
        _resolve_batch(jobs, outcomes)

    def _transaction(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[_Outcome]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise _BatchFailed(f"cannot start a transaction: {e}") from e
        outcomes = [_run_in_savepoint(conn, job) for job in jobs]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise _BatchFailed(f"commit failed, nothing of this batch was stored: {e}") from e
        return outcomes


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


def _fail_all(jobs: list[_Job], error: StoreUnavailable) -> None:
    _resolve_batch(jobs, [_Outcome(error=error)] * len(jobs))


def _resolve_batch(jobs: list[_Job], outcomes: list[_Outcome]) -> None:
    """Hand a batch's outcomes to their event loops, one wake-up per loop, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], _Outcome]]] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        if job.future is None or job.loop is None:
            _resolve(job, outcome)  # housekeeping: only logged
        else:
            by_loop.setdefault(job.loop, []).append((job.future, outcome))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            loop.call_soon_threadsafe(_set_outcomes, results)


def _set_outcomes(results: list[tuple[asyncio.Future[Any], _Outcome]]) -> None:
    for future, outcome in results:
        _set_outcome(future, outcome)


def _resolve(job: _Job, outcome: _Outcome) -> None:
    """Hand an outcome to the job's event loop (from the writer thread)."""
    if job.future is None or job.loop is None:
        if outcome.error is not None:
            log.warning("sqlite housekeeping failed: %s", outcome.error)
        return
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
        job.loop.call_soon_threadsafe(_set_outcome, job.future, outcome)


def _set_outcome(future: asyncio.Future[Any], outcome: _Outcome) -> None:
    if future.done():  # cancelled while queued: the operation ran anyway
        return
    if outcome.error is not None:
        future.set_exception(outcome.error)
    else:
        future.set_result(outcome.result)
