"""relay's Prometheus metrics, in a registry of their own per app.

Under a supervisor (server.workers, relay/workers.py), every worker writes its values to
the supervisor's directory (prometheus-client's multiprocess mode, which its environment
turns on), and a scrape, whichever worker answers it, reads them all.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "METRICS_DIR_ENV", "Metrics"]

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's name for it

# From a second to a day: deliveries wait out retries and backoff, not just a send.
DELIVERY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class Metrics:
    """The counters, histogram and gauge that /metrics serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "relay_events",
            "Webhook events received, by event type and outcome.",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "relay_rejected_requests",
            "Webhook requests rejected, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "relay_deliveries",
            "Delivery attempts, by destination and outcome (sent, retried, dead).",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_seconds",
            "Time from an event's acceptance to its delivery, by destination type.",
            # Not by destination: with a destination per customer, a histogram each
            # would be most of relay's memory and of every scrape (attempt.py).
            ["destination_type"],
            buckets=DELIVERY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "relay_queue_depth",
            "Deliveries waiting to be sent (pending or failed), by destination.",
            ["destination"],
            registry=self.registry,
            # Each worker reads the depth from the shared store when scraped: the latest
            # reading is the store's, not a sum over workers.
            multiprocess_mode="mostrecent",
        )
        # The destinations whose depth the last reading set (app._metrics).
        self.queue_depth_shown: set[str] = set()
        self.store_up = Gauge(
            "relay_store_up",
            "Whether the store answered the scrape's reading of the queues (1) or not (0).",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def render(self) -> bytes:
        """Return the registry in the Prometheus text format: every worker's, summed,
        under a supervisor."""
        directory = os.environ.get(METRICS_DIR_ENV)
        if not directory:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
