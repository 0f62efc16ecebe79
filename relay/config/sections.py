"""Read the plain sections of relay.yaml: server, verify, store and delivery."""

from __future__ import annotations

import ipaddress
import urllib.parse

import yaml

from relay.config.model import (
    AccountVerifyConfig,
    BackoffConfig,
    ConsoleConfig,
    ConversationsConfig,
    DeliveryConfig,
    IPNetwork,
    ServerConfig,
    StoreConfig,
    TlsConfig,
    VerifyConfig,
)
from relay.config.yamlnodes import (
    Context,
    Invalid,
    Section,
    duration,
    duration_where,
    int_range,
    is_null,
    list_of,
    nonempty_string,
    secret,
    string,
)
from relay.durations import format_duration
from relay.secrets import Secret

_SERVER_KEYS = (
    "host",
    "port",
    "path",
    "max_body_bytes",
    "tls",
    "shutdown_timeout",
    "drain_grace",
    "read_timeout",
    "max_connections",
    "workers",
)
# More worker processes than this would be more than any machine relay runs on has cores.
MAX_WORKERS = 64
_VERIFY_KEYS = (
    "secrets",
    "signature_header",
    "headers",
    "allow_ips",
    "trusted_proxies",
    "max_age",
    "account",
)


def read_server(ctx: Context, node: yaml.Node, path: str) -> ServerConfig:
    """Read `server`."""
    section = Section(ctx, node, path, _SERVER_KEYS)
    defaults = ServerConfig()
    server = ServerConfig(
        host=section.get("host", nonempty_string, defaults.host),
        # 0 asks the OS for any free port, which tests rely on.
        port=section.get("port", int_range(0, 65535), defaults.port),
        path=section.get("path", _url_path, defaults.path),
        max_body_bytes=section.get("max_body_bytes", int_range(1), defaults.max_body_bytes),
        tls=section.opt("tls", _tls),
        shutdown_timeout_s=section.get("shutdown_timeout", duration, defaults.shutdown_timeout_s),
        drain_grace_s=section.get("drain_grace", duration, defaults.drain_grace_s),
        # 0 would close every connection that is not already sending its headers.
        read_timeout_s=section.get(
            "read_timeout",
            duration_where(lambda s: s > 0, "must be longer than 0"),
            defaults.read_timeout_s,
        ),
        max_connections=section.get(
            "max_connections", int_range(1, 1_000_000), defaults.max_connections
        ),
        workers=section.get("workers", int_range(1, MAX_WORKERS), defaults.workers),
    )
    workers_node = section.value_node("workers")
    if server.workers > 1 and server.port == 0 and workers_node is not None:
        # Each worker binds the port itself (SO_REUSEPORT): with port 0 each would get a
        # port of its own, and a sender would reach only one of them.
        ctx.error(
            workers_node,
            f"{path}.workers",
            f"{server.workers} workers share server.port, which must then be set: 0 would"
            " give each worker a port of its own",
        )
    section.done()
    return server


def _url_path(ctx: Context, node: yaml.Node, path: str) -> str:
    value = string(ctx, node, path)
    if not value.startswith("/"):
        ctx.fail(node, path, f'must start with "/", got "{value}"')
    return value


def _tls(ctx: Context, node: yaml.Node, path: str) -> TlsConfig:
    section = Section(ctx, node, path, ("cert_file", "key_file"))
    cert_file = section.require("cert_file", nonempty_string)
    key_file = section.require("key_file", nonempty_string)
    if cert_file is None or key_file is None:
        raise Invalid
    return TlsConfig(cert_file=cert_file, key_file=key_file)


