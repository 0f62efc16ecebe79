"""The raiser: turns due watches into events, routed and stored like accepted ones.

Every relay process runs one. Each claims due watches from the shared store, so with
several processes one of them raises each signal; the store keeps a signal only while
its watch still owes it, so a signal is raised once even when a claim ran out under a
slow process, and nothing is lost when a process dies: its claims run out and another
process raises what they held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from relay.activity.tally import tally_of
from relay.conversations.watch import SIGNAL_TYPES, DueSignal, Watch, due_signals, signal_event_id
from relay.events import Event, session_event
from relay.ingest import deliveries_for
from relay.state import RelayState
from relay.store import NewEvent, StoreUnavailable
from relay.store.base import NewSignal

log = logging.getLogger("relay.conversations")

# How often a process looks for due watches: SPEC 4.4 raises a signal within a few
# seconds of its deadline. One indexed query a second costs the store next to nothing.
POLL_S = 1.0
BATCH = 100


class SignalRaiser:
    """Looks for due watches every `poll_s` while `conversations` is configured."""

    def __init__(self, state: RelayState, owner: str, *, poll_s: float = POLL_S) -> None:
        self.state = state
        self.owner = owner  # the delivery worker's: one name per process in the store
        self.poll_s = poll_s
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay-signals")

    async def stop(self) -> None:
        """Stop looking; a raise under way finishes first (it is one store call)."""
        self._stopped.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.raise_due()
            except StoreUnavailable as exc:
                log.warning("cannot look for due conversation signals: %s", exc)
            except Exception:  # a bug must not end signals for the life of the process
                log.exception("raising conversation signals failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=self.poll_s)

    async def raise_due(self) -> int:
        """Raise every signal due now; return how many were raised."""
        state = self.state
        if state.config.conversations is None:
            return 0
        raised = 0
        while not self._stopped.is_set():
            # The time of each batch: after an outage thousands may be due, and a batch's
            # signals say when they were raised.
            now = state.clock()
            lease_s = state.config.delivery.lease_s
            claimed = await state.store.claim_watches(now, BATCH, owner=self.owner, lease_s=lease_s)
            # Watches together (a store commits them together); a watch's own signals in
            # order, its unanswered before its end.
            counts = await asyncio.gather(*(self._raise_watch(w, now) for w in claimed))
            raised += sum(counts)
            if len(claimed) < BATCH:
                break
        return raised

    async def _raise_watch(self, watch: Watch, now: float) -> int:
        return sum([await self._raise(watch, due, now) for due in due_signals(watch, now)])

    async def _raise(self, watch: Watch, due: DueSignal, now: float) -> int:
        state = self.state
        config, router = state.config, state.router  # once, as a webhook handler does
        event = signal_event(watch, due, now)
        routing = router.routing(event)
        deliveries = deliveries_for(event, routing.dispatches)
        # Listed in its conversation's transcript while a console can show it (SPEC 8.1).
        shown = watch.conversation if config.console is not None else None
        new = NewEvent(event.event_id, event.raw, now, conversation=shown)
        signal = NewSignal(watch.conversation, due.kind, due.number, new)
        stored = await state.store.raise_signal(
            signal,
            deliveries,
            owner=self.owner,
            dedupe_window_s=config.delivery.dedupe_window_s,
            tally=tally_of(event, routing.matched, config.console),
        )
        if not stored:  # an answer or an event came meanwhile, or another process raised it
            return 0
        state.metrics.events.labels(event.kind, "raised").inc()
        log.info(
            "raised %s for %d destination(s)",
            event.event_type,
            len(deliveries),
            extra={"event_id": event.event_id},
        )
        if state.worker is not None:
            state.worker.wake(d.destination for d in deliveries)
        return 1


def signal_event(watch: Watch, due: DueSignal, now: float) -> Event:
    """Return a due signal as an event: a session event's shape, so that rules, templates,
    threads and destinations read it as they read any other (SPEC 4.4)."""
    payload = {
        "agent_id": watch.agent_id,
        "event_type": SIGNAL_TYPES[due.kind],
        "timestamp": round(now, 3),
        "data": due.data,
    }
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    event_id = signal_event_id(watch, due.kind, due.number)
    return session_event(payload, event_id=event_id, received_at=now, raw=body)
