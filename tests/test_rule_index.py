"""Indexed routing: Router.route gives exactly what trying every rule in order gives.

The differential test draws random rule sets (event types in both spellings, exact and
glob agents, any / all / not, message and field tests, `stop`, templates and digests),
loads them through the real loader, and routes random events both ways; `relay route`'s
explanation must agree with both. The index's own pieces are checked below it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import load_text
from relay.config.model import AllCondition, AnyCondition, GlobCondition, NotCondition, Rule
from relay.events import Event, event_from_payload
from relay.rule_index import Keys, RuleIndex, literal_prefix, mandatory_keys
from relay.rules import Dispatch, Router, explain

DESTINATIONS = ("d1", "d2", "d3", "d4", "d5", "d6")
# Few values, so that rules and events often name the same ones.
AGENTS = ("A1", "A2", "A10", "agent_sales_eu", "agent_sales_us", "agent_test_7", "B", "")
AGENT_GLOBS = ("agent_sales_*", "agent_*", "A?", "A1*", "*", "*_7", "agent_[st]*", "?")
KINDS = (
    "room.join", "room_join", "chat.push", "chat_push", "Chat.Push", "test",
    "conversation.unanswered", "conversation_ended", "agent.ready", "video.completed",
)  # fmt: skip
KIND_GLOBS = ("room.*", "room_*", "*.push", "chat?push", "conversation.*", "*", "[rc]*", "v*")
WORDS = ("refund", "Refund", "cancel my order", "hello", "worst", "")
ROLES = ("user", "assistant", "us*", "*")
SESSIONS = ("s1", "s2", "s*")
ROOMS = ("lobby", "sales-demo", "l*")


def one_or_list(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | list[str]]:
    return values | st.lists(values, min_size=1, max_size=3)


def message_test() -> st.SearchStrategy[dict[str, Any]]:
    tests = st.fixed_dictionaries(
        {},
        optional={
            "contains": st.sampled_from(WORDS),
            "contains_any": st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
            "contains_all": st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
            "regex": st.sampled_from((r"(?i)\b(terrible|worst)\b", "^hello", "order$")),
            "equals": st.sampled_from(WORDS),
            "case_sensitive": st.booleans(),
        },
    )
    return tests.filter(lambda test: set(test) - {"case_sensitive"})


KIND_PATTERNS = one_or_list(st.sampled_from(KINDS) | st.sampled_from(KIND_GLOBS))
AGENT_PATTERNS = one_or_list(st.sampled_from(AGENTS) | st.sampled_from(AGENT_GLOBS))
FIELD_TESTS = st.sampled_from(
    (
        {"path": "data.participant_count", "gte": 10},
        {"path": "data.participant_count", "lt": 3},
        {"path": "data.role", "equals": "user"},
        {"path": "data.session_id", "in": ["s1", "s3"]},
        {"path": "agent_id", "regex": "^agent_"},
        {"path": "event_type", "equals": "room_join"},
        {"path": "data.missing", "exists": False},
        {"path": "data.message", "exists": True},
    )
)


def leaf_tests() -> st.SearchStrategy[dict[str, Any]]:
    """A `when` mapping of the tests that name no other mapping."""
    return st.fixed_dictionaries(
        {},
        optional={
            "event": KIND_PATTERNS,
            "agent": AGENT_PATTERNS,
            "role": one_or_list(st.sampled_from(ROLES)),
            "room": one_or_list(st.sampled_from(ROOMS)),
            "session": one_or_list(st.sampled_from(SESSIONS)),
            "message": message_test(),
            "field": FIELD_TESTS,
        },
    )


def with_combinators(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A `when` mapping whose `any`, `all` and `not` hold mappings drawn from `inner`."""
    combined = st.fixed_dictionaries(
        {},
        optional={
            "any": st.lists(inner, min_size=1, max_size=3),
            "all": st.lists(inner, min_size=1, max_size=3),
            "not": inner,
        },
    )
    return st.tuples(leaf_tests(), combined).map(lambda pair: {**pair[0], **pair[1]})