def read_verify(ctx: Context, node: yaml.Node, path: str) -> VerifyConfig:
    """Read `verify`."""
    section = Section(ctx, node, path, _VERIFY_KEYS)
    defaults = VerifyConfig()
    return VerifyConfig(
        secrets=section.get("secrets", list_of(secret), defaults.secrets),
        signature_header=section.get(
            "signature_header", nonempty_string, defaults.signature_header
        ),
        headers=section.get("headers", secret_headers, defaults.headers),
        allow_ips=section.opt("allow_ips", list_of(network, nonempty=True)),
        trusted_proxies=section.get("trusted_proxies", list_of(network), defaults.trusted_proxies),
        max_age_s=section.get("max_age", duration, defaults.max_age_s),
        account=section.get("account", _account, defaults.account),
    )


def _account(ctx: Context, node: yaml.Node, path: str) -> AccountVerifyConfig:
    section = Section(ctx, node, path, ("secrets", "max_age"))
    defaults = AccountVerifyConfig()
    # Unlike verify.max_age, there is no "off": the timestamp is all that stops a captured
    # account webhook from being replayed.
    replay_window = duration_where(
        lambda s: s > 0, "must be longer than 0 (it is the replay window; default 5m)"
    )
    account = AccountVerifyConfig(
        secrets=section.get("secrets", list_of(secret), defaults.secrets),
        max_age_s=section.get("max_age", replay_window, defaults.max_age_s),
    )
    section.done()
    return account


def secret_headers(ctx: Context, node: yaml.Node, path: str) -> dict[str, Secret]:
    """Read a mapping of header name to value; the values are secrets."""
    section = Section(ctx, node, path, None)
    headers = {name: section.opt(name, secret) for name, _, _ in section.entries()}
    section.done()
    return {name: value for name, value in headers.items() if value is not None}


def network(ctx: Context, node: yaml.Node, path: str) -> IPNetwork:
    """Read a CIDR (`10.0.0.0/8`) or a plain address (`10.1.2.3`, a one-address network)."""
    value = string(ctx, node, path)
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        ctx.fail(node, path, f'expected an IP address or CIDR like 10.0.0.0/8, got "{value}"')


def read_store(ctx: Context, node: yaml.Node, path: str) -> StoreConfig:
    """Read `store`."""
    section = Section(ctx, node, path, ("url", "retention"))
    defaults = StoreConfig()
    return StoreConfig(
        url=section.get("url", _store_url, defaults.url),
        retention_s=section.get("retention", duration, defaults.retention_s),
    )


def _store_url(ctx: Context, node: yaml.Node, path: str) -> str:
    value = string(ctx, node, path)
    if value.startswith("sqlite:") and value.removeprefix("sqlite:").strip():
        return value
    if value.startswith(("redis://", "rediss://")):
        _check_redis_url(ctx, node, path, value)
        return value
    if value.startswith("sqlite:"):
        ctx.fail(node, path, 'sqlite url needs a path, e.g. "sqlite:relay-data/relay.db"')
    # Only the scheme is echoed: the URL may carry a password (`postgres://user:pass@host`).
    shown = value.partition(":")[0] + ":…" if ":" in value else value
    ctx.fail(
        node, path, f'unsupported store url "{shown}": expected sqlite:PATH, redis:// or rediss://'
    )


def _check_redis_url(ctx: Context, node: yaml.Node, path: str, value: str) -> None:
    """Check a redis:// URL without ever echoing it: it often carries a password."""
    userinfo = value.partition("://")[2].rpartition("@")[0]
    if any(delimiter in userinfo for delimiter in "/?#"):
        # The URL would end its host there, and read the rest of the password as its
        # path or query: the database, which this check names, and the store's logs show.
        ctx.fail(
            node,
            path,
            "the Redis URL's password holds a raw '/', '?' or '#':"
            " percent-encode it (%2F, %3F, %23; value not shown)",
        )
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        ctx.fail(
            node, path, "the Redis URL does not parse (value not shown: it may hold a password)"
        )
    if not parts.hostname:
        ctx.fail(node, path, "the Redis URL names no host, e.g. redis://redis:6379/0")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        ctx.fail(node, path, f'the Redis database must be a number, got "{database}"')


