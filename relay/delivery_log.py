"""`relay deliveries` and `relay replay`: the operator's view of the delivery log."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Sequence
from typing import TextIO

from relay.config.model import Config
from relay.durations import format_duration
from relay.senders.console import printable
from relay.store import Delivery, DeliveryStatus, StoreUnavailable, open_store


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


async def print_delivery(config: Config, delivery_id: int, out: TextIO) -> int:
    """Print one delivery: what it is, its event as received, and every attempt."""
    if not 0 < delivery_id < 2**63:  # no store hands out such an id
        out.write(f"no delivery {delivery_id}: ids are positive\n")
        return 1
    store = open_store(config.store.url)
    joined: list[tuple[str, bytes]] = []
    try:
        await store.open()
        delivery = await store.get_delivery(delivery_id)
        attempts = await store.attempts(delivery_id) if delivery is not None else []
        if delivery is not None and delivery.digest:
            joined = await store.digest_events(delivery_id)
    except StoreUnavailable as exc:
        out.write(f"store unavailable: {exc}\n")
        return 1
    finally:
        await store.close()
    if delivery is None:
        out.write(f"no delivery {delivery_id} (it may have been purged: store.retention)\n")
        return 1
    out.write(_describe(delivery))
    if len(joined) > 1:
        others = ", ".join(event_id for event_id, _ in joined[1:])
        out.write(f"a digest of {len(joined)} events: this one, then {others}\n")
    out.write(f"attempts: {len(attempts)}\n" if attempts else "attempts: none yet\n")
    for attempt in attempts:
        when = _when(attempt.started_at)
        detail = printable(" ".join((attempt.detail or "").split()))
        line = f"  #{attempt.number:<3} {when}  {attempt.outcome:<7} {attempt.duration_s:8.3f}s"
        out.write(f"{line}  {detail}".rstrip() + "\n")
    return 0


def _describe(delivery: Delivery) -> str:
    """A delivery's head and its event: pretty JSON when it is JSON, as stored otherwise."""
    try:
        body = json.dumps(json.loads(delivery.body), indent=2, ensure_ascii=False)
    except ValueError:
        body = delivery.body.decode("utf-8", "replace")
    lines = [
        f"delivery {delivery.id}: {delivery.status}, to {delivery.destination}"
        f" by rule {delivery.rule}"
        + (f" (template {delivery.template})" if delivery.template else ""),
        f"created {_when(delivery.created_at)}" + (", a digest" if delivery.digest else ""),
        f"event {delivery.event_id}:",
        *(f"  {line}" for line in printable(body).splitlines()),
    ]
    return "\n".join(lines) + "\n"


def _when(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


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
