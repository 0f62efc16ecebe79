"""Which database failures are worth another try, and how each is told (SPEC 4.3)."""

from __future__ import annotations

import psycopg

from relay.senders.base import DeliveryError

SERVICE = "PostgreSQL"
# SQLSTATE classes worth another try: connection exception, transaction rollback
# (serialization, deadlock), insufficient resources, operator intervention (a shutdown,
# a cancelled statement), system error.
RETRYABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# And single states that pass with time: a lock timeout or an object in use (a migration
# holds the table), a read-only transaction (a standby, mid-failover).
RETRYABLE_STATES = frozenset({"55P03", "55006", "25006"})
UNDEFINED_TABLE = "42P01"


def is_retryable(exc: psycopg.Error) -> bool:
    """Whether a failure may pass on a later try."""
    state = exc.sqlstate
    if state is None:  # raised by the driver: a lost connection, or a value it refused
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in RETRYABLE_CLASSES or state in RETRYABLE_STATES


def describe(exc: psycopg.Error) -> str:
    """The database's own words: its message, its detail, its SQLSTATE."""
    text = exc.diag.message_primary or str(exc)
    if exc.diag.message_detail:
        text += f" ({exc.diag.message_detail})"
    return text + (f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else "")


def delivery_error(exc: psycopg.Error, text: str) -> DeliveryError:
    """Turn a failure, described as `text`, into the worker's retry or dead letter."""
    if is_retryable(exc):
        return DeliveryError(f"{SERVICE} failed: {text}", retryable=True)
    return DeliveryError(f"{SERVICE} refused the row: {text}", retryable=False)
