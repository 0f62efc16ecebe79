"""Rule matching: which rules an event matches, which destinations it goes to, and why.

Two ways to evaluate the same conditions: `Router` compiles them once into plain
predicates for the ingest path, and `explain` walks them again to say why, for
`relay route`. Both are built from the same per-condition checks below. `Router` tries
only the rules that relay.rule_index finds an event could match, which gives what trying
every rule in order gives (`Router.route_linearly`, the reference its tests compare with).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from relay.rule_index import RuleIndex, literal_prefix

Predicate = Callable[[Event], bool]
# (description, check): a check gets the message and the message folded for comparison
# (casefolded, unless the condition is case-sensitive), folded once for all the checks.
TextCheck = tuple[str, Callable[[str, str], bool]]


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
    digest_s: float | None = None  # the deciding rule's digest window


@dataclass(frozen=True)
class Routing:
    """Where an event goes, and the rules it matched, in rule order."""

    dispatches: list[Dispatch]
    matched: tuple[str, ...]


@dataclass(frozen=True)
class RuleVerdict:
    rule: Rule
    outcome: Outcome
    skipped: bool  # an earlier matching rule had `stop: true`


MISSING = object()

_GLOB_VALUES: dict[str, Callable[[Event], str | None]] = {
    "event": lambda event: event.kind,
    "agent": lambda event: event.agent_id,
    "role": lambda event: event.role,
    "room": lambda event: event.room,
    "session": lambda event: event.session,
}


def _glob_regex(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _fold(condition: MessageCondition) -> Callable[[str], str]:
    return (lambda s: s) if condition.case_sensitive else str.casefold


def _message_checks(condition: MessageCondition) -> list[TextCheck]:
    """Return each test of a `message` condition as (description, check)."""
    fold = _fold(condition)
    checks: list[TextCheck] = []
    if condition.contains is not None:
        word = fold(condition.contains)
        checks.append((f"contains {condition.contains!r}", lambda _, f: word in f))
    if condition.contains_any is not None:
        words = [fold(w) for w in condition.contains_any]
        shown = list(condition.contains_any)
        checks.append((f"contains any of {shown!r}", lambda _, f: any(w in f for w in words)))
    if condition.contains_all is not None:
        every = [fold(w) for w in condition.contains_all]
        shown = list(condition.contains_all)
        checks.append((f"contains all of {shown!r}", lambda _, f: all(w in f for w in every)))
    if condition.regex is not None:
        pattern = condition.regex
        checks.append((f"matches /{pattern.pattern}/", lambda m, _: pattern.search(m) is not None))
    if condition.equals is not None:
        equal = fold(condition.equals)
        checks.append((f"equals {condition.equals!r}", lambda _, f: f == equal))
    return checks


def lookup(event: Event, path: str) -> Any:
    """Return the value at a dotted path into the event (`data.session_id`), or MISSING."""
    first, _, rest = path.partition(".")
    if first == "timestamp":  # filled in with the receive time when the payload has none
        value: Any = event.timestamp
    elif first == "event_id":
        value = event.event_id
    elif first in ("agent_id", "event_type"):  # an account webhook's body has neither
        value = event.agent_id if first == "agent_id" else event.event_type
    elif first in event.payload:
        value = event.payload[first]
    else:
        return MISSING
    for part in rest.split(".") if rest else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    # JSON's true is not 1, although Python's True == 1.
    return isinstance(left, bool) == isinstance(right, bool) and bool(left == right)


def _field_holds(condition: FieldCondition, value: Any) -> bool:
    op, wanted = condition.op, condition.value
    if op == "exists":
        return (value is not MISSING) is bool(wanted)
    if value is MISSING:
        return False
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


# The fast path -------------------------------------------------------------------------


def compile_condition(condition: Condition) -> Predicate:
    """Compile a condition into a predicate: no reasons, nothing rebuilt per event."""
    if isinstance(condition, GlobCondition):
        value_of = _GLOB_VALUES[condition.key]
        if all(literal_prefix(p) == p for p in condition.patterns):
            # No wildcard: a set lookup, and no regex to compile (a rule per agent: one each).
            values = frozenset(condition.patterns)
            return lambda event: value_of(event) in values
        regex = _glob_regex(condition.patterns)
        return lambda event: (value := value_of(event)) is not None and bool(regex.match(value))
    if isinstance(condition, MessageCondition):
        fold, checks = _fold(condition), [check for _, check in _message_checks(condition)]

        def message_holds(event: Event) -> bool:
            message = event.message
            if message is None:
                return False
            folded = fold(message)
            return all(check(message, folded) for check in checks)

        return message_holds
    if isinstance(condition, FieldCondition):
        return lambda event: _field_holds(condition, lookup(event, condition.path))
    if isinstance(condition, AllCondition):
        return _all_of([compile_condition(c) for c in condition.conditions])
    if isinstance(condition, AnyCondition):
        return _any_of([compile_condition(c) for c in condition.conditions])
    inner = compile_condition(condition.condition)
    return lambda event: not inner(event)


def _all_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def every(event: Event) -> bool:
        for part in parts:  # noqa: SIM110 (a loop: a generator costs more than the checks)
            if not part(event):
                return False
        return True

    return every


def _any_of(parts: list[Predicate]) -> Predicate:
    def some(event: Event) -> bool:
        for part in parts:  # noqa: SIM110 (as above)
            if part(event):
                return True
        return False

    return some


CompiledRule = tuple[Rule, Predicate]


class Router:
    """The rules of one config, compiled and indexed for the ingest path."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules: list[CompiledRule] = [(rule, compile_condition(rule.when)) for rule in rules]
        self._index = RuleIndex([rule.when for rule in rules])

    def route(self, event: Event) -> list[Dispatch]:
        """Return each destination the event goes to, once, with the first rule naming it."""
        return self.routing(event).dispatches

    def routing(self, event: Event) -> Routing:
        """Return where the event goes and every rule it matched (a rule whose
        destinations earlier rules took still matched: the console counts it)."""
        # Only the rules the event could match, in rule order: the others would fail a
        # mandatory test, so they could neither add a destination nor stop the walk.
        candidates = self._index.candidates(event.kind, event.agent_id)
        return _routing(event, map(self._rules.__getitem__, candidates))

    def route_linearly(self, event: Event) -> Routing:
        """Route as routing() does, trying every rule in order: the reference it must equal."""
        return _routing(event, self._rules)


