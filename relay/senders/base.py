"""What every destination shares: the notification, the sender protocol, the error."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import aiohttp

from relay.notification import Notification


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
    """What the app lends to senders: one HTTP session, and where console output goes."""

    http: aiohttp.ClientSession | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)


class Sender(Protocol):
    """A destination: formats a notification and sends it."""

    name: str

    def preview(self, notification: Notification) -> str:
        """Return exactly what `send` would transmit, for `relay route`."""

    def wait_s(self) -> float:
        """Return how long the destination asks us to wait before the next send (0: now).

        This is how a sender paces itself without sleeping: the worker asks before
        each send and waits on the sender's behalf.
        """

    async def send(self, notification: Notification) -> None:
        """Send once; raise DeliveryError on failure. Never sleep or loop."""
