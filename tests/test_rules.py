"""The match language of SPEC section 3, rule by rule, and route()'s dedupe and stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay.events import Event, event_from_payload
from relay.rules import explain, route
from tests.support.relay import make_config

DESTINATIONS = """
destinations:
  a: { type: console }
  b: { type: console }
  c: { type: console }
"""


def chat(message: str = "hello", **fields: Any) -> Event:
    payload: dict[str, Any] = {
        "agent_id": fields.pop("agent_id", "agent_abc123"),
        "event_type": fields.pop("event_type", "chat.push"),
        "data": {"role": "user", "message": message, "session_id": "session_1", **fields},
        "timestamp": 1705312285.0,
    }
    return event_from_payload(payload, event_id="e1", received_at=1705312285.0)


def join(**data: Any) -> Event:
    payload = {
        "agent_id": "agent_abc123",
        "event_type": "room.join",
        "data": {
            "room_name": "customer-support",
            "participant_count": 1,
            "session_id": "s",
            **data,
        },
        "timestamp": 1705312200.0,
    }
    return event_from_payload(payload, event_id="e2", received_at=1705312200.0)


def account(event: str, **data: Any) -> Event:
    """An account webhook (SPEC 1.2) as the worker reads it back."""
    payload = {"id": "evt_1", "event": event, "created": 1780417371, "data": data}
    return event_from_payload(payload, event_id="evt_1", received_at=0.0)


READY = account("agent.ready", agent_id="A80HVD8577", code="A80HVD8577")
VIDEO = account("video.completed", agent_id="A80HVD8577", job_id="job_1", duration_seconds=12.5)
CODE_ONLY = account("agent.failed", code="A80HVD8577", error="Face not detected")


def matches(when: dict[str, Any], event: Event, tmp_path: Path) -> bool:
    # JSON is valid YAML, so a `when` written as a dict goes through the real loader.
    config = make_config(
        DESTINATIONS + f"rules:\n  - name: r\n    when: {json.dumps(when)}\n    send_to: [a]\n",
        tmp_path,
    )
    routed = bool(route(config.rules, event))
    # The compiled path (ingest) and the explaining path (relay route) must agree.
    assert explain(config.rules, event)[0].outcome.matched is routed
    return routed


CASES: list[tuple[str, dict[str, Any], Event, bool]] = [
    ("event exact", {"event": "chat.push"}, chat(), True),
    ("event other", {"event": "room.join"}, chat(), False),
    ("event dashboard spelling", {"event": "chat_push"}, chat(), True),
    ("event glob", {"event": "chat.*"}, chat(), True),
    ("event list", {"event": ["room.join", "chat.push"]}, chat(), True),
    ("agent glob", {"agent": "agent_sales_*"}, chat(agent_id="agent_sales_eu"), True),
    ("agent glob miss", {"agent": "agent_sales_*"}, chat(), False),
    ("agent list", {"agent": ["agent_x", "agent_abc*"]}, chat(), True),
    ("role", {"role": "user"}, chat(), True),
    ("role miss", {"role": "assistant"}, chat(), False),
    ("room", {"room": "customer-*"}, join(), True),
    ("room absent", {"room": "*"}, chat(), False),
    ("session", {"session": "session_?"}, chat(), True),
    ("contains", {"message": {"contains": "REFUND"}}, chat("I want a refund"), True),
    (
        "contains case sensitive",
        {"message": {"contains": "REFUND", "case_sensitive": True}},
        chat("I want a refund"),
        False,
    ),
    (
        "contains_any",
        {"message": {"contains_any": ["refund", "cancel my order"]}},
        chat("Please CANCEL MY ORDER now"),
        True,
    ),
    ("contains_any miss", {"message": {"contains_any": ["refund"]}}, chat("hello"), False),
    (
        "contains_all",
        {"message": {"contains_all": ["order", "late"]}},
        chat("my order is late"),
        True,
    ),
    (
        "contains_all partial",
        {"message": {"contains_all": ["order", "late"]}},
        chat("my order"),
        False,
    ),
    ("regex", {"message": {"regex": r"(?i)\b(terrible|worst)\b"}}, chat("The WORST day"), True),
    (
        "regex word boundary",
        {"message": {"regex": r"(?i)\b(terrible|worst)\b"}},
        chat("worstcase"),
        False,
    ),
    ("equals folds case", {"message": {"equals": "Hello"}}, chat("hello"), True),
    (
        "equals exact",
        {"message": {"equals": "hello", "case_sensitive": True}},
        chat("Hello"),
        False,
    ),
    ("message absent", {"message": {"contains": "x"}}, join(), False),
    (
        "field gte",
        {"field": {"path": "data.participant_count", "gte": 10}},
        join(participant_count=10),
        True,
    ),
    ("field gte below", {"field": {"path": "data.participant_count", "gte": 10}}, join(), False),
    ("field gt", {"field": {"path": "data.participant_count", "gt": 1}}, join(), False),
    ("field lt", {"field": {"path": "data.participant_count", "lt": 2}}, join(), True),
    ("field lte", {"field": {"path": "timestamp", "lte": 1705312200}}, join(), True),
    (
        "field equals",
        {"field": {"path": "data.room_name", "equals": "customer-support"}},
        join(),
        True,
    ),
    (
        "field equals true is not 1",
        {"field": {"path": "data.participant_count", "equals": True}},
        join(),
        False,
    ),
    ("field in", {"field": {"path": "agent_id", "in": ["agent_abc123", "x"]}}, chat(), True),
    ("field regex", {"field": {"path": "data.session_id", "regex": "^session_\\d$"}}, chat(), True),
    ("field exists", {"field": {"path": "data.role", "exists": True}}, chat(), True),
    ("field not exists", {"field": {"path": "data.role", "exists": False}}, join(), True),
    ("field comparison on text", {"field": {"path": "data.role", "gt": 1}}, chat(), False),
    ("field missing", {"field": {"path": "data.nope.deeper", "equals": 1}}, chat(), False),
    ("any", {"any": [{"message": {"contains": "x"}}, {"role": "user"}]}, chat(), True),
    ("any none", {"any": [{"message": {"contains": "x"}}, {"role": "bot"}]}, chat(), False),
    ("all", {"all": [{"role": "user"}, {"message": {"contains": "hel"}}]}, chat(), True),
    ("all one fails", {"all": [{"role": "user"}, {"message": {"contains": "x"}}]}, chat(), False),
    ("not", {"not": {"agent": "agent_test_*"}}, chat(), True),
    ("not excludes", {"not": {"agent": "agent_test_*"}}, chat(agent_id="agent_test_1"), False),
    (
        "keys combine",
        {"event": "chat.push", "role": "user", "message": {"contains": "refund"}},
        chat("refund"),
        True,
    ),
    ("keys combine one fails", {"event": "chat.push", "role": "bot"}, chat("refund"), False),
    ("empty when", {}, chat(), True),
    ("unknown event type", {"event": "agent.speak"}, chat(event_type="agent_speak"), True),
    ("account event", {"event": "agent.ready"}, READY, True),
    ("account event other", {"event": "agent.failed"}, READY, False),
    ("account event glob", {"event": "video.*"}, VIDEO, True),
    ("account event glob other", {"event": "video.*"}, READY, False),
    ("account event list", {"event": ["agent.ready", "video.completed"]}, VIDEO, True),
    ("account agent", {"agent": "A80HVD8577"}, VIDEO, True),
    ("account agent glob", {"agent": "A80HVD*"}, READY, True),
    ("account agent from code", {"agent": "A80HVD8577"}, CODE_ONLY, True),
    ("account agent other", {"agent": "B*"}, CODE_ONLY, False),
    ("account no agent", {"agent": "A*"}, account("ping"), False),
    ("account field", {"field": {"path": "data.duration_seconds", "gt": 10}}, VIDEO, True),
    (
        "account field agent_id",
        {"field": {"path": "agent_id", "equals": "A80HVD8577"}},
        CODE_ONLY,
        True,
    ),
    (
        "account field event_type",
        {"field": {"path": "event_type", "equals": "ping"}},
        account("ping"),
        True,
    ),
    ("account field created", {"field": {"path": "created", "equals": 1780417371}}, READY, True),
    ("account has no message", {"message": {"contains": "x"}}, CODE_ONLY, False),
    ("test event", {"event": "test"}, chat(event_type="test"), True),
]


@pytest.mark.parametrize(
    ("when", "event", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_match_language(when: dict[str, Any], event: Event, expected: bool, tmp_path: Path) -> None:
    assert matches(when, event, tmp_path) is expected


RULES = (
    DESTINATIONS
    + """
