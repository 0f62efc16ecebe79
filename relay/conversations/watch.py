"""A conversation's watch: what relay keeps to notice what did not happen (SPEC 4.4).

The store keeps one watch per conversation and moves it on with every accepted event
(`observe`), in the same transaction as the event: O(1) per event, and nothing is lost on
a crash. A watch is due when one of its deadlines has passed; the raiser claims due
watches and raises their signals (`due_signals`), each stored only if the watch still
agrees that it is due (`may_raise`), so each is raised once, whoever raises it.

This module is the one statement of those rules. The SQLite store runs it as is; the
Redis store runs the same steps in Lua (store/lua/lib_watch.lua), and the conformance
suite holds both to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Literal

from relay.events import Event, normalize_event_type, storable

SignalKind = Literal["unanswered", "ended"]
Role = Literal["visitor", "agent", "other"]

UNANSWERED = "conversation.unanswered"
ENDED = "conversation.ended"
SIGNAL_TYPES = {"unanswered": UNANSWERED, "ended": ENDED}
_SIGNAL_KINDS = frozenset(SIGNAL_TYPES.values())
_SIGNAL_ID_PREFIXES = tuple(f"{event_type}:" for event_type in SIGNAL_TYPES.values())


@dataclass(frozen=True)
class Observation:
    """What one accepted event tells its conversation's watch."""

    conversation: str  # data.session_id
    agent_id: str
    room_name: str | None
    role: Role
    message: str | None  # a visitor's message
    timestamp: float  # the event's own: figures come from these
    received_at: float  # relay's clock: deadlines come from these
    unanswered_after_s: float  # 0: never
    ended_after_s: float  # 0: never


@dataclass(frozen=True)
class Forget:
    """What an accepted event tells its conversation's watch while relay does not watch
    (no `conversations` section): forget it. Should the section come back, the
    conversation is watched afresh from its next event, not from a watch that missed the
    answers given meanwhile."""

    conversation: str


@dataclass(frozen=True)
class Watch:
    """One conversation as its watch sees it."""

    conversation: str
    opened_at: float  # received_at of its first event: tells a conversation from a later
    # one with the same session id once retention forgot the first
    agent_id: str
    room_name: str | None
    started_at: float  # the earliest event timestamp
    last_event_at: float  # the latest event timestamp
    last_received_at: float
    visitor_messages: int = 0
    agent_messages: int = 0
    first_visitor_at: float | None = None  # the earliest visitor message's timestamp
    first_answer_at: float | None = None  # the earliest agent message at or after it
    first_agent_at: float | None = None  # the earliest agent message's timestamp
    last_agent_at: float | None = None  # the latest agent message's timestamp
    stretch: int = 0  # unanswered stretches begun so far; the current one's number
    stretch_open: bool = False  # the last visitor message has had no agent message since
    stretch_raised: bool = False  # the current stretch raised conversation.unanswered
    asked_at: float | None = None  # the stretch's first visitor message: its timestamp,
    asked_received_at: float | None = None  # when relay received it,
    asked_message: str | None = None  # and what it said
    unanswered_due: float | None = None
    ends: int = 0  # conversation.ended raised so far
    ended: bool = False  # no event since the last conversation.ended
    end_due: float | None = None

    @property
    def due_at(self) -> float | None:
        """When the watch next has a signal to raise, if ever."""
        times = []
        if self.stretch_open and not self.stretch_raised and self.unanswered_due is not None:
            times.append(self.unanswered_due)
        if not self.ended and self.end_due is not None:
            times.append(self.end_due)
        return min(times) if times else None


# The fields in the order the stores keep them (SQLite columns, Redis hash fields).
WATCH_FIELDS = tuple(f.name for f in dataclasses.fields(Watch))
_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(Watch) if f.default is not dataclasses.MISSING
}


