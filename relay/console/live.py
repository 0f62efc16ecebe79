"""Live updates of the deliveries page (SPEC 8): a Server-Sent Events stream; and the
stream itself, which a conversation's page uses too (conversation_page.py).

static/live.js opens one stream per page, `/deliveries/live?<the page's filters>`. The
stream reads the store every poll_s (the newest page and the counts), and when what the
page shows has changed it sends the page's two fragments again, rendered as a reload
would render them (listing.py), as one `update` event whose id names the rendering: the
browser sends it back as Last-Event-ID when it reconnects, and nothing is sent until
something changed. Reading the shared store, rather than listening to this process, is
what makes a delivery another replica sent show up, on either store.

A stream ends when the browser goes away, when relay starts shutting down, or when the
console's credentials change (a reload that changes the password ends it at once, as it
ends access to the pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Hashable
from typing import Protocol

import aiohttp_jinja2
from aiohttp import hdrs, web

from relay.console import answers
from relay.console.auth import credentials_match
from relay.console.bulk import dead_count
from relay.console.filters import FilterError, ListQuery, read_filter
from relay.console.keys import STATE, STREAMS
from relay.console.listing import read_page, render
from relay.store import StoreUnavailable

LIVE_PATH = "/deliveries/live"
SEEN = "seen"  # the parameter naming the rendering the page already shows


def live_url(query: ListQuery, version: str) -> str:
    """The stream of a page that shows the rendering `version`."""
    return f"{query.newest().url(LIVE_PATH)}{'&' if query.filtered else '?'}{SEEN}={version}"


class Watch(Protocol):
    """What a stream watches: it reads the store and says what to send, when anything."""

    async def update(self) -> bytes | None: ...


async def live(request: web.Request) -> web.StreamResponse:
    """Stream the newest page of deliveries the filters select, as it changes."""
    try:
        query = ListQuery(read_filter(request.query))
    except FilterError as exc:
        return answers.error(request, 400, str(exc))
    seen = request.headers.get("Last-Event-ID") or request.query.get(SEEN, "")
    return await stream(request, _Watch(request, query, seen))


async def stream(request: web.Request, watch: Watch) -> web.StreamResponse:
    """Answer with a stream of what `watch` sends, while there is room for one more."""
    streams = request.app[STREAMS]
    if request.app[STATE].draining or streams.closing.is_set():
        return answers.error(request, 503, "relay is shutting down")
    if streams.open >= streams.settings.max_streams:
        response = answers.error(
            request,
            503,
            f"{streams.open} live streams are open, the most the console serves: "
            "close a console tab, or reload later",
        )
        response.headers[hdrs.RETRY_AFTER] = "30"
        return response
    streams.open += 1
    try:
        return await _stream(request, watch)
    finally:
        streams.open -= 1


async def _stream(request: web.Request, watch: Watch) -> web.StreamResponse:
    settings = request.app[STREAMS].settings
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    try:
        await response.write(f"retry: {settings.retry_ms}\n\n".encode())
        while _wanted(request):
            update = await watch.update()
            if update is not None:
                await response.write(update)
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= settings.heartbeat_s:
                await response.write(b": still here\n\n")
                quiet_since = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(request.app[STREAMS].closing.wait(), settings.poll_s)
    except ConnectionError:  # the browser went away while an event was written
        pass
    return response


class _Watch:
    """What one stream has sent: the page it last rendered and the rendering's version."""

    def __init__(self, request: web.Request, query: ListQuery, seen: str) -> None:
        self._app = request.app
        self._query = query
        self._seen = seen  # the version the browser shows
        self._read: Hashable = None  # what the page showed when last rendered

    async def update(self) -> bytes | None:
        """Return the `update` event to send, when the page has changed since."""
        store = self._app[STATE].store
        try:
            page = await read_page(store, self._query)
            if page.fingerprint() == self._read:
                return None  # the same rows and counts: no need to render them again
            dead = await dead_count(store, self._query.where, page.counts)
        except StoreUnavailable:
            return None  # read again next time; the page keeps what it shows
        self._read = page.fingerprint()
        fragments = render(aiohttp_jinja2.get_env(self._app), page, dead)
        if fragments.version == self._seen:
            return None
        self._seen = fragments.version
        return update_event(self._seen, fragments.as_json())


def update_event(version: str, fragments: dict[str, str]) -> bytes:
    """An `update` event: the page's regions (static/live.js puts each in the element whose
    data-region names it), under the rendering's version."""
    return f"event: update\nid: {version}\ndata: {json.dumps(fragments)}\n\n".encode()


def _wanted(request: web.Request) -> bool:
    """Whether the stream should go on: its browser is there, relay is not stopping, and
    the credentials it was opened with are still the console's."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    state = request.app[STATE]
    if state.draining or request.app[STREAMS].closing.is_set():
        return False
    console = state.config.console
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    return console is not None and credentials_match(authorization, console)
