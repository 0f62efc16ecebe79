"""The running relay's shared state: the current config and what was built from it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.config.model import Config
from relay.delivery import Clock, DeliveryWorker
from relay.metrics import Metrics
from relay.senders.base import Sender, SenderContext
from relay.store import Store


@dataclass
class RelayState:
    """Swapped whole on reload: handlers read `config` once per request."""

    config: Config
    store: Store
    senders: Mapping[str, Sender] = field(default_factory=dict)
    sender_context: SenderContext = field(default_factory=SenderContext)
    worker: DeliveryWorker | None = None
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    clock: Clock = time.time
