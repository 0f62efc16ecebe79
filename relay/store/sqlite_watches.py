"""The SQLite store's conversation watches (SPEC 4.4): one row per conversation.

Like sqlite_ops, every function runs inside a transaction the caller owns. The rules of a
watch are relay.conversations.watch's: these functions only read and write rows.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from relay.conversations.watch import (
    WATCH_FIELDS,
    Forget,
    Observation,
    Watch,
    may_raise,
    observe,
    raised,
)

# Version 8: conversation watches. due_at is Watch.due_at, kept as a column so the due
# ones are found through an index that holds only watches with something left to raise.
SCHEMA_V8 = """
CREATE TABLE watches (
    conversation TEXT PRIMARY KEY,
    opened_at REAL NOT NULL,
    agent_id TEXT NOT NULL,
    room_name TEXT,
    started_at REAL NOT NULL,
    last_event_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    visitor_messages INTEGER NOT NULL,
    agent_messages INTEGER NOT NULL,
    first_visitor_at REAL,
    first_answer_at REAL,
    first_agent_at REAL,
    last_agent_at REAL,
    stretch INTEGER NOT NULL,
    stretch_open INTEGER NOT NULL,
    stretch_raised INTEGER NOT NULL,
    asked_at REAL,
    asked_received_at REAL,
    asked_message TEXT,
    unanswered_due REAL,
    ends INTEGER NOT NULL,
    ended INTEGER NOT NULL,
    end_due REAL,
    due_at REAL,
    claimed_by TEXT,
    lease_until REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX watches_due ON watches (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX watches_by_last_received_at ON watches (last_received_at);
"""

_COLUMNS = ", ".join(WATCH_FIELDS)
_BOOLEANS = frozenset({"stretch_open", "stretch_raised", "ended"})
# UPDATE … RETURNING gives a REAL column that holds a whole number back as an int.
_REALS = frozenset(f.name for f in dataclasses.fields(Watch) if str(f.type).startswith("float"))
_SAVE_SQL = (
    f"INSERT OR REPLACE INTO watches ({_COLUMNS}, due_at, claimed_by, lease_until)"
    f" VALUES ({', '.join('?' * len(WATCH_FIELDS))}, ?, ?, ?)"
)
_FIND_SQL = f"SELECT {_COLUMNS}, claimed_by, lease_until FROM watches WHERE conversation = ?"
_CLAIM_SQL = f"""
UPDATE watches SET claimed_by = :owner, lease_until = :until
WHERE conversation IN (
    SELECT conversation FROM watches INDEXED BY watches_due
    WHERE due_at IS NOT NULL AND due_at <= :now AND lease_until <= :now
    ORDER BY due_at LIMIT :limit
)
RETURNING {_COLUMNS}
"""


def _watch(row: Any) -> Watch:
    values: dict[str, Any] = {}
    for name, value in zip(WATCH_FIELDS, row, strict=False):
        if name in _BOOLEANS:
            value = bool(value)
        elif name in _REALS and value is not None:
            value = float(value)
        values[name] = value
    return Watch(**values)


def _find(conn: sqlite3.Connection, conversation: str) -> tuple[Watch, str | None, float] | None:
    row = conn.execute(_FIND_SQL, (conversation,)).fetchone()
    if row is None:
        return None
    return _watch(row), row[-2], float(row[-1])


def _save(conn: sqlite3.Connection, watch: Watch, claimed_by: str | None, lease: float) -> None:
    values = [getattr(watch, name) for name in WATCH_FIELDS]
    conn.execute(_SAVE_SQL, (*values, watch.due_at, claimed_by, lease))


def observe_event(conn: sqlite3.Connection, seen: Observation | Forget) -> None:
    """Move a conversation's watch on by one accepted event (a claim on it stays), or
    forget it."""
    if isinstance(seen, Forget):
        conn.execute("DELETE FROM watches WHERE conversation = ?", (seen.conversation,))
        return
    found = _find(conn, seen.conversation)
    if found is None:
        _save(conn, observe(None, seen), None, 0.0)
    else:
        watch, claimed_by, lease = found
        _save(conn, observe(watch, seen), claimed_by, lease)


def claim(
    conn: sqlite3.Connection, now: float, limit: int, owner: str, until: float
) -> list[Watch]:
    """Claim up to `limit` due watches no live claim holds, earliest due first."""
    params = {"owner": owner, "until": until, "now": now, "limit": limit}
    watches = [_watch(row) for row in conn.execute(_CLAIM_SQL, params).fetchall()]
    return sorted(watches, key=lambda w: (w.due_at or 0.0, w.conversation))


def mark_raised(
    conn: sqlite3.Connection, conversation: str, kind: Any, number: int, now: float, owner: str
) -> bool:
    """Mark a signal raised if the watch still owes it at `now`; release the owner's claim
    either way. Return whether it was owed."""
    found = _find(conn, conversation)
    if found is None:
        return False
    watch, claimed_by, lease = found
    owed = may_raise(watch, kind, number, now)
    if owed:
        watch = raised(watch, kind, number)
    if claimed_by == owner:
        claimed_by, lease = None, 0.0
    if owed or claimed_by is None:
        _save(conn, watch, claimed_by, lease)
    return owed


def find(conn: sqlite3.Connection, conversation: str) -> Watch | None:
    """Return a conversation's watch, if it has one."""
    found = _find(conn, conversation)
    return None if found is None else found[0]


def purge(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Forget at most `limit` watches of conversations with no event since `before`."""
    return conn.execute(
        "DELETE FROM watches WHERE conversation IN (SELECT conversation FROM watches"
        " WHERE last_received_at < ? ORDER BY last_received_at LIMIT ?)",
        (before, limit),
    ).rowcount
