"""Writing what a send did (its thread, its outcome) to a store that cannot take it yet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relay.store import StoreUnavailable

# Tried again this soon, then backing off to this.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0

T = TypeVar("T")


async def until_stored(
    write: Callable[[], Awaitable[T]],
    keep_trying: Callable[[StoreUnavailable], bool],
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T | None:
    """Run a store write, again after each StoreUnavailable while `keep_trying` (told of
    each failure) says so, pausing longer each time; None when it gave up."""
    wait_s = RETRY_FIRST_S
    while True:
        try:
            return await write()
        except StoreUnavailable as exc:
            if not keep_trying(exc):
                return None
        await pause(wait_s)
        wait_s = min(wait_s * 2, RETRY_MAX_S)
