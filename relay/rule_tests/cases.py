"""Read a `relay test` file as strictly as relay.yaml: every problem, as file:line: key.path.

The file goes through relay.yaml's readers, so it reads the same way: unknown keys are
errors (with a did-you-mean), `${VAR}` is replaced from the environment (`$${` is a
literal `${`), and names of destinations, rules and templates must be the config's.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import yaml

from relay.config.errors import ConfigError
from relay.config.loader import compose, read_text
from relay.config.model import Config
from relay.config.yamlnodes import (
    Context,
    Invalid,
    Reader,
    Section,
    did_you_mean,
    is_null,
    items,
    list_of,
    nonempty_string,
    scalar,
    string,
)
from relay.events import Event, EventError, parse_event

_CASE_KEYS = ("name", "event", "event_file", "expect")
_EXPECT_KEYS = ("destinations", "notifications")
# What a notification says, as summarize() gives it: exact, or a case-sensitive substring.
TEXT_KEYS = ("title", "text", "title_contains", "text_contains")
_NOTIFICATION_KEYS = ("rule", "template", *TEXT_KEYS)


@dataclass(frozen=True)
class ExpectedNotification:
    """What the notification to one destination must hold; unset keys are not checked."""

    destination: str
    rule: str | None = None
    template: str | None = None
    template_checked: bool = False  # with template None: `template: null`, none may apply
    texts: tuple[tuple[str, str], ...] = ()  # (one of TEXT_KEYS, expected value)


@dataclass(frozen=True)
class Case:
    """One test: an event, and exactly the destinations it must reach."""

    name: str
    event: Event
    destinations: frozenset[str]
    notifications: Mapping[str, ExpectedNotification] = field(default_factory=dict)


def load_cases(path: str, config: Config) -> list[Case]:
    """Load and check a test file against a config; raise ConfigError listing every problem."""
    ctx = Context(path, os.environ)
    root = compose(ctx, read_text(path))
    cases: list[Case] = []
    if root is None and not ctx.issues:  # an empty file
        ctx.error(None, "", 'missing required key "tests"')
    elif root is not None:
        cases = _CaseReader(config, os.path.dirname(path)).file(ctx, root)
    if ctx.issues:
        raise ConfigError(sorted(ctx.issues, key=lambda issue: issue.line))
    return cases


def json_object(ctx: Context, node: yaml.Node, path: str) -> dict[str, object]:
    """Read a YAML mapping as the JSON object it spells; any other value is an issue."""
    section = Section(ctx, node, path, None)
    values: dict[str, object] = {}
    for key, value_node, key_path in section.entries():
        with contextlib.suppress(Invalid):
            values[key] = json_value(ctx, value_node, key_path)
    section.done()
    return values


def json_value(ctx: Context, node: yaml.Node, path: str) -> object:
    """Read a mapping, a list, a string, a number, a boolean or null as JSON would hold it."""
    if isinstance(node, yaml.MappingNode):
        return json_object(ctx, node, path)
    if isinstance(node, yaml.SequenceNode):
        return list(_JSON_LIST(ctx, node, path))
    return scalar(ctx, node, path)  # a date, or a !!binary, is an issue on its line


_JSON_LIST = list_of(json_value)


def _declared(kind: str, declared: Collection[str]) -> Reader[str]:
    """Return a reader for the name of something the config declares."""

    def read(ctx: Context, node: yaml.Node, path: str) -> str:
        name = nonempty_string(ctx, node, path)
        if name not in declared:
            hint = did_you_mean(name, declared) if declared else f" (no {kind}s are defined)"
            ctx.fail(node, path, f'unknown {kind} "{name}"{hint}')
        return name

    return read


class _CaseReader:
    """Readers that know the config (its names) and where the test file is (event_file)."""

    def __init__(self, config: Config, base_dir: str) -> None:
        self._base_dir = base_dir
        self._destination = _declared("destination", config.destinations)
        self._rule = _declared("rule", config.rules_by_name)
        self._template = _declared("template", config.templates)
        self._destinations = list_of(self._destination)
        self._names: dict[str, str] = {}  # test name -> the path of the case that has it
        # One receive time for the file: what an event without a timestamp is stamped with.
        self._received_at = time.time()

    def file(self, ctx: Context, root: yaml.Node) -> list[Case]:
        """Read the whole file: a mapping with one key, `tests`."""
        try:
            top = Section(ctx, root, "", ("tests",))
        except Invalid:
            return []
        return top.require("tests", self.cases) or []

    def cases(self, ctx: Context, node: yaml.Node, path: str) -> list[Case]:
        """Read the list of cases; a bad case is reported and the next ones still read."""
        cases: list[Case] = []
        for item, item_path in items(ctx, node, path, nonempty=True):
            with contextlib.suppress(Invalid):
                cases.append(self.case(ctx, item, item_path))
        return cases

    def case(self, ctx: Context, node: yaml.Node, path: str) -> Case:
        """Read one case: name, event or event_file, expect."""
        section = Section(ctx, node, path, _CASE_KEYS)
        name = section.require("name", nonempty_string)
        if name is not None:
            if name in self._names:
                section.error(f'duplicate test name "{name}" (also {self._names[name]})', "name")
            self._names.setdefault(name, path)
        event = self._event(section)
        expect = section.require("expect", self.expect)
        section.done()
        if name is None or event is None or expect is None:
            raise Invalid  # reported already, or under a misspelt key
        return Case(name, event, *expect)

    def _event(self, section: Section) -> Event | None:
        if "event" in section and "event_file" in section:
            section.error("give event or event_file, not both", "event_file")
            return None
        if section.mentions("event_file"):
            return section.opt("event_file", self.event_file)
        if not section.mentions("event"):
            section.error('missing required key "event" (or "event_file")')
        return section.opt("event", self.event)

    def event(self, ctx: Context, node: yaml.Node, path: str) -> Event:
        """Read an inline event: a body of either bitHuman family, written as YAML."""
        payload = json_object(ctx, node, path)
        return self._parse(ctx, node, path, json.dumps(payload).encode(), "")

    def event_file(self, ctx: Context, node: yaml.Node, path: str) -> Event:
        """Read an event from a JSON file, relative to the test file's folder."""
        name = nonempty_string(ctx, node, path)
        try:
            with open(os.path.join(self._base_dir, name), "rb") as file:
                body = file.read()
        except OSError as exc:
            ctx.fail(node, path, f"cannot read {name}: {exc.strerror}")
        return self._parse(ctx, node, path, body, f"{name}: ")

    def _parse(self, ctx: Context, node: yaml.Node, path: str, body: bytes, prefix: str) -> Event:
        # The parser `relay route` uses, so a bad event gets the words ingest would give it.
        try:
            return parse_event(body, event_id=None, received_at=self._received_at)
        except EventError as exc:
            ctx.fail(node, path, f"{prefix}{exc}")

    def expect(
        self, ctx: Context, node: yaml.Node, path: str
    ) -> tuple[frozenset[str], dict[str, ExpectedNotification]]:
        """Read `expect`: the destinations, and what some of their notifications hold."""
        section = Section(ctx, node, path, _EXPECT_KEYS)
        listed = section.require("destinations", self._destinations)
        destinations = None if listed is None else frozenset(listed)

        def notifications(ctx: Context, node: yaml.Node, path: str) -> list[ExpectedNotification]:
            return self._notifications(ctx, node, path, destinations)

        found: list[ExpectedNotification] = section.get("notifications", notifications, [])
        section.done()
        if destinations is None:
            raise Invalid  # under a misspelt key: reported there
        return destinations, {expected.destination: expected for expected in found}

    def _notifications(
        self, ctx: Context, node: yaml.Node, path: str, reached: frozenset[str] | None
    ) -> list[ExpectedNotification]:
        section = Section(ctx, node, path, None)
        found: list[ExpectedNotification] = []
        for name, value_node, entry_path in section.entries():
            # A notification can only be checked where the event goes. (When the list
            # itself is bad, it was reported: no second error here.)
            if reached is not None and name not in reached:
                listed = ", ".join(sorted(reached))
                hint = did_you_mean(name, reached)
                ctx.error(value_node, entry_path, f"not in expect.destinations [{listed}]{hint}")
                continue
            with contextlib.suppress(Invalid):
                found.append(self.notification(ctx, value_node, entry_path, name))
        section.done()
        return found

    def notification(
        self, ctx: Context, node: yaml.Node, path: str, destination: str
    ) -> ExpectedNotification:
        """Read what one destination's notification must hold."""
        section = Section(ctx, node, path, _NOTIFICATION_KEYS)
        rule = section.opt("rule", self._rule)
        template_node = section.value_node("template")
        # `template: null` (or `~`) checks that no template applies: the default layout.
        # Only YAML's null: the string "none" could be a template's name.
        template = None
        if template_node is not None and not is_null(template_node):
            template = section.opt("template", self._template)
        texts = [(key, section.opt(key, string)) for key in TEXT_KEYS]
        if not any(section.mentions(key) for key in _NOTIFICATION_KEYS):
            section.error(f"needs at least one of {', '.join(_NOTIFICATION_KEYS)}")
        section.done()
        return ExpectedNotification(
            destination,
            rule=rule,
            template=template,
            template_checked=template_node is not None,
            texts=tuple((key, text) for key, text in texts if text is not None),
        )
