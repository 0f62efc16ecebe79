"""The SQLite store's conversation watches (SPEC 4.4): one row per conversation.

Like sqlite_ops, every function runs inside a transaction the caller owns. The rules of a
watch are relay.conversations.watch's: these functions only read and write rows.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.activity.tally import UNANSWERED
from relay.conversations.watch import (
    WATCH_FIELDS,
    Forget,
    Observation,
    Watch,
    may_raise,
    raised,
    watch_of,
)
from relay.store import sqlite_observe
from relay.store.base import QuietWatch

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

# Version 10: what each event writes. A watch's row changes with every event, but its two
# index entries need not: an entry that moves costs its old page and its new one, and with
# many open conversations each page is a different one (three pages an event, where the
# row alone is one). So the indexes hold bounds that an event seldom moves:
# - due_floor: at most due_at. Every event pushes the end further away, which leaves the
#   floor where it was; only an earlier deadline (a stretch opening) lowers it. A claim
#   raises floors that have passed without their watch being due to its real due_at.
# - quiet_at: at most last_received_at and at most QUIET_STEP_S (sqlite_observe) behind
#   it, so the purge finds quiet watches through it and an event moves it once in that.
# UPDATE, unlike INSERT OR REPLACE, leaves alone the indexes whose columns it does not set.
SCHEMA_V10 = """
ALTER TABLE watches ADD COLUMN due_floor REAL;
ALTER TABLE watches ADD COLUMN quiet_at REAL NOT NULL DEFAULT 0;
UPDATE watches SET due_floor = due_at, quiet_at = last_received_at;
DROP INDEX watches_due;
DROP INDEX watches_by_last_received_at;
CREATE INDEX watches_due_floor ON watches (due_floor) WHERE due_floor IS NOT NULL;
CREATE INDEX watches_quiet ON watches (quiet_at);
CREATE TRIGGER watches_floors_of_an_older_relay AFTER INSERT ON watches
WHEN NEW.due_floor IS NULL AND NEW.due_at IS NOT NULL
BEGIN
    UPDATE watches SET due_floor = NEW.due_at, quiet_at = NEW.last_received_at
    WHERE conversation = NEW.conversation;
END;
"""
# The trigger: a relay of version 9 still running beside this one during a rolling upgrade
# writes its watches with INSERT OR REPLACE and no floors; without them the row would be in
# neither index, claimed never and purged never. This relay's own inserts set the floors.

# Version 13: what the activity counters (relay/activity) need of a conversation, once
# each: how many events it has had (its first one is a conversation started), and whether
# its first answer and its first conversation.unanswered were counted. A watch kept before
# counts as started, and as counted what it already had.
SCHEMA_V13 = """
ALTER TABLE watches ADD COLUMN events INTEGER NOT NULL DEFAULT 1;
ALTER TABLE watches ADD COLUMN answer_counted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE watches ADD COLUMN unanswered_counted INTEGER NOT NULL DEFAULT 0;
UPDATE watches SET answer_counted = first_answer_at IS NOT NULL,
    unanswered_counted = stretch > 1 OR stretch_raised;
"""
_UNANSWERED_COUNTED_SQL = (
    "UPDATE watches SET unanswered_counted = 1 WHERE conversation = ? AND NOT unanswered_counted"
)

# How many passed floors one statement of a claim moves (it repeats until none is left).
_REINDEX_ROWS = 1000

_COLUMNS = ", ".join(WATCH_FIELDS)
_BOOLEANS = frozenset({"stretch_open", "stretch_raised", "ended"})
# UPDATE … RETURNING gives a REAL column that holds a whole number back as an int.
_REALS = frozenset(f.name for f in dataclasses.fields(Watch) if str(f.type).startswith("float"))
# How each column of a row reads back as its Watch field (None: as it is).
_READS: tuple[Callable[[Any], Any] | None, ...] = tuple(
    bool if name in _BOOLEANS else float if name in _REALS else None for name in WATCH_FIELDS
)
_FIND_SQL = (
    f"SELECT {_COLUMNS}, due_floor, quiet_at, claimed_by, lease_until"
    " FROM watches WHERE conversation = ?"
)
_REINDEX_SQL = """
UPDATE watches SET due_floor = due_at
WHERE conversation IN (
    SELECT conversation FROM watches INDEXED BY watches_due_floor
    WHERE due_floor IS NOT NULL AND due_floor <= :now AND (due_at IS NULL OR due_at > :now)
    ORDER BY due_floor LIMIT :limit
)
"""
_CLAIM_SQL = f"""
UPDATE watches SET claimed_by = :owner, lease_until = :until
WHERE conversation IN (
    SELECT conversation FROM watches INDEXED BY watches_due_floor
    WHERE due_floor IS NOT NULL AND due_floor <= :now
      AND due_at <= :now AND lease_until <= :now
    ORDER BY due_floor LIMIT :limit
)
RETURNING {_COLUMNS}
"""
_PURGE_SQL = """
DELETE FROM watches WHERE conversation IN (
    SELECT conversation FROM watches INDEXED BY watches_quiet
    WHERE quiet_at < :before AND last_received_at < :before
    ORDER BY quiet_at LIMIT :limit
)
"""


@dataclass(frozen=True)
class _Stored:
    """A watch's row: the watch and what the store keeps beside it."""

    watch: Watch
    due_floor: float | None
    quiet_at: float
    claimed_by: str | None
    lease_until: float


