"""The delivery worker: one lane per destination claims due deliveries, sends, records."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.config.model import Config, DeliveryConfig
from relay.events import EventError, parse_event
from relay.metrics import Metrics
from relay.notification import Notification, build_notification
from relay.senders.base import DeliveryError, Sender, Sent
from relay.store import Delivery, Store, StoreUnavailable

log = logging.getLogger("relay.delivery")

Clock = Callable[[], float]

# A safety net, and how a lane notices what another process did: lanes are woken on every
# accept and every finished send of their own process.
IDLE_POLL_S = 5.0
# A conversation's parent message shows its count and last activity: updated at most this
# often, however fast the conversation goes (Slack paces chat.update like any message).
PARENT_UPDATE_EVERY_S = 2.0
# After an idle lane is woken, wait this long before asking for due deliveries, so that a
# burst of events is fetched by one query, not one each.
GATHER_S = 0.02


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; a sender's retry_after_s always wins."""

    max_attempts: int
    first_s: float
    max_s: float

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.backoff.first_s, config.backoff.max_s)

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        """Return the wait before the next try, after `attempts` failed tries."""
        ceiling = min(self.max_s, self.first_s * 2.0 ** max(attempts - 1, 0))
        # "Equal jitter": never less than half the ceiling, so retries do back off,
        # but spread out so a recovering service is not hit by every retry at once.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def retry_at(
        self, error: DeliveryError, attempts: int, now: float, rng: random.Random
    ) -> float | None:
        """Return when to try again, or None to dead-letter."""
        if not error.retryable or attempts >= self.max_attempts:
            return None
        if error.retry_after_s is not None:
            return now + error.retry_after_s
        return now + self.delay_s(attempts, rng)


def conversation_key(conversation: str) -> str:
    """Return the store's key of a conversation: a session id may be 10 KB of anything."""
    return hashlib.sha256(conversation.encode("utf-8", "replace")).hexdigest()


