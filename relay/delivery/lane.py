"""A destination's lane: it claims due deliveries with a lease, sends up to
`delivery.concurrency` at once (each of a different session, each session in order), and
waits out the destination's pauses and pacing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable

from relay.delivery.attempt import deliver
from relay.delivery.context import Worker, log
from relay.delivery.conversations import Conversations
from relay.store import Delivery, StoreUnavailable

# Lanes are woken on every accept and every finished send of their own process. A lane
# with deliveries queued that it cannot send yet looks again at least this often; one
# with none waits to be woken, by its process or by the worker's look at the store for
# work that came from elsewhere (DeliveryWorker._look_for_work, as often): with a lane per
# destination, 10,000 idle lanes must not ask the store for work every few seconds each.
IDLE_POLL_S = 5.0
# After an idle lane is woken in a burst (its last claim took all it could), wait this long
# before asking for due deliveries, so that the burst is fetched by few queries, not one
# each. Out of a burst it claims at once: at a steady 200 events a second the wait was
# most of an event's time from accept to arrival (bench/latency.py).
GATHER_S = 0.02
# A lane that has waited this long for work, with nothing of its own in flight, ends, and
# its destination has no lane until work comes: with a destination per customer, a lane
# each (a task, its event, its conversations, about 4 kB) would be most of relay's memory.
RETIRE_AFTER_S = 300.0
# How many times a send renews its claim, each renewal answered with less than half the
# lease left, before it gives up for now (Lane._claim_holds).
_RENEWALS_BEFORE_SEND = 3


class Lane:
    """Sends one destination's deliveries: up to `delivery.concurrency` at once, each of a
    different session, and each session's in accepted order.

    The lane claims what it sends with a lease (the store's claim), so several relay
    processes on one store never send the same delivery; a finished send frees a slot and
    the lane claims again, which is how a session's next delivery follows its last. When
    the send's record says nothing else of the destination is queued, an idle lane does
    not look: it waits to be told of work, as after a look that found none.

    An idle lane's new work needs no claim of its own: an accept of its process reserves
    a slot (`reserve`), the store claims the delivery as it stores it when it is its
    session's head (ClaimAtAccept), and the accept hands it over (`hand`).

    A lane exists while its destination has work: the worker makes it when it finds some
    queued, when its process accepts some, or (parked, as if its look had found nothing)
    for an accept to claim for; after RETIRE_AFTER_S of waiting for work it ends.
    """

    def __init__(self, worker: Worker, destination: str, *, parked: bool = False) -> None:
        self.destination = destination
        self._worker = worker
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self.sending: dict[int, asyncio.Task[bool]] = {}
        # Sends whose outcome is being recorded (deliver): the record ends their claim.
        self.finishing: set[int] = set()
        # Sends past their claim's last check (_claim_holds): on the wire, or answered and
        # being recorded. The destination may have them, so a shutdown lets them finish
        # rather than cut them off and release them for another process to send again.
        self.on_wire: set[int] = set()
        # Sends whose claim a renewal found taken by another process: not sent here.
        self._lost: set[int] = set()
        # When each send's lease ends, as far as this process knows: what it asked for
        # when it claimed it, or at its last renewal (the worker's, `renewed`, or one of
        # _claim_holds).
        self._held_until: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None
        self.conversations = Conversations(worker, destination, self._wait_for_turn)
        self._in_burst = False  # the last claim that found work took all it could
        # The last claim that found work took less than it could: nothing else was due, so
        # until a wake (an accept, a finished send) another claim would find nothing.
        self._drained = False
        # Parked until woken: nothing was queued for this destination when it last looked
        # (or, made parked, when the worker last looked for it).
        self._parked = parked
        self.retired = False
        # Slots promised to accepts in flight, for what they claim (reserve, hand).
        self._reserved = 0
        # After its look (a claim), the lane looks again once its sends are done, unless
        # every send that finished since was recorded with nothing else of the destination
        # queued (SentRecord.RECORDED_IDLE) and no news of work came: then a look would
        # find nothing, and the lane waits for work without one. Whatever order the sends
        # end in (their records may come back out of order), one that was not recorded
        # idle, or news, makes the next look due.
        # News that reaches the lane while a send is in flight may be of work stored after
        # that send's record: it makes the look due too, and only a look clears it.
        self._sent_since_look = 0
        self._must_look = not parked

    @property
    def waiting_for_work(self) -> bool:
        """Nothing queued for this destination when the lane last looked, and nothing of
        its own in flight: only a wake brings work."""
        return self._parked and not self.sending and not self._reserved

    @property
    def _free(self) -> int:
        """Slots neither sending nor promised to an accept in flight."""
        concurrency = self._worker.config.delivery.concurrency
        return concurrency - len(self.sending) - self._reserved

    def wake(self) -> None:
        """Wake the lane: a send finished, or relay stops."""
        self._wake.set()

    def reserve(self) -> bool:
        """Promise a slot to an accept that claims for this lane, when the lane is parked
        (nothing else queued, so the new delivery jumps no queue) and has one free."""
        worker = self._worker
        if worker.stopping or not self._parked or self._free <= 0:
            return False
        if self._paused_until > worker.clock():
            return False
        self._reserved += 1
        return True

    def hand(self, deliveries: Iterable[Delivery], held_until: float) -> None:
        """Take what an accept claimed for this lane, held until `held_until`, and give its
        slot back: send it as if the lane had claimed it. While relay stops, nothing more
        is sent from here; the worker releases the claims it leaves."""
        self._reserved -= 1
        if self._worker.stopping:
            return
        handed = False
        for delivery in deliveries:
            # It was parked, not in a burst, and no claim of its drained anything.
            self._in_burst = self._drained = False
            self._start(delivery, held_until)
            handed = True
        if not handed and self._must_look:
            # The slot comes back unused (a duplicate, a session's next delivery): news
            # that came meanwhile may have found the lane full, asleep until a send ends.
            self.wake()

    def may_take_more(self, queued: int) -> bool:
        """Whether the worker's look at the store should wake the lane, `queued` being
        how many deliveries of its destination are unfinished: it is parked with a slot
        free, and they are more than its own sends in flight."""
        return self._parked and self._free > 0 and queued > len(self.sending)

    def wake_for_work(self) -> None:
        """Wake the lane to look for deliveries: its process accepted some, or the worker
        found some queued that came from elsewhere."""
        self._must_look = True
        self._wake.set()

    async def run(self) -> None:
        worker = self._worker
        try:
            if self._parked:
                await self._wait_for_work()
            while not worker.stopping and not self.retired:
                await self._claim_and_send()
        finally:
            # In-flight sends finish (worker.stop bounds how long); those still waiting
            # for their turn see `stopping` and leave their claim to be released.
            await asyncio.gather(*self.sending.values(), return_exceptions=True)

    async def stop_updates(self) -> None:
        """Drop the parent updates not made yet."""
        await self.conversations.stop()

    def renewed(self, ids: Iterable[int], held_until: float) -> None:
        """A renewal found these held by this process, now until `held_until`."""
        for i in ids:
            # Not max(): the store keeps what the last renewal wrote.
            if i in self._held_until:  # not finished meanwhile
                self._held_until[i] = held_until

    def claims_lost(self, ids: Iterable[int]) -> list[int]:
        """A renewal did not find these held by this process. Return those it lost to
        another process (its lease ran out): a send of them still waiting for its turn
        does not go out from here. The others finished meanwhile: their outcome was
        recorded between the renewal's look at the lane and the store's answer."""
        lost = [i for i in ids if i in self.sending and i not in self.finishing]
        self._lost.update(lost)
        return lost

    async def _claim_and_send(self) -> None:
        worker = self._worker
        now = worker.clock()
        if self._paused_until > now:
            await self._sleep(self._paused_until - now)
            return
        free = self._free
        if not self.sending and self._sent_since_look and not self._must_look:
            self._sent_since_look = 0
            # What woke the lane since was its own sends finishing (news of work makes a
            # look due): nothing to look for.
            self._wake.clear()
            await self._wait_for_work()
            return
        if free <= 0 or (self._drained and self.sending):
            self._drained = False
            await self._sleep(IDLE_POLL_S)  # a finished send wakes the lane
            return
        self._sent_since_look, self._must_look = 0, False  # news from now on: look again
        held_until = now + worker.lease_s
        try:
            claimed = await worker.store.claim_or_next_due(
                self.destination, now, free, owner=worker.owner, lease_s=worker.lease_s
            )
            batch = claimed.deliveries
            if not batch:
                if self.sending:
                    await self._sleep(IDLE_POLL_S)  # a finished send wakes the lane
                    return
                await self._wait_for_work(_idle_time(claimed.next_due_at, now))
                return
            self._in_burst = len(batch) >= free
            self._drained = not self._in_burst
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
                self._held_until[delivery.id] = held_until
                continue
            self._start(delivery, held_until)

    def _start(self, delivery: Delivery, held_until: float) -> None:
        task = asyncio.create_task(self._deliver_in_turn(delivery))
        self.sending[delivery.id] = task
        self._held_until[delivery.id] = held_until
        task.add_done_callback(functools.partial(self._sent, delivery.id))

    async def _wait_for_work(self, wait_s: float | None = None) -> None:
        """Sleep until woken, or until `wait_s` (the next delivery's due time) passes; with
        none, the worker's look may wake the lane too, and a lane left idle that long
        retires. Out of a burst, gather first."""
        self._parked = wait_s is None
        try:
            woken = await self._sleep(RETIRE_AFTER_S if wait_s is None else wait_s)
        finally:
            self._parked = False
        if wait_s is None and not woken and self._may_retire():
            # A wake that came after the timeout fired, before the lane ran again, set the
            # flag _sleep read. From that read to here nothing awaits; whatever comes
            # later finds no lane, and the worker makes a new one.
            self.retired = True
            self._worker.retire(self)
            return
        if self._in_burst:
            await asyncio.sleep(GATHER_S)

    def _may_retire(self) -> bool:
        """Nothing of the lane's own is under way or owed: no send, no slot promised to
        an accept, no pause of its own to keep, no parent update, no news to look at."""
        worker = self._worker
        return (
            not worker.stopping
            and not self.sending
            and not self._reserved
            and not self._must_look
            and self._paused_until <= worker.clock()
            and self.conversations.idle
        )

    def _sent(self, delivery_id: int, task: asyncio.Task[bool]) -> None:
        self.sending.pop(delivery_id, None)
        self.finishing.discard(delivery_id)
        self.on_wire.discard(delivery_id)
        self._lost.discard(delivery_id)
        self._held_until.pop(delivery_id, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # deliver() never raises; what comes before it (pacing, the claim's renewal)
            # must not drop a delivery without a word. Its claim runs out and it is retried.
            log.error(
                "unexpected error before sending delivery %s",
                delivery_id,
                exc_info=error,
                extra={"destination": self.destination},
            )
        recorded_idle = not task.cancelled() and error is None and task.result()
        self._sent_since_look += 1
        if not recorded_idle:
            self._must_look = True
        self.wake()

    async def _deliver_in_turn(self, delivery: Delivery) -> bool:
        """Wait for the destination's pace and pauses, then send, unless relay stops or
        another process took the claim meanwhile. True as deliver() says it."""
        if not await self._wait_for_turn():
            return False
        return await deliver(
            self._worker,
            delivery,
            pause=self._pause,
            conversations=self.conversations,
            finishing=self.finishing,
            claim_holds=functools.partial(self._claim_holds, delivery),
        )

    async def _claim_holds(self, delivery: Delivery) -> bool:
        """Whether the claim is still this process's to send on, just before it is sent.

        Renewals come every third of a lease. A claim whose lease, as this process last
        heard, has less than half of it left has missed some (the store was slow to answer:
        the claim itself, or the renewals behind other writes), and may have run out, for
        another process to claim and send: it is renewed first, and sent only if held
        with half its lease ahead. A renewal answered that late too is tried again, a few
        times; then the send waits for the lease to run out and a claim in better times.
        Once the worker is stopping, nothing new goes out.
        """
        extra = {"event_id": delivery.event_id, "destination": delivery.destination}
        worker = self._worker
        renewals = 0
        while delivery.id not in self._lost:
            if worker.stopping:  # nothing new goes out: the worker releases the claim
                return False
            now = worker.clock()
            if self._held_until.get(delivery.id, now) - now >= worker.lease_s / 2:
                self.on_wire.add(delivery.id)
                return True
            if renewals == _RENEWALS_BEFORE_SEND:
                log.warning(
                    "the store answered each renewal of the claim on delivery %s too late to"
                    " send on it; it is sent once its lease has run out and the store"
                    " answers in time",
                    delivery.id,
                    extra=extra,
                )
                return False
            renewals += 1
            held_until = now + worker.lease_s
            try:
                held = await worker.store.renew(worker.owner, [delivery.id], held_until)
            except StoreUnavailable as exc:
                log.warning(
                    "cannot renew the claim on delivery %s before sending it: %s; it is sent"
                    " once its lease has run out and the store answers",
                    delivery.id,
                    exc,
                    extra=extra,
                )
                return False
            if delivery.id not in held:
                break
            self._held_until[delivery.id] = held_until
        log.warning(
            "delivery %s was claimed by another process while it waited its turn here;"
            " it is sent from there",
            delivery.id,
            extra=extra,
        )
        return False

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

    async def _sleep(self, seconds: float | None) -> bool:
        """Sleep until woken or `seconds` pass (None: until woken); True when woken.

        The flag is cleared after waking, not before sleeping: a wake that came while the
        lane was busy (new deliveries, a finished send, or stop) must cut the next sleep
        short, not be lost.
        """
        if self._worker.stopping:
            return True
        # asyncio.timeout, not wait_for: no task of its own for every sleep of every lane.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # None: no timeout
                await self._wake.wait()
        woken = self._wake.is_set()
        self._wake.clear()
        return woken


def _idle_time(next_due: float | None, now: float) -> float | None:
    """How long an idle lane sleeps: until its next delivery is due, at most IDLE_POLL_S;
    None, until woken, when nothing is queued for the destination."""
    if next_due is None:
        return None
    return min(max(next_due - now, 0.05), IDLE_POLL_S)