def keyed() -> st.SearchStrategy[dict[str, Any]]:
    """A `when` as most are written: what the index keys on (at the top, under `all`) and
    at most one test more, so that such rules match often enough to be compared."""
    nested = st.fixed_dictionaries({}, optional={"agent": AGENT_PATTERNS, "event": KIND_PATTERNS})
    keys = st.fixed_dictionaries(
        {},
        optional={
            "event": KIND_PATTERNS,
            "agent": AGENT_PATTERNS,
            "all": st.lists(nested, min_size=1, max_size=2),
        },
    )
    extra: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
        (
            {},
            {},
            {"role": "user"},
            {"message": {"contains": "hello"}},
            {"not": {"agent": "A1*"}},
            {"field": {"path": "data.participant_count", "gte": 3}},
        )
    )
    return st.tuples(keys, extra).map(lambda pair: {**pair[0], **pair[1]})


WHEN = keyed() | st.recursive(leaf_tests(), with_combinators, max_leaves=6)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for index in range(draw(st.integers(0, 12))):
        rule: dict[str, Any] = {
            "name": f"r{index}",
            "send_to": draw(st.lists(st.sampled_from(DESTINATIONS), min_size=1, max_size=2)),
        }
        # A rule that matches every event names its destinations before any later rule
        # can: now and then only, or the rules after it would seldom decide anything.
        anything_may_match = draw(st.integers(0, 7)) == 0
        when = draw(WHEN if anything_may_match else WHEN.filter(bool))
        written = draw(st.booleans())  # an empty `when`, or none
        if when or written:
            rule["when"] = when
        if draw(st.integers(0, 5)) == 0:
            rule["stop"] = True
        if draw(st.integers(0, 5)) == 0:
            rule["template"] = "t"
        if draw(st.integers(0, 7)) == 0:
            rule["digest"] = "10m"
        rules.append(rule)
    return rules


def aimed_at(rules: list[dict[str, Any]], key: str) -> list[str]:
    """Return a value matching each `key` pattern the rules name, anywhere in a `when`:
    events of those agents and types meet rules that need them, not only by chance."""
    named: list[str] = []

    def walk(when: dict[str, Any]) -> None:
        for test, value in when.items():
            if test == key:
                named.extend([value] if isinstance(value, str) else value)
            elif test in ("any", "all"):
                for inner in value:
                    walk(inner)
            elif test == "not":
                walk(value)

    for rule in rules:
        walk(rule.get("when", {}))
    # `agent_[st]*` -> `agent_sx`, `A?` -> `A1`
    instances = {
        re.sub(r"\[(.)[^]]*\]", r"\1", p).replace("*", "x").replace("?", "1") for p in named
    }
    return sorted(instances)


@st.composite
def events(draw: st.DrawFn, agents: list[str], kinds: list[str]) -> Event:
    """An event, its agent and type mostly among those given, now and then any other."""
    others = st.text("A1_agent", max_size=8) | st.sampled_from(AGENTS)
    aim = draw(st.integers(0, 3)) > 0
    agent = draw(st.sampled_from(agents) if agents and aim else others)
    data = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(("user", "assistant")),
                "message": st.sampled_from(
                    ("I want a REFUND", "hello, please cancel my order", "the worst", "hello")
                ),
                "session_id": st.sampled_from(("s1", "s2", "s3")),
                "room_name": st.sampled_from(("lobby", "sales-demo")),
                "participant_count": st.integers(0, 15),
            },
        )
    )
    other_kinds = st.sampled_from(KINDS) | st.sampled_from(("ping", "video.failed", "x_y.z"))
    aim = draw(st.integers(0, 3)) > 0
    kind = draw(st.sampled_from(kinds) if kinds and aim else other_kinds)
    if draw(st.integers(0, 4)) == 0:  # an account webhook: its agent is under data
        payload: dict[str, Any] = {
            "id": "evt_1",
            "event": kind,
            "created": 1780417371,
            "data": {**data, "agent_id": agent},
        }
    else:
        payload = {"agent_id": agent, "event_type": kind, "data": data, "timestamp": 1.0}
    return event_from_payload(payload, event_id="e1", received_at=1.0)


def load_rules(rules: list[dict[str, Any]]) -> tuple[Rule, ...]:
    # JSON is YAML: the rules go through the real loader (event types normalized there).
    config = {
        "destinations": {name: {"type": "console"} for name in DESTINATIONS},
        "templates": {"t": {"text": "{{ event_type }}"}},
        "rules": rules,
    }
    return load_text(json.dumps(config), "relay.yaml", {}).rules


def explained(rules: tuple[Rule, ...], event: Event) -> list[Dispatch]:
    """Return the dispatches `relay route`'s explanation implies: each rule matched and not
    skipped after a stop, its destinations the first time one is named."""
    dispatches: dict[str, Dispatch] = {}
    for verdict in explain(rules, event):
        if verdict.outcome.matched and not verdict.skipped:
            rule = verdict.rule
            for name in rule.send_to:
                dispatches.setdefault(name, Dispatch(name, rule.name, rule.template, rule.digest_s))
    return list(dispatches.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), st.data())
