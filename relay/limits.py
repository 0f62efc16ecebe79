"""Pacing and pauses for destinations that ask for them, shared through the store.

A service limits a target (a Slack webhook, a bot token in a channel, a Discord webhook),
whichever relay destination or process sends to it. So the limit's state (a token bucket,
and until when a 429 paused the target) lives in the store under a key that names the
target, and every lane of every process takes its turn there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """How a target is limited: a paced rate with bursts, or only 429 pauses."""

    key: str  # a digest of the target: the target itself holds a token
    rate_per_s: float | None = None  # None: not paced, only paused by 429s
    burst: int = 1

    @classmethod
    def of(cls, target: str, rate_per_s: float | None = None, burst: int = 1) -> Limit:
        return cls(hashlib.sha256(target.encode()).hexdigest()[:32], rate_per_s, burst)


def take_token(
    tokens: float | None, updated: float | None, now: float, rate_per_s: float, burst: int
) -> tuple[float, float]:
    """Refill a token bucket to `now` and take one token.

    Return (wait_s, tokens): wait_s is 0 when a token was taken, else how long until one
    is free (nothing taken). A bucket never used (None) starts full. The SQLite store runs
    this in its transaction; the Redis store's lua/limits.lua is the same arithmetic.
    """
    if tokens is None or updated is None:
        tokens, updated = float(burst), now
    tokens = min(float(burst), tokens + max(now - updated, 0.0) * rate_per_s)
    if tokens >= 1.0:
        return 0.0, tokens - 1.0
    return (1.0 - tokens) / rate_per_s, tokens
