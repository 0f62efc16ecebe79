"""Read the `destinations` section: one small reader per destination type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from email.utils import parseaddr
from typing import Literal, cast

import yaml

from relay.config.model import (
    ConsoleDestination,
    Destination,
    DiscordDestination,
    EmailDestination,
    SlackDestination,
    SmtpConfig,
    TeamsDestination,
)
from relay.config.postgres import read_postgres
from relay.config.webhook import read_webhook
from relay.config.yamlnodes import (
    Context,
    Invalid,
    Section,
    boolean,
    did_you_mean,
    duration,
    http_url,
    int_range,
    join,
    list_of,
    nonempty_string,
    number,
    one_of,
    secret,
    secret_http_url,
    string,
)

_SMTP_TLS = ("starttls", "tls", "none")


def read_destinations(ctx: Context, node: yaml.Node, path: str) -> dict[str, Destination]:
    """Read `destinations`: a mapping of name to destination; every entry is checked."""
    section = Section(ctx, node, path, None)
    destinations: dict[str, Destination] = {}
    for name, value_node, entry_path in section.entries():
        with contextlib.suppress(Invalid):
            destinations[name] = _destination(ctx, name, value_node, entry_path)
    section.done()
    return destinations


def _destination(ctx: Context, name: str, node: yaml.Node, path: str) -> Destination:
    type_node = _type_node(node)
    if type_node is None:
        ctx.fail(node, path, f'missing required key "type" (one of {", ".join(_TYPES)})')
    kind = string(ctx, type_node, join(path, "type"))
    if kind not in _TYPES:
        ctx.fail(
            type_node,
            join(path, "type"),
            f'unknown destination type "{kind}"{did_you_mean(kind, _TYPES)}',
        )
    keys, build = _TYPES[kind]
    section = Section(ctx, node, path, ("type", *keys))
    destination = build(section, name)
    section.done()
    return destination


def _type_node(node: yaml.Node) -> yaml.Node | None:
    """Find `type` before the rest: it decides which other keys are allowed."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "type":
            return cast(yaml.Node, value_node)
    return None


def email_address(ctx: Context, node: yaml.Node, path: str) -> str:
    """Read an address, bare (`a@example.com`) or with a name (`A <a@example.com>`)."""
    value = nonempty_string(ctx, node, path)
    _, address = parseaddr(value)
    if "@" not in address:
        ctx.fail(node, path, f'expected an email address, got "{value}"')
    return value


# One builder per type ---------------------------------------------------------------------


def _console(section: Section, name: str) -> Destination:
    return ConsoleDestination(name)


def _slack(section: Section, name: str) -> Destination:
    webhook_url = section.opt("webhook_url", secret_http_url)
    token = section.opt("token", secret)
    channel = section.opt("channel", nonempty_string)
    api_url = section.get("api_url", http_url, "https://slack.com/api/")
    max_per_second = section.get("max_per_second", _positive_number, 1.0)
    if section.mentions("webhook_url") == section.mentions("token"):
        section.error("set exactly one of webhook_url or token")
    elif "token" in section and not section.mentions("channel"):
        section.error('missing required key "channel" (a token posts to a named channel)')
    elif "channel" in section and "token" not in section:
        section.error(
            "channel is only used with token: a webhook posts to its own channel", "channel"
        )
    # slack_sdk joins base URL and method name directly, so the slash must be there.
    api_url = api_url if api_url.endswith("/") else api_url + "/"
    return SlackDestination(
        name,
        webhook_url=webhook_url,
        token=token,
        channel=channel,
        api_url=api_url,
        max_per_second=max_per_second,
    )


def _positive_number(ctx: Context, node: yaml.Node, path: str) -> float:
    value = number(ctx, node, path)
    if value <= 0:
        ctx.fail(node, path, f"must be greater than 0, got {value}")
    return float(value)


def _discord(section: Section, name: str) -> Destination:
    webhook_url = section.require("webhook_url", secret_http_url)
    forum = section.get("forum", boolean, False)
    if webhook_url is None:
        raise Invalid
    return DiscordDestination(name, webhook_url=webhook_url, forum=forum)


def _email(section: Section, name: str) -> Destination:
    smtp = section.require("smtp", _smtp)
    from_addr = section.require("from", email_address)
    to = section.require("to", list_of(email_address, single=True, nonempty=True))
    if smtp is None or from_addr is None or to is None:
        raise Invalid
    return EmailDestination(name, smtp=smtp, from_addr=from_addr, to=to)


def _smtp(ctx: Context, node: yaml.Node, path: str) -> SmtpConfig:
    section = Section(ctx, node, path, ("host", "port", "tls", "username", "password", "timeout"))
    host = section.require("host", nonempty_string)
    tls = cast(
        Literal["starttls", "tls", "none"], section.get("tls", one_of(_SMTP_TLS), "starttls")
    )
    username = section.opt("username", nonempty_string)
    password = section.opt("password", secret)
    config = SmtpConfig(
        host=host or "",
        port=section.get("port", int_range(1, 65535), 465 if tls == "tls" else 587),
        tls=tls,
        username=username,
        password=password,
        timeout_s=section.get("timeout", duration, 30.0),
    )
    _check_login(section, tls)
    section.done()
    return config


def _check_login(section: Section, tls: str) -> None:
    if ("username" in section) != ("password" in section):
        section.error("set both username and password, or neither")
    elif "username" in section and tls == "none":
        section.error(
            "a login needs tls: starttls or tls (tls: none would send the password in clear)", "tls"
        )


def _teams(section: Section, name: str) -> Destination:
    webhook_url = section.require("webhook_url", secret_http_url)
    if webhook_url is None:
        raise Invalid
    return TeamsDestination(name, webhook_url=webhook_url)


_TYPES: dict[str, tuple[tuple[str, ...], Callable[[Section, str], Destination]]] = {
    "console": ((), _console),
    "slack": (("webhook_url", "token", "channel", "api_url", "max_per_second"), _slack),
    "discord": (("webhook_url", "forum"), _discord),
    "email": (("smtp", "from", "to"), _email),
    "webhook": (("url", "secret", "headers", "body"), read_webhook),
    "teams": (("webhook_url",), _teams),
    "postgres": (("dsn", "table", "columns"), read_postgres),
}
