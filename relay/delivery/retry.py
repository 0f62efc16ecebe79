"""When a failed delivery is tried again, or dead-lettered."""

from __future__ import annotations

import random
from dataclasses import dataclass

from relay.config.model import DeliveryConfig
from relay.senders.base import DeliveryError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; a sender's retry_after_s always wins."""

    max_attempts: int
    first_s: float
    max_s: float

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.backoff.first_s, config.backoff.max_s)

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        """Return the wait before the next try, after `attempts` failed tries."""
        ceiling = min(self.max_s, self.first_s * 2.0 ** max(attempts - 1, 0))
        # "Equal jitter": never less than half the ceiling, so retries do back off,
        # but spread out so a recovering service is not hit by every retry at once.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def retry_at(
        self, error: DeliveryError, attempts: int, now: float, rng: random.Random
    ) -> float | None:
        """Return when to try again, or None to dead-letter."""
        if not error.retryable or attempts >= self.max_attempts:
            return None
        if error.retry_after_s is not None:
            return now + error.retry_after_s
        return now + self.delay_s(attempts, rng)
