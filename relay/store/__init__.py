"""Durable storage for events, deliveries and dedupe keys."""

from __future__ import annotations

from relay.store.base import (
    AcceptResult,
    Attempt,
    ClaimAtAccept,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    SentRecord,
    Store,
    StoreUnavailable,
)


def open_store(url: str, *, retention_s: float = 0.0) -> Store:
    """Return the store a `store.url` names (not yet opened).

    retention_s > 0 makes it purge finished deliveries and their events once they are
    that old; `relay serve` passes store.retention, the one-shot commands do not purge.
    """
    if url.startswith("sqlite:"):
        from relay.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:"), retention_s=retention_s)
    if url.startswith(("redis://", "rediss://")):
        from relay.store.redis import RedisStore

        return RedisStore(url, retention_s=retention_s)
    raise ValueError("unsupported store url: expected sqlite:PATH, redis:// or rediss://")


__all__ = [
    "AcceptResult",
    "Attempt",
    "ClaimAtAccept",
    "Delivery",
    "DeliveryStatus",
    "NewDelivery",
    "NewEvent",
    "SentRecord",
    "Store",
    "StoreUnavailable",
    "open_store",
]
