"""What every destination shares: the notification, the sender protocol, the error."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import aiohttp

from relay.notification import Notification
from relay.senders.pacing import TokenBucket


class DeliveryError(Exception):
    """A send failed. The sender says whether to retry; the worker decides when."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass
class SenderContext:
    """What the app lends to senders, and what outlives a reload.

    `pacers` is keyed by what a service rate-limits (a webhook URL, a token and channel),
    so two destinations posting to the same place share one pace, and a reload, which
    builds new senders, keeps the pace of the old ones.
    """

    http: aiohttp.ClientSession | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    pacers: dict[str, TokenBucket] = field(default_factory=dict, repr=False)

    def pacer(self, target: str, rate_per_s: float, burst: int) -> TokenBucket:
        """Return the shared token bucket for a rate-limited target."""
        # Targets hold webhook tokens; keep only a digest of them.
        key = hashlib.sha256(target.encode()).hexdigest()
        bucket = self.pacers.get(key)
        if bucket is None:
            bucket = self.pacers[key] = TokenBucket(rate_per_s, burst)
        else:
            bucket.retune(rate_per_s, burst)  # a reload may have changed max_per_second
        return bucket


class Sender(Protocol):
    """A destination: formats a notification and sends it."""

    name: str

    def preview(self, notification: Notification) -> str:
        """Return exactly what `send` would transmit, for `relay route`."""

    def wait_s(self) -> float:
        """Return how long the destination asks us to wait before the next send.

        This is how a sender paces itself without sleeping: the worker asks before each
        send and waits on the sender's behalf. 0 means "send now", and for a paced
        destination it also reserves the slot for that send.
        """

    async def send(self, notification: Notification) -> str | None:
        """Send once; raise DeliveryError on failure. Never sleep or loop.

        Return a note for the delivery log when the send succeeded only in part (an
        email recipient refused), else None.
        """