class Lane:
    """Sends one destination's deliveries: up to `delivery.concurrency` at once, each of a
    different session, and each session's in accepted order.

    The lane claims what it sends with a lease (the store's claim), so several relay
    processes on one store never send the same delivery; a finished send frees a slot and
    the lane claims again, which is how a session's next delivery follows its last.
    """

    def __init__(self, worker: DeliveryWorker, destination: str) -> None:
        self.destination = destination
        self._worker = worker
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self.sending: dict[int, asyncio.Task[None]] = {}
        # Sends whose claim a renewal found taken by another process: not sent here.
        self._lost: set[int] = set()
        self.task: asyncio.Task[None] | None = None
        # Conversation key -> (its thread, how many messages, last activity): the parent
        # updates not made yet; only the latest of each counts.
        self._parent_updates: dict[str, tuple[str, int, float]] = {}
        self._updater: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        worker = self._worker
        try:
            while not worker.stopping:
                await self._claim_and_send()
        finally:
            # In-flight sends finish (worker.stop bounds how long); those still waiting
            # for their turn see `stopping` and leave their claim to be released.
            await asyncio.gather(*self.sending.values(), return_exceptions=True)

    async def stop_updates(self) -> None:
        """Drop the parent updates not made yet: a parent's count is cosmetic, not worth
        a wait at shutdown."""
        if self._updater is not None:
            self._updater.cancel()
            await asyncio.gather(self._updater, return_exceptions=True)

    def claims_lost(self, ids: Iterable[int]) -> None:
        """Another process holds these now (this one's lease ran out): a send of them
        still waiting for its turn does not go out from here."""
        self._lost.update(i for i in ids if i in self.sending)

    async def _claim_and_send(self) -> None:
        worker = self._worker
        now = worker.clock()
        if self._paused_until > now:
            await self._sleep(self._paused_until - now)
            return
        free = worker.config.delivery.concurrency - len(self.sending)
        if free <= 0:
            await self._sleep(IDLE_POLL_S)  # a finished send wakes the lane
            return
        try:
            batch = await worker.store.claim(
                self.destination, now, free, owner=worker.owner, lease_s=worker.lease_s
            )
            if not batch:
                idle = not self.sending
                await self._sleep(await self._idle_time(now) if idle else IDLE_POLL_S)
                if idle:
                    await asyncio.sleep(GATHER_S)
                return
        except StoreUnavailable as exc:
            log.warning(
                "store unavailable, retrying: %s", exc, extra={"destination": self.destination}
            )
            await self._sleep(1.0)
            return
        for delivery in batch:
            if delivery.id in self.sending:
                # This process's own send, still under way: its lease ran out (a store
                # outage or a clock jump held renewal back) and the claim took it back.
                # Sending it again would repeat it; the claim only renewed its lease, and
                # made the claim this process's again if another had taken it meanwhile.
                self._lost.discard(delivery.id)
                continue
            task = asyncio.create_task(self._deliver_in_turn(delivery))
            self.sending[delivery.id] = task
            task.add_done_callback(functools.partial(self._sent, delivery.id))

    def _sent(self, delivery_id: int, _: asyncio.Task[None]) -> None:
        self.sending.pop(delivery_id, None)
        self._lost.discard(delivery_id)
        self.wake()

    async def _deliver_in_turn(self, delivery: Delivery) -> None:
        """Wait for the destination's pace and pauses, then send, unless relay stops or
        another process took the claim meanwhile."""
        if not await self._wait_for_turn():
            return
        if delivery.id in self._lost:
            log.warning(
                "delivery %s was claimed by another process while it waited its turn here;"
                " it is sent from there",
                delivery.id,
                extra={"event_id": delivery.event_id, "destination": delivery.destination},
            )
            return
        await self._deliver(delivery)

    async def _record(self, write: Coroutine[Any, Any, bool], delivery: Delivery) -> None:
        """Wait until a send's outcome is committed, before the session's next send.

        So a crash can repeat at most the sends in flight: every earlier one is on disk.
        The commit is shared with other sends and with incoming events.
        """
        extra = {"event_id": delivery.event_id, "destination": delivery.destination}
        try:
            held = await write
        except StoreUnavailable as exc:
            # At-least-once: unrecorded, the delivery is claimed and tried again once its
            # lease runs out.
            log.error("could not record delivery %s: %s", delivery.id, exc, extra=extra)
            return
        if not held:
            log.warning(
                "delivery %s was claimed by another process after this one's lease ran out;"
                " its outcome is the other process's to record",
                delivery.id,
                extra=extra,
            )

    async def _wait_for_turn(self) -> bool:
        """Wait while the destination is paused or its pacing says so; False if stopping."""
        worker = self._worker
        while not worker.stopping:
            wait_s = await self._wait_s()
            if wait_s <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.stopped.wait(), timeout=wait_s)
        return False

    async def _wait_s(self) -> float:
        """How long to wait before sending: this lane's own pause, then the target's shared
        pause and pace (a token is taken when it answers 0), then the sender's own say."""
        worker = self._worker
        now = worker.clock()
        if self._paused_until > now:
            return self._paused_until - now
        sender = worker.senders.get(self.destination)
        if sender is None:
            return 0.0  # gone from the config: dead-lettered at once by _send
        limit = sender.limit
        if limit is not None:
            try:
                wait_s = await worker.store.reserve(limit.key, now, limit.rate_per_s, limit.burst)
            except StoreUnavailable:
                return 1.0  # nothing could be recorded either: wait for the store
            if wait_s > 0:
                return wait_s
        return sender.wait_s()

    async def _pause(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)
        sender = self._worker.senders.get(self.destination)
        if sender is not None and sender.limit is not None:
            with contextlib.suppress(StoreUnavailable):  # the lane's own pause still holds
                await self._worker.store.pause(sender.limit.key, until)

    async def _idle_time(self, now: float) -> float:
        next_due = await self._worker.store.next_due_at(self.destination, now)
        if next_due is None:
            return IDLE_POLL_S
        return min(max(next_due - now, 0.05), IDLE_POLL_S)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken or `seconds` pass.

        The flag is cleared after waking, not before sleeping: a wake that came while the
        lane was busy (new deliveries, a finished send, or stop) must cut the next sleep
        short, not be lost.
        """
        if self._worker.stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _deliver(self, delivery: Delivery) -> None:
        worker = self._worker
        extra = {"event_id": delivery.event_id, "destination": delivery.destination}
        try:
            note = await self._send(delivery)
        except DeliveryError as error:
            await self._record_failure(delivery, error)
            return
        except Exception as exc:  # a bug in a sender must not stop the lane
            log.exception("unexpected error sending delivery %s", delivery.id, extra=extra)
            await self._record_failure(
                delivery, DeliveryError(f"internal error: {type(exc).__name__}", retryable=True)
            )
            return
        now = worker.clock()
        worker.metrics.deliveries.labels(delivery.destination, "sent").inc()
        worker.metrics.delivery_seconds.labels(delivery.destination).observe(
            max(now - delivery.created_at, 0.0)
        )
        log.debug("delivered %s (attempt %d)", delivery.id, delivery.attempts + 1, extra=extra)
        if note:
            log.warning("delivered %s only in part: %s", delivery.id, note, extra=extra)
        write = worker.store.record_sent(delivery.id, now, note, owner=worker.owner)
        await self._record(write, delivery)

    async def _send(self, delivery: Delivery) -> str | None:
        worker = self._worker
        sender = worker.senders.get(delivery.destination)
        if sender is None:
            raise DeliveryError(
                f'destination "{delivery.destination}" is no longer configured', retryable=False
            )
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
            notification = await self._with_transcript(notification, delivery)
        notification = await self._in_thread(notification, delivery)
        timeout_s = worker.config.delivery.timeout_s
        try:
            sent = await asyncio.wait_for(sender.send(notification), timeout=timeout_s)
        except TimeoutError:
            raise DeliveryError(f"timed out after {timeout_s:g}s", retryable=True) from None
        if notification.conversation is not None:
            await self._keep_thread(conversation_key(notification.conversation), notification, sent)
        return sent.note

    async def _keep_thread(self, key: str, notification: Notification, sent: Sent) -> None:
        """After a send in a conversation: keep the thread it started, or count the reply."""
        store = self._worker.store
        if sent.thread is None:
            if notification.thread is not None:
                await self._count_reply(key, notification.thread)
            return
        # Kept before this send is recorded, so the session's next notification, which
        # waits for that record, finds it. If the store fails here, the next one starts a
        # thread of its own.
        now = self._worker.clock()
        with contextlib.suppress(StoreUnavailable):
            if sent.replaces_thread:
                await store.replace_thread(self.destination, key, sent.thread, now)
            else:
                await store.start_thread(self.destination, key, sent.thread, now)

    async def _count_reply(self, key: str, thread: str) -> None:
        """Count a reply, which also keeps its thread from the retention purge, and have
        its parent show the count soon (debounced) where the destination shows one."""
        try:
            messages = await self._worker.store.count_message(
                self.destination, key, self._worker.clock()
            )
        except StoreUnavailable:
            return  # the next reply counts again
        sender = self._worker.senders.get(self.destination)
        if sender is None or not sender.updates_parents:
            return
        self._parent_updates[key] = (thread, messages, self._worker.clock())
        if self._updater is None or self._updater.done():
            self._updater = asyncio.create_task(
                self._update_parents(), name=f"relay-parents-{self.destination}"
            )

    async def _update_parents(self) -> None:
        worker = self._worker
        while self._parent_updates and not worker.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.stopped.wait(), timeout=PARENT_UPDATE_EVERY_S)
            pending, self._parent_updates = self._parent_updates, {}
            for thread, messages, last_activity in pending.values():
                sender = worker.senders.get(self.destination)
                if sender is None or not await self._wait_for_turn():
                    return
                try:
                    update = sender.update_parent(thread, messages, last_activity)
                    await asyncio.wait_for(update, timeout=worker.config.delivery.timeout_s)
                except (DeliveryError, TimeoutError) as exc:
                    extra = {"destination": self.destination}
                    log.warning("could not update a conversation's parent: %s", exc, extra=extra)
                except Exception:  # a count is cosmetic: no surprise may end the updates
                    extra = {"destination": self.destination}
                    log.exception("could not update a conversation's parent", extra=extra)

    async def _with_transcript(
        self, notification: Notification, delivery: Delivery
    ) -> Notification:
        """Give a digest every event that joined it, in order."""
        try:
            stored = await self._worker.store.digest_events(delivery.id)
            events = tuple(
                parse_event(body, event_id=event_id, received_at=delivery.created_at)
                for event_id, body in stored
            )
        except StoreUnavailable as exc:
            raise DeliveryError(f"cannot read the digest's events: {exc}", retryable=True) from None
        except EventError as exc:
            raise DeliveryError(f"cannot read a stored event: {exc}", retryable=False) from exc
        return dataclasses.replace(notification, transcript=events or (notification.event,))

    async def _in_thread(self, notification: Notification, delivery: Delivery) -> Notification:
        """Give a notification its conversation's thread when its rule has `thread: session`."""
        rule = self._worker.config.rules_by_name.get(delivery.rule)
        conversation = notification.event.session
        if rule is None or rule.thread is None or conversation is None:
            return notification
        key = conversation_key(conversation)
        try:
            thread = await self._worker.store.thread(delivery.destination, key)
        except StoreUnavailable as exc:
            raise DeliveryError(f"cannot read the thread map: {exc}", retryable=True) from None
        return dataclasses.replace(
            notification, conversation=conversation, thread=thread, broadcast=rule.broadcast
        )

    async def _record_failure(self, delivery: Delivery, error: DeliveryError) -> None:
        worker = self._worker
        now = worker.clock()
        attempts = delivery.attempts + 1
        retry_at = worker.policy.retry_at(error, attempts, now, worker.rng)
        if error.retryable and error.retry_after_s is not None:
            # The service asked for a pause: hold the whole destination, not just this
            # delivery, and every process sending to the same target.
            await self._pause(now + error.retry_after_s)
        extra = {"event_id": delivery.event_id, "destination": delivery.destination}
        outcome = "dead" if retry_at is None else "retried"
        worker.metrics.deliveries.labels(delivery.destination, outcome).inc()
        if retry_at is None:
            log.error(
                "dead-lettered %s after %d attempt(s): %s",
                delivery.id,
                attempts,
                error,
                extra=extra,
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
        write = worker.store.record_failure(
            delivery.id, str(error), retry_at=retry_at, now=now, owner=worker.owner
        )
        await self._record(write, delivery)


class DeliveryWorker:
    """Owns one lane per destination; a slow or failing destination holds up no other."""

    def __init__(
        self,
        store: Store,
        config: Config,
        senders: Mapping[str, Sender],
        *,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.rng = rng or random.Random()
        self.stopping = False
        self.stopped = asyncio.Event()  # set with `stopping`, for waits that must end then
        self.config = config
        self.senders: Mapping[str, Sender] = senders
        self.policy = RetryPolicy.from_config(config.delivery)
        # Who holds this process's claims in a store shared with other processes.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lanes: dict[str, Lane] = {}
        self._unconfigured: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def lease_s(self) -> float:
        return self.config.delivery.lease_s

    @property
    def in_flight(self) -> int:
        """How many claimed deliveries are being sent, or wait their turn to be."""
        return sum(len(lane.sending) for lane in self._lanes.values())

    def start(self) -> None:
        """Start a lane for every configured destination, and, once, for every destination
        the store still has deliveries queued for."""
        for name in self.senders:
            self._lane(name)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases(), name="relay-leases")
        if self._unconfigured is None:
            self._unconfigured = asyncio.create_task(
                self._start_unconfigured_lanes(), name="relay-unconfigured-lanes"
            )

    async def _renew_leases(self) -> None:
        """Renew the leases of every delivery being sent, three times a lease.

        A send may take as long as it takes (delivery.timeout bounds it, pacing may hold it
        back); only a process that stops renewing, because it died, loses its claims. While
        relay stops, renewing goes on until the sends in flight are over: a lease that ran
        out under a send still going would let another process repeat it.
        """
        while True:
            if self.stopping:
                await asyncio.sleep(self.lease_s / 3)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), timeout=self.lease_s / 3)
            ids = [i for lane in self._lanes.values() for i in lane.sending]
            if not ids:
                if self.stopping:
                    return
                continue
            try:
                held = await self.store.renew(self.owner, ids, self.clock() + self.lease_s)
            except StoreUnavailable as exc:
                log.warning("cannot renew the leases of %d send(s): %s", len(ids), exc)
                continue
            lost = sorted(set(ids) - held)
            if lost:
                log.warning("lost the claim on deliveries %s (finished or claimed elsewhere)", lost)
                for lane in self._lanes.values():
                    lane.claims_lost(lost)

    async def _start_unconfigured_lanes(self) -> None:
        """Give deliveries queued for a destination that is gone from the config a lane.

        It dead-letters them with the reason, as it does after a reload that removes a
        destination: they show in `relay deliveries --status dead`, can be replayed once
        the destination is back, and no longer sit in the queue (and in the way of the
        retention purge) for ever.
        """
        try:
            queued = await self.store.queue_depths()
        except StoreUnavailable as exc:
            log.warning("cannot look for deliveries to removed destinations: %s", exc)
            return
        for name in queued:
            if name not in self.senders and not self.stopping:
                self._lane(name)

    def _lane(self, destination: str) -> Lane:
        lane = self._lanes.get(destination)
        if lane is None:
            lane = self._lanes[destination] = Lane(self, destination)
            lane.task = asyncio.create_task(lane.run(), name=f"relay-lane-{destination}")
        return lane

    def reconfigure(self, config: Config, senders: Mapping[str, Sender]) -> None:
        """Swap in a new config and senders; lanes, pauses and queues carry over."""
        self.config = config
        self.senders = senders
        self.policy = RetryPolicy.from_config(config.delivery)
        self.start()

    def wake(self, destinations: Iterable[str]) -> None:
        """Tell the lanes of these destinations that new deliveries are waiting.

        While stopping, nothing is: events accepted then stay for the next process.
        """
        if self.stopping:
            return
        for name in destinations:
            self._lane(name).wake()

    async def stop(self, timeout_s: float) -> None:
        """Let in-flight sends finish (up to timeout_s), stop every lane, and release the
        claims left, so another process sends them at once rather than after their lease."""
        self.stopping = True
        self.stopped.set()
        if self._unconfigured is not None:
            await asyncio.gather(self._unconfigured, return_exceptions=True)
        for lane in self._lanes.values():
            lane.wake()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            sends = [t for lane in self._lanes.values() for t in lane.sending.values()]
            for task in [*pending, *sends]:
                task.cancel()
            await asyncio.gather(*pending, *sends, return_exceptions=True)
        # Only now: the leases of the sends above were renewed for as long as they went on.
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for lane in self._lanes.values():
            await lane.stop_updates()
        try:
            released = await self.store.release(self.owner)
        except StoreUnavailable as exc:
            log.warning("could not release claims (their leases will run out): %s", exc)
            return
        if released:
            log.info("released %d claimed deliveries for the next process", released)
