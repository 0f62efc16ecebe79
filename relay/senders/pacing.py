"""Pacing for destinations that ask for it: a token bucket the worker waits on."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allow `rate_per_s` sends a second on average, with bursts of up to `burst`."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate_per_s)
        self._updated = now

    def wait_s(self) -> float:
        """Return how long until a send is allowed (0: now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate_per_s)

    def take(self) -> None:
        """Spend one token; a send made without waiting still counts."""
        self._refill()
        self._tokens -= 1.0
