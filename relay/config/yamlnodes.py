"""Walk a composed YAML node tree: typed reads, ${VAR} substitution, issues with lines.

Readers take (context, node, path) and return a typed value, or record an issue and
raise Invalid so the caller can carry on with the next key and report every problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml

from relay.config.errors import ConfigIssue
from relay.durations import parse_duration
from relay.secrets import Secret

T = TypeVar("T")

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"

# `$${` is a literal `${`; any other `${` that is not a well-formed reference is an
# error rather than text, so a typo cannot silently ship `${SLACK_URL` as a URL.
_REFERENCE = re.compile(
    r"(?P<escaped>\$\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<fallback>:-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{)"
)


class Invalid(Exception):
    """A value was rejected; its issue is already recorded in the Context."""


@dataclass
class Context:
    """What a load needs everywhere: the file name, the environment, the issues so far."""

    source: str
    env: Mapping[str, str]
    issues: list[ConfigIssue] = field(default_factory=list)

    def error(self, node: yaml.Node | None, path: str, message: str, offset: int = 0) -> None:
        """Record an issue on a node's line (plus `offset` lines into the node)."""
        line = node.start_mark.line + 1 + offset if node is not None else 0
        self.issues.append(ConfigIssue(self.source, line, path, message))

    def fail(self, node: yaml.Node, path: str, message: str) -> NoReturn:
        """Record an issue and stop reading this value."""
        self.error(node, path, message)
        raise Invalid


Reader = Callable[[Context, yaml.Node, str], T]


