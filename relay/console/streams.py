"""The live streams' bounds: how often they look, how many may be open, and when they end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class LiveSettings:
    poll_s: float = 1.0  # how often a stream reads the store
    heartbeat_s: float = 15.0  # a comment when nothing else was sent: proxies keep it open
    max_streams: int = 20  # open at once; more are answered 503
    retry_ms: int = 5000  # how long the browser waits before it reconnects


class Streams:
    """The console's open streams: counted, and all ended when the console shuts down."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.open = 0
        self.closing = asyncio.Event()

    async def close_all(self, app: web.Application) -> None:
        """An on_shutdown hook: aiohttp runs it before it waits for the requests still in
        progress, so no stream holds up relay's shutdown."""
        self.closing.set()
