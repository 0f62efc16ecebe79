"""A Store on Redis, for several relay replicas sharing one queue.

Every change that must be atomic is a Lua script in `lua/`, each with a header saying
its keys, arguments and guarantees (what several scripts share is in `lua/lib_*.lua`).
Every key starts with one prefix holding a hash tag, `relay:{relay}:`, so the whole store
sits in one slot and could move to a Redis Cluster.

Redis answers a write once it holds it in memory; whether it survives a crash depends on
Redis's own settings, which `open()` checks (SPEC 5): AOF on, `appendfsync always`,
`maxmemory-policy noeviction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from relay.activity.tally import (
    AGENT_COUNTERS,
    ActivityCounts,
    AgentCount,
    HourCount,
    RuleHits,
    Tally,
)
from relay.conversations.watch import WATCH_FIELDS, Forget, Observation, Watch
from relay.events import normalize_event_type, searchable_text, stored_event_type
from relay.request_record import RequestRecord
from relay.secrets import without_password
from relay.store.base import (
    SCAN_ROWS,
    STATUSES,
    AcceptResult,
    Attempt,
    AttemptOutcome,
    ClaimAtAccept,
    Claimed,
    Delivery,
    DeliveryCounts,
    DeliveryFilter,
    DeliveryStatus,
    EventDelivery,
    Found,
    NewDelivery,
    NewEvent,
    NewSignal,
    Purged,
    QuietWatch,
    SentRecord,
    StoreUnavailable,
    Transcript,
    TranscriptEvent,
    accepted_delivery,
)
from relay.store.redis_batch import ScriptBatcher

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "relay:{relay}:"
_SCRIPTS = (
    "accept", "claim", "renew", "release", "finish", "replay", "purge", "limits", "threads",
    "watch", "counts", "counters",
)  # fmt: skip
# The shared Lua (lua/lib_*.lua) each of these scripts runs, prepended to its own text when
# it is registered: one copy of the logic several scripts need.
_LIBS = {
    # lib_watch uses lib_tally's bounds.
    "accept": ("lib_event", "lib_hold", "lib_tally", "lib_watch"),
    "claim": ("lib_hold", "lib_head"),
    "finish": ("lib_head",),
    "replay": ("lib_head",),
    "watch": ("lib_event", "lib_tally", "lib_watch"),
    "counters": ("lib_tally",),
}
# How many attempts a delivery keeps, the latest: a list per delivery stays bounded however
# often it is replayed.
ATTEMPTS_KEPT = 100
# How many deliveries a filtered listing reads from Redis in one round trip.
_FIND_CHUNK = 200
# How many hours one counters.lua call rolls up into days.
_ROLL_UP_HOURS = 48
# How often a process rolls the activity counters up (each call does what is due).
_ROLL_UP_EVERY_S = 300.0
# How many watches an older relay kept one call takes over (watch.lua's 'migrate').
_MIGRATE_ROWS = 1000
# A step of the retention purge, and how often one runs.
_PURGE_ROWS = 500
_PURGE_EVERY_S = 5.0
# Without these, a request to an unreachable Redis would wait on TCP's own timeouts: the
# webhook's 503 must come within a second or two, never hang.
_CONNECT_TIMEOUT_S = 1.0
_SOCKET_TIMEOUT_S = 2.0


def _time(value: float) -> str:
    return repr(float(value))  # the shortest text that reads back as the same float


def _session_part(destination: str, session_key: str) -> str:
    """Return what keys name a destination's session by: a digest of both. The session id
    comes from the event (10 KB of anything), and joined raw to a destination name holding
    `:` it could name another destination's session."""
    joined = f"{destination}\0{session_key}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:32]


def _utf8(text: str) -> bytes:
    """Encode text from an event as it came: a JSON body may hold a lone surrogate."""
    return text.encode("utf-8", "surrogatepass")


# At most this many watch.lua claim calls in one claim_watches: each reads up to its limit
# + 1,000 watches, so a backlog of 100,000 passed floors is through in one poll.
_CLAIM_ROUNDS = 100


