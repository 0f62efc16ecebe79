"""The event loop `relay serve` runs on: uvloop where it is installed, asyncio's otherwise.

uvloop (a dependency on Linux) handles connections and timers in C: measured with
bench/run.py, `relay serve` takes about an eighth more requests a second on it. The
environment variable RELAY_EVENT_LOOP=asyncio picks asyncio's own loop, to compare the two
or to rule uvloop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOP_ENV = "RELAY_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory, or None for asyncio's default loop."""
    chosen = os.environ.get(EVENT_LOOP_ENV, "uvloop").strip().lower() or "uvloop"
    if chosen not in CHOICES:
        raise ValueError(f"{EVENT_LOOP_ENV}: expected one of {', '.join(CHOICES)}, got {chosen!r}")
    if chosen == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not a dependency off Linux: asyncio's loop serves as well
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """Run `main` to completion on a loop from `factory` (asyncio's default when None)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
