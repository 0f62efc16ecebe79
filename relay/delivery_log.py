"""`relay deliveries` and `relay replay`: the operator's view of the delivery log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

from relay.config.model import Config
from relay.durations import format_duration
from relay.store import DeliveryStatus, StoreUnavailable, open_store


async def print_deliveries(
    config: Config, status: DeliveryStatus | None, limit: int, out: TextIO
) -> int:
    """Print one delivery a line: id, destination, status, attempts, age, last error."""
    store = open_store(config.store.url)
    try:
        await store.open()
        rows = await store.list_deliveries(status, limit)
    except StoreUnavailable as exc:
        out.write(f"store unavailable: {exc}\n")
        return 1
    finally:
        await store.close()
    now = time.time()
    out.write(
        f"{'ID':>8}  {'DESTINATION':<20} {'STATUS':<8} {'ATTEMPTS':>8}  {'AGE':>5}  LAST ERROR\n"
    )
    for row in rows:
        age = format_duration(max(now - row.created_at, 0))
        error = (row.last_error or "").replace("\n", " ")[:200]
        columns = f"{row.id:>8}  {row.destination:<20} {row.status:<8} {row.attempts:>8}"
        out.write(f"{columns}  {age:>5}  {error}\n")
    return 0


async def replay(config: Config, ids: Sequence[int] | None, out: TextIO) -> int:
    """Put dead deliveries back in the queue; a running relay sends them."""
    store = open_store(config.store.url)
    try:
        await store.open()
        count = await store.replay(ids, time.time())
    except StoreUnavailable as exc:
        out.write(f"store unavailable: {exc}\n")
        return 1
    finally:
        await store.close()
    out.write(f"requeued {count} dead deliver{'y' if count == 1 else 'ies'}\n")
    return 0