rules:
  - name: joins
    when: { event: room.join }
    send_to: [a]
  - name: refunds
    when: { message: { contains: refund } }
    send_to: [b, a]
    template: refund
    stop: true
  - name: everything
    send_to: [c, b]
templates:
  refund:
    title: "Refund from {{ agent_id }}"
"""
)


def test_each_destination_once_first_rule_decides_template(tmp_path: Path) -> None:
    config = make_config(RULES.replace("    stop: true\n", ""), tmp_path)
    dispatches = route(config.rules, chat("refund please"))
    assert [(d.destination, d.rule, d.template) for d in dispatches] == [
        ("b", "refunds", "refund"),
        ("a", "refunds", "refund"),
        ("c", "everything", None),
    ]


def test_stop_ends_routing_after_a_match(tmp_path: Path) -> None:
    config = make_config(RULES, tmp_path)
    assert [d.destination for d in route(config.rules, chat("refund please"))] == ["b", "a"]
    assert [d.destination for d in route(config.rules, chat("hi"))] == ["c", "b"]


def test_explain_says_why(tmp_path: Path) -> None:
    config = make_config(RULES, tmp_path)
    verdicts = explain(config.rules, chat("refund please"))
    assert [(v.rule.name, v.outcome.matched, v.skipped) for v in verdicts] == [
        ("joins", False, False),
        ("refunds", True, False),
        ("everything", True, True),
    ]
    assert verdicts[0].outcome.reason == "event 'chat.push' does not match room.join"
    assert verdicts[1].outcome.reason == "message contains 'refund'"
