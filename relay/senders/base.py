"""What every destination shares: the notification, the sender protocol, the error."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import aiohttp

from relay.limits import Limit
from relay.notification import Notification


class DeliveryError(Exception):
    """A send failed. The sender says whether to retry; the worker decides when."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.code: int | None = None  # the service's own error code, when it gives one


@dataclass(frozen=True)
class Sent:
    """What a successful send tells the worker."""

    note: str | None = None  # it succeeded only in part (an email recipient refused)
    # The thread a conversation's first notification started here, as the store keeps
    # it (see Notification.thread); None when the destination does not thread.
    thread: str | None = None
    replaces_thread: bool = False  # the conversation's thread was gone: this one replaces it


@dataclass
class SenderContext:
    """What the app lends to senders."""

    http: aiohttp.ClientSession | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    # delivery.concurrency: how many sends a destination has in flight, so how many
    # connections a database destination needs.
    concurrency: int = 4


class Sender(Protocol):
    """A destination: formats a notification and sends it."""

    name: str
    # What the destination's service rate-limits, shared by every destination and process
    # sending there (relay/limits.py); None when the service limits nothing relay knows of.
    limit: Limit | None
    # Whether a conversation's parent message is kept current (update_parent).
    updates_parents: bool

    def preview(self, notification: Notification) -> str:
        """Return exactly what `send` would transmit, for `relay route`."""

    def wait_s(self) -> float:
        """Return how long this process should wait before the next send, from what the
        service said in its last answers (Discord's rate-limit headers); 0: send now.

        This is how a sender paces itself without sleeping: the worker asks before each
        send and waits on the sender's behalf.
        """

    async def send(self, notification: Notification) -> Sent:
        """Send once; raise DeliveryError on failure. Never sleep or loop."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """Show a conversation's message count and last activity on its parent message;
        raise DeliveryError on failure. Only where `updates_parents`."""

    async def close(self) -> None:
        """Let go of what the sender holds of its own (a database's connections); a send
        still under way finishes first."""