def _routing(event: Event, rules: Iterable[CompiledRule]) -> Routing:
    """Walk rules in order: each match adds the destinations not yet named; `stop` ends it."""
    dispatches: dict[str, Dispatch] = {}
    matched: list[str] = []
    for rule, matches in rules:
        if not matches(event):
            continue
        matched.append(rule.name)
        for destination in rule.send_to:
            if destination not in dispatches:
                dispatches[destination] = Dispatch(
                    destination, rule.name, rule.template, rule.digest_s
                )
        if rule.stop:
            break
    return Routing(list(dispatches.values()), tuple(matched))


def route(rules: Sequence[Rule], event: Event) -> list[Dispatch]:
    """Route one event through rules compiled for the occasion (dry runs, tests)."""
    return Router(rules).route(event)


# The explaining path ---------------------------------------------------------------------


def _explain_glob(condition: GlobCondition, event: Event) -> Outcome:
    value = _GLOB_VALUES[condition.key](event)
    wanted = " or ".join(condition.patterns)
    if value is None:
        return Outcome(False, f"{condition.key}: event has none (wanted {wanted})")
    for pattern in condition.patterns:
        if _glob_regex([pattern]).match(value):
            return Outcome(True, f"{condition.key} {value!r} matches {pattern!r}")
    return Outcome(False, f"{condition.key} {value!r} does not match {wanted}")


def _explain_message(condition: MessageCondition, event: Event) -> Outcome:
    message = event.message
    if message is None:
        return Outcome(False, "message: event has no data.message")
    checks, folded = _message_checks(condition), _fold(condition)(message)
    failed = [reason for reason, check in checks if not check(message, folded)]
    if failed:
        return Outcome(False, "message does not " + ", ".join(failed))
    return Outcome(True, "message " + ", ".join(reason for reason, _ in checks))


def _explain_field(condition: FieldCondition, event: Event) -> Outcome:
    value = lookup(event, condition.path)
    held = _field_holds(condition, value)
    if condition.op == "exists":
        return Outcome(held, f"{condition.path} {'is absent' if value is MISSING else 'exists'}")
    wanted = condition.value
    shown = f"/{wanted.pattern}/" if condition.op == "regex" else repr(wanted)
    if value is MISSING:
        return Outcome(False, f"{condition.path} is absent (wanted {condition.op} {shown})")
    verb = "holds" if held else "does not hold"
    return Outcome(held, f"{condition.path} = {value!r}: {condition.op} {shown} {verb}")


def evaluate(condition: Condition, event: Event) -> Outcome:
    """Evaluate a condition tree against an event, with the reason it held or not."""
    if isinstance(condition, GlobCondition):
        return _explain_glob(condition, event)
    if isinstance(condition, MessageCondition):
        return _explain_message(condition, event)
    if isinstance(condition, FieldCondition):
        return _explain_field(condition, event)
    if isinstance(condition, AllCondition):
        return _explain_all(condition.conditions, event)
    if isinstance(condition, AnyCondition):
        return _explain_any(condition.conditions, event)
    inner = evaluate(condition.condition, event)
    return Outcome(not inner.matched, f"not ({inner.reason})")


def _explain_all(conditions: Sequence[Condition], event: Event) -> Outcome:
    if not conditions:
        return Outcome(True, "no conditions: matches every event")
    reasons = []
    for condition in conditions:
        outcome = evaluate(condition, event)
        if not outcome.matched:
            return outcome
        reasons.append(outcome.reason)
    return Outcome(True, "; ".join(reasons))


def _explain_any(conditions: Sequence[Condition], event: Event) -> Outcome:
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
