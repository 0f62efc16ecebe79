"""One attempt at one delivery: build its notification, send it, record the outcome."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relay.delivery.context import Worker, log
from relay.delivery.conversations import Conversations, in_thread
from relay.delivery.digests import with_transcript
from relay.delivery.stored import until_stored
from relay.events import EventError, parse_event
from relay.notification import Notification, build_notification
from relay.senders.base import DeliveryError
from relay.store import Delivery, SentRecord, StoreUnavailable

Pause = Callable[[float], Awaitable[None]]  # hold the destination until a time
# Whether the delivery's claim is still this process's to send on (Lane._claim_holds).
ClaimHolds = Callable[[], Awaitable[bool]]
Held = TypeVar("Held", bool, SentRecord)  # what recording an outcome says


async def deliver(
    worker: Worker,
    delivery: Delivery,
    *,
    pause: Pause,
    conversations: Conversations,
    finishing: set[int],
    claim_holds: ClaimHolds,
) -> bool:
    """Send a claimed delivery once and record what came of it; never raise. True when
    it went out and nothing else of its destination is queued (SentRecord.RECORDED_IDLE):
    its lane need not look for more until it is told of some.

    Its notification built, it goes out only if `claim_holds` says the claim is still
    this process's; otherwise nothing is sent or recorded (the lane said why).

    The delivery's id goes into `finishing` as its outcome is written (its lane takes it
    out when the send is over): from then on its claim is the record's to end, and a
    renewal that finds it finished has not lost it."""
    extra = {"event_id": delivery.event_id, "destination": delivery.destination}
    started_at = worker.clock()
    try:
        note = await _send(worker, delivery, conversations, claim_holds)
    except _ClaimGone:
        return False
    except DeliveryError as error:
        await _record_failure(worker, delivery, error, pause, started_at, finishing)
        return False
    except Exception as exc:  # a bug in a sender must not stop the lane
        log.exception("unexpected error sending delivery %s", delivery.id, extra=extra)
        internal = DeliveryError(f"internal error: {type(exc).__name__}", retryable=True)
        await _record_failure(worker, delivery, internal, pause, started_at, finishing)
        return False
    now = worker.clock()
    worker.metrics.deliveries.labels(delivery.destination, "sent").inc()
    worker.metrics.delivery_seconds.labels(_destination_type(worker, delivery)).observe(
        max(now - delivery.created_at, 0.0)
    )
    log.debug("delivered %s (attempt %d)", delivery.id, delivery.attempts + 1, extra=extra)
    if note:
        log.warning("delivered %s only in part: %s", delivery.id, note, extra=extra)
    finishing.add(delivery.id)
    write = functools.partial(
        worker.store.record_sent, delivery.id, now, note, owner=worker.owner, started_at=started_at
    )
    return await _record(write, delivery) is SentRecord.RECORDED_IDLE


def _destination_type(worker: Worker, delivery: Delivery) -> str:
    """The type of a delivery's destination (slack, webhook, …): what the delivery time
    histogram is labelled by. A child per destination name would cost some 5 kB and 19
    series each, made at the destination's first delivery; with a destination per
    customer, 10,000 destinations took 50 MB and a /metrics page of 15 MB."""
    destination = worker.config.destinations.get(delivery.destination)
    return "removed" if destination is None else destination.type


async def build(worker: Worker, delivery: Delivery) -> Notification:
    """The notification a delivery sends: its event, template, transcript and thread."""
    try:
        event = parse_event(
            delivery.body, event_id=delivery.event_id, received_at=delivery.created_at
        )
        template = worker.config.templates.get(delivery.template) if delivery.template else None
        notification = build_notification(event, delivery.rule, template)
    except EventError as exc:
        raise DeliveryError(f"cannot read the stored event: {exc}", retryable=False) from exc
    if notification.template_error:
        extra = {"event_id": delivery.event_id, "destination": delivery.destination}
        log.warning("%s; sending the default layout", notification.template_error, extra=extra)
    if delivery.digest:
        notification = await with_transcript(worker, notification, delivery, template)
    return await in_thread(worker, notification, delivery)


class _ClaimGone(Exception):
    """The claim is no longer this process's to send on."""


async def _send(
    worker: Worker, delivery: Delivery, conversations: Conversations, claim_holds: ClaimHolds
) -> str | None:
    sender = worker.senders.get(delivery.destination)
    if sender is None:
        raise DeliveryError(
            f'destination "{delivery.destination}" is no longer configured', retryable=False
        )
    notification = await build(worker, delivery)
    # Here, not before: building may wait for the store (a thread, a transcript).
    if not await claim_holds():
        raise _ClaimGone
    timeout_s = worker.config.delivery.timeout_s
    try:
        async with asyncio.timeout(timeout_s):  # not wait_for: no task of its own per send
            sent = await sender.send(notification)
    except TimeoutError:
        raise DeliveryError(f"timed out after {timeout_s:g}s", retryable=True) from None
    await conversations.after_send(notification, sent)
    return sent.note


async def _record_failure(
    worker: Worker,
    delivery: Delivery,
    error: DeliveryError,
    pause: Pause,
    started_at: float,
    finishing: set[int],
) -> None:
    now = worker.clock()
    attempts = delivery.attempts + 1
    retry_at = worker.policy.retry_at(error, attempts, now, worker.rng)
    if error.retryable and error.retry_after_s is not None:
        # The service asked for a pause: hold the whole destination, not just this
        # delivery, and every process sending to the same target.
        await pause(now + error.retry_after_s)
    extra = {"event_id": delivery.event_id, "destination": delivery.destination}
    outcome = "dead" if retry_at is None else "retried"
    worker.metrics.deliveries.labels(delivery.destination, outcome).inc()
    if retry_at is None:
        log.error(
            "dead-lettered %s after %d attempt(s): %s", delivery.id, attempts, error, extra=extra
        )
    else:
        log.warning(
            "delivery %s failed (attempt %d), retry in %.2fs: %s",
            delivery.id,
            attempts,
            retry_at - now,
            error,
            extra=extra,
        )
    finishing.add(delivery.id)
    write = functools.partial(
        worker.store.record_failure,
        delivery.id,
        str(error),
        retry_at=retry_at,
        now=now,
        owner=worker.owner,
        started_at=started_at,
    )
    await _record(write, delivery)


async def _record(write: Callable[[], Awaitable[Held]], delivery: Delivery) -> Held:
    """Wait until a send's outcome is committed, before the session's next send; return
    what the store said (false: the claim was no longer this process's).

    So a crash can repeat at most the sends in flight: every earlier one is on disk.
    The commit is shared with other sends and with incoming events.

    A store that cannot take it is asked again until it does. Meanwhile the send is
    still in flight: its lease is renewed, and no other process claims it. Given up on,
    it would be claimed once its lease ran out, and sent again. Only a stop that cannot
    wait any longer cuts it off (DeliveryWorker.stop).
    """
    extra = {"event_id": delivery.event_id, "destination": delivery.destination}
    failures = 0

    def keep_trying(exc: StoreUnavailable) -> bool:
        nonlocal failures
        if not failures:
            log.warning(
                "cannot record delivery %s yet, trying again until the store answers: %s",
                delivery.id,
                exc,
                extra=extra,
            )
        failures += 1
        return True

    held = await until_stored(write, keep_trying)
    assert held is not None  # never given up on
    if failures:
        log.info("recorded delivery %s after %d tries", delivery.id, failures + 1, extra=extra)
    if not held:
        log.warning(
            "delivery %s was claimed by another process after this one's lease ran out;"
            " its outcome is the other process's to record",
            delivery.id,
            extra=extra,
        )
    return held