def _conversation_part(conversation: str) -> str:
    """Return what a watch's key names its conversation by: a digest of the session id."""
    return hashlib.sha256(_utf8(conversation)).hexdigest()[:32]


def _optional(text: str | None) -> bytes:
    """An optional text argument, as lib_watch.lua reads it: '' for None."""
    return b"" if text is None else b"=" + _utf8(text)


def _member(delivery_id: int) -> str:
    return f"{delivery_id:016d}"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fields(flat: Sequence[Any]) -> dict[str, Any]:
    """Turn HGETALL's flat [field, value, …] into a dict of str fields."""
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _attempt(row: str) -> Attempt:
    """Read an attempt as finish.lua keeps it: number, started_at, duration, outcome, text."""
    number, started_at, duration, outcome, text = row.split("\t", 4)
    return Attempt(
        int(number), float(started_at), float(duration), cast(AttemptOutcome, outcome), text or None
    )


def _event_args(
    event: NewEvent, deliveries: Sequence[NewDelivery], dedupe_window_s: float
) -> list[Any]:
    """The arguments of lib_event.lua's store_event: an event and its deliveries."""
    args: list[Any] = [
        event.event_id,
        event.body,
        _time(event.received_at),
        _time(dedupe_window_s),
        "" if event.request is None else event.request.to_json(),
        "" if event.conversation is None else _conversation_part(event.conversation),
        len(deliveries),
    ]
    for d in deliveries:
        digest = "" if d.digest_s is None else _time(d.digest_s)
        session = _session_part(d.destination, d.session_key)
        args += [d.destination, d.rule, d.template or "", session, digest]
    return args


def _observation_args(seen: Observation | Forget) -> list[Any]:
    """The arguments of lib_watch.lua's watch_observe (role 'forget': delete the watch)."""
    if isinstance(seen, Forget):
        return [_conversation_part(seen.conversation), "", "", "", "forget", "", "", "", "", ""]
    return [
        _conversation_part(seen.conversation),
        _utf8(seen.conversation),
        _utf8(seen.agent_id),
        _optional(seen.room_name),
        seen.role,
        _optional(seen.message),
        _time(seen.timestamp),
        _time(seen.received_at),
        _time(seen.unanswered_after_s),
        _time(seen.ended_after_s),
    ]


def _agent_counts(flat: list[Any]) -> list[AgentCount]:
    """Read counters.lua's sums by agent: each agent's id, then its counters in
    AGENT_COUNTERS' order."""
    width = 1 + len(AGENT_COUNTERS)
    return [
        AgentCount(_text(flat[i]), name, int(value))
        for i in range(0, len(flat), width)
        for name, value in zip(AGENT_COUNTERS, flat[i + 1 : i + width], strict=True)
        if value
    ]


def _hourly_counts(flat: list[Any]) -> list[HourCount]:
    """Read counters.lua's sums by hour: each hour, then its sum."""
    totals = sorted((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))
    return [HourCount(hour, n) for hour, n in totals if n]


def _tally_args(tally: Tally) -> list[Any]:
    """'tally' and the arguments of lib_tally.lua's tally_add."""
    return [
        "tally",
        tally.hour,
        _time(tally.keep_until - tally.at),
        _time(tally.at),
        _utf8(tally.agent_id),
        len(tally.counters),
        *tally.counters,
        len(tally.rules),
        *(_utf8(rule) for rule in tally.rules),
    ]


# How a watch's hash field reads back, by the field's type in Watch (a None one is absent).
_WATCH_TYPES = {f.name: str(f.type).split(" | ")[0] for f in dataclasses.fields(Watch)}
_READ: dict[str, Callable[[bytes], object]] = {
    "float": float,
    "int": int,
    "bool": lambda raw: raw == b"1",
    "str": lambda raw: raw.decode("utf-8", "surrogatepass"),
}


