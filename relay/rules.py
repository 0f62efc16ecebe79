"""Rule matching: which rules an event matches, which destinations it goes to, and why."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from relay.config.model import (
    AllCondition,
    AnyCondition,
    Condition,
    FieldCondition,
    GlobCondition,
    MessageCondition,
    Rule,
)
from relay.events import Event


@dataclass(frozen=True)
class Outcome:
    """Whether a condition held, and a short reason a person can read."""

    matched: bool
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """One destination an event goes to, and the rule that decided its template."""

    destination: str
    rule: str
    template: str | None


@dataclass(frozen=True)
class RuleVerdict:
    rule: Rule
    outcome: Outcome
    skipped: bool  # an earlier matching rule had `stop: true`


_MISSING = object()


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _glob_value(event: Event, key: str) -> str | None:
    if key == "event":
        return event.kind
    if key == "agent":
        return event.agent_id
    return {"role": event.role, "room": event.room, "session": event.session}[key]


def _match_glob(condition: GlobCondition, event: Event) -> Outcome:
    value = _glob_value(event, condition.key)
    wanted = " or ".join(condition.patterns)
    if value is None:
        return Outcome(False, f"{condition.key}: event has none (wanted {wanted})")
    for pattern in condition.patterns:
        if _glob(pattern).match(value):
            return Outcome(True, f"{condition.key} {value!r} matches {pattern!r}")
    return Outcome(False, f"{condition.key} {value!r} does not match {wanted}")


def _message_tests(condition: MessageCondition, message: str) -> list[Outcome]:
    fold = (lambda s: s) if condition.case_sensitive else str.casefold
    text = fold(message)
    results: list[Outcome] = []
    if condition.contains is not None:
        ok = fold(condition.contains) in text
        results.append(Outcome(ok, f"contains {condition.contains!r}"))
    if condition.contains_any is not None:
        hits = [w for w in condition.contains_any if fold(w) in text]
        results.append(Outcome(bool(hits), f"contains any of {list(condition.contains_any)!r}"))
    if condition.contains_all is not None:
        ok = all(fold(w) in text for w in condition.contains_all)
        results.append(Outcome(ok, f"contains all of {list(condition.contains_all)!r}"))
    if condition.regex is not None:
        ok = condition.regex.search(message) is not None
        results.append(Outcome(ok, f"matches /{condition.regex.pattern}/"))
    if condition.equals is not None:
        results.append(Outcome(text == fold(condition.equals), f"equals {condition.equals!r}"))
    return results


def _match_message(condition: MessageCondition, event: Event) -> Outcome:
    message = event.message
    if message is None:
        return Outcome(False, "message: event has no data.message")
    failed = [o.reason for o in _message_tests(condition, message) if not o.matched]
    if failed:
        return Outcome(False, "message does not " + ", ".join(r for r in failed))
    return Outcome(
        True, "message " + ", ".join(o.reason for o in _message_tests(condition, message))
    )


def lookup(event: Event, path: str) -> Any:
    """Return the value at a dotted path into the event (`data.session_id`), or _MISSING."""
    value: Any = event.context()
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    # JSON's true is not 1, although Python's True == 1.
    return isinstance(left, bool) == isinstance(right, bool) and bool(left == right)


def _compare_field(op: str, value: Any, wanted: Any) -> bool:
    if op == "equals":
        return _json_equal(value, wanted)
    if op == "in":
        return any(_json_equal(value, item) for item in wanted)
    if op == "regex":
        return isinstance(value, str) and wanted.search(value) is not None
    if not _is_number(value):
        return False
    comparisons = {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted}
    return bool(comparisons.get(op, value <= wanted))


def _match_field(condition: FieldCondition, event: Event) -> Outcome:
    value = lookup(event, condition.path)
    wanted = condition.value
    shown = f"/{wanted.pattern}/" if condition.op == "regex" else repr(wanted)
    if condition.op == "exists":
        exists = value is not _MISSING
        return Outcome(exists == wanted, f"{condition.path} {'exists' if exists else 'is absent'}")
    if value is _MISSING:
        return Outcome(False, f"{condition.path} is absent (wanted {condition.op} {shown})")
    ok = _compare_field(condition.op, value, wanted)
    verb = "holds" if ok else "does not hold"
    return Outcome(ok, f"{condition.path} = {value!r}: {condition.op} {shown} {verb}")


def evaluate(condition: Condition, event: Event) -> Outcome:
    """Evaluate a condition tree against an event, with the reason it held or not."""
    if isinstance(condition, GlobCondition):
        return _match_glob(condition, event)
    if isinstance(condition, MessageCondition):
        return _match_message(condition, event)
    if isinstance(condition, FieldCondition):
        return _match_field(condition, event)
    if isinstance(condition, AllCondition):
        return _match_all(condition.conditions, event)
    if isinstance(condition, AnyCondition):
        return _match_any(condition.conditions, event)
    inner = evaluate(condition.condition, event)
    return Outcome(not inner.matched, f"not ({inner.reason})")


def _match_all(conditions: Sequence[Condition], event: Event) -> Outcome:
    if not conditions:
        return Outcome(True, "no conditions: matches every event")
    reasons = []
    for condition in conditions:
        outcome = evaluate(condition, event)
        if not outcome.matched:
            return outcome
        reasons.append(outcome.reason)
    return Outcome(True, "; ".join(reasons))


def _match_any(conditions: Sequence[Condition], event: Event) -> Outcome:
    reasons = []
    for condition in conditions:
        outcome = evaluate(condition, event)
        if outcome.matched:
            return Outcome(True, f"any: {outcome.reason}")
        reasons.append(outcome.reason)
    return Outcome(False, "none of any: " + " | ".join(reasons))


def explain(rules: Sequence[Rule], event: Event) -> list[RuleVerdict]:
    """Return, for each rule in order, whether it matched and why."""
    verdicts = []
    stopped = False
    for rule in rules:
        outcome = evaluate(rule.when, event)
        verdicts.append(RuleVerdict(rule, outcome, skipped=stopped))
        if outcome.matched and rule.stop and not stopped:
            stopped = True
    return verdicts


def route(rules: Sequence[Rule], event: Event) -> list[Dispatch]:
    """Return each destination the event goes to, once, with the first rule that named it."""
    dispatches: dict[str, Dispatch] = {}
    for rule in rules:
        if not evaluate(rule.when, event).matched:
            continue
        for destination in rule.send_to:
            dispatches.setdefault(destination, Dispatch(destination, rule.name, rule.template))
        if rule.stop:
            break
    return list(dispatches.values())
