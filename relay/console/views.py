"""The console's pages: the deliveries, one delivery, and a replay."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from relay.console import answers, notices, sample
from relay.console.bulk import confirm_url, dead_count
from relay.console.conversation_page import conversation_url
from relay.console.filters import LIST_PATH, MAX_ID, STATUSES, FilterError, ListQuery, read_query
from relay.console.keys import NOTICES, STATE
from relay.console.listing import read_page, render
from relay.console.live import live_url
from relay.console.present import attempt_json, delivery_json, pretty, request_shown, row
from relay.conversations.watch import SIGNAL_TYPES
from relay.events import ACCOUNT_EVENT_TYPES, SESSION_EVENT_TYPES
from relay.store.base import DeliveryCounts

FORM_FIELDS = ("status", "destination", "event_type", "since", "until", "text")
# Offered in the event type field (any other may be typed): what bitHuman documents and
# the conversation signals relay raises itself (SPEC 4.4).
KNOWN_EVENT_TYPES = (*SESSION_EVENT_TYPES, *ACCOUNT_EVENT_TYPES, *SIGNAL_TYPES.values())


async def home(request: web.Request) -> web.StreamResponse:
    """The console opens on the deliveries (the other pages of SPEC 8.1 come beside them)."""
    query = request.rel_url.raw_query_string
    raise web.HTTPFound(f"{LIST_PATH}?{query}" if query else LIST_PATH)


async def deliveries(request: web.Request) -> web.Response:
    """The deliveries, newest first, PAGE_SIZE a page, as the URL's filters select."""
    try:
        query = read_query(request.query)
    except FilterError as exc:
        return answers.error(request, 400, str(exc))
    state = request.app[STATE]
    page = await read_page(state.store, query)
    dead = await dead_count(state.store, query.where, page.counts)
    params = query.params()
    if answers.wants_json(request):
        return answers.data(
            {
                "deliveries": [r.as_json() for r in page.rows],
                "counts": {
                    "by_status": page.counts.by_status,
                    "by_destination": page.counts.by_destination,
                },
                "filter": params,
                "next": page.older.url() if page.older else None,
                "next_before": page.older.before_id if page.older else None,
                # Set when the search stopped short at this id: `next` searches on below.
                "searched_to": page.searched_to,
                "dead": {"count": dead.n, "more": dead.more, "replay": confirm_url(query.where)},
            }
        )
    fragments = render(aiohttp_jinja2.get_env(request.app), page, dead)
    notice = request.app[NOTICES].get(request.query.get(notices.PARAMETER, ""))
    context = {
        "query": query,
        "form": {name: params.get(name, "") for name in FORM_FIELDS},
        "statuses": STATUSES,
        "destinations": _destinations(request, page.counts, query),
        "event_types": KNOWN_EVENT_TYPES,
        "counts_html": fragments.counts,
        "results_html": fragments.results,
        # Live on the newest page only: an older one would not gain rows at its top.
        "live_url": live_url(query, fragments.version) if query.before_id is None else None,
        "notice": notice,
        "send_test": {
            "action": query.newest().url(sample.TEST_PATH),
            "events": sample.events_offered(state.config),
            "default": sample.DEFAULT_EVENT,
            "message": sample.DEFAULT_MESSAGE,
        },
    }
    return answers.page(request, "deliveries.html", context)


def _destinations(request: web.Request, counts: DeliveryCounts, query: ListQuery) -> list[str]:
    """The filter's choice of destinations: those configured, and those deliveries name
    (a destination since removed from the config still has its history)."""
    names = {*request.app[STATE].config.destinations, *counts.by_destination}
    if query.where.destination:
        names.add(query.where.destination)
    return sorted(names)


def _delivery_id(request: web.Request) -> int | None:
    text = request.match_info["id"]
    number = int(text) if text.isascii() and text.isdigit() else 0
    return number if 0 < number <= MAX_ID else None


async def delivery(request: web.Request) -> web.Response:
    """One delivery: its event, where it went and why, and every attempt."""
    delivery_id = _delivery_id(request)
    store = request.app[STATE].store
    found = await store.get_delivery(delivery_id) if delivery_id is not None else None
    if found is None:
        return _no_delivery(request)
    attempts = await store.attempts(found.id)
    joined = await store.digest_events(found.id) if found.digest else []
    if answers.wants_json(request):
        return answers.data(delivery_json(found, attempts, joined))
    destination = request.app[STATE].config.destinations.get(found.destination)
    shown = row(found)
    context = {
        "row": shown,
        "delivery": found,
        "destination_type": destination.type if destination is not None else None,
        "event": pretty(found.body),
        "request": request_shown(found),
        "joined": [(event_id, pretty(body)) for event_id, body in joined],
        "attempts": [attempt_json(attempt) for attempt in attempts],
        "conversation_url": conversation_url(shown.session) if shown.session else None,
    }
    return answers.page(request, "delivery.html", context)


async def replay(request: web.Request) -> web.StreamResponse:
    """Put one dead delivery back in the queue, then show it (a POST, guarded by
    security.guard_posts)."""
    delivery_id = _delivery_id(request)
    state = request.app[STATE]
    found = await state.store.get_delivery(delivery_id) if delivery_id is not None else None
    if found is None:
        return _no_delivery(request)
    replayed = await state.store.replay([found.id], state.clock())
    if replayed and state.worker is not None:
        state.worker.wake([found.destination])
    if answers.wants_json(request):
        return answers.data({"replayed": replayed})
    raise web.HTTPSeeOther(f"/deliveries/{found.id}")


def _no_delivery(request: web.Request) -> web.Response:
    shown = request.match_info["id"][:40]
    return answers.error(
        request, 404, f"no delivery {shown} (it may have been purged: store.retention)"
    )