def _watch(fields: dict[str, Any]) -> Watch:
    values: dict[str, Any] = {}
    for name in WATCH_FIELDS:
        raw = fields.get(name)
        values[name] = None if raw is None else _READ[_WATCH_TYPES[name]](raw)
    return Watch(**values)


def _selects(where: DeliveryFilter, delivery: Delivery) -> bool:
    """Whether a delivery passes the filter's tests other than its status (the index)."""
    if where.destination is not None and delivery.destination != where.destination:
        return False
    if where.since is not None and delivery.created_at < where.since:
        return False
    if where.until is not None and delivery.created_at >= where.until:
        return False
    if where.event_type is not None and stored_event_type(delivery.body) != normalize_event_type(
        where.event_type
    ):
        return False
    text = where.text
    return text is None or text.casefold() in searchable_text(delivery.body)


def _delivery(member: Any, fields: dict[str, Any], event_id: Any, body: Any) -> Delivery:
    def optional(name: str) -> str | None:
        value = fields.get(name)
        return None if value is None else _text(value)

    return Delivery(
        id=int(_text(member)),
        event_id=_text(event_id),
        destination=_text(fields["destination"]),
        rule=_text(fields["rule"]),
        template=optional("template"),
        status=cast(DeliveryStatus, _text(fields["status"])),
        attempts=int(fields["attempts"]),
        created_at=float(fields["created_at"]),
        next_attempt_at=float(fields["next_attempt_at"]),
        last_error=optional("last_error"),
        body=bytes(body),
        digest="digest_until" in fields,
    )


