"""The postgres sender: a pool per destination, a check of the table, one insert a send."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from relay.config.model import PostgresDestination
from relay.events import Event
from relay.limits import Limit
from relay.notification import Notification
from relay.senders.base import DeliveryError, SenderContext, Sent
from relay.senders.postgres import statements
from relay.senders.postgres.failures import (
    SERVICE,
    UNDEFINED_TABLE,
    delivery_error,
    describe,
)
from relay.senders.postgres.rows import default_row, mapped_row, shown

# How long a send waits for a connection. A lane never has more sends in flight than the
# pool has connections, so a wait this long means the database cannot be reached.
CONNECT_WAIT_S = 5.0
# After a connection failed, a send waits this long only: while the database stays out of
# reach, each try fails fast with the reason, and relay's backoff spaces the tries.
RECONNECT_WAIT_S = 1.0
# Errors of a CREATE TABLE IF NOT EXISTS that lost a race with another process's: the
# table is there all the same.
_CREATED_ELSEWHERE = frozenset({"42P07", "23505", "42710"})


class PostgresSender:
    """Inserts each event as a row, idempotently, through a small pool of connections."""

    updates_parents = False

    def __init__(self, config: PostgresDestination, context: SenderContext) -> None:
        self.name = config.name
        self.limit: Limit | None = None
        self._dsn = config.dsn
        self._table = config.table
        self._columns: Mapping[str, str] | None = config.columns
        self._pool_size = max(context.concurrency, 1)
        self._pool: AsyncConnectionPool[Any] | None = None
        self._closed = False
        self._prepared = asyncio.Lock()
        self._ready = False  # the table is there, with a unique key column
        self._json_columns: tuple[str, ...] = ()
        self._connect_error: str | None = None  # why the last connection failed
        password = str(conninfo_to_dict(config.dsn.reveal()).get("password") or "")
        # Masked in every message; one of a few characters would mask half the words.
        self._password = password if len(password) >= 4 else ""

    @property
    def key_column(self) -> str:
        """The column that takes event_id, whose unique index makes inserts idempotent."""
        if self._columns is None:
            return "event_id"
        return next(column for column, source in self._columns.items() if source == "event_id")

    def row(self, event: Event) -> dict[str, Any]:
        """The row an event becomes, column by column."""
        if self._columns is None:
            return default_row(event)
        return mapped_row(event, self._columns, self._json_columns)

    def preview(self, notification: Notification) -> str:
        info = conninfo_to_dict(self._dsn.reveal())
        host, port = info.get("host", "localhost"), info.get("port", 5432)
        table = ".".join(self._table)
        lines = [
            f"INSERT INTO {table} at {host}:{port}/{info.get('dbname', '')}, once per event"
            f" ({self.key_column} unique):"
        ]
        row = self.row(notification.event)
        lines += [f"  {column} = {shown(value)}" for column, value in row.items()]
        if self._columns is None:
            lines.append(f"  ({table} is created when absent)")
        return "\n".join(lines) + "\n"

    async def send(self, notification: Notification) -> Sent:
        pool = await self._open_pool()
        wait_s = CONNECT_WAIT_S if self._connect_error is None else RECONNECT_WAIT_S
        try:
            async with pool.connection(timeout=wait_s) as connection:
                if not self._ready:
                    async with self._prepared:
                        await self._prepare(connection)
                row = self.row(notification.event)
                query = statements.insert(self._table, list(row), self.key_column)
                async with connection.transaction():
                    await connection.execute(query, list(row.values()))
        except PoolTimeout:
            reason = self._connect_error or f"no connection within {wait_s:g}s"
            raise DeliveryError(f"cannot connect to {SERVICE}: {reason}", retryable=True) from None
        except PoolClosed:
            closed = f"{SERVICE} connections closed (relay is reloading or stopping)"
            raise DeliveryError(closed, retryable=True) from None
        except psycopg.Error as exc:
            if exc.sqlstate == UNDEFINED_TABLE and self._columns is None:
                self._ready = False  # relay's own table was dropped: made again next time
            raise delivery_error(exc, self._clean(describe(exc))) from None
        return Sent()

    async def _prepare(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Before the first insert: create relay's table when absent, and make sure a
        unique index on the key column backs ON CONFLICT, or nothing promises no
        duplicates. Run once per sender, one send at a time."""
        if self._ready:
            return
        exists, has_key, unique, json_columns = await self._facts(connection)
        if not exists and self._columns is None:
            await self._create(connection)
            exists, has_key, unique, json_columns = await self._facts(connection)
        if not exists:
            return  # the insert says so, in the database's words
        table = ".".join(self._table)
        if not has_key:
            raise DeliveryError(
                f"table {table} has no column {self.key_column}, which columns says takes event_id",
                retryable=False,
            )
        if not unique:
            quoted = statements.table_name(self._table).as_string(connection)
            raise DeliveryError(
                f"table {table} has no unique index on its {self.key_column} column, which"
                " takes event_id: a delivery repeated after a crash would insert a second row"
                f' (CREATE UNIQUE INDEX ON {quoted} ("{self.key_column}"))',
                retryable=False,
            )
        self._json_columns = tuple(json_columns)
        self._ready = True

    async def _facts(self, connection: psycopg.AsyncConnection[Any]) -> tuple[Any, ...]:
        table = statements.table_name(self._table).as_string(connection)
        params = {"table": table, "column": self.key_column}
        cursor = await connection.execute(statements.TABLE_FACTS, params)
        found = await cursor.fetchone()
        return tuple(found) if found is not None else (False, False, False, [])

    async def _create(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Create relay's table; one process at a time, and a race lost is no failure."""
        table = statements.table_name(self._table)
        try:
            async with connection.transaction():
                await connection.execute(statements.CREATE_LOCK, [".".join(self._table)])
                create = sql.SQL(statements.CREATE_TABLE).format(table=table)
                await connection.execute(create)
        except psycopg.Error as exc:
            if exc.sqlstate not in _CREATED_ELSEWHERE:
                raise

    async def _open_pool(self) -> AsyncConnectionPool[Any]:
        """Open the pool at the first send: `relay route` and `relay check` never connect."""
        if self._closed:
            raise DeliveryError(f"{SERVICE} connections closed (relay is stopping)", retryable=True)
        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._dsn.reveal(),
                connection_class=self._connection_class(),
                kwargs={
                    "autocommit": True,
                    "connect_timeout": int(CONNECT_WAIT_S),
                    "application_name": "relay",  # so a DBA can tell relay's sessions
                },
                min_size=0,
                max_size=self._pool_size,
                # A connection the server ended while idle (a restart) is found out before
                # a send uses it, not by a failed attempt.
                check=AsyncConnectionPool.check_connection,
                # A failed connection is retried by relay's own backoff, send by send;
                # the pool gives up its own tries soon, so a recovered database is used
                # at the next send rather than after the pool's long backoff.
                reconnect_timeout=CONNECT_WAIT_S,
                name=f"relay-{self.name}",
                open=False,
            )
            await self._pool.open(wait=False)
        return self._pool

    def _connection_class(self) -> type[psycopg.AsyncConnection[Any]]:
        """A connection class that remembers why connecting failed: the pool itself only
        times out, and the delivery's record should say why."""
        sender = self

        class Remembering(psycopg.AsyncConnection[Any]):
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    connection = await super().connect(*args, **kwargs)
                except psycopg.Error as exc:
                    sender._connect_error = sender._clean(str(exc))
                    raise
                sender._connect_error = None
                return connection

        return Remembering

    def _clean(self, message: str) -> str:
        """One line, and never the password, whatever a driver message quotes."""
        text = " ".join(message.split())
        return text.replace(self._password, "<secret>") if self._password else text

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0
