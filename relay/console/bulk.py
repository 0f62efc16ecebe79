"""Bulk replay (SPEC 8): every dead delivery the current filters select, after a page that
says how many.

The confirmation page (GET /deliveries/replay?<filters>) counts them, newest first, up to
MAX_BULK, and its form carries the filters and the ids the count spans: `upto` (the
newest counted), `downto` (the oldest) and `count`. The POST walks the same selection
again within that span and replays what it finds, so a delivery that arrives, or is
replayed elsewhere, after the count is not acted on. One that was still being retried at
the count but has died since is in the span too: when the span now holds more dead
deliveries than the page said, nothing is done and the page is shown again with the new
count. So a click never replays more than the number it was shown, nor anything the
filters do not select.

Nothing is kept between the two requests: the form says it all, so any process of relay
(all share the store) can take the POST.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from aiohttp import web

from relay.console import answers
from relay.console.filters import LIST_PATH, MAX_ID, FilterError, ListQuery, read_filter
from relay.console.keys import NOTICES, STATE
from relay.console.notices import with_notice
from relay.console.present import when
from relay.store import Store
from relay.store.base import SCAN_ROWS, DeliveryCounts, DeliveryFilter

CONFIRM_PATH = "/deliveries/replay"
# One click replays at most this many: each is a write to the store, and a larger
# selection is replayed by clicking again (the count then finds the rest).
MAX_BULK = 10_000
# How many the deliveries page counts, when the kept counts cannot say (a text, type or
# time filter): it shows "500+" rather than walk further on every load.
LINK_BOUND = 500
# And how far it looks for them: the dead ones among the newest LINK_SCAN deliveries, so
# the link costs the same at a thousand deliveries or a million. Beyond, it says "at
# least" (or no number): the confirmation page counts them all before anything is done.
LINK_SCAN = 1_000
# How far one store call of the confirmation page's count (and of the replay) searches,
# for such a filter: the count goes on below, call after call, until it has them all.
COUNT_SCAN = SCAN_ROWS
CHUNK = 500  # deliveries read, or replayed, per store call


@dataclass(frozen=True)
class DeadCount:
    """How many dead deliveries a filter selects: `n`, or at least `n` when `more`."""

    n: int
    more: bool = False

    @property
    def linked(self) -> bool:
        """Whether the page links to the confirmation page: there may be some."""
        return self.n > 0 or self.more

    @property
    def shown(self) -> str:
        """The number the link says: '3', '500+' (at least), '' (some may be further)."""
        return f"{self.n:,}{'+' if self.more else ''}" if self.n else ""


def dead_selection(where: DeliveryFilter) -> DeliveryFilter | None:
    """The dead deliveries among those a filter selects; None when it selects none (it
    asks for another status)."""
    if where.status not in (None, "dead"):
        return None
    return replace(where, status="dead")


def confirm_url(where: DeliveryFilter) -> str:
    return ListQuery(where).url(CONFIRM_PATH)


async def dead_count(store: Store, where: DeliveryFilter, counts: DeliveryCounts) -> DeadCount:
    """Count, for the deliveries page's link, the dead deliveries a filter selects: from
    the kept counts when the filter is by status and destination only (it costs nothing
    then), else among the newest LINK_SCAN deliveries, up to LINK_BOUND of them."""
    selection = dead_selection(where)
    if selection is None:
        return DeadCount(0)
    if replace(selection, status=None, destination=None) == DeliveryFilter():
        if selection.destination is None:
            return DeadCount(counts.by_status.get("dead", 0))
        return DeadCount(counts.by_destination.get(selection.destination, {}).get("dead", 0))
    found = await store.find_deliveries(selection, limit=LINK_BOUND + 1, scan=LINK_SCAN)
    n = len(found.deliveries)
    return DeadCount(min(n, LINK_BOUND), more=n > LINK_BOUND or found.stopped_at is not None)


async def walk(
    store: Store, selection: DeliveryFilter, *, most: int, upto: int = MAX_ID, downto: int = 1
) -> list[tuple[int, str]]:
    """Return up to `most` (id, destination) of the deliveries `selection` picks with
    downto <= id <= upto, newest first, reading CHUNK at a time.

    All of them, exactly: where a call stops short (an unindexed filter searches a
    stretch of ids a call), the next goes on below. Each call is a read of its own, so
    a long count shares the store's reader with the other pages and never holds up a
    webhook.
    """
    found: list[tuple[int, str]] = []
    before = None if upto >= MAX_ID else upto + 1
    while len(found) < most:
        limit = min(CHUNK, most - len(found))
        chunk = await store.find_deliveries(
            selection, before_id=before, limit=limit, scan=COUNT_SCAN
        )
        rows = chunk.deliveries
        found += [(d.id, d.destination) for d in rows if d.id >= downto]
        before = rows[-1].id if len(rows) == limit else chunk.stopped_at
        if before is None or before <= downto:
            break
    return found


def describe(where: DeliveryFilter) -> str:
    """What a filter selects, in words: "to crm matching 'refund'"."""
    parts = []
    if where.destination is not None:
        parts.append(f"to {where.destination}")
    if where.event_type is not None:
        parts.append(f"of type {where.event_type}")
    if where.text is not None:
        parts.append(f"matching '{where.text}'")
    if where.since is not None:
        parts.append(f"created from {when(where.since)}")
    if where.until is not None:
        parts.append(f"created before {when(where.until)}")
    return " ".join(parts)


def dead_deliveries(n: int) -> str:
    return f"{n:,} dead {'delivery' if n == 1 else 'deliveries'}"


async def confirm(request: web.Request) -> web.Response:
    """Say how many dead deliveries the filters select, and offer to replay them."""
    try:
        where = read_filter(request.query)
    except FilterError as exc:
        return answers.error(request, 400, str(exc))
    return await _confirmation(request, where)


async def _confirmation(
    request: web.Request, where: DeliveryFilter, *, changed: str | None = None
) -> web.Response:
    selection = dead_selection(where)
    store = request.app[STATE].store
    found = [] if selection is None else await walk(store, selection, most=MAX_BULK + 1)
    counted = found[:MAX_BULK]
    span = {"upto": counted[0][0], "downto": counted[-1][0]} if counted else {}
    status = 409 if changed else 200
    if answers.wants_json(request):
        payload = {
            "count": len(counted),
            "more": len(found) > MAX_BULK,
            "limit": MAX_BULK,
            "filter": ListQuery(where).params(),
            **span,
        }
        return answers.data({**payload, "error": changed} if changed else payload, status=status)
    description = describe(where)
    context = {
        "count": len(counted),
        "more": len(found) > MAX_BULK,
        "limit": f"{MAX_BULK:,}",
        "what_count": dead_deliveries(len(counted)),
        "what": dead_deliveries(len(counted)) + (f" {description}" if description else ""),
        "filters": _filters_shown(where),
        "hidden": {**ListQuery(where).params(), **span, "count": len(counted)},
        "back": ListQuery(where).url(),
        "changed": changed,
    }
    return answers.page(request, "replay_all.html", context, status=status)


def _filters_shown(where: DeliveryFilter) -> list[tuple[str, str]]:
    """The filters, as the confirmation page lists them."""
    shown = [("Status", "dead (the dead ones among what the filters select)")]
    if where.status not in (None, "dead"):
        shown = [("Status", f"{where.status}: no dead delivery has it")]
    for label, value in (
        ("Destination", where.destination),
        ("Event type", where.event_type),
        ("Text in the event", where.text),
        ("From", None if where.since is None else when(where.since)),
        ("Before", None if where.until is None else when(where.until)),
    ):
        if value is not None:
            shown.append((label, value))
    return shown


async def replay_all(request: web.Request) -> web.StreamResponse:
    """Replay what the confirmation page counted (a POST, guarded by guard_posts)."""
    form = {name: value for name, value in (await request.post()).items() if isinstance(value, str)}
    try:
        where = read_filter(form)
        upto, downto, count = (_number(form, name) for name in ("upto", "downto", "count"))
    except FilterError as exc:
        return answers.error(request, 400, str(exc))
    selection = dead_selection(where)
    state = request.app[STATE]
    found: list[tuple[int, str]] = []
    if selection is not None and count > 0 and upto > 0:
        found = await walk(state.store, selection, most=count + 1, upto=upto, downto=downto)
    if len(found) > count:
        more = len(found) - count
        changed = (
            f"{dead_deliveries(more)} more {'matches' if more == 1 else 'match'} since the"
            " count: nothing was replayed. Here is the count again."
        )
        return await _confirmation(request, where, changed=changed)
    replayed = await _replay(request, [delivery_id for delivery_id, _ in found])
    if replayed and state.worker is not None:
        state.worker.wake({destination for _, destination in found})
    if answers.wants_json(request):
        return answers.data({"replayed": replayed, "counted": count})
    message = f"Replayed {dead_deliveries(replayed)}"
    if replayed < count:
        message += f" of the {count:,} counted: the others were no longer dead"
    key = request.app[NOTICES].add(message + ".")
    raise web.HTTPSeeOther(with_notice(ListQuery(where).url(LIST_PATH), key))


async def _replay(request: web.Request, ids: Sequence[int]) -> int:
    state = request.app[STATE]
    replayed = 0
    for start in range(0, len(ids), CHUNK):  # one store call per chunk: others get turns
        replayed += await state.store.replay(ids[start : start + CHUNK], state.clock())
    return replayed


def _number(form: Mapping[str, str], name: str) -> int:
    value = form.get(name, "").strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise FilterError(name, "expected the number the confirmation page gave")
    return int(value)
