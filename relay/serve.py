"""`relay serve`: run the HTTP server and the delivery workers until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl

from aiohttp import web

from relay.app import STATE, create_app, reload
from relay.config import ConfigError, load
from relay.config.model import Config, GlobCondition
from relay.console import create_console_app
from relay.console.sample import local_webhook_url
from relay.conversations.watch import is_signal
from relay.listener import Listener
from relay.workers import WorkerRole, tell_ready

log = logging.getLogger("relay.serve")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


UNAUTHENTICATED_WARNING = (
    "verify.headers and verify.secrets are both empty: session events are NOT "
    "authenticated and anyone who can reach relay can post them. Set verify.headers to the "
    "header the bitHuman dashboard sends (Developer > Webhooks), or verify.secrets."
)


def signals_never_raised(config: Config) -> list[str]:
    """Say which rules wait for a conversation signal that relay will not raise, because
    `conversations` is not set (SPEC 4.4): a rule that can never match is a mistake."""
    if config.conversations is not None:
        return []
    found = []
    for rule in config.rules:
        for condition in rule.when.conditions:
            if not isinstance(condition, GlobCondition) or condition.key != "event":
                continue
            named = sorted({p for p in condition.patterns if is_signal(p)})
            if named and all(is_signal(p) for p in condition.patterns):
                found.append(
                    f"rule {rule.name} matches {', '.join(named)}, which relay raises only"
                    " when the conversations section is set: add `conversations:` to turn"
                    " them on"
                )
    return found


def config_warnings(config: Config) -> list[str]:
    """What relay check and relay serve warn about in a valid config."""
    return signals_never_raised(config)


def warn_about(config: Config) -> None:
    """Log what a careful operator would want to hear about at start."""
    if not config.verify.authenticates_sessions:
        log.warning(UNAUTHENTICATED_WARNING)
    for warning in config_warnings(config):
        log.warning(warning)


# Settings bound when relay starts: the listener's, and the store. Every other one, in
# `server` too (max_body_bytes, the body's read_timeout, drain_grace, shutdown_timeout),
# is read where it is used, so a reload applies it at once.
_BOUND_AT_START = (
    ("server", "host"),
    ("server", "port"),
    ("server", "path"),
    ("server", "tls"),
    ("server", "max_connections"),
    ("server", "read_timeout_s"),  # for connections; a body's wait takes the new one
    ("server", "workers"),
    ("store", "url"),
    ("store", "retention_s"),
    # The console's listener (its credentials are read per request: a reload changes
    # them at once). Adding or removing `console` applies on restart too.
    ("console", "host"),
    ("console", "port"),
)
# Where relay.yaml spells a setting otherwise than `section.name`.
_KEY_NAMES = {("console", "host"): "console.listen", ("console", "port"): "console.listen"}


def _bound(config: Config, section: str, name: str) -> object:
    part = getattr(config, section)
    return None if part is None else getattr(part, name)  # an optional section unset


def changes_needing_a_restart(running: Config, config: Config) -> list[str]:
    """Return the keys, as relay.yaml names them, that differ and apply only on restart."""
    keys = [
        _KEY_NAMES.get((section, name), f"{section}.{name.removesuffix('_s')}")
        for section, name in _BOUND_AT_START
        if _bound(running, section, name) != _bound(config, section, name)
    ]
    return list(dict.fromkeys(keys))  # each once, in order


def _reload(app: web.Application, path: str) -> None:
    try:
        config = load(path)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("reload rejected, keeping the running config: %s", issue)
        return
    bound = changes_needing_a_restart(app[STATE].config, config)
    if bound:
        log.warning("%s change only on restart; the rest is reloaded", ", ".join(bound))
    reload(app, config)
    warn_about(config)
    log.info(
        "reloaded %s: %d rules, %d destinations", path, len(config.rules), len(config.destinations)
    )


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    Everything loaded at start (config, templates, libraries) lives as long as the
    process: frozen, the collector stops walking it. A higher first threshold makes the
    young-generation passes, which every request's short-lived objects trigger, rarer.
    Measured with bench/run.py: about a fifth less CPU per request.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def serve(path: str, config: Config, role: WorkerRole | None = None) -> None:
    """Serve until SIGTERM or SIGINT; then drain, finish in-flight sends, and return.

    A worker of several (relay/workers.py) shares the port with the others, serves the
    console only if it is the first, and tells its supervisor when it listens.
    """
    app = create_app(config)
    server = config.server
    # A connection idle for read_timeout, its request headers unfinished, is closed: the
    # keep-alive timer starts when the connection opens and after each answer.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=server.read_timeout_s
    )
    await runner.setup()
    # Before the listener starts: from its first connection on, SIGTERM must drain rather
    # than end relay with requests under way, and SIGHUP reload rather than end it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, app, path)
    listener = Listener(
        runner,
        server.host,
        server.port,
        max_connections=server.max_connections,
        handshake_timeout_s=server.read_timeout_s,
        ssl_context=_ssl_context(config),
        reuse_port=role is not None,
    )
    try:
        addresses = await listener.start()
    except BaseException:
        await runner.cleanup()  # the store and worker started with the app: stop them
        raise
    scheme = "https" if server.tls else "http"
    for address in addresses:
        host, port = address[:2]
        log.info("listening on %s://%s:%d%s", scheme, host, port, server.path)
    try:
        # The port the webhook listener took (port 0 picks one): the Test button posts there.
        console = None
        if role is None or role.serves_console:
            console = await _start_console(app, config, addresses[0][1])
    except BaseException:
        await listener.close()
        await runner.cleanup()
        raise
    if role is None or role.serves_console:  # the others would say it again
        warn_about(config)
    _tune_gc()

    if role is not None:  # only now: a signal the supervisor passes on must find a handler
        tell_ready(role)
    await stop.wait()

    # bitHuman sends a session event once: until the listener closes, events are still
    # accepted and stored (for the next process, or another replica, to send). Only
    # /readyz changes at once, so a load balancer sends new events elsewhere.
    log.info("shutting down: /readyz answers 503, events are still accepted and stored")
    state = app[STATE]
    state.draining = True
    # Behind a load balancer: until its health check sees the 503, it still sends here.
    await asyncio.sleep(state.config.server.drain_grace_s)
    if state.worker is not None:
        await state.worker.stop(state.config.server.shutdown_timeout_s)
    await listener.close()
    if console is not None:
        await console.cleanup()  # before the store closes: its pages read the store
    await runner.cleanup()  # answers the requests in progress, then closes their connections
    log.info("stopped")


# How long a console page in progress at shutdown may take to finish.
CONSOLE_SHUTDOWN_TIMEOUT_S = 5.0


async def _start_console(
    app: web.Application, config: Config, webhook_port: int
) -> web.AppRunner | None:
    """Start the console (SPEC 8), when configured, on a listener of its own sharing the
    webhook app's state; return its runner, for the shutdown."""
    console = config.console
    if console is None:
        return None
    runner = web.AppRunner(
        create_console_app(app[STATE], webhook_url=local_webhook_url(config, webhook_port)),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=CONSOLE_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, console.host, console.port, reuse_address=True).start()
    except BaseException as exc:
        await runner.cleanup()
        if isinstance(exc, OSError):  # say it is the console's address, not the webhook's
            raise OSError(exc.errno, f"console.listen: {exc.strerror or exc}") from exc
        raise
    for address in runner.addresses:
        host, port = address[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("console listening on http://%s:%d/", shown, port)
    return runner
