"""watch.observe as one SQLite statement: an event moves its conversation's watch on.

relay.conversations.watch.observe states the rules; this module says them again in SQL,
as store/lua/lib_watch.lua does in Lua, because the statement runs inside SQLite: no read
of the row into Python, no Watch built and written back, one B-tree descent instead of
three (about a third of the cost of an accepted event's watch, measured). The SQLite
conformance suite and a differential test (tests/store/test_sqlite_observe.py) hold it to
watch.observe, field by field.

An INSERT for a conversation's first event, and for any later one an ON CONFLICT update in
which every column on the right is the row's value before the event (SQLite evaluates
the whole SET against the old row) and :name the event. The two indexed bounds
(sqlite_watches' due_floor and quiet_at) are moved by statements of their own, and only
when they change.
"""

from __future__ import annotations

import sqlite3

from relay.activity.tally import CONVERSATIONS, first_answer_counter
from relay.conversations.watch import Observation
from relay.store.base import QUIET_STEP_S  # the quiet floor moves once in this long

# The event's role.
_VISITOR = "(:role = 'visitor')"
_AGENT = "(:role = 'agent')"

# Every event pushes the end further away, from the latest event received.
_LAST_RECEIVED = "max(last_received_at, :received_at)"
_END_DUE = f"(CASE WHEN :ended_after_s > 0 THEN {_LAST_RECEIVED} + :ended_after_s END)"

# A visitor message opens a stretch when none is open, unless it is older than the latest
# answer; an agent message at or after the stretch's question closes it.
_OPENS = (
    f"({_VISITOR} AND NOT stretch_open"
    " AND NOT (last_agent_at IS NOT NULL AND :timestamp < last_agent_at))"
)
_CLOSES = f"({_AGENT} AND stretch_open AND asked_at IS NOT NULL AND :timestamp >= asked_at)"
_STRETCH_OPEN = f"(CASE WHEN {_OPENS} THEN 1 WHEN {_CLOSES} THEN 0 ELSE stretch_open END)"
_STRETCH_RAISED = f"(CASE WHEN {_OPENS} THEN 0 ELSE stretch_raised END)"
_UNANSWERED_DUE = (
    f"(CASE WHEN {_OPENS} THEN (CASE WHEN :unanswered_after_s > 0"
    " THEN :received_at + :unanswered_after_s END)"
    f" WHEN {_CLOSES} THEN NULL ELSE unanswered_due END)"
)

# watch._first_answer, on a visitor message: the earliest of the known answer and the
# first agent message that are at or after the (new) first visitor message.
_FIRST_VISITOR = "coalesce(min(first_visitor_at, :timestamp), :timestamp)"
_FIRST_ANSWER_AFTER_VISITOR = (
    "(SELECT min(t) FROM (SELECT first_answer_at AS t UNION ALL SELECT first_agent_at)"
    f" WHERE t >= {_FIRST_VISITOR})"
)
# On an agent message at or after the first visitor message: the earlier of it and the
# known answer.
_FIRST_ANSWER_AFTER_AGENT = (
    "(CASE WHEN first_visitor_at IS NOT NULL AND :timestamp >= first_visitor_at"
    " THEN coalesce(min(first_answer_at, :timestamp), :timestamp) ELSE first_answer_at END)"
)


def _due_at(stretch_open: str, unanswered_due: str, stretch_raised: str) -> str:
    """Watch.due_at of the row after the event (never ended: the event carries it on)."""
    unanswered = f"(CASE WHEN {stretch_open} AND NOT {stretch_raised} THEN {unanswered_due} END)"
    return (
        f"(CASE WHEN {unanswered} IS NULL THEN {_END_DUE}"
        f" WHEN {_END_DUE} IS NULL THEN {unanswered} ELSE min({unanswered}, {_END_DUE}) END)"
    )


_DUE_AT = _due_at(_STRETCH_OPEN, _UNANSWERED_DUE, _STRETCH_RAISED)

