"""What every part of delivery reads from the worker that runs it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from relay.config.model import Config
from relay.delivery.retry import RetryPolicy
from relay.metrics import Metrics
from relay.senders.base import Sender
from relay.store import Store

if TYPE_CHECKING:
    from relay.delivery.lane import Lane

# One logger for all of delivery: operators filter on it.
log = logging.getLogger("relay.delivery")

Clock = Callable[[], float]


class Worker(Protocol):
    """The running worker as its lanes, attempts and conversations see it.

    `config`, `senders` and `policy` are replaced whole by a reload; read them where they
    are used, never keep them.
    """

    store: Store
    config: Config
    senders: Mapping[str, Sender]
    policy: RetryPolicy
    metrics: Metrics
    clock: Clock
    rng: random.Random
    owner: str  # who holds this process's claims in a store shared with other processes
    stopping: bool
    stopped: asyncio.Event  # set with `stopping`, for waits that must end then

    @property
    def lease_s(self) -> float: ...

    def retire(self, lane: Lane) -> None:
        """Forget a lane that ended for want of work."""
