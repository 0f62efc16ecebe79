"""The SQLite store's listings for the console (SPEC 8): filtered pages and counts.

Counts are kept by triggers as deliveries are added, change status and are purged, so
reading them costs the same at a thousand deliveries or a million. A page walks the
deliveries newest first through an index (by status, by destination, or the primary key)
and stops once it has its `limit`; a filter no index answers (type, text, time) walks a
window of ids below the cursor, so a text found nowhere reads `scan` rows, not the store.

These run on the store's reader (sqlite_reader.py), never in the writer's batches.
"""

from __future__ import annotations

import sqlite3

from relay.events import normalize_event_type, searchable_text, stored_event_type
from relay.store.base import STATUSES, DeliveryCounts, DeliveryFilter, Found
from relay.store.sqlite_rows import DELIVERY_COLUMNS, deliveries_of

# Version 9: counts by destination and status, kept by triggers; and an index for listing
# one destination's deliveries newest first.
SCHEMA_V9 = """
CREATE TABLE delivery_counts (
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (destination, status)
) WITHOUT ROWID;
INSERT INTO delivery_counts (destination, status, n)
    SELECT destination, status, count(*) FROM deliveries GROUP BY destination, status;
CREATE TRIGGER deliveries_counted_on_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO delivery_counts (destination, status, n) VALUES (NEW.destination, NEW.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_counted_on_status AFTER UPDATE OF status ON deliveries
WHEN OLD.status <> NEW.status BEGIN
    UPDATE delivery_counts SET n = n - 1
        WHERE destination = OLD.destination AND status = OLD.status;
    INSERT INTO delivery_counts (destination, status, n) VALUES (NEW.destination, NEW.status, 1)
        ON CONFLICT (destination, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_counted_on_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET n = n - 1
        WHERE destination = OLD.destination AND status = OLD.status;
END;
CREATE INDEX deliveries_by_destination ON deliveries (destination, id);
"""


def register_functions(conn: sqlite3.Connection) -> None:
    """Give SQL the two tests a filter needs that SQLite cannot do alike for every text:
    its lower() folds ASCII only, and the event type is inside the body."""
    conn.create_function("relay_contains", 2, _contains, deterministic=True)
    conn.create_function("relay_event_type", 1, stored_event_type, deterministic=True)


def _contains(body: bytes, needle: str) -> bool:
    return needle in searchable_text(body)


def find(
    conn: sqlite3.Connection, where: DeliveryFilter, before_id: int | None, limit: int, scan: int
) -> Found:
    """Return up to `limit` deliveries `where` selects, newest first; an unindexed filter
    examines only the `scan` ids below the cursor (Store.find_deliveries)."""
    floor = None
    if where.unindexed:
        # The newest delivery below the cursor, not the cursor itself: a cursor far above
        # every id (a hand-made URL, a replay's `upto`) must not walk empty windows down.
        top = _newest_id(conn, before_id)
        if top < 1:
            return Found([])
        floor = top - scan + 1
    tests, params = ["1"], []
    for test, value in (
        ("d.id < ?", before_id),
        ("d.id >= ?", floor),
        ("d.status = ?", where.status),
        ("d.destination = ?", where.destination),
        ("d.created_at >= ?", where.since),
        ("d.created_at < ?", where.until),
        ("relay_event_type(e.body) = ?", _kind(where.event_type)),
        ("relay_contains(e.body, ?)", None if where.text is None else where.text.casefold()),
    ):
        if value is not None:
            tests.append(test)
            params.append(value)
    sql = (
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries AS d JOIN events AS e ON e.id = d.event_ref"
        f" WHERE {' AND '.join(tests)} ORDER BY d.id DESC LIMIT ?"
    )
    found = deliveries_of(conn.execute(sql, (*params, limit)).fetchall())
    if floor is None or len(found) >= limit or floor <= _oldest_id(conn):
        return Found(found)
    return Found(found, stopped_at=floor)


_ANY_ID = 2**63 - 1  # above every rowid


def _newest_id(conn: sqlite3.Connection, below: int | None) -> int:
    """The newest delivery's id below `below` (any, when None); 0 when there is none."""
    query = "SELECT coalesce(max(id), 0) FROM deliveries WHERE id < ?"
    return int(conn.execute(query, (_ANY_ID if below is None else below,)).fetchone()[0])


def _oldest_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(min(id), 0) FROM deliveries").fetchone()[0])


def _kind(event_type: str | None) -> str | None:
    return None if event_type is None else normalize_event_type(event_type)


def counts(conn: sqlite3.Connection) -> DeliveryCounts:
    """Return the kept counts."""
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    by_destination: dict[str, dict[str, int]] = {}
    for destination, status, n in conn.execute(
        "SELECT destination, status, n FROM delivery_counts WHERE n > 0 ORDER BY destination"
    ):
        by_status[status] = by_status.get(status, 0) + int(n)
        by_destination.setdefault(str(destination), {})[str(status)] = int(n)
    return DeliveryCounts(by_status, by_destination)
