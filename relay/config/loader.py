"""Load relay.yaml: parse, substitute ${VAR}, check everything, report every problem at once."""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

import yaml

from relay.config.conditions import read_when
from relay.config.destinations import read_destinations
from relay.config.errors import ConfigError, ConfigIssue
from relay.config.model import (
    AllCondition,
    Config,
    ConversationsConfig,
    Destination,
    Rule,
    Template,
)
from relay.config.sections import (
    read_console,
    read_conversations,
    read_delivery,
    read_server,
    read_store,
    read_verify,
)
from relay.config.template_reader import template
from relay.config.yamlnodes import (
    Context,
    Invalid,
    Section,
    boolean,
    did_you_mean,
    duration,
    is_null,
    items,
    nonempty_string,
    one_of,
)
from relay.durations import format_duration

_SECTIONS = (
    "server", "verify", "store", "delivery", "destinations", "rules", "templates",
    "conversations", "console",
)  # fmt: skip
_RULE_KEYS = ("name", "when", "send_to", "template", "stop", "thread", "broadcast", "digest")


def load(path: str) -> Config:
    """Load and check a config file; raise ConfigError listing every problem."""
    return load_text(read_text(path), path)


def read_text(path: str) -> str:
    """Read a YAML file as text; raise ConfigError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, 0, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        message = f"cannot read: not UTF-8 text (byte {exc.start})"
        raise ConfigError([ConfigIssue(path, 0, "", message)]) from None


def load_text(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Load and check config text; `source` names it in errors; env defaults to os.environ."""
    ctx = Context(source, os.environ if env is None else env)
    with _collector_paused():
        config = _read(ctx, text)
    if ctx.issues:
        raise ConfigError(sorted(ctx.issues, key=lambda issue: issue.line))
    return config