def join(path: str, key: str) -> str:
    """Extend a key path: `server` + `port` is `server.port`."""
    return f"{path}.{key}" if path else key


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """Return ` (did you mean "x"?)` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def is_null(node: yaml.Node) -> bool:
    """Tell whether a node is an empty value (`key:` with nothing after it, or `~`)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def describe(value: object) -> str:
    """Name a value's YAML type for an error message, never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_TAG_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def _describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if is_null(node):
        return "null"
    return _TAG_NAMES.get(node.tag.rpartition(":")[2], "a single value")


# Environment substitution -----------------------------------------------------------------


def _substitute(ctx: Context, node: yaml.ScalarNode, path: str) -> str:
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "${"
        if match["bad"]:
            problems.append("bad environment reference: write ${NAME} or ${NAME:-default}")
            return ""
        value = ctx.env.get(match["name"])
        if match["fallback"] is not None and not value:  # like the shell: unset or empty
            return match["default"]
        if value is None:
            problems.append(f"environment variable {match['name']} is not set")
            return ""
        return value

    text = _REFERENCE.sub(replace, node.value)
    for problem in problems:
        ctx.error(node, path, problem)
    if problems:
        raise Invalid
    return text


def _construct(node: yaml.ScalarNode) -> object:
    return yaml.constructor.SafeConstructor().construct_object(node)


def _value(ctx: Context, node: yaml.Node, path: str, expected: str, *, retype: bool) -> object:
    """Return a scalar's Python value, with ${VAR} substituted in strings.

    With `retype`, a substituted string is typed again the way YAML would type it, so
    `port: "${PORT:-8080}"` is the integer 8080. Substitution happens after parsing, so
    an environment value can never change the structure of the file.
    """
    if not isinstance(node, yaml.ScalarNode):
        ctx.fail(node, path, f"expected {expected}, got {_describe_node(node)}")
    try:
        if node.tag != _STR_TAG:
            return _construct(node)
        text = _substitute(ctx, node, path)
        if not retype or _REFERENCE.search(node.value) is None:
            return text
        tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return _construct(yaml.ScalarNode(tag, text))
    except yaml.YAMLError:
        # Never the tag's text: `password: !s3cret` makes the password a tag.
        ctx.fail(
            node,
            path,
            f"expected {expected}, got a value with a YAML tag"
            " (quote the value if it starts with '!')",
        )
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        # A standard tag on a value it cannot type (`!!int sekrit`): PyYAML's own error
        # would quote the value, which may be a secret.
        ctx.fail(node, path, f"expected {expected}, got a value its YAML tag cannot read")


def _typed(ctx: Context, node: yaml.Node, path: str, kind: type[T], expected: str) -> T:
    value = _value(ctx, node, path, expected, retype=kind is not str)
    # bool is an int in Python, but `port: true` is a mistake, not port 1.
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    ctx.fail(node, path, f"expected {expected}, got {describe(value)}")


# Scalar readers ---------------------------------------------------------------------------


def string(ctx: Context, node: yaml.Node, path: str) -> str:
    """Read a string."""
    return _typed(ctx, node, path, str, "a string")


def nonempty_string(ctx: Context, node: yaml.Node, path: str) -> str:
    """Read a string that must not be empty."""
    value = string(ctx, node, path)
    if not value.strip():
        ctx.fail(node, path, "must not be empty")
    return value


def boolean(ctx: Context, node: yaml.Node, path: str) -> bool:
    """Read true or false."""
    return _typed(ctx, node, path, bool, "true or false")


def integer(ctx: Context, node: yaml.Node, path: str) -> int:
    """Read an integer."""
    return _typed(ctx, node, path, int, "an integer")


def number(ctx: Context, node: yaml.Node, path: str) -> int | float:
    """Read an integer or a decimal number (not a boolean)."""
    value = _value(ctx, node, path, "a number", retype=True)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    ctx.fail(node, path, f"expected a number, got {describe(value)}")


def scalar(ctx: Context, node: yaml.Node, path: str) -> object:
    """Read any single value: a string, a number, a boolean or null."""
    value = _value(ctx, node, path, "a single value", retype=True)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    ctx.fail(node, path, f"expected a string, number, boolean or null, got {describe(value)}")


def duration(ctx: Context, node: yaml.Node, path: str) -> float:
    """Read a duration (`500ms`, `30s`, `5m`, `24h`, or seconds) as seconds."""
    value = _value(ctx, node, path, "a duration", retype=True)
    try:
        return parse_duration(value)
    except ValueError as exc:
        ctx.fail(node, path, str(exc))


def duration_where(holds: Callable[[float], bool], rule: str) -> Reader[float]:
    """Return a reader for a duration that must satisfy `holds`; `rule` is the error
    ("must be at least 1s"). Checked as the value is read, so `relay check` reports it
    with every other problem of its section."""

    def read(ctx: Context, node: yaml.Node, path: str) -> float:
        value = duration(ctx, node, path)
        if not holds(value):
            ctx.fail(node, path, rule)
        return value

    return read


def secret(ctx: Context, node: yaml.Node, path: str) -> Secret:
    """Read a non-empty string and wrap it so it never shows in errors or logs."""
    value = string(ctx, node, path)
    if not value:
        # Nearly always `"${VAR}"` with VAR set to the empty string.
        ctx.fail(node, path, "must not be empty (is its environment variable empty?)")
    if value.isspace():  # a console password of spaces would guard nothing
        ctx.fail(node, path, "must not be only whitespace (value not shown)")
    return Secret(value)


def http_url(ctx: Context, node: yaml.Node, path: str) -> str:
    """Read an http(s) URL that is not secret (it may appear in the error)."""
    value = string(ctx, node, path)
    if not _is_http_url(value):
        ctx.fail(node, path, f'expected an http(s) URL, got "{value}"')
    return value


def secret_http_url(ctx: Context, node: yaml.Node, path: str) -> Secret:
    """Read a secret http(s) URL; the error never shows it (a webhook URL is a credential)."""
    value = secret(ctx, node, path)
    if not _is_http_url(value.reveal()):
        ctx.fail(node, path, "expected an http(s) URL (value not shown: it is a secret)")
    return value


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- a port out of range raises only when read
    except ValueError:
        return False
    printable = value.isprintable() and not any(ch.isspace() for ch in value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and printable


def int_range(low: int, high: int | None = None) -> Reader[int]:
    """Return a reader for an integer from low to high inclusive (no limit when None)."""

    def read(ctx: Context, node: yaml.Node, path: str) -> int:
        value = integer(ctx, node, path)
        if high is None and value < low:
            ctx.fail(node, path, f"must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            ctx.fail(node, path, f"must be from {low} to {high}, got {value}")
        return value

    return read


def one_of(choices: tuple[str, ...]) -> Reader[str]:
    """Return a reader for a string that must be one of `choices`."""

    def read(ctx: Context, node: yaml.Node, path: str) -> str:
        value = string(ctx, node, path)
        if value not in choices:
            listed = ", ".join(choices)
            ctx.fail(
                node, path, f'expected one of {listed}, got "{value}"{did_you_mean(value, choices)}'
            )
        return value

    return read


# Lists and mappings -----------------------------------------------------------------------


def items(
    ctx: Context, node: yaml.Node, path: str, *, single: bool = False, nonempty: bool = False
) -> list[tuple[yaml.Node, str]]:
    """Return a list's item nodes with their paths; with `single`, a bare value is one item."""
    if single and isinstance(node, yaml.ScalarNode) and not is_null(node):
        return [(node, path)]
    if not isinstance(node, yaml.SequenceNode):
        ctx.fail(node, path, f"expected a list, got {_describe_node(node)}")
    if nonempty and not node.value:
        ctx.fail(node, path, "must not be empty")
    return [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]


