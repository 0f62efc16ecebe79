"""The postgres destination (SPEC 4.3): one row per event, inserted at most once."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from relay.config.model import PostgresDestination
from relay.events import Event
from relay.limits import Limit
from relay.notification import Notification
from relay.rules import MISSING, lookup
from relay.senders.base import DeliveryError, SenderContext, Sent

SERVICE = "PostgreSQL"
# How long a send waits for a connection. A lane never has more sends in flight than the
# pool has connections, so a wait this long means the database cannot be reached.
CONNECT_WAIT_S = 5.0
# After a connection failed, a send waits this long only: while the database stays out of
# reach, each try fails fast with the reason, and relay's backoff spaces the tries.
RECONNECT_WAIT_S = 1.0
# SQLSTATE classes worth another try: connection exception, transaction rollback
# (serialization, deadlock), insufficient resources, operator intervention (a shutdown,
# a cancelled statement), system error. Any other refusal stays a refusal.
RETRYABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

# relay's own table, created when absent: SPEC 4.3.
DEFAULT_COLUMNS = (
    "event_id",
    "event_type",
    "agent_id",
    "session_id",
    "role",
    "message",
    "occurred_at",
    "received_at",
    "payload",
)
_CREATE = """CREATE TABLE IF NOT EXISTS {table} (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    agent_id text,
    session_id text,
    role text,
    message text,
    occurred_at timestamptz,
    received_at timestamptz,
    payload jsonb NOT NULL
)"""
_INSERT = "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"
# Whether the table exists, and whether a unique index (or key) on exactly the event_id
# column backs ON CONFLICT DO NOTHING. A partial or expression index does not.
_UNIQUE_EVENT_ID = """SELECT to_regclass(%(table)s) IS NOT NULL, EXISTS (
    SELECT 1 FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass(%(table)s) AND i.indisunique AND i.indnkeyatts = 1
      AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %(column)s)"""


def _when(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _value(event: Event, source: str) -> Any:
    """What goes in a column: one of relay's values, or the value at a path, as JSON types
    it (an object or a list as jsonb; missing: NULL)."""
    if source == "timestamp":
        return _when(event.timestamp)
    if source == "received_at":
        return _when(event.received_at)
    if source == "payload":
        return Jsonb(dict(event.payload))
    if source == "event_type":
        return event.kind
    value = lookup(event, source)
    if value is MISSING:
        return None
    if isinstance(value, dict | list):
        return Jsonb(value)
    return value


def default_row(event: Event) -> dict[str, Any]:
    """The row of relay's own table for an event."""
    return {
        "event_id": event.event_id,
        "event_type": event.kind,
        "agent_id": event.agent_id or None,
        "session_id": event.session,
        "role": event.role,
        "message": event.message,
        "occurred_at": _when(event.timestamp),
        "received_at": _when(event.received_at),
        "payload": Jsonb(dict(event.payload)),
    }


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
        self._ready = False  # the table is there, with a unique event_id
        self._connect_error: str | None = None  # why the last connection failed
        self._password = str(conninfo_to_dict(config.dsn.reveal()).get("password") or "")

    # What is written ------------------------------------------------------------------

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
        return {column: _value(event, source) for column, source in self._columns.items()}

    def insert(self, columns: list[str]) -> sql.Composed:
        """The INSERT: identifiers quoted, every value a parameter, a repeat a no-op."""
        return sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"
        ).format(
            table=sql.Identifier(*self._table),
            columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns),
            values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )

    def preview(self, notification: Notification) -> str:
        row = self.row(notification.event)
        info = conninfo_to_dict(self._dsn.reveal())
        target = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        table = ".".join(self._table)
        lines = [f"INSERT INTO {table} at {target}, once per event ({self.key_column} unique):"]
        lines += [f"  {column} = {_shown(value)}" for column, value in row.items()]
        if self._columns is None:
            lines.append(f"  ({table} is created when absent)")
        return "\n".join(lines) + "\n"

    # Sending ----------------------------------------------------------------------------

    async def send(self, notification: Notification) -> Sent:
        row = self.row(notification.event)
        pool = await self._open_pool()
        try:
            wait_s = CONNECT_WAIT_S if self._connect_error is None else RECONNECT_WAIT_S
            async with pool.connection(timeout=wait_s) as connection:
                if not self._ready:
                    await self._prepare(connection)
                async with connection.transaction():
                    await connection.execute(self.insert(list(row)), list(row.values()))
        except PoolTimeout:
            reason = self._connect_error or f"no connection within {wait_s:g}s"
            raise DeliveryError(f"cannot connect to {SERVICE}: {reason}", retryable=True) from None
        except PoolClosed:
            raise DeliveryError(
                f"{SERVICE} pool closed (relay is reloading)", retryable=True
            ) from None
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return Sent()

    async def _prepare(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Before the first insert: create relay's table when absent, and make sure a
        unique index backs ON CONFLICT DO NOTHING, or nothing promises no duplicates."""
        table = sql.Identifier(*self._table).as_string(connection)
        if self._columns is None:
            await connection.execute(sql.SQL(_CREATE).format(table=sql.Identifier(*self._table)))
        cursor = await connection.execute(
            _UNIQUE_EVENT_ID, {"table": table, "column": self.key_column}
        )
        found = await cursor.fetchone()
        exists, unique = found if found is not None else (False, False)
        if not exists:
            return  # the insert says so, in the database's words
        if not unique:
            raise DeliveryError(
                f"table {'.'.join(self._table)} has no unique index on its {self.key_column}"
                " column, which takes event_id: a delivery repeated after a crash would insert"
                f" a second row (CREATE UNIQUE INDEX ON {table} ({self.key_column}))",
                retryable=False,
            )
        self._ready = True

    async def _open_pool(self) -> AsyncConnectionPool[Any]:
        """Open the pool at the first send: `relay route` and `relay check` never connect."""
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

    def _error(self, exc: psycopg.Error) -> DeliveryError:
        """Retry what may pass later (SPEC 4.3's classes, a lost connection); dead-letter
        what the database refused, in its own words, so it can be replayed once fixed."""
        state = exc.sqlstate
        message = exc.diag.message_primary or str(exc)
        if state is None:
            return DeliveryError(f"{SERVICE} failed: {self._clean(message)}", retryable=True)
        if state[:2] in RETRYABLE_CLASSES:
            return DeliveryError(
                f"{SERVICE} failed: {self._clean(message)} (SQLSTATE {state})", retryable=True
            )
        if state == "42P01" and self._columns is None:
            self._ready = False  # relay's own table was dropped: create it again
            return DeliveryError(f"{SERVICE}: {self._clean(message)}", retryable=True)
        return DeliveryError(
            f"{SERVICE} refused the row: {self._clean(message)} (SQLSTATE {state})",
            retryable=False,
        )

    def _clean(self, message: str) -> str:
        """One line, and never the password, whatever a driver message quotes."""
        text = " ".join(message.split())
        if self._password:
            text = text.replace(self._password, "<secret>")
        return text

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0


def _shown(value: Any) -> str:
    """A value as relay route shows it: JSON, a timestamp in ISO 8601, NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, Jsonb):
        return json.dumps(value.obj, ensure_ascii=False) + " (jsonb)"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False)
