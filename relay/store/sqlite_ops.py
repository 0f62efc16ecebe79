"""SQLite schema and the operations SqliteStore runs on its writer thread.

Every function here takes the connection and runs inside a transaction the caller owns;
none of them commits. Keeping them free of threading makes them easy to read and test.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from typing import cast

from relay.activity.tally import Tally
from relay.conversations.watch import Forget, Observation
from relay.limits import take_token
from relay.request_record import RequestRecord
from relay.store import sqlite_counters as counters
from relay.store import sqlite_listing
from relay.store import sqlite_transcripts as transcripts
from relay.store import sqlite_watches as watches
from relay.store.base import (
    AcceptResult,
    Attempt,
    AttemptOutcome,
    ClaimAtAccept,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    NewSignal,
    SentRecord,
    StoreUnavailable,
    accepted_delivery,
)
from relay.store.sqlite_rows import DELIVERY_COLUMNS, deliveries_of

SCHEMA_VERSION = 17

# events.id, not events.event_id, is the key: the same event id may be accepted again once
# its dedupe window has passed, and each acceptance is its own event row.
# deliveries.id is the accepted order. An id is never reused, so replay ids stay stable:
# the retention purge never deletes the newest row (no AUTOINCREMENT: its bookkeeping
# costs a write on every insert).
# The partial indexes cover only unfinished deliveries, so they stay small however much
# history piles up, and the WHERE of every query below repeats UNFINISHED verbatim so the
# planner can prove the partial index applies.
_SCHEMA_V1 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event_ref INTEGER NOT NULL REFERENCES events (id),
    destination TEXT NOT NULL,
    rule TEXT NOT NULL,
    template TEXT,
    session_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'failed', 'dead', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    finished_at REAL
);
CREATE INDEX deliveries_queue ON deliveries (destination, id, next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_next ON deliveries (destination, next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_session ON deliveries (destination, session_key, id)
    WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE TABLE dedupe (
    event_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX dedupe_expires ON dedupe (expires_at);
"""

# Version 2: claims with leases, so several relay processes can share one file. A delivery
# is claimed by one process (claimed_by) until lease_until; 0 means nobody holds it. The
# index covers only live and expired claims of unfinished deliveries, a handful of rows.
_SCHEMA_V2 = """
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
CREATE INDEX deliveries_leases ON deliveries (destination, lease_until)
    WHERE status IN ('pending', 'failed') AND lease_until > 0;
"""

