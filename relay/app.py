"""The aiohttp application: routes, and one lifecycle for the store, HTTP session and worker."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import TextIO

import aiohttp
from aiohttp import web

from relay.config.model import Config
from relay.conversations.raiser import SignalRaiser
from relay.delivery import Clock, DeliveryWorker
from relay.ingest import handle_webhook
from relay.metrics import CONTENT_TYPE_LATEST
from relay.senders import build_senders, close_senders
from relay.state import RelayState
from relay.store import Store, StoreUnavailable, open_store

STATE = web.AppKey("relay_state", RelayState)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        return web.json_response({"status": "shutting down"}, status=503)
    try:
        await state.store.ping()
    except StoreUnavailable as exc:
        return web.json_response({"status": "store unavailable", "error": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        depths = await state.store.queue_depths()
    except StoreUnavailable:
        # Not a depth of 0 for every destination, which would read as an empty queue
        # during an outage: the last reading stays, and relay_store_up says it is old.
        state.metrics.store_up.set(0)
    else:
        state.metrics.store_up.set(1)
        shown = {*state.config.destinations, *depths}
        # A destination shown before, since removed and with nothing queued: its queue is
        # empty now, not what it was at its last reading.
        for destination in shown | state.metrics.queue_depth_shown:
            state.metrics.queue_depth.labels(destination).set(depths.get(destination, 0))
        state.metrics.queue_depth_shown = shown
    return web.Response(body=state.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _webhook(request: web.Request) -> web.Response:
    return await handle_webhook(request, request.app[STATE])


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    stdout: TextIO | None = None,
    clock: Clock | None = None,
    run_worker: bool = True,
) -> web.Application:
    """Build the relay application for a config; the store opens when the app starts."""
    if store is None:
        store = open_store(config.store.url, retention_s=config.store.retention_s)
    state = RelayState(config=config, store=store)
    if clock is not None:
        state.clock = clock
    state.sender_context.stdout = stdout or sys.stdout
    # The body limit is enforced by the handler (so a reload can change it); aiohttp's own
    # limit only has to stay out of the way.
    app = web.Application(client_max_size=2**31)
    app[STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.store.open()
        # No total timeout here: the worker bounds each send with delivery.timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            state.sender_context.http = http
            state.sender_context.concurrency = config.delivery.concurrency
            state.senders = build_senders(config.destinations, state.sender_context)
            if run_worker:
                state.worker = DeliveryWorker(
                    state.store, config, state.senders, clock=state.clock, metrics=state.metrics
                )
                state.worker.start()
                state.raiser = SignalRaiser(state, state.worker.owner)
                state.raiser.start()
            try:
                yield
            finally:
                state.draining = True
                if state.raiser is not None:
                    await state.raiser.stop()
                if state.worker is not None:
                    await state.worker.stop(state.config.server.shutdown_timeout_s)
                await close_senders(state.senders.values())
                await asyncio.gather(*state.background, return_exceptions=True)
        await state.store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post(config.server.path, _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


def reload(app: web.Application, config: Config) -> None:
    """Swap a new, already validated config into a running app."""
    state = app[STATE]
    state.sender_context.concurrency = config.delivery.concurrency
    senders = build_senders(config.destinations, state.sender_context)
    replaced = list(state.senders.values())
    state.use_config(config)
    state.senders = senders
    if state.worker is not None:
        state.worker.reconfigure(config, senders)
    # A send still under way on an old sender finishes: closing only refuses new ones.
    closing = asyncio.create_task(close_senders(replaced))
    state.background.add(closing)
    closing.add_done_callback(state.background.discard)
