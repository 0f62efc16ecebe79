"""The running relay's shared state: the current config and what was built from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay.config.model import Config
from relay.delivery import Clock, DeliveryWorker
from relay.metrics import Metrics
from relay.rules import Router
from relay.senders.base import Sender, SenderContext
from relay.store import Store

if TYPE_CHECKING:  # the raiser reads this state: a runtime import would be circular
    from relay.conversations.raiser import SignalRaiser


@dataclass
class RelayState:
    """What the handlers and the worker share.

    `config` and `router` are replaced together by `use_config`, with no await between;
    a handler reads both once, at its start, so a reload never mixes two configs.
    """

    config: Config
    store: Store
    router: Router = field(init=False)
    senders: Mapping[str, Sender] = field(default_factory=dict)
    sender_context: SenderContext = field(default_factory=SenderContext)
    worker: DeliveryWorker | None = None
    raiser: SignalRaiser | None = None  # raises conversation signals (SPEC 4.4)
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False  # after SIGTERM: /readyz says 503; events are still taken
    clock: Clock = time.time
    # Tasks the app starts and awaits at shutdown (closing the senders a reload replaced).
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.router = Router(self.config.rules)

    def use_config(self, config: Config) -> None:
        """Make a validated config the running one."""
        self.config = config
        self.router = Router(config.rules)
