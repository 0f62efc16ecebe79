"""Calls of one Lua script that arrive together go to Redis as one pipeline.

Under load many webhooks are accepted at once. Sent one by one, each pays a round trip
and its own turn of Redis's event loop, and with `appendfsync always` its own AOF fsync.
Sent together, they pay one round trip, and Redis writes and fsyncs the whole batch before
it answers any of it: the group commit the SQLite store does with its transactions. Each
call still returns only once Redis has answered it, so a `200` still means "stored".

The batch is whatever was queued when the previous one came back (at most `max_batch`):
a call alone goes at once, and a busy moment makes bigger batches by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from relay.store.base import StoreUnavailable

log = logging.getLogger(__name__)

# Runs one batch: a result per call, in order; an exception object in place of the
# result of a call Redis refused; raises StoreUnavailable when the batch got no answer.
RunBatch = Callable[[list[list[Any]]], Awaitable[list[Any]]]


class ScriptBatcher:
    """Queues calls of one script and runs them a batch at a time."""

    def __init__(self, run: RunBatch, *, max_batch: int = 256) -> None:
        self._run = run
        self._max_batch = max_batch
        self._queued: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, args: list[Any]) -> Any:
        """Return the script's answer to `args`, once Redis has given it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((args, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="relay-redis-batch")
        return await future

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch = self._queued[: self._max_batch]
                del self._queued[: self._max_batch]
                await self._run_one(batch)
        finally:
            self._flusher = None
            # Left only when the flusher was cancelled (relay is closing the store): no
            # caller may wait for ever.
            for _, future in self._queued:
                if not future.done():
                    future.set_exception(StoreUnavailable("redis store is closing"))
            self._queued.clear()

    async def _run_one(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._run([args for args, _ in batch])
        except StoreUnavailable as exc:
            results = [StoreUnavailable(str(exc)) for _ in batch]
        except Exception as exc:  # a bug, not Redis: this batch fails, the next ones go on
            log.exception("a batch of %d Redis call(s) failed", len(batch))
            results = [StoreUnavailable(f"redis batch failed: {exc!r}") for _ in batch]
        except BaseException:  # cancelled while Redis had the batch
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable("redis store is closing"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller went away meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
