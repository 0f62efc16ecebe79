"""The SQLite store's watch statement (store/sqlite_observe.py) against watch.observe, the
rules' one statement in Python: any events, in any order, leave the very same watch, and
the indexed bounds where sqlite_watches says they are."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.conversations.watch import Observation, Role, Watch, observe
from relay.store import sqlite_ops, sqlite_watches
from relay.store.base import QUIET_STEP_S

TIMES = st.sampled_from([0.0, 1.0, 5.0, 5.0, 9.5, 20.0, 700.0, 1300.0])


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    role: Role = draw(st.sampled_from(["visitor", "agent", "other"]))
    return Observation(
        conversation=draw(st.sampled_from(["s1", "s2"])),
        agent_id=draw(st.sampled_from(["A1", "A2", ""])),
        room_name=draw(st.sampled_from([None, "room-1", "room-2"])),
        role=role,
        message=draw(st.sampled_from(["hello", "", "Ünïcode ✓"])) if role == "visitor" else None,
        timestamp=1_700_000_000.0 + draw(TIMES),
        received_at=1_700_000_100.0 + draw(TIMES),
        unanswered_after_s=draw(st.sampled_from([0.0, 1.0, 120.0])),
        ended_after_s=draw(st.sampled_from([0.0, 600.0])),
    )


def store() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sqlite_ops.migrate(conn)
    return conn


@settings(max_examples=400, deadline=None)
@given(st.lists(observations(), min_size=1, max_size=12))
def test_the_statement_leaves_the_watch_observe_makes(events: list[Observation]) -> None:
    conn = store()
    expected: dict[str, Watch] = {}
    floors: dict[str, float | None] = {}
    for seen in events:
        sqlite_watches.observe_event(conn, seen)
        before = expected.get(seen.conversation)
        watch = expected[seen.conversation] = observe(before, seen)
        floor = floors.get(seen.conversation, watch.due_at)
        floors[seen.conversation] = (
            watch.due_at if floor is None or watch.due_at is None else min(floor, watch.due_at)
        )
        assert sqlite_watches.find(conn, seen.conversation) == watch
    for conversation, watch in expected.items():
        due_at, due_floor, quiet_at = conn.execute(
            "SELECT due_at, due_floor, quiet_at FROM watches WHERE conversation = ?",
            (conversation,),
        ).fetchone()
        assert due_at == watch.due_at
        assert due_floor == floors[conversation]
        assert quiet_at <= watch.last_received_at < quiet_at + QUIET_STEP_S
