"""The deliveries list as its page and its live stream show it: read the same way and
rendered by the same two fragments, so what the stream sends is what a reload would show.

The fragments are the counts (by status and destination) and the results (the bulk
replay link, the table or "no delivery", and the pages). The page embeds them; the
stream (live.py) sends them again when they change.

A filter no index answers (type, text, time) searches SEARCH_ROWS deliveries a request
(Store.find_deliveries): when those hold less than a page, the page says how far it
searched and links to the next stretch, as it links to the next page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from relay.console.bulk import DeadCount, confirm_url
from relay.console.filters import STATUSES, ListQuery, only
from relay.console.present import Row, row
from relay.store import Store
from relay.store.base import SCAN_ROWS, DeliveryCounts

PAGE_SIZE = 50
# How many deliveries a search by type, text or time reads a request (the store's bound).
SEARCH_ROWS = SCAN_ROWS


@dataclass(frozen=True)
class Page:
    """One page of deliveries, and the counts beside it."""

    query: ListQuery
    rows: list[Row]
    older: ListQuery | None  # the next page, or the next stretch to search, if any
    counts: DeliveryCounts
    # The search stopped short at this id (the lowest it read): `older` goes on below it.
    searched_to: int | None = None

    def fingerprint(self) -> Hashable:
        """What the page shows, in short: the stream renders again only when it changes."""
        shown = tuple(
            (r.delivery.id, r.delivery.status, r.delivery.attempts, r.delivery.last_error)
            for r in self.rows
        )
        counts = self.counts
        by_destination = tuple(
            (name, tuple(sorted(by.items()))) for name, by in sorted(counts.by_destination.items())
        )
        by_status = tuple(sorted(counts.by_status.items()))
        return shown, self.older is None, self.searched_to, by_status, by_destination


async def read_page(store: Store, query: ListQuery) -> Page:
    """Read the deliveries a query shows, PAGE_SIZE a page, and the counts."""
    # The counts first: an event accepted between the two reads then shows in the rows
    # and is counted at the next read, where the other order would show counts that hold
    # a delivery over rows that say "No delivery.".
    counts = await store.delivery_counts()
    # One more than a page: whether there is an older page, without counting.
    found = await store.find_deliveries(
        query.where, before_id=query.before_id, limit=PAGE_SIZE + 1, scan=SEARCH_ROWS
    )
    rows, stopped_at = found.deliveries, found.stopped_at
    older = None
    if len(rows) > PAGE_SIZE:
        older = query.older(rows[PAGE_SIZE - 1].id)
    elif stopped_at is not None:
        older = query.older(stopped_at)
    shown = [row(delivery) for delivery in rows[:PAGE_SIZE]]
    return Page(query, shown, older, counts, searched_to=stopped_at)


@dataclass(frozen=True)
class Fragments:
    counts: Markup
    results: Markup
    version: str  # names this rendering: the stream sends it as the event's id

    def as_json(self) -> dict[str, str]:
        return {"counts": str(self.counts), "results": str(self.results)}


def render(env: jinja2.Environment, page: Page, dead: DeadCount | None) -> Fragments:
    """Render the two fragments (autoescaped: a delivery's content is text)."""
    context = {
        "query": page.query,
        "rows": page.rows,
        "older": page.older,
        "searched_to": page.searched_to,
        "scan_rows": f"{SEARCH_ROWS:,}",
        "counts": count_links(page.counts),
        "dead": dead,
        "bulk_url": confirm_url(page.query.where),
    }
    counts = Markup(env.get_template("_counts.html").render(context))
    results = Markup(env.get_template("_results.html").render(context))
    digest = hashlib.sha256(f"{counts}\0{results}".encode()).hexdigest()[:20]
    return Fragments(counts, results, digest)


def count_links(counts: DeliveryCounts) -> dict[str, Any]:
    """The counts, each with the link that shows what it counts."""
    by_status = [
        (status, counts.by_status.get(status, 0), only(status=status).url()) for status in STATUSES
    ]
    by_destination = [
        (
            destination,
            sum(by.values()),
            only(destination=destination).url(),
            [
                (status, by[status], only(destination=destination, status=status).url())
                for status in STATUSES
                if by.get(status)
            ],
        )
        for destination, by in sorted(counts.by_destination.items())
    ]
    return {"by_status": by_status, "by_destination": by_destination}
