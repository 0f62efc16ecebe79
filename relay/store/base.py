"""What relay needs from a store; SQLite (store/sqlite.py) and Redis (store/redis.py) implement it.

Several relay processes may share one store. Each claims the deliveries it sends with a
lease, renews the lease while it sends, and records an outcome only while it holds the
claim; a process that dies leaves leases that run out, and another process takes over.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from relay.activity.tally import ActivityCounts, AgentCount, HourCount, RuleHits, Tally
from relay.conversations.watch import Forget, Observation, SignalKind, Watch
from relay.request_record import RequestRecord

DeliveryStatus = Literal["pending", "failed", "dead", "sent"]
"""pending: not tried yet; failed: tried, will be retried; dead: given up; sent: done."""


class StoreUnavailable(Exception):
    """The store cannot take or give data right now (disk full, read-only, gone)."""


@dataclass(frozen=True)
class NewEvent:
    """An accepted event as the store keeps it: the raw body is the source of truth."""

    event_id: str
    body: bytes
    received_at: float
    # The request that brought it in, what matters of it (relay/request_record.py); None
    # for an event relay raised itself or stored by another path than a webhook's.
    request: RequestRecord | None = None
    # The conversation (data.session_id) whose transcript lists it (SPEC 8.1); None when
    # relay keeps no transcripts (they need a console and `conversations:`).
    conversation: str | None = None


# A watch's quiet floor (Store.watches_by_quiet) is at most this far below its
# last_received_at: both stores move it once in this long (sqlite_observe, lib_watch.lua).
QUIET_STEP_S = 600


@dataclass(frozen=True)
class QuietWatch:
    """A watch and its quiet floor: at most its last_received_at, within QUIET_STEP_S."""

    quiet_at: float
    watch: Watch


@dataclass(frozen=True)
class EventDelivery:
    """Where a stored event went: one of its deliveries, as a transcript shows it."""

    id: int
    destination: str
    status: DeliveryStatus


@dataclass(frozen=True)
class TranscriptEvent:
    """One event of a conversation's transcript, and every delivery it is part of (a
    digest's included)."""

    event_id: str
    body: bytes
    received_at: float
    deliveries: tuple[EventDelivery, ...]


@dataclass(frozen=True)
class Transcript:
    events: list[TranscriptEvent]  # oldest first
    earlier: bool  # events before these were left out (the newest `limit` are given)


@dataclass(frozen=True)
class NewDelivery:
    """One (event, destination) pair to deliver."""

    destination: str
    rule: str
    template: str | None
    session_key: str  # deliveries with the same (destination, session_key) go out in order
    # A digest: the session's open digest of this rule and destination takes the event;
    # without one, this delivery opens a digest that is due this long after (SPEC 4.2).
    digest_s: float | None = None


@dataclass(frozen=True)
class NewSignal:
    """An event relay raises itself (SPEC 4.4): stored like an accepted event, but only
    while its conversation's watch still owes it."""

    conversation: str
    kind: SignalKind
    number: int  # the stretch or the end it is for (watch.may_raise)
    event: NewEvent  # its received_at is when it was raised: the watch must be due then


@dataclass(frozen=True)
class ClaimAtAccept:
    """Deliveries an accept claims for its own process as it stores them: those to
    `destinations` (lanes of the process with nothing queued and a slot free), so that a
    lane sends them without asking the store first.

    Only what the store's claim would take at once is claimed, and at most one delivery a
    destination (a lane reserves one slot for it): the first of the event's own deliveries
    to it (not a digest's) that is its session's head there, no other delivery of the
    session there being unfinished. It is held as a claim is, by `owner` until
    `lease_until`; the rest waits in the queue for a claim, as without this.
    """

    owner: str
    lease_until: float
    destinations: frozenset[str]


@dataclass(frozen=True)
class AcceptResult:
    duplicate: bool
    event_id: str
    deliveries: int
    # What the accept claimed for ClaimAtAccept's owner, in accepted order.
    claimed: tuple[Delivery, ...] = ()


