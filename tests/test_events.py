"""The two event families (SPEC 1.1, 1.2) and how a stored body is read back.

The worker and `relay route` read a body without its headers, by its shape. Whatever the
ingest path accepted, in either family, must read back as the very same event: otherwise
an accepted event could be misread or dead-lettered after a restart.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config.model import Template
from relay.events import (
    Event,
    EventError,
    account_event,
    body_event_id,
    parse_account_event,
    parse_event,
    parse_session_event,
)
from relay.notification import build_notification
from relay.templates import compile_template
from tests.support.bithuman import ACCOUNT_DATA, AGENT, TEST_BUTTON, account_body

KEYS = st.sampled_from(
    ["agent_id", "event_type", "data", "timestamp", "id", "event", "created", "code", "x"]
)
SCALARS = st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False)
VALUES = SCALARS | st.text(max_size=8) | st.dictionaries(KEYS, SCALARS | st.text(max_size=8))
SESSION_BASE: dict[str, Any] = {
    "agent_id": "A1",
    "event_type": "chat.push",
    "data": {"message": "hi"},
}
ACCOUNT_BASE: dict[str, Any] = {
    "id": "evt_1",
    "event": "agent.ready",
    "created": 1780417371,
    "data": {},
}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body of either family, then keys replaced, added and removed at random."""
    payload: dict[str, Any] = dict(draw(st.sampled_from([SESSION_BASE, ACCOUNT_BASE])))
    payload.update(draw(st.dictionaries(KEYS, VALUES, max_size=3)))
    for key in draw(st.lists(KEYS, max_size=2)):
        payload.pop(key, None)
    return payload


PAYLOADS = payloads()


def _fields(event: Event) -> tuple[Any, ...]:
    return (event.event_id, event.agent_id, event.event_type, dict(event.data), event.account)


@settings(max_examples=400, deadline=None)
@given(payload=PAYLOADS)
def test_whatever_ingest_accepts_reads_back_the_same_by_shape(payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    event_id = body_event_id(body)
    for family in ("session", "account"):
        try:
            if family == "session":
                accepted = parse_session_event(body, event_id=event_id, received_at=5.0)
            else:
                accepted = parse_account_event(body, event_id=event_id)
        except EventError:
            continue
        stored = parse_event(body, event_id=accepted.event_id, received_at=5.0)
        assert _fields(stored) == _fields(accepted)
        assert stored.timestamp == accepted.timestamp


def test_the_test_button_body_has_empty_data_and_the_receive_time() -> None:
    event = parse_session_event(TEST_BUTTON, event_id="e", received_at=1790607300.0)
    assert (event.kind, event.agent_id, dict(event.data)) == ("test", "test_agent_123", {})
    assert event.timestamp == 1790607300.0
    assert event.session is None and event.message is None


def test_an_account_webhook_reads_as_an_event() -> None:
    body = account_body("video.completed", ACCOUNT_DATA["video.completed"], created=1780417371)
    event = parse_account_event(body, event_id="evt_from_header")
    assert event.event_id == "evt_from_header"
    assert (event.kind, event.agent_id, event.timestamp) == ("video.completed", AGENT, 1780417371)
    assert event.account
    assert parse_account_event(body, event_id=None).event_id == "evt_a1b2c3"


def test_the_agent_falls_back_to_data_code_then_to_nothing() -> None:
    def agent(data: dict[str, Any]) -> str:
        payload = {"id": "evt_1", "event": "agent.ready", "created": 1, "data": data}
        return account_event(payload, event_id=None).agent_id

    assert agent({"agent_id": "A1", "code": "A2"}) == "A1"
    assert agent({"code": "A2"}) == "A2"
    assert agent({"agent_id": "", "code": "A2"}) == "A2"
    assert agent({"agent_id": 7}) == ""
    assert agent({}) == ""


def test_templates_see_both_families_under_the_same_names() -> None:
    body = account_body("video.completed", ACCOUNT_DATA["video.completed"], created=1780417371)
    event = parse_event(body, event_id=None, received_at=0.0)
    template = Template(
        "video",
        title=compile_template("{{ event_type }} for {{ agent_id }}"),
        text=compile_template("{{ data.video_url }} ({{ event }}, {{ id }}, {{ created }})"),
    )
    notice = build_notification(event, "videos", template)
    assert notice.title == f"video.completed for {AGENT}"
    assert notice.text == (
        f"{ACCOUNT_DATA['video.completed']['video_url']} (video.completed, evt_a1b2c3, 1780417371)"
    )
