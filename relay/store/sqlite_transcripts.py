"""The SQLite store's transcripts (SPEC 8.1): a conversation's events, and where each went.

Like sqlite_ops, every function runs inside a transaction (or a read) the caller owns.
"""

from __future__ import annotations

import sqlite3
from typing import cast

from relay.store.base import DeliveryStatus, EventDelivery, Transcript, TranscriptEvent

# Version 14: an event's conversation, for its transcript; NULL when relay kept none
# (no console or no `conversations:`), and then not in the index: an event costs the
# index nothing unless transcripts are kept. Deliveries by their event, to show beside
# it where it went, and the events that joined a digest (event_ref grows with id: both
# indexes are written at their end).
SCHEMA_V14 = """
ALTER TABLE events ADD COLUMN session TEXT;
CREATE INDEX events_by_session ON events (session, id) WHERE session IS NOT NULL;
CREATE INDEX deliveries_by_event ON deliveries (event_ref);
CREATE INDEX digest_events_by_event ON digest_events (event_ref);
"""

_EVENTS_SQL = """
SELECT id, event_id, body, received_at FROM events INDEXED BY events_by_session
WHERE session = ? ORDER BY id DESC LIMIT ?
"""
# A digest's delivery is its first event's; the events that joined it after the first
# are in digest_events.
_DELIVERIES_SQL = """
SELECT d.event_ref, d.id, d.destination, d.status FROM deliveries AS d
WHERE d.event_ref IN (SELECT value FROM json_each(:refs))
UNION ALL
SELECT g.event_ref, d.id, d.destination, d.status
FROM digest_events AS g JOIN deliveries AS d ON d.id = g.delivery_id
WHERE g.event_ref IN (SELECT value FROM json_each(:refs)) AND g.event_ref <> d.event_ref
"""


def transcript(conn: sqlite3.Connection, conversation: str, limit: int) -> Transcript:
    """The newest `limit` events of a conversation, oldest first, with their deliveries."""
    rows = conn.execute(_EVENTS_SQL, (conversation, limit + 1)).fetchall()
    earlier = len(rows) > limit
    rows = rows[:limit][::-1]
    found: dict[int, list[EventDelivery]] = {ref: [] for ref, *_ in rows}
    refs = "[" + ",".join(str(ref) for ref in found) + "]"
    # In the order relay made them (a page's few hundred rows: sorted here, not by a temp
    # B-tree in SQLite).
    made = sorted(conn.execute(_DELIVERIES_SQL, {"refs": refs}), key=lambda r: int(r[1]))
    for ref, delivery_id, destination, status in made:
        found[ref].append(EventDelivery(delivery_id, destination, cast(DeliveryStatus, status)))
    events = [
        TranscriptEvent(event_id, bytes(body), float(received_at), tuple(found[ref]))
        for ref, event_id, body, received_at in rows
    ]
    return Transcript(events, earlier)