@functools.cache
def _update_sql(set_due_floor: bool, set_quiet_at: bool) -> str:
    """The UPDATE that sets a row's columns, leaving out the indexed ones that keep their
    values so that their index entries stay where they are."""
    names = [*WATCH_FIELDS[1:], "due_at", "claimed_by", "lease_until"]
    names += ["due_floor"] * set_due_floor + ["quiet_at"] * set_quiet_at
    return f"UPDATE watches SET {', '.join(f'{n} = ?' for n in names)} WHERE conversation = ?"


def _watch(row: Any) -> Watch:
    return watch_of(
        {
            name: value if read is None or value is None else read(value)
            for name, read, value in zip(WATCH_FIELDS, _READS, row, strict=False)
        }
    )


def _find(conn: sqlite3.Connection, conversation: str) -> _Stored | None:
    row = conn.execute(_FIND_SQL, (conversation,)).fetchone()
    if row is None:
        return None
    due_floor, quiet_at, claimed_by, lease_until = row[-4:]
    return _Stored(_watch(row), due_floor, float(quiet_at), claimed_by, float(lease_until))


def _update(conn: sqlite3.Connection, old: _Stored, new: _Stored) -> None:
    """Write a row, moving an index entry only where its bound changed."""
    set_due_floor = new.due_floor != old.due_floor
    set_quiet_at = new.quiet_at != old.quiet_at
    values: list[Any] = [getattr(new.watch, name) for name in WATCH_FIELDS[1:]]
    values += [new.watch.due_at, new.claimed_by, new.lease_until]
    values += [new.due_floor] * set_due_floor + [new.quiet_at] * set_quiet_at
    conn.execute(_update_sql(set_due_floor, set_quiet_at), (*values, new.watch.conversation))


def observe_event(
    conn: sqlite3.Connection, seen: Observation | Forget, counting: bool = False
) -> list[str]:
    """Move a conversation's watch on by one accepted event (a claim on it stays), or
    forget it; with `counting`, return the agent counters its conversation adds."""
    if isinstance(seen, Forget):
        conn.execute("DELETE FROM watches WHERE conversation = ?", (seen.conversation,))
        return []
    return sqlite_observe.observe(conn, seen, counting)


def claim(
    conn: sqlite3.Connection, now: float, limit: int, owner: str, until: float
) -> list[Watch]:
    """Claim up to `limit` due watches no live claim holds, by the floor of when each is
    due (about the earliest due first; each due one is claimed at its next poll at worst)."""
    # Every floor that passed before its watch was due, in chunks: each needs moving once
    # (an answered question leaves one), and one left behind would slow every claim.
    while (
        conn.execute(_REINDEX_SQL, {"now": now, "limit": _REINDEX_ROWS}).rowcount == _REINDEX_ROWS
    ):
        pass
    params = {"owner": owner, "until": until, "now": now, "limit": limit}
    watches = [_watch(row) for row in conn.execute(_CLAIM_SQL, params).fetchall()]
    return sorted(watches, key=lambda w: (w.due_at or 0.0, w.conversation))


def mark_raised(
    conn: sqlite3.Connection,
    conversation: str,
    kind: Any,
    number: int,
    now: float,
    owner: str,
    counting: bool = False,
) -> tuple[bool, list[str]]:
    """Mark a signal raised if the watch still owes it at `now`; release the owner's claim
    either way. Return whether it was owed and, with `counting`, the agent counters it
    adds: its conversation's first conversation.unanswered, once."""
    found = _find(conn, conversation)
    if found is None:
        return False, []
    watch, claimed_by, lease = found.watch, found.claimed_by, found.lease_until
    owed = may_raise(watch, kind, number, now)
    if owed:
        watch = raised(watch, kind, number)
    if claimed_by == owner:
        claimed_by, lease = None, 0.0
    if owed or claimed_by is None:
        # Rare (a signal, a claim's end), so the floor goes to the exact due_at.
        _update(conn, found, _Stored(watch, watch.due_at, found.quiet_at, claimed_by, lease))
    if not (owed and counting and kind == "unanswered"):
        return owed, []
    first = conn.execute(_UNANSWERED_COUNTED_SQL, (conversation,)).rowcount
    return owed, [UNANSWERED] if first else []


_BY_QUIET_SQL = f"""
SELECT {_COLUMNS}, quiet_at FROM watches INDEXED BY watches_quiet
WHERE quiet_at <= :quiet_at AND (quiet_at < :quiet_at OR conversation < :conversation)
ORDER BY quiet_at DESC, conversation DESC LIMIT :limit
"""


def by_quiet(
    conn: sqlite3.Connection, below: tuple[float, str] | None, limit: int
) -> list[QuietWatch]:
    """Up to `limit` watches by their quiet floor, highest first, below `below`."""
    quiet_at, conversation = below if below is not None else (float("inf"), "")
    rows = conn.execute(
        _BY_QUIET_SQL, {"quiet_at": quiet_at, "conversation": conversation, "limit": limit}
    ).fetchall()
    return [QuietWatch(float(row[-1]), _watch(row)) for row in rows]


def find(conn: sqlite3.Connection, conversation: str) -> Watch | None:
    """Return a conversation's watch, if it has one."""
    found = _find(conn, conversation)
    return None if found is None else found.watch


def purge(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Forget at most `limit` watches of conversations with no event since `before`."""
    return conn.execute(_PURGE_SQL, {"before": before, "limit": limit}).rowcount