OBSERVE_SQL = f"""
INSERT INTO watches (
    conversation, opened_at, agent_id, room_name, started_at, last_event_at, last_received_at,
    visitor_messages, agent_messages, first_visitor_at, first_answer_at, first_agent_at,
    last_agent_at, stretch, stretch_open, stretch_raised, asked_at, asked_received_at,
    asked_message, unanswered_due, ends, ended, end_due, due_at, due_floor, quiet_at,
    claimed_by, lease_until, events
) VALUES (
    :conversation, :received_at, :agent_id, :room_name, :timestamp, :timestamp, :received_at,
    {_VISITOR}, {_AGENT}, CASE WHEN {_VISITOR} THEN :timestamp END, NULL,
    CASE WHEN {_AGENT} THEN :timestamp END, CASE WHEN {_AGENT} THEN :timestamp END,
    {_VISITOR}, {_VISITOR}, 0, CASE WHEN {_VISITOR} THEN :timestamp END,
    CASE WHEN {_VISITOR} THEN :received_at END, CASE WHEN {_VISITOR} THEN :message END,
    CASE WHEN {_VISITOR} AND :unanswered_after_s > 0
        THEN :received_at + :unanswered_after_s END,
    0, 0, CASE WHEN :ended_after_s > 0 THEN :received_at + :ended_after_s END,
    :first_due_at, :first_due_at, :received_at, NULL, 0, 1
)
ON CONFLICT (conversation) DO UPDATE SET
    agent_id = CASE WHEN :agent_id <> '' THEN :agent_id ELSE agent_id END,
    room_name = coalesce(nullif(:room_name, ''), room_name),
    started_at = min(started_at, :timestamp),
    last_event_at = max(last_event_at, :timestamp),
    last_received_at = {_LAST_RECEIVED},
    visitor_messages = visitor_messages + {_VISITOR},
    agent_messages = agent_messages + {_AGENT},
    first_visitor_at = CASE WHEN {_VISITOR} THEN {_FIRST_VISITOR} ELSE first_visitor_at END,
    first_answer_at = CASE WHEN {_VISITOR} THEN {_FIRST_ANSWER_AFTER_VISITOR}
        WHEN {_AGENT} THEN {_FIRST_ANSWER_AFTER_AGENT} ELSE first_answer_at END,
    first_agent_at = CASE WHEN {_AGENT}
        THEN coalesce(min(first_agent_at, :timestamp), :timestamp) ELSE first_agent_at END,
    last_agent_at = CASE WHEN {_AGENT}
        THEN coalesce(max(last_agent_at, :timestamp), :timestamp) ELSE last_agent_at END,
    stretch = stretch + {_OPENS},
    stretch_open = {_STRETCH_OPEN},
    stretch_raised = {_STRETCH_RAISED},
    asked_at = CASE WHEN {_OPENS} THEN :timestamp ELSE asked_at END,
    asked_received_at = CASE WHEN {_OPENS} THEN :received_at ELSE asked_received_at END,
    asked_message = CASE WHEN {_OPENS} THEN :message ELSE asked_message END,
    unanswered_due = {_UNANSWERED_DUE},
    ended = 0,
    end_due = {_END_DUE},
    due_at = {_DUE_AT},
    events = events + 1
"""

# With the activity counters kept: what tells a conversation's first event, and its first
# answer, once.
COUNTING_SQL = f"{OBSERVE_SQL}RETURNING events, answer_counted, first_answer_at, first_visitor_at"
_ANSWER_COUNTED_SQL = "UPDATE watches SET answer_counted = 1 WHERE conversation = ?"

# The indexed bounds, apart and only when one moves: an UPDATE rewrites the index entries
# of every column it sets, even to the value it had, and each is a page written. Only an
# earlier deadline lowers the due floor (a claim raises one that passed; none is left
# without a due_at); the quiet floor follows the last event once in QUIET_STEP_S. Most
# events move neither, and then this reads the row and writes nothing.
_LOWERS_FLOOR = "(due_floor IS NULL) <> (due_at IS NULL) OR due_floor > due_at"
_QUIET_MOVES = f"last_received_at - quiet_at >= {QUIET_STEP_S}"
MOVE_BOUNDS_SQL = f"""
UPDATE watches SET
    due_floor = CASE WHEN {_LOWERS_FLOOR} THEN due_at ELSE due_floor END,
    quiet_at = CASE WHEN {_QUIET_MOVES} THEN last_received_at ELSE quiet_at END
WHERE conversation = ? AND ({_LOWERS_FLOOR} OR {_QUIET_MOVES})
"""


def observe(conn: sqlite3.Connection, seen: Observation, counting: bool) -> list[str]:
    """Move the conversation's watch on by one event, or make it for a first event; with
    `counting`, return the agent counters its conversation adds (tally.py): a first event,
    and a first answer, each once."""
    visitor = seen.role == "visitor"
    unanswered_due = seen.received_at + seen.unanswered_after_s
    end_due = seen.received_at + seen.ended_after_s
    dues = [
        *([unanswered_due] if visitor and seen.unanswered_after_s > 0 else []),
        *([end_due] if seen.ended_after_s > 0 else []),
    ]
    found = conn.execute(
        COUNTING_SQL if counting else OBSERVE_SQL,
        {
            "conversation": seen.conversation,
            "agent_id": seen.agent_id,
            "room_name": seen.room_name,
            "role": seen.role,
            "message": seen.message,
            "timestamp": seen.timestamp,
            "received_at": seen.received_at,
            "unanswered_after_s": seen.unanswered_after_s,
            "ended_after_s": seen.ended_after_s,
            "first_due_at": min(dues) if dues else None,
        },
    ).fetchone()
    conn.execute(MOVE_BOUNDS_SQL, (seen.conversation,))
    if not counting:
        return []
    events, answer_counted, first_answer_at, first_visitor_at = found
    counters = [CONVERSATIONS] if events == 1 else []
    if first_answer_at is not None and not answer_counted:
        counters.append(first_answer_counter(first_answer_at - first_visitor_at))
        conn.execute(_ANSWER_COUNTED_SQL, (seen.conversation,))
    return counters