def observation_of(
    event: Event, windows: tuple[float, float] | None
) -> Observation | Forget | None:
    """Return what an accepted event tells its conversation, watched with these windows
    (unanswered_after_s, ended_after_s), or not watched (None); None when it has nothing
    to tell: an account webhook, an event without a session, or a signal itself."""
    if event.account or event.session is None or event.kind in _SIGNAL_KINDS:
        return None
    if windows is None:
        return Forget(storable(event.session))
    unanswered_after_s, ended_after_s = windows
    role: Role = "other"
    if event.kind == "chat.push":
        role = {"user": "visitor", "assistant": "agent"}.get(event.role or "", "other")  # type: ignore[assignment]
    return Observation(
        conversation=storable(event.session),
        agent_id=storable(event.agent_id),
        room_name=None if event.room is None else storable(event.room),
        role=role,
        message=storable(event.message)
        if role == "visitor" and event.message is not None
        else None,
        timestamp=event.timestamp,
        received_at=event.received_at,
        unanswered_after_s=unanswered_after_s,
        ended_after_s=ended_after_s,
    )


def is_signal(event_type: str) -> bool:
    """Whether an event type is one relay raises itself."""
    return normalize_event_type(event_type) in _SIGNAL_KINDS


def observe(watch: Watch | None, seen: Observation) -> Watch:
    """Return the watch moved on by one accepted event (a new one for a first event)."""
    if watch is None:
        watch = watch_of(
            {
                **_DEFAULTS,
                "conversation": seen.conversation,
                "opened_at": seen.received_at,
                "agent_id": seen.agent_id,
                "room_name": seen.room_name,
                "started_at": seen.timestamp,
                "last_event_at": seen.timestamp,
                "last_received_at": seen.received_at,
            }
        )
    changes: dict[str, object] = {
        "agent_id": seen.agent_id or watch.agent_id,
        "room_name": seen.room_name or watch.room_name,
        "started_at": min(watch.started_at, seen.timestamp),
        "last_event_at": max(watch.last_event_at, seen.timestamp),
        "last_received_at": max(watch.last_received_at, seen.received_at),
        # Every event pushes the end further away; a conversation that had ended carries on.
        "ended": False,
        # From the latest event received: one accepted by a replica whose clock is behind
        # must not pull the end back.
        "end_due": _deadline(max(watch.last_received_at, seen.received_at), seen.ended_after_s),
    }
    # Events may arrive out of order (two replicas, a retry): what answers what, and the
    # first answer, follow the events' own timestamps, not the order relay got them in.
    if seen.role == "visitor":
        changes["visitor_messages"] = watch.visitor_messages + 1
        first = _earliest(watch.first_visitor_at, seen.timestamp)
        changes["first_visitor_at"] = first
        changes["first_answer_at"] = _first_answer(
            watch.first_answer_at, watch.first_agent_at, first
        )
        # A message older than the latest answer was answered: it opens no stretch.
        answered = watch.last_agent_at is not None and seen.timestamp < watch.last_agent_at
        if not watch.stretch_open and not answered:  # a new stretch; later ones keep it
            changes.update(
                stretch=watch.stretch + 1,
                stretch_open=True,
                stretch_raised=False,
                asked_at=seen.timestamp,
                asked_received_at=seen.received_at,
                asked_message=seen.message,
                unanswered_due=_deadline(seen.received_at, seen.unanswered_after_s),
            )
    elif seen.role == "agent":
        changes["agent_messages"] = watch.agent_messages + 1
        changes["first_agent_at"] = _earliest(watch.first_agent_at, seen.timestamp)
        changes["last_agent_at"] = _latest(watch.last_agent_at, seen.timestamp)
        asked_first = watch.first_visitor_at
        if asked_first is not None and seen.timestamp >= asked_first:
            changes["first_answer_at"] = _earliest(watch.first_answer_at, seen.timestamp)
        # Only an answer at or after the stretch's question closes it.
        if watch.stretch_open and watch.asked_at is not None and seen.timestamp >= watch.asked_at:
            changes.update(stretch_open=False, unanswered_due=None)
    return _replace(watch, changes)


def _replace(watch: Watch, changes: dict[str, object]) -> Watch:
    """dataclasses.replace, at a fraction of its cost: observe runs in the store's
    transaction for every event."""
    return watch_of({**watch.__dict__, **changes})


