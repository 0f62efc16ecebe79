"""The delivery worker: a lane per destination with work, their leases, reloads and
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

from relay.config.model import Config
from relay.delivery import lane as lanes
from relay.delivery.context import Clock, log
from relay.delivery.lane import Lane
from relay.delivery.retry import RetryPolicy
from relay.metrics import Metrics
from relay.senders.base import Sender
from relay.store import ClaimAtAccept, Delivery, Store, StoreUnavailable

# How long a stop waits for accepts that claim for it when the sends took all its time.
_CLAIMS_GRACE_S = 1.0
# How long a stop lets a send on the wire take beyond its own timeout: writing its thread
# and recording its outcome, which wait for the store.
RECORD_GRACE_S = 5.0


class DeliveryWorker:
    """Owns a lane per destination with work; a slow or failing destination holds up no
    other."""

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
        # A lane per destination with work (Lane says when it retires).
        self._lanes: dict[str, Lane] = {}
        # The first look at what the store holds queued, which starts their lanes. Until
        # it is done, a destination without a lane may have work queued.
        self._first_look: asyncio.Task[None] | None = None
        # A look at the store's queues has answered, and started a lane wherever work was
        # queued: a destination without a lane had nothing queued then.
        self._looked = False
        self._renewer: asyncio.Task[None] | None = None
        self._looker: asyncio.Task[None] | None = None
        # Accepts in flight that claim for this process's lanes: stop waits for them, so
        # that what they claim is sent or released, not left to its lease.
        self._claiming = 0
        self._claims_done = asyncio.Event()
        self._claims_done.set()

    @property
    def lease_s(self) -> float:
        return self.config.delivery.lease_s

    @property
    def in_flight(self) -> int:
        """How many claimed deliveries are being sent, or wait their turn to be."""
        return sum(len(lane.sending) for lane in self._lanes.values())

    @property
    def lanes(self) -> int:
        """How many lanes there are: a destination has one while it has work."""
        return len(self._lanes)

    def start(self) -> None:
        """Start a lane, once, for every destination the store has deliveries queued for;
        the others get theirs when work comes."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases(), name="relay-leases")
        if self._first_look is None:
            self._first_look = asyncio.create_task(
                self._start_lanes_with_work(), name="relay-first-look"
            )
        if self._looker is None:
            self._looker = asyncio.create_task(self._look_for_work(), name="relay-look-for-work")

    async def _look_for_work(self) -> None:
        """Every IDLE_POLL_S, wake the lanes that wait for work while the store has some
        queued for their destination, and start one for a destination that has work and
        no lane: another process accepted it, or held it and died.

        One question to the store for every destination, instead of one from each.
        """
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), timeout=lanes.IDLE_POLL_S)
            if self.stopping:
                return
            try:
                await self._look()
            except StoreUnavailable as exc:  # the lanes say so as they send
                log.debug("cannot look for queued deliveries: %s", exc)

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
            owners = {i: lane for lane in self._lanes.values() for i in lane.sending}
            if not owners:
                if self.stopping:
                    return
                continue
            until = self.clock() + self.lease_s
            try:
                held = await self.store.renew(self.owner, list(owners), until)
            except StoreUnavailable as exc:
                log.warning("cannot renew the leases of %d send(s): %s", len(owners), exc)
                continue
            renewed: dict[Lane, list[int]] = {}
            not_held: dict[Lane, list[int]] = {}
            for i, lane in owners.items():
                (renewed if i in held else not_held).setdefault(lane, []).append(i)
            for lane, ids in renewed.items():
                lane.renewed(ids, until)
            lost = [i for lane, ids in not_held.items() for i in lane.claims_lost(ids)]
            if lost:
                log.warning("lost the claim on deliveries %s to another process", sorted(lost))

    async def _start_lanes_with_work(self) -> None:
        """Start a lane for every destination the store has deliveries queued for.

        A destination gone from the config gets one too: it dead-letters them with the
        reason, as it does after a reload that removes a destination, so they show in
        `relay deliveries --status dead`, can be replayed once the destination is back,
        and no longer sit in the queue (and in the way of the retention purge) for ever.
        A store that does not answer leaves it to the worker's next look.
        """
        try:
            await self._look()
        except StoreUnavailable as exc:
            log.warning("cannot look for queued deliveries yet: %s", exc)

    async def _look(self) -> None:
        """Ask the store what is queued; start a lane for each destination with work and
        none (it looks first thing), and wake the parked ones that may take more."""
        queued = await self.store.queue_depths()
        for name, count in queued.items():
            lane = self._lanes.get(name)
            if lane is None:
                if not self.stopping:
                    self._lane(name)
            elif lane.may_take_more(count):
                lane.wake_for_work()
        self._looked = True

    def _lane(self, destination: str, *, parked: bool = False) -> Lane:
        lane = self._lanes.get(destination)
        if lane is None:
            lane = self._lanes[destination] = Lane(self, destination, parked=parked)
            lane.task = asyncio.create_task(lane.run(), name=f"relay-lane-{destination}")
        return lane

    def retire(self, lane: Lane) -> None:
        """Forget a lane that ended for want of work: the next work makes a new one."""
        if self._lanes.get(lane.destination) is lane:
            del self._lanes[lane.destination]

    def waiting_for_work(self, destination: str) -> bool:
        """Whether an accept of this process would claim for the destination: its lane is
        parked with nothing in flight, or it has no lane and nothing was queued for it."""
        lane = self._lanes.get(destination)
        if lane is None:
            return self._may_start_parked(destination) and not self.stopping
        return lane.waiting_for_work

    def _may_start_parked(self, destination: str) -> bool:
        """A configured destination without a lane had nothing queued when the worker last
        looked: a lane retires only when parked, and a look starts one wherever work is
        queued."""
        return self._looked and destination in self.senders

    def reconfigure(self, config: Config, senders: Mapping[str, Sender]) -> None:
        """Swap in a new config and senders; lanes, pauses and queues carry over."""
        self.config = config
        self.senders = senders
        self.policy = RetryPolicy.from_config(config.delivery)
        self.start()

    def claim_at_accept(self, destinations: Iterable[str]) -> ClaimAtAccept | None:
        """What an accept may claim for this process as it stores it: deliveries to the
        lanes that are parked with a slot free, each lane's slot reserved until `handed`
        is called with the accept's outcome. None: nothing (then `handed` need not be)."""
        if self.stopping:
            return None
        parked = frozenset(
            name for name in set(destinations) if (lane := self._parked(name)) and lane.reserve()
        )
        if not parked:
            return None
        self._claiming += 1
        self._claims_done.clear()
        return ClaimAtAccept(self.owner, self.clock() + self.lease_s, parked)

    def _parked(self, destination: str) -> Lane | None:
        """The destination's lane if it may be parked; a new one, parked, if it has none
        and may start so."""
        lane = self._lanes.get(destination)
        if lane is None and self._may_start_parked(destination):
            lane = self._lane(destination, parked=True)
        return lane

    def handed(self, claim: ClaimAtAccept, claimed: Sequence[Delivery] | None) -> None:
        """Hand what an accept claimed (nothing of a duplicate) to the lanes it reserved,
        giving their slots back. None: the accept failed, and whether the store kept it
        and its claims is not known (a timeout may come after the commit): the lanes look,
        and whatever it claimed for them is theirs to claim again once its lease ends."""
        for name in claim.destinations:
            lane = self._lanes[name]
            lane.hand((d for d in claimed or () if d.destination == name), claim.lease_until)
            if claimed is None and not self.stopping:
                lane.wake_for_work()
        self._claiming -= 1
        if not self._claiming:
            self._claims_done.set()

    def wake(self, destinations: Iterable[str]) -> None:
        """Tell the lanes of these destinations that new deliveries are waiting.

        While stopping, nothing is: events accepted then stay for the next process.
        """
        if self.stopping:
            return
        for name in destinations:
            self._lane(name).wake_for_work()

    async def stop(self, timeout_s: float) -> None:
        """Let in-flight sends finish, stop every lane, and release the claims left, so
        another process sends them at once rather than after their lease.

        Nothing new goes out once the stop begins, and what has not gone out by
        timeout_s is stopped. A send already on the wire is not cut off: the destination
        may have it, and released it would be sent again. It has until its own
        delivery.timeout, and RECORD_GRACE_S more for its record."""
        began = asyncio.get_running_loop().time()
        deadline = began + timeout_s
        self.stopping = True
        self.stopped.set()
        if self._first_look is not None:
            await asyncio.gather(self._first_look, return_exceptions=True)
        cut_off = await self._stop_lanes(began, timeout_s)
        if self._looker is not None:
            await asyncio.gather(self._looker, return_exceptions=True)
        # An accept still in flight may claim for this process: its claims are released
        # below with the rest. It takes one commit; a store that hangs past the shutdown
        # timeout leaves them to their lease.
        with contextlib.suppress(TimeoutError):
            left_s = max(deadline - asyncio.get_running_loop().time(), _CLAIMS_GRACE_S)
            await asyncio.wait_for(self._claims_done.wait(), timeout=left_s)
        # Only now: the leases of the sends above were renewed for as long as they went on.
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for lane in list(self._lanes.values()):
            await lane.stop_updates()
        if cut_off:
            log.error(
                "%d send(s) on the wire did not finish by the shutdown's end; this process's"
                " claims are left to their leases, so those sends may be repeated",
                cut_off,
            )
            return
        await self._release_claims()

    async def _stop_lanes(self, began: float, timeout_s: float) -> int:
        """Wake every lane to stop, and wait for their sends (DeliveryWorker.stop). Return
        how many sends on the wire had to be cut off."""
        for lane in self._lanes.values():
            lane.wake()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if not pending:
            return 0
        last_answer = began + self.config.delivery.timeout_s + RECORD_GRACE_S
        return await self._finish_sends_on_the_wire(pending, max(began + timeout_s, last_answer))

    async def _finish_sends_on_the_wire(
        self, lanes_left: set[asyncio.Task[None]], until: float
    ) -> int:
        """Stop the sends that have not gone out, wait (up to the loop's time `until`) for
        those on the wire, then stop every lane left. Return how many sends on the wire
        that cut off."""
        waiting = [
            task
            for lane in self._lanes.values()
            for delivery_id, task in lane.sending.items()
            if delivery_id not in lane.on_wire
        ]
        for task in waiting:
            task.cancel()
        left_s = until - asyncio.get_running_loop().time()
        if left_s > 0:
            _, lanes_left = await asyncio.wait(lanes_left, timeout=left_s)
        on_wire = [
            task
            for lane in self._lanes.values()
            for delivery_id, task in lane.sending.items()
            if delivery_id in lane.on_wire and not task.done()
        ]
        sends = [send for lane in self._lanes.values() for send in lane.sending.values()]
        for left in [*lanes_left, *sends]:
            left.cancel()
        await asyncio.gather(*lanes_left, *sends, return_exceptions=True)
        return len(on_wire)

    async def _release_claims(self) -> None:
        try:
            released = await self.store.release(self.owner)
        except StoreUnavailable as exc:
            log.warning("could not release claims (their leases will run out): %s", exc)
            return
        if released:
            log.info("released %d claimed deliveries for the next process", released)
