"""The SQLite store's reads for operators (the console, `relay deliveries`, /metrics),
on a connection and a thread of their own.

The writer's batches run on the event loop (sqlite.py): a read queued among them would
hold up every webhook behind it for as long as it takes, and a console search can take
long. Here a read waits only for the reads before it. WAL lets this connection read
beside the writer: each read is one transaction that sees what was committed when it
began, never a batch half done, and never takes a lock a writer waits for.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from relay.store import sqlite_listing
from relay.store.base import StoreUnavailable

T = TypeVar("T")


class Reader:
    """Runs read-only operations one at a time on its own thread and connection."""

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="relay-sqlite-read")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect (the writer has created or migrated the schema by now)."""
        self._conn = await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            # A WAL reader waits only while another connection recovers the WAL after a
            # crash or truncates it; and then only this thread waits.
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA query_only = ON")
            # The writer's page cache size: a search reads thousands of bodies, and the
            # pages the next view of it reads again stay here.
            conn.execute("PRAGMA cache_size = -32000")
            sqlite_listing.register_functions(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in a read transaction of its own; StoreUnavailable once closed."""
        conn = self._conn
        if conn is None:
            raise StoreUnavailable(f"sqlite store {self._path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, _read, conn, op)

    async def close(self) -> None:
        """Refuse new reads and close the connection once the reads queued have run (the
        one thread takes its jobs in order)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        self._thread.shutdown(wait=False)


def _read(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], T]) -> T:
    try:
        # One snapshot for all of op's statements: a page and where it stopped agree.
        conn.execute("BEGIN")
        try:
            return op(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # it read only: nothing to commit
    except sqlite3.DatabaseError as e:
        # The database's trouble (locked, I/O, corrupt) is the store's; a bug stays one.
        if not isinstance(e, sqlite3.OperationalError) and type(e) is not sqlite3.DatabaseError:
            raise
        raise StoreUnavailable(f"sqlite: {e}") from e
