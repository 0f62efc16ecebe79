"""Read a rule's `when` mapping into the condition tree that relay.rules evaluates."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import cast

import yaml

from relay.config.model import (
    AllCondition,
    AnyCondition,
    Condition,
    FieldCondition,
    FieldOp,
    GlobCondition,
    GlobKey,
    MessageCondition,
    NotCondition,
)
from relay.config.yamlnodes import (
    Context,
    Invalid,
    Reader,
    Section,
    boolean,
    list_of,
    nonempty_string,
    number,
    scalar,
    string,
)
from relay.events import normalize_event_type

_GLOB_KEYS: tuple[GlobKey, ...] = ("event", "agent", "role", "room", "session")
_MESSAGE_TESTS = ("contains", "contains_any", "contains_all", "regex", "equals")
_FIELD_OPS: tuple[FieldOp, ...] = ("equals", "in", "regex", "exists", "gt", "gte", "lt", "lte")
_PATTERNS = list_of(string, single=True, nonempty=True)
_STRINGS = list_of(string, nonempty=True)


def read_when(ctx: Context, node: yaml.Node, path: str) -> AllCondition:
    """Read a `when` mapping (or an `any`/`all` item, or `not`): all its keys must hold."""
    section = Section(ctx, node, path, _READERS)
    conditions: list[Condition] = []
    for key, value_node, key_path in section.entries():
        with contextlib.suppress(Invalid):
            conditions.append(_READERS[key](ctx, value_node, key_path))
    section.done()
    return AllCondition(tuple(conditions))


def pattern(ctx: Context, node: yaml.Node, path: str) -> re.Pattern[str]:
    """Read a regular expression and compile it as written."""
    text = string(ctx, node, path)
    try:
        return re.compile(text)
    except re.error as exc:
        ctx.fail(node, path, f"invalid regular expression: {exc}")


def _glob(key: GlobKey) -> Reader[Condition]:
    def read(ctx: Context, node: yaml.Node, path: str) -> Condition:
        patterns = _PATTERNS(ctx, node, path)
        if key == "event":
            # The dashboard says `room_join`, payloads say `room.join`: match both alike.
            patterns = tuple(normalize_event_type(p) for p in patterns)
        return GlobCondition(key, patterns)

    return read


def _message(ctx: Context, node: yaml.Node, path: str) -> Condition:
    section = Section(ctx, node, path, (*_MESSAGE_TESTS, "case_sensitive"))
    condition = MessageCondition(
        contains=section.opt("contains", string),
        contains_any=section.opt("contains_any", _STRINGS),
        contains_all=section.opt("contains_all", _STRINGS),
        regex=section.opt("regex", pattern),
        equals=section.opt("equals", string),
        case_sensitive=section.get("case_sensitive", boolean, False),
    )
    if not any(section.mentions(test) for test in _MESSAGE_TESTS):
        section.error(f"needs at least one of {', '.join(_MESSAGE_TESTS)}")
    section.done()
    return condition


def _dotted_path(ctx: Context, node: yaml.Node, path: str) -> str:
    value = nonempty_string(ctx, node, path)
    if any(not part for part in value.split(".")):
        ctx.fail(node, path, f'expected a dotted path like "data.message", got "{value}"')
    return value


_FIELD_VALUES: dict[FieldOp, Reader[object]] = {
    "equals": scalar,
    "in": list_of(scalar, nonempty=True),
    "regex": pattern,
    "exists": boolean,
    "gt": number,
    "gte": number,
    "lt": number,
    "lte": number,
}


def _field(ctx: Context, node: yaml.Node, path: str) -> Condition:
    section = Section(ctx, node, path, ("path", *_FIELD_OPS))
    field_path = section.require("path", _dotted_path)
    ops = [op for op in _FIELD_OPS if section.mentions(op)]
    if len(ops) != 1:
        section.error(f"needs exactly one of {', '.join(_FIELD_OPS)}")
        raise Invalid
    value = section.opt(ops[0], _FIELD_VALUES[ops[0]])
    section.done()
    return FieldCondition(cast(str, field_path), ops[0], value)


_CONDITION_LIST = list_of(read_when, nonempty=True)


def _any(ctx: Context, node: yaml.Node, path: str) -> Condition:
    return AnyCondition(_CONDITION_LIST(ctx, node, path))


def _all(ctx: Context, node: yaml.Node, path: str) -> Condition:
    return AllCondition(_CONDITION_LIST(ctx, node, path))


def _not(ctx: Context, node: yaml.Node, path: str) -> Condition:
    return NotCondition(read_when(ctx, node, path))


_READERS: dict[str, Callable[[Context, yaml.Node, str], Condition]] = {
    **{key: _glob(key) for key in _GLOB_KEYS},
    "message": _message,
    "field": _field,
    "any": _any,
    "all": _all,
    "not": _not,
}