def list_of(
    reader: Reader[T], *, single: bool = False, nonempty: bool = False
) -> Reader[tuple[T, ...]]:
    """Return a reader for a list whose items each go through `reader`, all checked."""

    def read(ctx: Context, node: yaml.Node, path: str) -> tuple[T, ...]:
        values: list[T] = []
        failed = False
        for item, item_path in items(ctx, node, path, single=single, nonempty=nonempty):
            try:
                values.append(reader(ctx, item, item_path))
            except Invalid:
                failed = True
        if failed:
            raise Invalid
        return tuple(values)

    return read


class Section:
    """A YAML mapping with known keys: rejects unknown and duplicate keys, reads values."""

    def __init__(
        self, ctx: Context, node: yaml.Node, path: str, keys: Collection[str] | None
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path
        self._mark = len(ctx.issues)
        self._entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        # Keys suggested for misspelled ones: `key_fiel` already says "did you mean
        # key_file", so a second "missing required key key_file" would only be noise.
        self._suggested: set[str] = set()
        if is_null(node):  # `server:` with nothing under it is an empty section
            return
        if not isinstance(node, yaml.MappingNode):
            ctx.fail(node, path, f"expected a mapping, got {_describe_node(node)}")
        for key_node, value_node in node.value:
            self._add(key_node, value_node, keys)

    def _add(
        self, key_node: yaml.Node, value_node: yaml.Node, keys: Collection[str] | None
    ) -> None:
        if not isinstance(key_node, yaml.ScalarNode):
            self.ctx.error(key_node, self.path, "keys must be plain strings")
            return
        key = str(key_node.value)
        if key in self._entries:
            first = self._entries[key][0].start_mark.line + 1
            self.ctx.error(key_node, self.path, f'duplicate key "{key}" (first on line {first})')
        elif keys is not None and key not in keys:
            self._suggested.update(difflib.get_close_matches(key, list(keys), n=1))
            self.ctx.error(key_node, self.path, f'unknown key "{key}"{did_you_mean(key, keys)}')
        else:
            self._entries[key] = (key_node, value_node)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def mentions(self, key: str) -> bool:
        """Tell whether a key is present or was suggested for a misspelled key."""
        return key in self._entries or key in self._suggested

    @property
    def failed(self) -> bool:
        """Tell whether any issue was recorded since this section was opened."""
        return len(self.ctx.issues) > self._mark

    def entries(self) -> Iterator[tuple[str, yaml.Node, str]]:
        """Yield (key, value node, key path) in file order."""
        for key, (_, value_node) in self._entries.items():
            yield key, value_node, join(self.path, key)

    def value_node(self, key: str) -> yaml.Node | None:
        """Return the value node of a key, or None when the key is absent."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def opt(self, key: str, reader: Reader[T]) -> T | None:
        """Read a key's value; None when it is absent or invalid (the issue is recorded)."""
        node = self.value_node(key)
        if node is None:
            return None
        try:
            return reader(self.ctx, node, join(self.path, key))
        except Invalid:
            return None

    def get(self, key: str, reader: Reader[T], default: T) -> T:
        """Read a key's value, or `default` when it is absent or invalid."""
        value = self.opt(key, reader)
        return default if value is None else value

    def require(self, key: str, reader: Reader[T]) -> T | None:
        """Read a key that must be present; None (with an issue recorded) otherwise."""
        if key not in self._entries:
            if key not in self._suggested:
                self.error(f'missing required key "{key}"')
            return None
        return self.opt(key, reader)

    def error(self, message: str, key: str | None = None) -> None:
        """Record an issue on a key's value, or on the mapping itself."""
        node = self.value_node(key) if key is not None else None
        if node is None or key is None:
            self.ctx.error(self.node, self.path, message)
        else:
            self.ctx.error(node, join(self.path, key), message)

    def done(self) -> None:
        """Raise Invalid when anything in this section was rejected."""
        if self.failed:
            raise Invalid