# Version 3: the shared pace and 429 pause of each rate-limited target (relay/limits.py).
_SCHEMA_V3 = """
CREATE TABLE limits (
    key TEXT PRIMARY KEY,
    tokens REAL,
    updated REAL,
    paused_until REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

# Version 4: the thread map: a conversation's thread at one destination (its first email's
# Message-ID and subject, later a Slack parent or a Discord forum post).
_SCHEMA_V4 = """
CREATE TABLE threads (
    destination TEXT NOT NULL,
    conversation TEXT NOT NULL,
    value TEXT NOT NULL,
    messages INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (destination, conversation)
) WITHOUT ROWID;
"""

# Version 5: digests (SPEC 4.2). A digest is a delivery, due when its window closes
# (digest_until); the events that joined it, its first included, are in digest_events.
_SCHEMA_V5 = """
ALTER TABLE deliveries ADD COLUMN digest_until REAL;
CREATE TABLE digest_events (
    delivery_id INTEGER NOT NULL,
    event_ref INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, event_ref)
) WITHOUT ROWID;
"""

# Each step takes a database from the version before it to its own.
# Version 6: a thread's last activity, so that the retention purge forgets the threads of
# conversations long over. Threads kept before it count as active at the upgrade.
_SCHEMA_V6 = """
ALTER TABLE threads ADD COLUMN last_at REAL NOT NULL DEFAULT 0;
UPDATE threads SET last_at = (julianday('now') - 2440587.5) * 86400.0;
CREATE INDEX threads_by_last_at ON threads (last_at);
"""

# Version 7: every attempt of a delivery (SPEC 5), numbered on across replays.
_SCHEMA_V7 = """
CREATE TABLE attempts (
    delivery_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
"""

# Version 11: what mattered of the request that brought each event in (RequestRecord's
# JSON; relay/request_record.py). NULL for an event relay raised itself, and for those
# stored before this version: their requests are gone.
_SCHEMA_V11 = """
ALTER TABLE events ADD COLUMN request TEXT;
"""

_MIGRATIONS = {
    1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5, 6: _SCHEMA_V6,
    7: _SCHEMA_V7, 8: watches.SCHEMA_V8, 9: sqlite_listing.SCHEMA_V9,
    10: watches.SCHEMA_V10, 11: _SCHEMA_V11, 12: counters.SCHEMA_V12, 13: watches.SCHEMA_V13,
    14: transcripts.SCHEMA_V14, 15: counters.SCHEMA_V15, 16: counters.SCHEMA_V16,
    17: counters.SCHEMA_V17,
}  # fmt: skip

UNFINISHED = "status IN ('pending', 'failed')"

# A session head: no earlier unfinished delivery of the same session to the same destination.
_IS_HEAD = f"""
    NOT EXISTS (
        SELECT 1 FROM deliveries AS p
        WHERE p.destination = d.destination AND p.session_key = d.session_key
          AND p.{UNFINISHED} AND p.id < d.id
    )
"""


# Nor is a delivery its session's head while another of the session is held by a live
# lease: a dead delivery replayed goes back before the later ones of its session, which
# went on without it, but not beside the one being sent. At most `concurrency` leases per
# process are live at a destination: the index reads a handful of rows.
def _none_held(now: str) -> str:
    return f"""
    NOT EXISTS (
        SELECT 1 FROM deliveries AS h INDEXED BY deliveries_leases
        WHERE h.destination = d.destination AND h.{UNFINISHED} AND h.lease_until > 0
          AND h.lease_until > {now} AND h.session_key = d.session_key AND h.id <> d.id
    )
"""


# Claim: walk the destination's unfinished deliveries in accepted order and take up to
# `limit` sendable ones (due, session heads, held by no live lease): with a backlog this
# reads about `limit` rows, not the whole backlog. A held head is unfinished, so its
# session's later deliveries are not heads: one session is sent by one process at a time.
CLAIM_SQL = f"""
UPDATE deliveries SET claimed_by = :owner, lease_until = :until
WHERE id IN (
    SELECT d.id FROM deliveries AS d INDEXED BY deliveries_queue
    WHERE d.destination = :destination AND d.{UNFINISHED} AND d.next_attempt_at <= :now
      AND d.lease_until <= :now AND {_IS_HEAD} AND {_none_held(":now")}
    ORDER BY d.id
    LIMIT :limit
)
RETURNING id
"""

_CLAIMED_SQL = f"""
SELECT {DELIVERY_COLUMNS}
FROM deliveries AS d JOIN events AS e ON e.id = d.event_ref
WHERE d.id IN (SELECT value FROM json_each(?))
ORDER BY d.id
"""

# Only session heads count. The minimum over all unfinished deliveries would be wrong: a
# follower accepted while its head waits for a retry an hour away has its own
# next_attempt_at in the past, so the worker would wake, find nothing due and spin.
# Walking next_attempt_at order and stopping at the first head is cheap: it reads only the
# followers due before that head.
NEXT_DUE_SQL = f"""
SELECT d.next_attempt_at
FROM deliveries AS d INDEXED BY deliveries_next
WHERE d.destination = ? AND d.{UNFINISHED} AND d.lease_until <= ? AND {_IS_HEAD}
  AND {_none_held("?")}
ORDER BY d.next_attempt_at
LIMIT 1
"""

# A head held by a live lease is sent by its holder, which then claims what follows it;
# if the holder dies, its lease ends and the head is due then.
LEASE_ENDS_SQL = f"""
SELECT min(d.lease_until) FROM deliveries AS d INDEXED BY deliveries_leases
WHERE d.destination = ? AND d.{UNFINISHED} AND d.lease_until > 0 AND d.lease_until > ?
"""

_REPLAY_CHUNK = 500
_DEDUPE_PURGE_ROWS = 1000


def migrate(conn: sqlite3.Connection) -> None:
    """Create the schema in a new database; refuse one written by a newer relay."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another relay process (a second `relay serve`,
        # `relay replay`) may have created the schema while this one waited for the lock.
        upgrade_schema(conn, _schema_version(conn))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def upgrade_schema(conn: sqlite3.Connection, version: int) -> None:
    """Bring the schema from `version` (0: none) to the current one, in the caller's
    transaction: a new database runs every step, an old one the steps it lacks."""
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _statements(_MIGRATIONS[step]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _statements(script: str) -> list[str]:
    """Split a migration into statements: at each `;` that ends one, not at those inside a
    trigger's body (executescript would do this, but it commits the caller's transaction)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    return statements


def _schema_version(conn: sqlite3.Connection) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"database schema version {version} is newer than this relay supports "
            f"({SCHEMA_VERSION})"
        )
    return version


def accept(
    conn: sqlite3.Connection,
    event: NewEvent,
    deliveries: Sequence[NewDelivery],
    dedupe_window_s: float,
    observation: Observation | Forget | None = None,
    tally: Tally | None = None,
    adding: counters.Adding | None = None,
    more: Sequence[str] = (),
    claim: ClaimAtAccept | None = None,
) -> AcceptResult:
    """Store the event, its deliveries and its dedupe key, move its conversation's watch
    on and add its tally (with `more` of its agent's counters) to the counters, unless it
    is a duplicate. With `adding`, the tally is counted there, for the caller to write
    with the rest of its batch's. With `claim`, claim what it names (ClaimAtAccept)."""
    # One statement both checks and claims the key: it inserts a new key or renews an
    # expired one, and changes nothing (rowcount 0) while the key is still live.
    claimed = conn.execute(
        "INSERT INTO dedupe (event_id, expires_at) VALUES (?, ?)"
        " ON CONFLICT (event_id) DO UPDATE SET expires_at = excluded.expires_at"
        " WHERE dedupe.expires_at <= ?",
        (event.event_id, event.received_at + dedupe_window_s, event.received_at),
    ).rowcount
    if claimed == 0:
        return AcceptResult(duplicate=True, event_id=event.event_id, deliveries=0)
    if observation is not None:
        more = [*more, *watches.observe_event(conn, observation, counting=tally is not None)]
    if tally is not None:
        if adding is None:
            counters.add(conn, tally, more)
        else:
            adding.add(tally, more)
    request = None if event.request is None else event.request.to_json()
    cur = conn.execute(
        "INSERT INTO events (event_id, body, received_at, request, session) VALUES (?, ?, ?, ?, ?)",
        (event.event_id, event.body, event.received_at, request, event.conversation),
    )
    event_ref = cur.lastrowid
    assert event_ref is not None
    count = len(deliveries)
    for digest in (d for d in deliveries if d.digest_s is not None):
        _add_to_digest(conn, event_ref, event.received_at, digest)
    deliveries = [d for d in deliveries if d.digest_s is None]
    if claim is not None and any(d.destination in claim.destinations for d in deliveries):
        taken = _insert_claiming(conn, event, event_ref, deliveries, claim)
        return AcceptResult(False, event.event_id, count, taken)
    conn.executemany(
        _INSERT_DELIVERY_SQL,
        [
            (
                event_ref,
                d.destination,
                d.rule,
                d.template,
                d.session_key,
                event.received_at,
                event.received_at,
                None,
                0,
            )
            for d in deliveries
        ],
    )
    return AcceptResult(duplicate=False, event_id=event.event_id, deliveries=count)


_INSERT_DELIVERY_SQL = (
    "INSERT INTO deliveries (event_ref, destination, rule, template, session_key,"
    " status, attempts, created_at, next_attempt_at, claimed_by, lease_until)"
    " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"
)
# Whether a session has an unfinished delivery at a destination: a new one is its head
# when it has none.
_SESSION_BUSY_SQL = f"""
SELECT 1 FROM deliveries INDEXED BY deliveries_session
WHERE destination = ? AND session_key = ? AND {UNFINISHED} LIMIT 1
"""


def _insert_claiming(
    conn: sqlite3.Connection,
    event: NewEvent,
    event_ref: int,
    deliveries: Sequence[NewDelivery],
    claim: ClaimAtAccept,
) -> tuple[Delivery, ...]:
    """Insert an event's own deliveries one at a time, in order, claiming for `claim`'s
    owner the first to each of its destinations that CLAIM_SQL would take now: its
    session's head there (due at once, as a new delivery is, and held by nobody)."""
    claimed: list[Delivery] = []
    wanted = set(claim.destinations)
    at = event.received_at
    for d in deliveries:
        takes = d.destination in wanted and (
            conn.execute(_SESSION_BUSY_SQL, (d.destination, d.session_key)).fetchone() is None
        )
        if takes:
            wanted.discard(d.destination)
        owner, until = (claim.owner, claim.lease_until) if takes else (None, 0)
        cur = conn.execute(
            _INSERT_DELIVERY_SQL,
            (event_ref, d.destination, d.rule, d.template, d.session_key, at, at, owner, until),
        )
        if takes:
            assert cur.lastrowid is not None
            claimed.append(accepted_delivery(cur.lastrowid, event, d))
    return tuple(claimed)


def raise_signal(
    conn: sqlite3.Connection,
    signal: NewSignal,
    deliveries: Sequence[NewDelivery],
    dedupe_window_s: float,
    owner: str,
    tally: Tally | None = None,
) -> bool:
    """Accept a signal's event if its watch still owes it; release the owner's claim."""
    now = signal.event.received_at
    owed, added = watches.mark_raised(
        conn, signal.conversation, signal.kind, signal.number, now, owner, tally is not None
    )
    if not owed:
        return False
    # Its id was taken (ingest reserves them, so never by a posted event): nothing stored.
    return not accept(
        conn, signal.event, deliveries, dedupe_window_s, tally=tally, more=added
    ).duplicate


def _add_to_digest(
    conn: sqlite3.Connection, event_ref: int, now: float, delivery: NewDelivery
) -> None:
    """Add an event to its session's open digest, or open one due when its window closes.

    A digest is open until its window closes, and while nobody has claimed it.
    """
    assert delivery.digest_s is not None
    row = conn.execute(
        f"SELECT id FROM deliveries INDEXED BY deliveries_session"
        f" WHERE destination = ? AND session_key = ? AND {UNFINISHED} AND rule = ?"
        f" AND digest_until > ? AND status = 'pending' AND lease_until = 0"
        f" ORDER BY id DESC LIMIT 1",
        (delivery.destination, delivery.session_key, delivery.rule, now),
    ).fetchone()
    if row is None:
        until = now + delivery.digest_s
        row = conn.execute(
            "INSERT INTO deliveries (event_ref, destination, rule, template, session_key,"
            " status, attempts, created_at, next_attempt_at, digest_until)"
            " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) RETURNING id",
            (
                event_ref,
                delivery.destination,
                delivery.rule,
                delivery.template,
                delivery.session_key,
                now,
                until,
                until,
            ),
        ).fetchone()
    conn.execute(
        "INSERT INTO digest_events (delivery_id, event_ref) VALUES (?, ?)", (row[0], event_ref)
    )


def digest_events(conn: sqlite3.Connection, delivery_id: int) -> list[tuple[str, bytes]]:
    """Return a digest's events in accepted order."""
    rows = conn.execute(
        "SELECT e.event_id, e.body FROM digest_events AS g JOIN events AS e ON e.id = g.event_ref"
        " WHERE g.delivery_id = ? ORDER BY g.event_ref",
        (delivery_id,),
    ).fetchall()
    return [(str(event_id), bytes(body)) for event_id, body in rows]


def latest_received_at(conn: sqlite3.Connection) -> float:
    """Return when the newest stored event was received (-inf when there is none)."""
    row = conn.execute("SELECT received_at FROM events ORDER BY id DESC LIMIT 1").fetchone()
    return float("-inf") if row is None else float(row[0])


def purge_dedupe(conn: sqlite3.Connection, before: float) -> int:
    """Delete a bounded number of dedupe keys that expired at or before `before`."""
    cur = conn.execute(
        "DELETE FROM dedupe WHERE event_id IN"
        " (SELECT event_id FROM dedupe WHERE expires_at <= ? LIMIT ?)",
        (before, _DEDUPE_PURGE_ROWS),
    )
    return cur.rowcount


def purge_history(
    conn: sqlite3.Connection, before: float, limit: int, max_body_bytes: int
) -> tuple[int, int]:
    """Delete deliveries finished before `before`, then events received before it that
    have no delivery left; oldest first. Return how many of each were deleted.

    Only a prefix goes: each walk stops at the first row that stays (a delivery still
    being retried, or one that finished later), so it reads at most `limit` rows (and
    event bodies up to about `max_body_bytes`) from the start, and never rescans what it
    kept. Deliveries are inserted with their event, so event_ref grows with id: no event
    before the first kept delivery's event has a delivery left.

    The newest row of each table always stays. Without AUTOINCREMENT a new row gets the
    largest id + 1, so ids (which `relay replay` takes) are never handed out twice.
    """
    last_delivery = _last_of_prefix(
        conn.execute(
            "SELECT id, status IN ('sent', 'dead') AND finished_at < ?, 0 FROM deliveries"
            " WHERE id < (SELECT max(id) FROM deliveries) ORDER BY id LIMIT ?",
            (before, limit),
        ),
        max_bytes=None,
    )
    deliveries = 0
    if last_delivery is not None:
        deliveries = conn.execute("DELETE FROM deliveries WHERE id <= ?", (last_delivery,)).rowcount
        conn.execute("DELETE FROM digest_events WHERE delivery_id <= ?", (last_delivery,))
        conn.execute("DELETE FROM attempts WHERE delivery_id <= ?", (last_delivery,))
    first_kept = conn.execute("SELECT event_ref FROM deliveries ORDER BY id LIMIT 1").fetchone()
    last_event = _last_of_prefix(
        conn.execute(
            "SELECT id, received_at < ?, length(body) FROM events"
            " WHERE id < ? AND id < (SELECT max(id) FROM events) ORDER BY id LIMIT ?",
            (before, _NO_ROWID if first_kept is None else first_kept[0], limit),
        ),
        max_bytes=max_body_bytes,
    )
    events = 0
    if last_event is not None:
        events = conn.execute("DELETE FROM events WHERE id <= ?", (last_event,)).rowcount
    return deliveries, events


_NO_ROWID = 2**63 - 1  # above every rowid: no delivery holds events back


def _last_of_prefix(rows: sqlite3.Cursor, max_bytes: int | None) -> int | None:
    """Return the id of the last row of the leading run of (id, may go, size) rows that
    may go, ending the run once their sizes reach `max_bytes` (at least one row goes).

    Rows are read one by one and the walk stops at the first that stays: when nothing is
    old enough, which is the usual case, SQLite reads one row, not `limit`.
    """
    last, size = None, 0
    try:
        for row_id, may_go, row_size in rows:
            if not may_go or (max_bytes is not None and last is not None and size >= max_bytes):
                break
            last, size = int(row_id), size + int(row_size)
    finally:
        rows.close()
    return last


def claim(
    conn: sqlite3.Connection, destination: str, now: float, limit: int, owner: str, until: float
) -> list[Delivery]:
    """Claim up to `limit` sendable deliveries of a destination for `owner` until `until`."""
    params = {"owner": owner, "until": until, "destination": destination, "now": now}
    ids = [row[0] for row in conn.execute(CLAIM_SQL, {**params, "limit": limit}).fetchall()]
    if not ids:
        return []
    return deliveries_of(conn.execute(_CLAIMED_SQL, (json.dumps(ids),)).fetchall())


def renew(conn: sqlite3.Connection, owner: str, ids: Sequence[int], until: float) -> set[int]:
    """Extend the owner's leases on these deliveries; return the ids it still holds."""
    held: set[int] = set()
    for start in range(0, len(ids), _REPLAY_CHUNK):
        chunk = list(ids[start : start + _REPLAY_CHUNK])
        rows = conn.execute(
            f"UPDATE deliveries SET lease_until = ? WHERE claimed_by = ? AND {UNFINISHED}"
            " AND id IN (SELECT value FROM json_each(?)) RETURNING id",
            (until, owner, json.dumps(chunk)),
        ).fetchall()
        held.update(row[0] for row in rows)
    return held


def release(conn: sqlite3.Connection, owner: str) -> int:
    """Give up every claim the owner holds on unfinished deliveries; return how many."""
    return conn.execute(
        f"UPDATE deliveries SET claimed_by = NULL, lease_until = 0"
        f" WHERE claimed_by = ? AND {UNFINISHED}",
        (owner,),
    ).rowcount


def next_due_at(conn: sqlite3.Connection, destination: str, now: float) -> float | None:
    """Return when the destination's next head can be claimed: the earliest next_attempt_at
    of the heads no live lease holds, or the end of the earliest live lease."""
    due = conn.execute(NEXT_DUE_SQL, (destination, now, now)).fetchone()
    lease_ends = conn.execute(LEASE_ENDS_SQL, (destination, now)).fetchone()[0]
    times = [float(t) for t in (due[0] if due else None, lease_ends) if t is not None]
    return min(times) if times else None


# A delivery's outcome is recorded only by the process that holds its claim: after its
# lease ran out and another process claimed it, the other process's send decides.
_HELD = f"id = ? AND claimed_by = ? AND {UNFINISHED}"
_UNCLAIM = "claimed_by = NULL, lease_until = 0"


# Whether a destination has an unfinished delivery that the owner does not hold under a
# live lease: in the queue index, past the owner's sends in flight (at most its lane's
# concurrency), the first row of anyone else's answers.
_OTHERS_QUEUED_SQL = f"""
SELECT EXISTS (
    SELECT 1 FROM deliveries AS d INDEXED BY deliveries_queue
    WHERE d.destination = ? AND d.{UNFINISHED} AND NOT (d.claimed_by IS ? AND d.lease_until > ?)
)
"""


def record_sent(
    conn: sqlite3.Connection,
    delivery_id: int,
    owner: str,
    now: float,
    note: str | None,
    started_at: float,
) -> SentRecord:
    """Mark a held delivery sent; `note` (e.g. refused recipients) replaces the last error.
    Say whether anything else of its destination is queued (Store.record_sent)."""
    row = conn.execute(
        f"UPDATE deliveries SET status = 'sent', attempts = attempts + 1, last_error = ?,"
        f" finished_at = ?, {_UNCLAIM} WHERE {_HELD} RETURNING destination",
        (note, now, delivery_id, owner),
    ).fetchone()
    if row is None:
        return SentRecord.NOT_HELD
    _keep_attempt(conn, delivery_id, started_at, now, "sent", note)
    others = conn.execute(_OTHERS_QUEUED_SQL, (row[0], owner, now)).fetchone()[0]
    return SentRecord.RECORDED if others else SentRecord.RECORDED_IDLE


def record_failure(
    conn: sqlite3.Connection,
    delivery_id: int,
    owner: str,
    error: str,
    retry_at: float | None,
    now: float,
    started_at: float,
) -> bool:
    """Record a failed attempt of a held delivery: failed until `retry_at`, or dead."""
    if retry_at is None:
        sql = (
            f"UPDATE deliveries SET status = 'dead', attempts = attempts + 1, last_error = ?,"
            f" finished_at = ?, {_UNCLAIM} WHERE {_HELD}"
        )
    else:
        sql = (
            f"UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?,"
            f" next_attempt_at = ?, {_UNCLAIM} WHERE {_HELD}"
        )
    moment = now if retry_at is None else retry_at
    held = conn.execute(sql, (error, moment, delivery_id, owner)).rowcount == 1
    if held:
        outcome = "dead" if retry_at is None else "retried"
        _keep_attempt(conn, delivery_id, started_at, now, outcome, error)
    return held


def _keep_attempt(
    conn: sqlite3.Connection,
    delivery_id: int,
    started_at: float,
    now: float,
    outcome: str,
    detail: str | None,
) -> None:
    """Add an attempt, numbered after the delivery's last (a replay does not restart it)."""
    conn.execute(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_s, outcome, detail)"
        " SELECT ?, coalesce(max(number), 0) + 1, ?, ?, ?, ? FROM attempts WHERE delivery_id = ?",
        (delivery_id, started_at, max(now - started_at, 0.0), outcome, detail, delivery_id),
    )


def attempts(conn: sqlite3.Connection, delivery_id: int) -> list[Attempt]:
    """Return a delivery's attempts in order."""
    rows = conn.execute(
        "SELECT number, started_at, duration_s, outcome, detail FROM attempts"
        " WHERE delivery_id = ? ORDER BY number",
        (delivery_id,),
    ).fetchall()
    return [
        Attempt(int(n), float(at), float(took), cast(AttemptOutcome, outcome), detail)
        for n, at, took, outcome, detail in rows
    ]


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> Delivery | None:
    """Return one delivery, with its event's request, or None."""
    sql = (
        f"SELECT {DELIVERY_COLUMNS}, e.request"
        " FROM deliveries AS d JOIN events AS e ON e.id = d.event_ref WHERE d.id = ?"
    )
    row = conn.execute(sql, (delivery_id,)).fetchone()
    if row is None:
        return None
    [found] = deliveries_of([row])
    return dataclasses.replace(found, request=RequestRecord.from_json(row[-1]))


def reserve(
    conn: sqlite3.Connection, key: str, now: float, rate_per_s: float | None, burst: int
) -> float:
    """Take a turn at a limited target: 0 to send now, else how long to wait."""
    row = conn.execute(
        "SELECT tokens, updated, paused_until FROM limits WHERE key = ?", (key,)
    ).fetchone()
    tokens, updated, paused_until = row if row is not None else (None, None, 0.0)
    if paused_until > now:
        return float(paused_until - now)
    if rate_per_s is None:
        return 0.0
    wait_s, tokens = take_token(tokens, updated, now, rate_per_s, burst)
    conn.execute(
        "INSERT INTO limits (key, tokens, updated) VALUES (?, ?, ?) ON CONFLICT (key)"
        " DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
        (key, tokens, now),
    )
    return wait_s


def pause(conn: sqlite3.Connection, key: str, until: float) -> None:
    """Pause a limited target until `until` (a later pause already set wins)."""
    conn.execute(
        "INSERT INTO limits (key, paused_until) VALUES (?, ?) ON CONFLICT (key)"
        " DO UPDATE SET paused_until = max(paused_until, excluded.paused_until)",
        (key, until),
    )


def thread(conn: sqlite3.Connection, destination: str, conversation: str) -> str | None:
    """Return a conversation's thread at a destination, if it has one."""
    row = conn.execute(
        "SELECT value FROM threads WHERE destination = ? AND conversation = ?",
        (destination, conversation),
    ).fetchone()
    return None if row is None else str(row[0])


def start_thread(
    conn: sqlite3.Connection, destination: str, conversation: str, value: str, now: float
) -> str:
    """Keep a conversation's thread unless it has one; return the one it has now."""
    conn.execute(
        "INSERT INTO threads (destination, conversation, value, last_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (destination, conversation)"
        " DO UPDATE SET last_at = max(last_at, excluded.last_at)",
        (destination, conversation, value, now),
    )
    found = thread(conn, destination, conversation)
    assert found is not None
    return found


def replace_thread(
    conn: sqlite3.Connection, destination: str, conversation: str, value: str, now: float
) -> None:
    """Give a conversation a new thread, counting its messages from 1 again."""
    conn.execute(
        "INSERT INTO threads (destination, conversation, value, last_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (destination, conversation) DO UPDATE SET value = excluded.value,"
        " messages = 1, last_at = max(last_at, excluded.last_at)",
        (destination, conversation, value, now),
    )


def count_message(conn: sqlite3.Connection, destination: str, conversation: str, now: float) -> int:
    """Count one more message in a conversation's thread; return how many it has (0: none)."""
    row = conn.execute(
        "UPDATE threads SET messages = messages + 1, last_at = max(last_at, ?)"
        " WHERE destination = ? AND conversation = ? RETURNING messages",
        (now, destination, conversation),
    ).fetchone()
    return 0 if row is None else int(row[0])


def purge_threads(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Forget at most `limit` threads of conversations quiet since `before`, quietest
    first; return how many went."""
    return conn.execute(
        "DELETE FROM threads WHERE (destination, conversation) IN (SELECT destination,"
        " conversation FROM threads WHERE last_at < ? ORDER BY last_at LIMIT ?)",
        (before, limit),
    ).rowcount


def queue_depths(conn: sqlite3.Connection) -> dict[str, int]:
    """Return how many deliveries wait (pending or failed), per destination."""
    rows = conn.execute(
        f"SELECT destination, count(*) FROM deliveries WHERE {UNFINISHED} GROUP BY destination"
    ).fetchall()
    return {str(destination): int(count) for destination, count in rows}


def list_deliveries(
    conn: sqlite3.Connection, status: DeliveryStatus | None, limit: int
) -> list[Delivery]:
    """Return the newest deliveries, optionally of one status."""
    where, params = ("", ()) if status is None else ("WHERE d.status = ?", (status,))
    sql = (
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries AS d JOIN events AS e ON e.id = d.event_ref"
        f" {where} ORDER BY d.id DESC LIMIT ?"
    )
    return deliveries_of(conn.execute(sql, (*params, limit)).fetchall())


# last_error is kept on replay: the delivery log keeps showing why it died until the next
# attempt overwrites it (record_sent clears it).
_REPLAY_SET = (
    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?,"
    " finished_at = NULL, claimed_by = NULL, lease_until = 0 WHERE status = 'dead'"
)


def replay(conn: sqlite3.Connection, ids: Sequence[int] | None, now: float) -> int:
    """Put dead deliveries back in the queue; return how many were dead."""
    if ids is None:
        return conn.execute(_REPLAY_SET, (now,)).rowcount
    count = 0
    for start in range(0, len(ids), _REPLAY_CHUNK):
        chunk = list(ids[start : start + _REPLAY_CHUNK])
        marks = ", ".join("?" * len(chunk))
        count += conn.execute(f"{_REPLAY_SET} AND id IN ({marks})", (now, *chunk)).rowcount
    return count


def ping(conn: sqlite3.Connection) -> None:
    """Read something trivial."""
    conn.execute("SELECT 1").fetchone()
