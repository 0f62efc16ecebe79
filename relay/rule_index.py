"""Find the rules an event could match from its type and agent, without trying every rule.

A rule whose `when` requires an `agent` or an `event` test, at its top level or under
`all`, is filed under the values that test accepts: exact values as they are, globs by
their literal text before the first wildcard. Every other rule is filed as unkeyed. The
candidates for an event are the rules filed under its agent, under its type, under each
of their prefixes that has rules, and the unkeyed ones, in rule order. A rule that is not
a candidate cannot match: one of its mandatory tests fails. Whether a candidate matches
is for the caller to find out, by evaluating it in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from relay.config.model import AllCondition, GlobCondition, GlobKey

WILDCARDS = "*?["  # what fnmatch reads as anything but itself; `\` escapes nothing there


def literal_prefix(pattern: str) -> str:
    """Return the text every match of a glob starts with: the pattern up to its first
    wildcard (the whole pattern when it has none, and is an exact value)."""
    cuts = [at for at in map(pattern.find, WILDCARDS) if at >= 0]
    return pattern[: min(cuts)] if cuts else pattern


@dataclass(frozen=True)
class Keys:
    """What one mandatory test accepts: exact values, and the literal prefixes of globs."""

    exact: frozenset[str]
    prefixes: frozenset[str]


def mandatory_keys(when: AllCondition, key: GlobKey) -> Keys | None:
    """Return the values the event's `key` must have for `when` to hold, or None when no
    test of it is mandatory or one accepts anything (a glob that starts with a wildcard).

    Each mandatory test is necessary on its own, so any one of them is a correct key;
    the narrowest (fewest prefixes, then fewest values) makes the fewest candidates.
    """
    best: Keys | None = None
    for test in _mandatory_tests(when, key):
        keys = _keys(test.patterns)
        if keys is not None and (best is None or _width(keys) < _width(best)):
            best = keys
    return best


def _mandatory_tests(when: AllCondition, key: GlobKey) -> Iterator[GlobCondition]:
    """Yield the `key` tests that must all hold: at the top level or under `all`. Under
    `any` or `not` none must: the rule may match whatever such a test says."""
    for condition in when.conditions:
        if isinstance(condition, GlobCondition) and condition.key == key:
            yield condition
        elif isinstance(condition, AllCondition):
            yield from _mandatory_tests(condition, key)


def _keys(patterns: Sequence[str]) -> Keys | None:
    exact: set[str] = set()
    prefixes: set[str] = set()
    for pattern in patterns:
        prefix = literal_prefix(pattern)
        if prefix == pattern:
            exact.add(pattern)
        elif not prefix:
            return None  # `*…` or `?…`: any value may match
        else:
            prefixes.add(prefix)
    return Keys(frozenset(exact), frozenset(prefixes))


def _width(keys: Keys) -> tuple[int, int]:
    return len(keys.prefixes), len(keys.exact)


class _Table:
    """Rule positions filed by one key's exact values and by its globs' literal prefixes."""

    def __init__(self) -> None:
        self._exact: dict[str, list[int]] = {}
        self._prefixed: dict[str, list[int]] = {}
        self._lengths: list[int] = []  # of the prefixes that have rules, shortest first

    def file(self, keys: Keys, position: int) -> None:
        for value in keys.exact:
            self._exact.setdefault(value, []).append(position)
        for prefix in keys.prefixes:
            self._prefixed.setdefault(prefix, []).append(position)
            if len(prefix) not in self._lengths:  # a few lengths: a short list to search
                self._lengths = sorted([*self._lengths, len(prefix)])

    def lookup(self, value: str) -> Iterator[list[int]]:
        """Yield the positions filed under the value, and under each prefix of it."""
        found = self._exact.get(value)
        if found:
            yield found
        # One dict lookup per prefix length, however many prefixes: a few, as a rule.
        for length in self._lengths:
            if length > len(value):
                break
            found = self._prefixed.get(value[:length])
            if found:
                yield found


class RuleIndex:
    """The rules of a config by the agent and event type they require, for Router."""

    def __init__(self, conditions: Sequence[AllCondition]) -> None:
        """File each rule (its `when`, by its position in the config) under one key: its
        agent if that is required, else its event type, else as unkeyed. Agents first:
        a config has a few event types and may have an agent per customer."""
        self._agents = _Table()
        self._kinds = _Table()
        self._unkeyed: list[int] = []
        for position, when in enumerate(conditions):
            agents = mandatory_keys(when, "agent")
            kinds = mandatory_keys(when, "event") if agents is None else None
            if agents is not None:
                self._agents.file(agents, position)
            elif kinds is not None:
                self._kinds.file(kinds, position)
            else:
                self._unkeyed.append(position)

    def candidates(self, kind: str, agent: str) -> Sequence[int]:
        """Return the positions of the rules an event of this type (normalized, as
        Event.kind) and agent could match, in rule order. The caller only reads it."""
        found = [*self._agents.lookup(agent), *self._kinds.lookup(kind)]
        if self._unkeyed:
            found.append(self._unkeyed)
        if len(found) == 1:
            return found[0]  # already in rule order: positions were filed in order
        # A rule may be filed under both an agent and a prefix of it (`[A1, "A*"]`).
        return sorted(set(itertools.chain.from_iterable(found)))
