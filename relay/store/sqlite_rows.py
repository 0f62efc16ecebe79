"""How the SQLite store reads a delivery back: the columns and the dataclass."""

from __future__ import annotations

from typing import Any, cast

from relay.store.base import Delivery, DeliveryStatus

DELIVERY_COLUMNS = """
    d.id, e.event_id, d.destination, d.rule, d.template, d.status, d.attempts,
    d.created_at, d.next_attempt_at, d.last_error, e.body, d.digest_until IS NOT NULL
"""


def deliveries_of(rows: list[Any]) -> list[Delivery]:
    """Build deliveries from rows of DELIVERY_COLUMNS."""
    return [
        Delivery(
            id=r[0],
            event_id=r[1],
            destination=r[2],
            rule=r[3],
            template=r[4],
            status=cast(DeliveryStatus, r[5]),
            attempts=r[6],
            created_at=r[7],
            next_attempt_at=r[8],
            last_error=r[9],
            body=r[10],
            digest=bool(r[11]),
        )
        for r in rows
    ]