@dataclass(frozen=True)
class Delivery:
    """A delivery as the worker and the delivery log see it."""

    id: int
    event_id: str
    destination: str
    rule: str
    template: str | None
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None
    body: bytes  # the event's raw body (a digest's first event)
    digest: bool = False  # a digest: its events come from Store.digest_events
    # Its event's NewEvent.request. Only get_delivery reads it (the console's delivery
    # page): claims and listings, which never show it, leave it None.
    request: RequestRecord | None = None


def accepted_delivery(id_: int, event: NewEvent, new: NewDelivery) -> Delivery:
    """A delivery as an accept has just stored it: pending, never tried, due at once."""
    at = event.received_at
    return Delivery(
        id_, event.event_id, new.destination, new.rule, new.template, "pending", 0, at, at,
        None, event.body,
    )  # fmt: skip


STATUSES: tuple[DeliveryStatus, ...] = ("pending", "failed", "dead", "sent")


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries a listing selects (the console's filters, SPEC 8); None: any."""

    status: DeliveryStatus | None = None
    destination: str | None = None
    event_type: str | None = None  # either spelling: room_join is room.join
    since: float | None = None  # created at or after (Unix seconds)
    until: float | None = None  # created before
    text: str | None = None  # in the event's raw body, case-insensitive

    @property
    def unindexed(self) -> bool:
        """Whether the filter tests each delivery itself (its event's type or text, its
        time): no index finds those, so a listing examines at most `scan` of them a call.
        A store may bound a filter it has no index for in the same way (Redis: by
        destination); `Found.stopped_at` says so, and searching on finds the rest."""
        return (self.event_type, self.since, self.until, self.text) != (None, None, None, None)


# How many deliveries a listing with an unindexed filter examines in one call (Store.
# find_deliveries): those with the SCAN_ROWS ids below its cursor. A text that matches
# nothing then costs the same at a million deliveries as at ten thousand (tens of
# milliseconds), and the console offers to search the next SCAN_ROWS.
SCAN_ROWS = 10_000


@dataclass(frozen=True)
class Found:
    """What a listing found, and where it stopped short."""

    deliveries: list[Delivery]
    # When the listing examined its `scan` deliveries without finding `limit` and older
    # ones are left: the lowest id it examined. The next call goes on below it
    # (before_id=stopped_at). None when it found `limit`, or nothing older is left.
    stopped_at: int | None = None


@dataclass(frozen=True)
class DeliveryCounts:
    """How many deliveries there are, kept as they change: reading them costs the same
    whatever the store holds."""

    by_status: dict[str, int]  # every status, 0 included
    by_destination: dict[str, dict[str, int]]  # destination -> status -> count (nonzero)


AttemptOutcome = Literal["sent", "retried", "dead"]


@dataclass(frozen=True)
class Attempt:
    """One try at a delivery, as the delivery log keeps it (SPEC 5)."""

    number: int  # 1 for the first; a replayed delivery's attempts count on
    started_at: float
    duration_s: float
    outcome: AttemptOutcome
    # The error or the answer in short (an HTTP status, a service's error code, an SMTP
    # reply, a SQLSTATE): what the sender said, which never holds a secret.
    detail: str | None


@dataclass(frozen=True)
class Claimed:
    """What a lane's claim got: the deliveries it may send now or, when there were none,
    when the destination's next one can be claimed (None: nothing is queued)."""

    deliveries: list[Delivery]
    next_due_at: float | None


class SentRecord(enum.IntEnum):
    """What recording a send gives back: false when the owner no longer held the claim."""

    NOT_HELD = 0  # another process holds it now; nothing changed
    RECORDED = 1  # recorded; other deliveries of the destination are queued
    # Recorded, and nothing else of the destination is queued: every unfinished delivery
    # left is one the owner holds under a live lease (its other sends in flight). The lane
    # need not look again until it hears of new work: an accept of its own process, or
    # the worker's look at the store, which finds any other process's.
    RECORDED_IDLE = 2


class Purged(NamedTuple):
    """What one step of the retention purge deleted."""

    deliveries: int
    events: int
    threads: int
    watches: int = 0


class Store(Protocol):
    """Durable events, deliveries and dedupe keys."""

    async def open(self) -> None:
        """Create or migrate the schema and start any background machinery."""

    async def close(self) -> None:
        """Finish pending writes and release the store."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""

    async def accept(
        self,
        event: NewEvent,
        deliveries: Sequence[NewDelivery],
        *,
        dedupe_window_s: float,
        observation: Observation | Forget | None = None,
        tally: Tally | None = None,
        claim: ClaimAtAccept | None = None,
    ) -> AcceptResult:
        """Store an event, its deliveries and its dedupe key in one transaction, and move
        its conversation's watch on by `observation` (watch.observe), or delete it (Forget),
        and add its `tally` to the activity counters, in the same one. With `claim`, claim
        the deliveries it names (ClaimAtAccept) in the same one too, and return them.

        Return `duplicate=True` (storing nothing, the watch untouched) when the event id
        was accepted within the dedupe window. Return only after the transaction is
        durable.
        """

    async def claim_watches(
        self, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Watch]:
        """Claim up to `limit` watches due at `now` (Watch.due_at) that no live claim holds,
        for `owner` until `now + lease_s`: about the earliest first (a store may order by a
        floor of each one's due time; whatever the limit leaves is claimed next)."""

    async def raise_signal(
        self,
        signal: NewSignal,
        deliveries: Sequence[NewDelivery],
        *,
        owner: str,
        dedupe_window_s: float,
        tally: Tally | None = None,
    ) -> bool:
        """In one transaction: if the conversation's watch still owes the signal at its
        event's received_at (watch.may_raise), mark it raised (watch.raised) and accept
        its event, deliveries and tally as `accept` does; then, either way, give up the owner's
        claim on the watch. Return whether the signal was raised."""

    async def watch(self, conversation: str) -> Watch | None:
        """Return a conversation's watch, if it has one."""

    async def claim(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Delivery]:
        """Claim up to `limit` deliveries of one destination that may be sent now, oldest
        first, for `owner` until `now + lease_s`.

        A delivery may be sent now when it is due, no live lease holds it, and no earlier
        delivery of the same session to the same destination is unfinished: so a session's
        deliveries go out in accepted order, one at a time, whichever process sends them.
        """

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        """Extend the owner's leases on these deliveries; return the ids it still holds."""

    async def release(self, owner: str) -> int:
        """Give up every claim the owner holds on unfinished deliveries; return how many."""

    async def next_due_at(self, destination: str, now: float) -> float | None:
        """Return when the destination's next delivery can be claimed, if any."""

    async def claim_or_next_due(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> Claimed:
        """claim(), and when it claims nothing, next_due_at() in the same step: a lane that
        sends a delivery at a time asks both after each send, and with a destination per
        customer every store operation a delivery costs counts."""

    async def record_sent(
        self,
        delivery_id: int,
        now: float,
        note: str | None = None,
        *,
        owner: str,
        started_at: float | None = None,
    ) -> SentRecord:
        """Mark a delivery the owner holds sent (a note, a partial failure, shows in the
        delivery log), keep the attempt (begun at `started_at`, default `now`) and release
        it; NOT_HELD, changing nothing, when it no longer holds it. In the same step, tell
        whether anything else of its destination is queued (RECORDED_IDLE when not): with
        a destination per customer, the lane is spared a look that would find nothing."""

    async def record_failure(
        self,
        delivery_id: int,
        error: str,
        *,
        retry_at: float | None,
        now: float,
        owner: str,
        started_at: float | None = None,
    ) -> bool:
        """Record a failed attempt of a delivery the owner holds and release it: retry at
        `retry_at`, or dead-letter when it is None. False when it no longer holds it."""

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        """Return a delivery's attempts, first first (Redis keeps the latest 100)."""

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        """Return one delivery, with its event's request (Delivery.request), or None when
        there is none with that id."""

    async def reserve(self, key: str, now: float, rate_per_s: float | None, burst: int) -> float:
        """Take a turn at a rate-limited target (relay/limits.py), for every process that
        shares the store: 0 to send now (a token was taken, when paced), else how many
        seconds to wait (the target is paused, or its bucket is empty)."""

    async def pause(self, key: str, until: float) -> None:
        """Pause a target for every process until `until`: it answered 429."""

    async def thread(self, destination: str, conversation: str) -> str | None:
        """Return a conversation's thread at a destination (what the destination needs to
        continue it, opaque to the store), if it has one."""

    async def start_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> str:
        """Keep a conversation's thread unless it already has one; return the one it has
        now: of two processes starting the same thread, the first one's wins. `now` is
        the conversation's last activity (see purge)."""

    async def digest_events(self, delivery_id: int) -> list[tuple[str, bytes]]:
        """Return a digest's events, as (event id, raw body), in accepted order."""

    async def replace_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> None:
        """Give a conversation a new thread: its old one is gone (a deleted Slack parent)."""

    async def count_message(self, destination: str, conversation: str, now: float) -> int:
        """Count one more message, sent `now`, in a conversation's thread (its first
        counts 1); return how many it has now, or 0 when it has no thread."""

    async def queue_depths(self) -> dict[str, int]:
        """Return how many deliveries wait (pending or failed), per destination."""

    async def list_deliveries(
        self, status: DeliveryStatus | None = None, limit: int = 50
    ) -> list[Delivery]:
        """Return the newest deliveries, optionally of one status."""

    async def find_deliveries(
        self,
        where: DeliveryFilter,
        *,
        before_id: int | None = None,
        limit: int = 50,
        scan: int = SCAN_ROWS,
    ) -> Found:
        """Return up to `limit` deliveries `where` selects, newest first, with an id below
        `before_id` when given (the next page starts below the last id of this one).

        An unindexed filter (DeliveryFilter.unindexed) examines only the deliveries whose
        ids are among the `scan` ids below `before_id` (below the newest id + 1 without
        one), so at most `scan` of them; when it finds fewer than `limit` there and older
        deliveries are left, Found.stopped_at says where to go on. Any other filter is
        answered by an index and reads only what it returns.
        """

    async def delivery_counts(self) -> DeliveryCounts:
        """Return how many deliveries there are, by status and by destination."""

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """Put dead deliveries (the given ones, or all when None) back in the queue. Each
        keeps its id, so it goes before the later deliveries of its session; while one of
        them is being sent (held by a live lease), it waits for that claim to end."""

    async def watches_by_quiet(
        self, below: tuple[float, str] | None, limit: int
    ) -> list[QuietWatch]:
        """Return up to `limit` watches by their quiet floor, highest first (ties in an
        order of the store's own), each after the watch of the (quiet_at, conversation)
        `below` in that order when given: the way to list conversations by their latest
        activity, read in steps, each watch once."""

    async def transcript(self, conversation: str, limit: int) -> Transcript:
        """Return the newest `limit` events stored with this conversation (NewEvent's
        `conversation`), oldest first, each with its deliveries."""

    async def rule_hits(self, since_hour: int) -> list[RuleHits]:
        """Return every rule (NO_RULE included) with a hit kept in the counters: its hits
        in the hours from `since_hour` on, and its latest match of all those kept."""

    async def agent_counts(self, since_hour: int) -> list[AgentCount]:
        """Return each agent's counters summed over the hours from `since_hour` on."""

    async def hourly_counts(self, since_hour: int, counter: str) -> list[HourCount]:
        """Return one agent counter of all agents together, hour by hour from
        `since_hour` on, oldest first; an hour without any is left out."""

    async def activity_counts(self, since_hour: int, counter: str) -> ActivityCounts:
        """Return agent_counts(since_hour) and hourly_counts(since_hour, counter) as one
        read: the counters of the period are read once for both."""

    async def roll_up_counters(self, now: float) -> None:
        """Roll the activity counters of the hours before yesterday (UTC, by `now`) up into
        one per day, so that a period of days reads days. A store does this by itself now
        and then; the figures read the same before and after, but that a day overlapping a
        period counts whole."""

    async def purge(self, before: float) -> Purged:
        """Delete one bounded step of history: deliveries that finished before `before`,
        then, oldest first, events received before it with no delivery left; the
        threads of conversations with no message since `before` (a later message starts
        a new thread); and the watches of conversations with no event received since
        `before`. A store with a retention runs this by itself."""