def test_indexed_routing_equals_trying_every_rule(
    rules: list[dict[str, Any]], data: st.DataObject
) -> None:
    loaded = load_rules(rules)
    router = Router(loaded)
    aimed = events(aimed_at(rules, "agent"), aimed_at(rules, "event"))
    for event in data.draw(st.lists(aimed, min_size=1, max_size=8)):
        linear = router.route_linearly(event)
        assert router.routing(event) == linear  # the same dispatches, and rules matched
        assert explained(loaded, event) == linear.dispatches
        assert linear.matched == tuple(  # what the Rules page counts
            v.rule.name for v in explain(loaded, event) if v.outcome.matched and not v.skipped
        )
        assert len(explain(loaded, event)) == len(loaded)  # relay route shows every rule


# The index's pieces ------------------------------------------------------------------------


def test_literal_prefix_stops_at_the_first_wildcard() -> None:
    assert literal_prefix("agent_sales_*") == "agent_sales_"
    assert literal_prefix("A?1*") == "A"
    assert literal_prefix("agent_[st]*") == "agent_"
    assert literal_prefix("*_7") == ""
    assert literal_prefix("A80HVD8577") == "A80HVD8577"


def glob(key: Any, *patterns: str) -> GlobCondition:
    return GlobCondition(key, patterns)


def test_mandatory_keys_at_the_top_and_under_all() -> None:
    when = AllCondition((glob("event", "chat.push"), glob("agent", "A1", "agent_sales_*")))
    assert mandatory_keys(when, "agent") == Keys(frozenset({"A1"}), frozenset({"agent_sales_"}))
    assert mandatory_keys(when, "event") == Keys(frozenset({"chat.push"}), frozenset())
    nested = AllCondition((AllCondition((AllCondition((glob("agent", "A2"),)),)),))
    assert mandatory_keys(nested, "agent") == Keys(frozenset({"A2"}), frozenset())


def test_no_mandatory_key_under_any_or_not_or_behind_a_leading_wildcard() -> None:
    under_any = AllCondition((AnyCondition((AllCondition((glob("agent", "A1"),)),)),))
    under_not = AllCondition((NotCondition(AllCondition((glob("agent", "A1"),))),))
    leading = AllCondition((glob("agent", "A1", "*_7"),))
    for when in (under_any, under_not, leading, AllCondition(())):
        assert mandatory_keys(when, "agent") is None


def test_the_narrowest_mandatory_test_is_the_key() -> None:
    # Both must hold, so either is a correct key; the one value makes fewer candidates.
    when = AllCondition((glob("agent", "A*", "B1"), AllCondition((glob("agent", "A1"),))))
    assert mandatory_keys(when, "agent") == Keys(frozenset({"A1"}), frozenset())


def index_of(*whens: AllCondition) -> RuleIndex:
    return RuleIndex(list(whens))


def test_candidates_are_in_rule_order_each_once() -> None:
    index = index_of(
        AllCondition((glob("agent", "agent_sales_*"),)),  # 0: by prefix
        AllCondition((glob("event", "chat.push"),)),  # 1: by type
        AllCondition((glob("agent", "A1"),)),  # 2: by agent
        AllCondition(()),  # 3: unkeyed
        AllCondition((glob("agent", "agent_sales_eu", "agent_*"),)),  # 4: value and prefix
        AllCondition((glob("agent", "A2"), glob("event", "chat.push"))),  # 5: by agent only
        AllCondition((glob("event", "room.*"),)),  # 6: by type prefix
    )
    assert list(index.candidates("chat.push", "agent_sales_eu")) == [0, 1, 3, 4]
    assert list(index.candidates("chat.push", "A1")) == [1, 2, 3]
    assert list(index.candidates("room.join", "A2")) == [3, 5, 6]
    assert list(index.candidates("test", "nobody")) == [3]


def test_a_config_of_single_agent_rules_tries_one_rule_an_event() -> None:
    index = index_of(
        *(
            AllCondition((glob("event", "room.join", "chat.push"), glob("agent", f"A{i}")))
            for i in range(1000)
        )
    )
    assert list(index.candidates("chat.push", "A417")) == [417]
    assert list(index.candidates("chat.push", "A4170")) == []