# libyaml composes a large file about ten times faster than PyYAML's Python parser (10,000
# rules: 0.2 s against 2 s), which would otherwise be most of a load. PyYAML ships it in its
# wheels; without it, the Python parser does the same work.
_FAST_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _read(ctx: Context, text: str) -> Config:
    # The node tree is freed on return, before the collector is back: it never walks it.
    root = compose(ctx, text)
    if root is None or is_null(root):  # nothing, or `---` alone, `~`, `null`
        if not ctx.issues:
            # Nearly always a file caught empty (truncated while written, or before it
            # was): taken as it is, a reload would turn verification and every rule off.
            message = "the file holds no settings (is it empty?)"
            ctx.issues.append(ConfigIssue(ctx.source, 0, "", message))
        return Config(ctx.source)
    return _config(ctx, root)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a config is read.

    A load makes objects that all live until it ends (the node tree, the rules), so each
    full collection meanwhile walks the whole growing heap and frees nothing: with 10,000
    rules, seven of them were two thirds of the load. What cyclic garbage the load makes
    (a template's compilation) or other threads make meanwhile waits for the first
    collection after it.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:  # a caller that had it off keeps it off
            gc.enable()


def compose(ctx: Context, text: str) -> yaml.Node | None:
    """Parse YAML text into nodes; a syntax error is recorded, without quoting its line."""
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            # libyaml's messages name less ("did not find expected key"): read the file
            # again with the Python parser, whose message says what it found, and where.
            pass
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem, never the snippet PyYAML quotes: that line may hold a secret.
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 0
        problem = _yaml_problem(exc.context or "", exc.problem or "")
        ctx.issues.append(ConfigIssue(ctx.source, line, "", f"invalid YAML: {problem}"))
    except yaml.YAMLError as exc:
        ctx.issues.append(
            ConfigIssue(ctx.source, 0, "", f"invalid YAML: {_yaml_problem('', str(exc))}")
        )
    return None


# PyYAML names the alias, anchor or tag handle it stumbled on: the text of a value that
# starts with * & or !, as a password may (`password: *s3cret` is an alias).
_NAMED_PROBLEMS = (
    ("found undefined alias", "an undefined alias (a value starting with '*'; quote it)"),
    ("found duplicate anchor", "a duplicate anchor (a value starting with '&'; quote it)"),
    ("found undefined tag handle", "an undefined tag handle (a value starting with '!'; quote it)"),
    ("duplicate tag handle", "a duplicate tag handle in a %TAG directive"),
)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# What else PyYAML quotes: one character (found '@'), escaped ('\t'), or a token's name.
_SAFE_QUOTE = re.compile(
    r"[\s\S]|\\(?:[\\'\"abfnrtv0]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})|<[a-z ]+>"
)


def _yaml_problem(context: str, problem: str) -> str:
    """PyYAML's problem, without any text of the file longer than a character."""
    for start, said in _NAMED_PROBLEMS:
        if context.startswith(start) or problem.startswith(start):
            return said

    def shown(quoted: re.Match[str]) -> str:
        return quoted[0] if _SAFE_QUOTE.fullmatch(quoted[0][1:-1]) else "(text not shown)"

    return _QUOTED.sub(shown, problem)


def _config(ctx: Context, root: yaml.Node) -> Config:
    try:
        top = Section(ctx, root, "", _SECTIONS)
    except Invalid:
        return Config(ctx.source)
    defaults = Config(ctx.source)
    destinations: dict[str, Destination] = top.get("destinations", read_destinations, {})
    templates: dict[str, Template] = top.get("templates", _templates, {})
    drafts: list[_RuleDraft] = top.get("rules", _rules, [])
    # Names, not parsed values: a destination with an error is still declared, and a
    # rule naming it should not get a second, misleading "unknown destination".
    _check_references(ctx, drafts, _declared(top, "destinations"), _declared(top, "templates"))
    _check_threads(ctx, drafts, destinations)
    _check_digests(ctx, drafts, destinations)
    store = top.get("store", read_store, defaults.store)
    conversations = top.opt("conversations", read_conversations)
    if conversations is not None:
        _check_retention(ctx, top, store.retention_s, conversations)
    server = top.get("server", read_server, defaults.server)
    console = top.opt("console", read_console)
    if console is not None and console.port != 0 and console.port == server.port:
        listen = top.value_node("console")
        assert listen is not None
        ctx.error(
            listen,
            "console.listen",
            f"the console needs a port of its own, not the webhook port {server.port}",
        )
    return Config(
        source=ctx.source,
        server=server,
        verify=top.get("verify", read_verify, defaults.verify),
        store=store,
        delivery=top.get("delivery", read_delivery, defaults.delivery),
        destinations=destinations,
        rules=tuple(draft.rule for draft in drafts),
        templates=templates,
        conversations=conversations,
        console=console,
    )


def _check_retention(
    ctx: Context, top: Section, retention_s: float, conversations: ConversationsConfig
) -> None:
    """A watch is forgotten after store.retention without an event: a deadline further
    out than that would be forgotten with it, and its signal never raised."""
    if retention_s <= 0:
        return
    longest = max(conversations.unanswered_after_s, conversations.ended_after_s)
    if longest > retention_s:
        node = top.value_node("conversations")
        assert node is not None
        ctx.error(
            node,
            "conversations",
            f"a window of {format_duration(longest)} is longer than store.retention"
            f" ({format_duration(retention_s)}): a conversation's watch would be forgotten"
            " before its signal is due",
        )


def _declared(top: Section, key: str) -> set[str]:
    # A set: every rule's every reference is looked up in it, and a list made that
    # rules x destinations (an agency with a destination per customer: 10,000 x 10,000).
    node = top.value_node(key)
    if not isinstance(node, yaml.MappingNode):
        return set()
    return {str(k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


# Templates --------------------------------------------------------------------------------


def _templates(ctx: Context, node: yaml.Node, path: str) -> dict[str, Template]:
    section = Section(ctx, node, path, None)
    templates: dict[str, Template] = {}
    for name, value_node, entry_path in section.entries():
        entry = Section(ctx, value_node, entry_path, ("title", "text"))
        title = entry.opt("title", template)
        text = entry.opt("text", template)
        if not entry.mentions("title") and not entry.mentions("text"):
            entry.error("needs a title or a text")
        if not entry.failed:
            templates[name] = Template(name, title, text)
    section.done()
    return templates


# Rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    """A name in a rule that must match a declared destination or template."""

    name: str
    node: yaml.Node
    path: str


@dataclass(frozen=True)
class _RuleDraft:
    """A parsed rule with the nodes of its references, checked once the file is read."""

    rule: Rule
    name_node: yaml.Node
    send_to: tuple[_Reference, ...]
    template: _Reference | None
    thread_node: yaml.Node | None
    digest_node: yaml.Node | None
    path: str


def _rules(ctx: Context, node: yaml.Node, path: str) -> list[_RuleDraft]:
    if is_null(node):
        return []
    drafts: list[_RuleDraft] = []
    names: dict[str, str] = {}
    for index, (item, item_path) in enumerate(items(ctx, node, path)):
        try:
            draft = _rule(ctx, item, item_path, index)
        except Invalid:
            continue
        name = draft.rule.name
        if name in names:
            message = f'duplicate rule name "{name}" (also {names[name]})'
            ctx.error(draft.name_node, f"{item_path}.name", message)
        names.setdefault(name, item_path)
        drafts.append(draft)
    return drafts


def _rule(ctx: Context, node: yaml.Node, path: str, index: int) -> _RuleDraft:
    section = Section(ctx, node, path, _RULE_KEYS)
    name = section.get("name", nonempty_string, f"rules[{index}]")
    when = section.get("when", read_when, AllCondition(()))
    send_to = _references(section, "send_to", single=True)
    template = _references(section, "template")
    stop = section.get("stop", boolean, False)
    thread = section.opt("thread", one_of(("session",)))
    broadcast = section.get("broadcast", boolean, False)
    digest_s = section.opt("digest", _window)
    if broadcast and not section.mentions("thread"):
        section.error(
            "broadcast shows a thread's reply in the channel: it needs thread: session", "broadcast"
        )
    if not section.mentions("send_to"):
        section.error('missing required key "send_to"')
    # No section.done(): a rule with a bad `when` still gets its names checked, so one
    # run reports everything; the half-read rule is never used, as the load fails.
    rule = Rule(
        name=name,
        when=when,
        send_to=tuple(ref.name for ref in send_to),
        template=template[0].name if template else None,
        stop=stop,
        thread="session" if thread else None,
        broadcast=broadcast,
        digest_s=digest_s,
    )
    name_node = section.value_node("name") or node
    template_ref = template[0] if template else None
    thread_node = section.value_node("thread")
    digest_node = section.value_node("digest")
    return _RuleDraft(rule, name_node, send_to, template_ref, thread_node, digest_node, path)


def _window(ctx: Context, node: yaml.Node, path: str) -> float:
    """Read a digest window: a duration longer than 0 and at most a day."""
    window_s = duration(ctx, node, path)
    if not 0 < window_s <= 86400:
        ctx.fail(
            node, path, f"a digest window must be longer than 0 and at most 24h, got {window_s:g}s"
        )
    return window_s


def _references(section: Section, key: str, *, single: bool = False) -> tuple[_Reference, ...]:
    """Read one name (`template`) or a list of names (`send_to`) with their nodes."""
    node = section.value_node(key)
    if node is None:
        return ()
    path = f"{section.path}.{key}"
    ctx = section.ctx
    try:
        if not single:
            return (_Reference(nonempty_string(ctx, node, path), node, path),)
        found = items(ctx, node, path, single=True, nonempty=True)
    except Invalid:
        return ()
    refs = []
    for item, item_path in found:
        with contextlib.suppress(Invalid):
            refs.append(_Reference(nonempty_string(ctx, item, item_path), item, item_path))
    return tuple(refs)


def _check_references(
    ctx: Context,
    drafts: list[_RuleDraft],
    destinations: Collection[str],
    templates: Collection[str],
) -> None:
    hints = _Hints()
    for draft in drafts:
        for ref in draft.send_to:
            _check_reference(ctx, ref, "destination", destinations, hints)
        if draft.template is not None:
            _check_reference(ctx, draft.template, "template", templates, hints)


def _check_threads(
    ctx: Context, drafts: list[_RuleDraft], destinations: Mapping[str, Destination]
) -> None:
    """`thread` only on destinations that can thread: at load, never at delivery time."""
    for draft in drafts:
        if draft.rule.thread is None or draft.thread_node is None:
            continue
        path = f"{draft.path}.thread"
        for ref in draft.send_to:
            problem = _thread_problem(destinations.get(ref.name))
            if problem is not None:
                ctx.error(draft.thread_node, path, f'destination "{ref.name}" {problem}')


def _check_digests(
    ctx: Context, drafts: list[_RuleDraft], destinations: Mapping[str, Destination]
) -> None:
    """A digest is a transcript; a database row is one event (SPEC 4.3): no digests there."""
    for draft in drafts:
        if draft.rule.digest_s is None or draft.digest_node is None:
            continue
        for ref in draft.send_to:
            destination = destinations.get(ref.name)
            if destination is not None and destination.type == "postgres":
                ctx.error(
                    draft.digest_node,
                    f"{draft.path}.digest",
                    f'destination "{ref.name}" is a postgres destination, which logs each event'
                    " as its own row: it cannot take a digest",
                )


def _thread_problem(destination: Destination | None) -> str | None:
    if destination is None or destination.type in ("email", "console"):
        return None  # an unknown destination is reported once, by _check_references
    if destination.type in ("webhook", "teams", "postgres"):
        return f"is a {destination.type} destination, which has no threads"
    if destination.type == "slack":
        if destination.webhook_url is None:
            return None
        return (
            "is a Slack incoming webhook, which cannot learn a message's ts to reply to:"
            " threads need a bot token (token and channel)"
        )
    if destination.type == "discord" and not destination.forum:
        return (
            "is not a forum channel: a Discord webhook threads only in a forum"
            " (set forum: true on a forum channel's webhook)"
        )
    return None


def _check_reference(
    ctx: Context, ref: _Reference, kind: str, declared: Collection[str], hints: _Hints
) -> None:
    if ref.name in declared:
        return
    hint = hints.hint(ref.name, kind, declared) if declared else f" (no {kind}s are defined)"
    ctx.error(ref.node, ref.path, f'unknown {kind} "{ref.name}"{hint}')


# How many declared names one load may compare unknown references with, in all. Each
# comparison is a difflib ratio (about 15 µs), and a hint for every unknown reference cost
# references x declared names: 1,000 rules, each naming a misspelled one of 1,000
# destinations, took 16 s, 5,000 took 8 minutes. Within it, a config of a few dozen
# destinations still gets a hint for a thousand different unknown names.
HINT_BUDGET = 50_000


class _Hints:
    """The "did you mean" of each unknown name of a load: looked up once per name (a
    destination renamed, and every rule still naming it), within HINT_BUDGET comparisons."""

    def __init__(self) -> None:
        self._left = HINT_BUDGET
        self._found: dict[tuple[str, str], str] = {}

    def hint(self, name: str, kind: str, declared: Collection[str]) -> str:
        key = (kind, name)
        if key not in self._found:
            if self._left < len(declared):
                return ""  # past the budget: the error still names the unknown name
            self._left -= len(declared)
            self._found[key] = did_you_mean(name, declared)
        return self._found[key]