class RedisStore:
    """A Store on one Redis (redis:// or rediss://), shared by any number of processes."""

    def __init__(self, url: str, *, retention_s: float = 0.0) -> None:
        self.url = url
        self.shown_url = without_password(url)
        self._retention_s = retention_s
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._purger: asyncio.Task[None] | None = None
        self._roller: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        # Webhooks accepted at the same moment share a round trip and an fsync.
        self._accepts = ScriptBatcher(functools.partial(self._script_batch, "accept"))

    def __repr__(self) -> str:
        return f"RedisStore({self.shown_url!r})"

    async def open(self) -> None:
        """Connect, load the scripts, and say what in Redis's settings could lose events."""
        client = aioredis.from_url(
            self.url,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_SOCKET_TIMEOUT_S,
            health_check_interval=10,
        )
        self._client = client
        lua = resources.files("relay.store") / "lua"
        for name in _SCRIPTS:
            parts = (*_LIBS.get(name, ()), name)
            source = "".join((lua / f"{part}.lua").read_text(encoding="utf-8") for part in parts)
            self._scripts[name] = client.register_script(source)
        await self.ping()
        await self._check_durability()
        if await self._script("counts", []):
            log.info("counted the deliveries of %s by status and destination", self.shown_url)
        await self._take_over_watches()
        self._closing = asyncio.Event()  # this loop's: a store may be opened again
        self._roller = asyncio.create_task(self._roll_up_forever(), name="relay-redis-roll-up")
        if self._retention_s > 0:
            self._purger = asyncio.create_task(self._purge_forever(), name="relay-redis-purge")

    async def _take_over_watches(self) -> None:
        """Rewrite the watches an older relay kept as hashes as this one keeps them
        (lib_watch.lua), a bounded step a call; a relay still running beside this one may
        make more, which claims and reads take over as they meet them."""
        taken = 0
        while found := int(await self._script("watch", ["migrate", _MIGRATE_ROWS])):
            taken += found
        if taken:
            log.info("took over %d conversation watches an older relay kept", taken)

    async def close(self) -> None:
        if self._roller is not None:
            # Not cancelled: a roll-up under way (one Lua call at a time) finishes first, and
            # a cancel landing in redis-py's reply handling could be lost.
            self._closing.set()
            await asyncio.gather(self._roller, return_exceptions=True)
            self._roller = None
        if self._purger is not None:
            self._closing.set()  # as for the roller: a step under way finishes first
            await asyncio.gather(self._purger, return_exceptions=True)
            self._purger = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        await self._call(lambda client: client.ping())

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
        args = _event_args(event, deliveries, dedupe_window_s)
        if claim is not None:
            args += ["claim", claim.owner, _time(claim.lease_until), len(claim.destinations)]
            args += claim.destinations
        if observation is not None:  # without one, accept.lua touches no watch
            args += ["watch", *_observation_args(observation)]
        if tally is not None:
            args += _tally_args(tally)
        duplicate, *claimed = await self._accepts.call(args)
        if int(duplicate):
            return AcceptResult(duplicate=True, event_id=event.event_id, deliveries=0)
        return AcceptResult(
            False,
            event.event_id,
            len(deliveries),
            tuple(
                accepted_delivery(int(member), event, deliveries[int(place)])
                for member, place in zip(claimed[::2], claimed[1::2], strict=True)
            ),
        )

    async def claim_watches(
        self, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Watch]:
        watches: list[Watch] = []
        # One call reads a bounded number of watches, so that a backlog of floors that
        # passed before their watches were due (answered questions) never holds Redis up
        # for long; calling again until it is through keeps it from delaying a due watch.
        for _ in range(_CLAIM_ROUNDS):
            args = ["claim", _time(now), limit - len(watches), owner, _time(now + lease_s)]
            more, *claimed = await self._script("watch", args)
            watches += [_watch(_fields(flat)) for flat in claimed]
            if not int(more) or len(watches) >= limit:
                break
        return sorted(watches, key=lambda w: (w.due_at or 0.0, w.conversation))

    async def raise_signal(
        self,
        signal: NewSignal,
        deliveries: Sequence[NewDelivery],
        *,
        owner: str,
        dedupe_window_s: float,
        tally: Tally | None = None,
    ) -> bool:
        digest = _conversation_part(signal.conversation)
        args = ["raise", digest, signal.kind, signal.number, owner]
        args += _event_args(signal.event, deliveries, dedupe_window_s)
        if tally is not None:
            args += _tally_args(tally)
        return bool(await self._script("watch", args))

    async def watch(self, conversation: str) -> Watch | None:
        flat = await self._script("watch", ["read", _conversation_part(conversation)])
        return _watch(_fields(flat)) if flat else None

    async def claim(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> list[Delivery]:
        claimed = await self.claim_or_next_due(
            destination, now, limit, owner=owner, lease_s=lease_s
        )
        return claimed.deliveries

    async def renew(self, owner: str, ids: Sequence[int], until: float) -> set[int]:
        if not ids:
            return set()
        held = await self._script("renew", [owner, _time(until), *map(_member, ids)])
        return {int(_text(member)) for member in held}

    async def release(self, owner: str) -> int:
        return int(await self._script("release", [owner]))

    async def next_due_at(self, destination: str, now: float) -> float | None:
        due, waiting = f"{PREFIX}due:{destination}", f"{PREFIX}waiting:{destination}"

        async def earliest(client: aioredis.Redis) -> float | None:
            if await client.zcard(due):
                return now
            first = await client.zrange(waiting, 0, 0, withscores=True)
            return float(first[0][1]) if first else None

        return await self._call(earliest)

    async def claim_or_next_due(
        self, destination: str, now: float, limit: int, *, owner: str, lease_s: float
    ) -> Claimed:
        args = [destination, _time(now), limit, owner, _time(now + lease_s)]
        next_due, *rows = await self._script("claim", args)
        claimed = [_delivery(m, _fields(f), event_id, body) for m, f, event_id, body in rows]
        return Claimed(claimed, float(next_due) if next_due else None)

    async def record_sent(
        self,
        delivery_id: int,
        now: float,
        note: str | None = None,
        *,
        owner: str,
        started_at: float | None = None,
    ) -> SentRecord:
        began = now if started_at is None else started_at
        args = [_member(delivery_id), owner, "sent", _time(now), note or "", ""]
        return SentRecord(int(await self._script("finish", [*args, _time(began), ATTEMPTS_KEPT])))

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
        outcome = "dead" if retry_at is None else "failed"
        began = now if started_at is None else started_at
        retry = "" if retry_at is None else _time(retry_at)
        args = [_member(delivery_id), owner, outcome, _time(now), error or "failed", retry]
        return bool(await self._script("finish", [*args, _time(began), ATTEMPTS_KEPT]))

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        key = f"{PREFIX}attempts:{_member(delivery_id)}"
        rows = await self._call(lambda client: client.lrange(key, 0, -1))
        return [_attempt(_text(row)) for row in rows]

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        member = _member(delivery_id)

        async def one(client: aioredis.Redis) -> Delivery | None:
            fields = {_text(k): v for k, v in (await client.hgetall(f"{PREFIX}d:{member}")).items()}
            if not fields:
                return None
            ref = _text(fields["event_ref"])
            event_id, body, request = await client.hmget(
                f"{PREFIX}e:{ref}", "event_id", "body", "request"
            )
            found = _delivery(member, fields, event_id or b"?", body or b"")
            return dataclasses.replace(found, request=RequestRecord.from_json(request))

        return await self._call(one)

    async def reserve(self, key: str, now: float, rate_per_s: float | None, burst: int) -> float:
        rate = "" if rate_per_s is None else _time(rate_per_s)
        return float(_text(await self._script("limits", ["reserve", key, _time(now), rate, burst])))

    async def pause(self, key: str, until: float) -> None:
        await self._script("limits", ["pause", key, _time(until)])

    async def thread(self, destination: str, conversation: str) -> str | None:
        key = f"{PREFIX}threads:{destination}"
        value = await self._call(lambda client: client.hget(key, conversation))
        return None if value is None else _text(value)

    async def start_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> str:
        args = ["start", destination, conversation, value, _time(now)]
        return _text(await self._script("threads", args))

    async def digest_events(self, delivery_id: int) -> list[tuple[str, bytes]]:
        key = f"{PREFIX}digest:{_member(delivery_id)}"

        async def events(client: aioredis.Redis) -> list[tuple[str, bytes]]:
            refs = await client.lrange(key, 0, -1)
            async with client.pipeline(transaction=False) as pipe:
                for ref in refs:
                    pipe.hmget(f"{PREFIX}e:{_text(ref)}", "event_id", "body")
                rows = await pipe.execute()
            return [(_text(event_id), bytes(body)) for event_id, body in rows if body is not None]

        return await self._call(events)

    async def replace_thread(
        self, destination: str, conversation: str, value: str, now: float
    ) -> None:
        await self._script("threads", ["replace", destination, conversation, value, _time(now)])

    async def count_message(self, destination: str, conversation: str, now: float) -> int:
        return int(await self._script("threads", ["count", destination, conversation, _time(now)]))

    async def queue_depths(self) -> dict[str, int]:
        async def depths(client: aioredis.Redis) -> dict[str, int]:
            names = sorted(_text(n) for n in await client.smembers(f"{PREFIX}destinations"))
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zcard(f"{PREFIX}queue:{name}")
                counts = await pipe.execute()
            return {name: int(n) for name, n in zip(names, counts, strict=True) if n}

        return await self._call(depths)

    async def list_deliveries(
        self, status: DeliveryStatus | None = None, limit: int = 50
    ) -> list[Delivery]:
        found = await self.find_deliveries(DeliveryFilter(status=status), limit=limit)
        return found.deliveries

    async def find_deliveries(
        self,
        where: DeliveryFilter,
        *,
        before_id: int | None = None,
        limit: int = 50,
        scan: int = SCAN_ROWS,
    ) -> Found:
        """Walk the status's index (or every delivery's) newest first, a chunk at a time,
        and keep what the rest of the filter selects; an unindexed filter walks only the
        `scan` ids below the cursor.

        Each chunk is a few commands of its own, never one script: Redis serves other
        clients (accepts) between them, and this process's loop other requests.
        """
        index = f"{PREFIX}status:{where.status}" if where.status else f"{PREFIX}all"
        upper = "+inf" if before_id is None else f"({before_id}"
        floor = None
        # Redis indexes deliveries by status only (and unfinished ones by destination, for
        # the queue): a destination filter tests each delivery, so it is bounded as well.
        if where.unindexed or where.destination is not None:
            # The newest delivery below the cursor, not the cursor itself: a cursor far
            # above every id (a hand-made URL, a replay's `upto`) must not walk empty
            # windows down.
            top = await self._newest_below(upper)
            if top < 1:
                return Found([])
            floor = top - scan + 1
        found: list[Delivery] = []
        while len(found) < limit:
            read, lowest, chunk = await self._deliveries_below(index, upper, floor, _FIND_CHUNK)
            found += [d for d in chunk if _selects(where, d)]
            # By the members read, not the deliveries found: one purged between the two
            # round trips must not look like the end of the index.
            if read < _FIND_CHUNK:
                break
            upper = f"({lowest}"
        if floor is None or len(found) >= limit or floor <= await self._oldest_id():
            return Found(found[:limit])
        return Found(found, stopped_at=floor)

    async def _oldest_id(self) -> int:
        """The oldest delivery's id; 0 when there is none."""
        key = f"{PREFIX}all"
        ends = await self._call(lambda client: client.zrange(key, 0, 0))
        return int(_text(ends[0])) if ends else 0

    async def _newest_below(self, upper: str) -> int:
        """The newest delivery's id below `upper` (a ZRANGEBYSCORE bound); 0 when none."""
        key = f"{PREFIX}all"
        ends = await self._call(
            lambda client: client.zrevrangebyscore(key, upper, "-inf", start=0, num=1)
        )
        return int(_text(ends[0])) if ends else 0

    async def _deliveries_below(
        self, index: str, upper: str, floor: int | None, count: int
    ) -> tuple[int, int, list[Delivery]]:
        """Read up to `count` members of `index` below `upper` (and from `floor`), newest
        first: how many were read, the lowest one's id, and the deliveries still there."""
        lower = "-inf" if floor is None else str(floor)

        async def chunk(client: aioredis.Redis) -> tuple[int, int, list[Delivery]]:
            members = await client.zrevrangebyscore(index, upper, lower, start=0, num=count)
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hgetall(f"{PREFIX}d:{_text(member)}")
                rows = await pipe.execute()
            found = [
                (m, {_text(k): v for k, v in r.items()})
                for m, r in zip(members, rows, strict=True)
                if r
            ]
            async with client.pipeline(transaction=False) as pipe:
                for _, fields in found:
                    pipe.hmget(f"{PREFIX}e:{_text(fields['event_ref'])}", "event_id", "body")
                events = await pipe.execute()
            deliveries = [
                _delivery(m, fields, event[0] or b"?", event[1] or b"")
                for (m, fields), event in zip(found, events, strict=True)
            ]
            return len(members), int(_text(members[-1])) if members else 0, deliveries

        return await self._call(chunk)

    async def delivery_counts(self) -> DeliveryCounts:
        kept = await self._call(lambda client: client.hgetall(f"{PREFIX}counts"))
        by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
        by_destination: dict[str, dict[str, int]] = {}
        for field, value in sorted((_text(f), int(v)) for f, v in kept.items()):
            status, _, destination = field.partition("\t")
            if value > 0:
                by_status[status] = by_status.get(status, 0) + value
                by_destination.setdefault(destination, {})[status] = value
        return DeliveryCounts(by_status, dict(sorted(by_destination.items())))

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        total = 0
        if ids is not None:
            for start in range(0, len(ids), 500):
                chunk = [_member(i) for i in ids[start : start + 500]]
                replayed, _ = await self._script("replay", [_time(now), "ids", *chunk])
                total += int(replayed)
            return total
        # Every delivery dead now, 500 a step by id: not those dead-lettered meanwhile.
        newest = await self._call(lambda client: client.zrange(f"{PREFIX}status:dead", -1, -1))
        if not newest:
            return 0
        after, upto = 0, int(_text(newest[0]))
        while True:
            replayed, last = await self._script("replay", [_time(now), "dead", after, upto])
            total += int(replayed)
            if not last:
                return total
            after = int(last)

    async def watches_by_quiet(
        self, below: tuple[float, str] | None, limit: int
    ) -> list[QuietWatch]:
        # Ordered by the digest naming each watch (lib_watch.lua), not by its session id:
        # a cursor's tie-break is the digest of the conversation it names.
        args: list[Any] = ["by_quiet", "", "", limit]
        if below is not None:
            args[1:3] = [_time(below[0]), _conversation_part(below[1])]
        flat = await self._script("watch", args)
        return [
            QuietWatch(float(flat[i]), _watch(_fields(flat[i + 1]))) for i in range(0, len(flat), 2)
        ]

    async def transcript(self, conversation: str, limit: int) -> Transcript:
        key = f"{PREFIX}conv:{_conversation_part(conversation)}"
        refs = await self._call(lambda client: client.lrange(key, -(limit + 1), -1))
        earlier = len(refs) > limit
        refs = refs[-limit:] if limit else []

        async def read(client: aioredis.Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for ref in refs:
                    pipe.hmget(f"{PREFIX}e:{_text(ref)}", "event_id", "body", "received_at",
                               "deliveries")  # fmt: skip
                return list(await pipe.execute())

        rows = [row for row in (await self._call(read) if refs else []) if row[0] is not None]
        members = sorted({m for *_, joined in rows if joined for m in _text(joined).split(",")})

        async def statuses(client: aioredis.Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(f"{PREFIX}d:{member}", "destination", "status")
                return list(await pipe.execute())

        found = {
            member: EventDelivery(
                int(member), _text(destination), cast(DeliveryStatus, _text(status))
            )
            for member, (destination, status) in zip(
                members, await self._call(statuses) if members else [], strict=True
            )
            if status is not None  # purged meanwhile
        }
        events = []
        for event_id, body, received_at, joined in rows:
            mine = [found[m] for m in (_text(joined).split(",") if joined else []) if m in found]
            events.append(
                TranscriptEvent(_text(event_id), bytes(body), float(received_at), tuple(mine))
            )
        return Transcript(events, earlier)

    async def rule_hits(self, since_hour: int) -> list[RuleHits]:
        flat = await self._script("counters", ["rules", since_hour])
        return [
            RuleHits(_text(flat[i]), int(flat[i + 1]), float(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def agent_counts(self, since_hour: int) -> list[AgentCount]:
        return _agent_counts(await self._script("counters", ["agents", since_hour]))

    async def hourly_counts(self, since_hour: int, counter: str) -> list[HourCount]:
        return _hourly_counts(await self._script("counters", ["hourly", since_hour, counter]))

    async def activity_counts(self, since_hour: int, counter: str) -> ActivityCounts:
        agents, hours = await self._script("counters", ["activity", since_hour, counter])
        return ActivityCounts(_agent_counts(agents), _hourly_counts(hours))

    async def roll_up_counters(self, now: float) -> None:
        await self._roll_up_counters(now)

    async def _roll_up_counters(self, now: float) -> int:
        """Roll the hours before yesterday (UTC, by `now`) up into days (counters.lua)."""
        yesterday = (int(now // 86400) - 1) * 24
        rolled = 0
        while True:
            done = int(await self._script("counters", ["roll_up", yesterday, _ROLL_UP_HOURS]))
            rolled += done
            if done < _ROLL_UP_HOURS:
                return rolled

    async def purge(self, before: float) -> Purged:
        """Delete history finished or received before `before`, and threads and watches
        quiet since then; one bounded step."""
        deliveries, events = await self._script("purge", [_time(before), _PURGE_ROWS])
        threads = await self._script("threads", ["purge", _time(before), _PURGE_ROWS])
        watches = await self._script("watch", ["purge", _time(before), _PURGE_ROWS])
        return Purged(int(deliveries), int(events), int(threads), int(watches))

    # --- plumbing --------------------------------------------------------------------------

    async def _roll_up_forever(self) -> None:
        """Roll the activity counters up into days now and then: every process does, and
        each call does only what is due (counters.lua is atomic)."""
        while not self._closing.is_set():
            try:
                await self._roll_up_counters(time.time())
            except StoreUnavailable as exc:
                log.warning("rolling the activity counters up skipped: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _ROLL_UP_EVERY_S)

    async def _purge_forever(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _PURGE_EVERY_S)
                return
            try:
                while _PURGE_ROWS in await self.purge(time.time() - self._retention_s):
                    if self._closing.is_set():
                        return
                    # a backlog: go on at once
            except StoreUnavailable as exc:
                log.warning("retention purge skipped: %s", exc)

    async def _script(self, name: str, args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return await self._call(
            lambda client: script(keys=[PREFIX], args=list(args), client=client)
        )

    async def _script_batch(self, name: str, calls: list[list[Any]]) -> list[Any]:
        """Run a script once per call in one pipeline (see redis_batch.py); a call Redis
        refused gets StoreUnavailable in place of its result."""
        script = self._scripts[name]

        async def evalsha(client: aioredis.Redis, batch: list[list[Any]]) -> list[Any]:
            # EVALSHA straight, not through the script object: with a pipeline, that asks
            # Redis SCRIPT EXISTS first, a second round trip for every batch.
            async with client.pipeline(transaction=False) as pipe:
                for args in batch:
                    pipe.evalsha(script.sha, 1, PREFIX, *args)
                return list(await pipe.execute(raise_on_error=False))

        async def run(client: aioredis.Redis) -> list[Any]:
            results = await evalsha(client, calls)
            unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if unknown:  # a restarted or flushed Redis: load the script, then run those again
                await client.script_load(script.script)
                again = await evalsha(client, [calls[i] for i in unknown])
                for i, result in zip(unknown, again, strict=True):
                    results[i] = result
            return results

        return [
            StoreUnavailable(f"redis store {self.shown_url}: {result}")
            if isinstance(result, Exception)
            else result
            for result in await self._call(run)
        ]

    async def _call(self, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run one operation; Redis being unreachable or failing is StoreUnavailable.

        The message names the store by its URL without the password: redis-py's own
        errors do not carry it, and neither does this one.
        """
        client = self._client
        if client is None:
            raise StoreUnavailable(f"redis store {self.shown_url} is closed")
        try:
            return await operation(client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis store {self.shown_url}: {exc}") from None

    async def _check_durability(self) -> None:
        """Say loudly what, in Redis's settings, could lose an event relay answered 200."""
        assert self._client is not None
        try:
            settings = {
                _text(k): _text(v)
                for name in ("appendonly", "appendfsync", "maxmemory-policy")
                for k, v in (await self._client.config_get(name)).items()
            }
        except ResponseError as exc:  # CONFIG is often renamed or refused on managed Redis
            log.warning(
                "could not check Redis's durability settings (%s): make sure it runs with"
                " appendonly yes, appendfsync always and maxmemory-policy noeviction",
                exc,
            )
            return
        for problem in durability_problems(settings):
            log.warning("Redis at %s: %s", self.shown_url, problem)


def durability_problems(settings: dict[str, str]) -> list[str]:
    """Return what in these Redis settings could lose or evict an accepted event."""
    problems = []
    if settings.get("appendonly") != "yes":
        problems.append(
            "appendonly is not yes: without the AOF, a Redis restart loses every event"
            " accepted since its last snapshot"
        )
    elif settings.get("appendfsync") != "always":
        shown = settings.get("appendfsync", "unknown")
        problems.append(
            f"appendfsync is {shown}, not always: a Redis crash can lose up to a second"
            " of accepted events"
        )
    if settings.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(
            f"maxmemory-policy is {settings['maxmemory-policy']}, not noeviction: Redis may"
            " evict queued events when it is full"
        )
    return problems