def read_delivery(ctx: Context, node: yaml.Node, path: str) -> DeliveryConfig:
    """Read `delivery`."""
    keys = ("max_attempts", "backoff", "dedupe_window", "timeout", "concurrency", "lease")
    section = Section(ctx, node, path, keys)
    defaults = DeliveryConfig()
    delivery = DeliveryConfig(
        max_attempts=section.get("max_attempts", int_range(1), defaults.max_attempts),
        backoff=section.get("backoff", _backoff, defaults.backoff),
        dedupe_window_s=section.get("dedupe_window", duration, defaults.dedupe_window_s),
        timeout_s=section.get("timeout", duration, defaults.timeout_s),
        concurrency=section.get("concurrency", int_range(1, 256), defaults.concurrency),
        # Renewed three times a lease: shorter would spend the store's time on renewals.
        lease_s=section.get(
            "lease", duration_where(lambda s: s >= 1.0, "must be at least 1s"), defaults.lease_s
        ),
    )
    section.done()
    return delivery


def _backoff(ctx: Context, node: yaml.Node, path: str) -> BackoffConfig:
    section = Section(ctx, node, path, ("first", "max"))
    defaults = BackoffConfig()
    backoff = BackoffConfig(
        first_s=section.get("first", duration, defaults.first_s),
        max_s=section.get("max", duration, defaults.max_s),
    )
    if not section.failed and backoff.first_s > backoff.max_s:
        section.error("first must not be longer than max")
    section.done()
    return backoff


def read_conversations(ctx: Context, node: yaml.Node, path: str) -> ConversationsConfig:
    """Read `conversations` (SPEC 4.4). An empty section turns signals on with defaults."""
    defaults = ConversationsConfig()
    if is_null(node):
        return defaults
    section = Section(ctx, node, path, ("unanswered_after", "ended_after"))
    conversations = ConversationsConfig(
        unanswered_after_s=section.get(
            "unanswered_after", _signal_window, defaults.unanswered_after_s
        ),
        ended_after_s=section.get("ended_after", _signal_window, defaults.ended_after_s),
    )
    section.done()
    return conversations


# A signal due further out than this is a typo (`2d` for `2m`), and would keep every
# conversation's watch for that long.
_MAX_SIGNAL_WINDOW_S = 7 * 86400.0


def _signal_window(ctx: Context, node: yaml.Node, path: str) -> float:
    value = duration(ctx, node, path)
    if value > _MAX_SIGNAL_WINDOW_S:
        ctx.fail(node, path, f"must be at most 7d (0 turns it off), got {format_duration(value)}")
    if 0 < value < 1:
        ctx.fail(node, path, f"must be at least 1s (0 turns it off), got {value:g}s")
    return value


def read_console(ctx: Context, node: yaml.Node, path: str) -> ConsoleConfig:
    """Read `console` (SPEC 8): its listener, its credentials and its history."""
    section = Section(ctx, node, path, ("listen", "username", "password", "history"))
    defaults = ConsoleConfig(password=Secret(""))
    host, port = section.get("listen", _listen, (defaults.host, defaults.port))
    password = section.require("password", secret)
    console = ConsoleConfig(
        password=password or defaults.password,
        host=host,
        port=port,
        username=section.get("username", _username, defaults.username),
        history_s=section.get(
            "history",
            duration_where(lambda s: 3600 <= s <= 400 * 86400, "must be between 1h and 400d"),
            defaults.history_s,
        ),
    )
    section.done()
    if password is None:
        raise Invalid
    return console


def _listen(ctx: Context, node: yaml.Node, path: str) -> tuple[str, int]:
    """Read `HOST:PORT` (`[::1]:8081` for IPv6); port 0 asks the OS for a free one."""
    value = string(ctx, node, path).strip()
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        ctx.fail(node, path, f'expected HOST:PORT like 127.0.0.1:8081, got "{value}"')
    return host, int(port)


def _username(ctx: Context, node: yaml.Node, path: str) -> str:
    value = nonempty_string(ctx, node, path)
    if ":" in value:  # Basic auth joins username and password with the first colon
        ctx.fail(node, path, 'must not contain ":"')
    return value
