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

    def retune(self, rate_per_s: float, burst: int) -> None:
        """Change the rate and burst (a reload), keeping the tokens already spent."""
        self._refill()
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._tokens = min(self._tokens, self._burst)

    def reserve(self) -> float:
        """Take a token and return 0, or return how long until one is free.

        Checking and taking are one step, so two lanes sharing a bucket cannot both
        take the last token.
        """
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate_per_s