def watch_of(fields: dict[str, object]) -> Watch:
    """Return the Watch with these fields, every one of them given. A frozen dataclass's
    __init__ sets each field through object.__setattr__, three times the cost of filling
    its __dict__ at once; the watch is as frozen either way."""
    watch = object.__new__(Watch)
    watch.__dict__.update(fields)
    return watch


def _earliest(known: float | None, seen: float) -> float:
    return seen if known is None else min(known, seen)


def _latest(known: float | None, seen: float) -> float:
    return seen if known is None else max(known, seen)


def _first_answer(answer: float | None, first_agent: float | None, first: float) -> float | None:
    """The earliest agent message at or after the first visitor message, once an earlier
    visitor message has come in: the one known, or the earliest agent message of all."""
    found = [t for t in (answer, first_agent) if t is not None and t >= first]
    return min(found) if found else None


def _deadline(received_at: float, after_s: float) -> float | None:
    return received_at + after_s if after_s > 0 else None


@dataclass(frozen=True)
class DueSignal:
    """A signal a watch owes at some moment: its kind, its number and its data."""

    kind: SignalKind
    number: int  # the stretch (unanswered) or the end (ended) it is for
    data: dict[str, object]


def due_signals(watch: Watch, now: float) -> list[DueSignal]:
    """Return the signals the watch owes at `now`, an unanswered one first."""
    owed = []
    if may_raise(watch, "unanswered", watch.stretch, now):
        waited = now - (watch.asked_received_at or now)
        owed.append(
            DueSignal(
                "unanswered",
                watch.stretch,
                {
                    "session_id": watch.conversation,
                    **_room(watch),
                    "message": watch.asked_message,
                    "asked_at": watch.asked_at,
                    "waited_s": round(waited, 3),
                },
            )
        )
    if may_raise(watch, "ended", watch.ends + 1, now):
        owed.append(
            DueSignal(
                "ended",
                watch.ends + 1,
                {
                    "session_id": watch.conversation,
                    "room_name": watch.room_name,
                    "started_at": watch.started_at,
                    "last_event_at": watch.last_event_at,
                    "duration_s": round(watch.last_event_at - watch.started_at, 3),
                    "visitor_messages": watch.visitor_messages,
                    "agent_messages": watch.agent_messages,
                    "first_answer_s": _first_answer_s(watch),
                    "unanswered": watch.stretch_open,
                },
            )
        )
    return owed


def _first_answer_s(watch: Watch) -> float | None:
    if watch.first_answer_at is None or watch.first_visitor_at is None:
        return None
    return round(watch.first_answer_at - watch.first_visitor_at, 3)


def _room(watch: Watch) -> dict[str, object]:
    return {} if watch.room_name is None else {"room_name": watch.room_name}


def may_raise(watch: Watch, kind: SignalKind, number: int, now: float) -> bool:
    """Whether the watch owes this signal at `now`: checked again, by the store, in the
    transaction that raises it, so an answer or an event that came meanwhile wins."""
    if kind == "unanswered":
        return (
            watch.stretch == number
            and watch.stretch_open
            and not watch.stretch_raised
            and watch.unanswered_due is not None
            and watch.unanswered_due <= now
        )
    return (
        watch.ends == number - 1
        and not watch.ended
        and watch.end_due is not None
        and watch.end_due <= now
    )


def raised(watch: Watch, kind: SignalKind, number: int) -> Watch:
    """Return the watch once it has raised a signal."""
    if kind == "unanswered":
        return dataclasses.replace(watch, stretch_raised=True)
    return dataclasses.replace(watch, ended=True, ends=number)


def is_signal_event_id(event_id: str) -> bool:
    """Whether an event id is of the form relay gives its signals (reserved for them)."""
    return event_id.startswith(_SIGNAL_ID_PREFIXES)


def signal_event_id(watch: Watch, kind: SignalKind, number: int) -> str:
    """Return a signal's event id: the same for the same conversation, kind and number,
    whichever process raises it, and short and printable whatever the session id holds."""
    conversation = f"{watch.conversation}\0{watch.opened_at!r}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(conversation).hexdigest()[:24]
    return f"{SIGNAL_TYPES[kind]}:{digest}:{number}"
