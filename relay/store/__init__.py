"""Durable storage for events, deliveries and dedupe keys."""

from __future__ import annotations

from relay.store.base import (
    AcceptResult,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    Store,
    StoreUnavailable,
)


def open_store(url: str) -> Store:
    """Return the store a `store.url` names (not yet opened)."""
    if url.startswith("sqlite:"):
        from relay.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:"))
    raise ValueError(f'unsupported store url "{url}": expected sqlite:PATH')


__all__ = [
    "AcceptResult",
    "Delivery",
    "DeliveryStatus",
    "NewDelivery",
    "NewEvent",
    "Store",
    "StoreUnavailable",
    "open_store",
]
