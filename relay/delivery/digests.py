"""A digest's transcript: every event that joined its window, in order (SPEC 4.2)."""

from __future__ import annotations

from relay.config.model import Template
from relay.delivery.context import Worker
from relay.events import EventError, parse_event
from relay.notification import Notification, as_digest
from relay.senders.base import DeliveryError
from relay.store import Delivery, StoreUnavailable


async def with_transcript(
    worker: Worker, notification: Notification, delivery: Delivery, template: Template | None
) -> Notification:
    """Give a digest every event that joined it, in order, shaped by its rule's template."""
    try:
        stored = await worker.store.digest_events(delivery.id)
        events = tuple(
            parse_event(body, event_id=event_id, received_at=delivery.created_at)
            for event_id, body in stored
        )
    except StoreUnavailable as exc:
        raise DeliveryError(f"cannot read the digest's events: {exc}", retryable=True) from None
    except EventError as exc:
        raise DeliveryError(f"cannot read a stored event: {exc}", retryable=False) from exc
    return as_digest(notification, events, template)
