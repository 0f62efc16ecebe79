"""The command line: serve, check, route, sign, send-test, test, deliveries, replay."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from relay import __version__
from relay.config import ConfigError, load
from relay.config.model import Config
from relay.events import ACCOUNT_EVENT_TYPES, SESSION_EVENT_TYPES
from relay.logs import setup_logging

DEFAULT_CONFIG = "relay.yaml"


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("RELAY_CONFIG") or DEFAULT_CONFIG)


def _load_or_exit(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import ssl

    from relay import event_loop, workers
    from relay.serve import serve
    from relay.store import StoreUnavailable

    try:
        role = workers.worker_role()
        factory = event_loop.loop_factory()
    except ValueError as exc:
        print(f"relay serve: {exc}", file=sys.stderr)
        return 1
    setup_logging(args.log_format, args.log_level, worker=role.index if role else None)
    path = _config_path(args)
    config = _load_or_exit(path)
    if role is None and config.server.workers > 1:
        # The supervisor: each worker runs this command again, as a worker.
        argv = [sys.executable, "-m", "relay", "serve", "-c", path]
        argv += ["--log-format", args.log_format, "--log-level", args.log_level]
        return event_loop.run(workers.supervise(config.server.workers, argv), None)
    if role is not None:
        workers.become_worker(role)
    try:
        event_loop.run(serve(path, config, role), factory)
    except (StoreUnavailable, OSError, ssl.SSLError) as exc:
        # The store cannot be opened, the port is taken, the certificate does not load:
        # say which, in one line, rather than with a traceback.
        print(f"relay serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from relay.durations import format_duration
    from relay.serve import UNAUTHENTICATED_WARNING, config_warnings

    config = _load_or_exit(_config_path(args))
    if not config.verify.authenticates_sessions:
        print(f"warning: {UNAUTHENTICATED_WARNING}", file=sys.stderr)
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    summary = f"OK: {len(config.rules)} rules, {len(config.destinations)} destinations"
    watching = config.conversations
    if watching is not None:
        windows = [
            f"{what} after {format_duration(after_s)}"
            for what, after_s in (
                ("unanswered", watching.unanswered_after_s),
                ("ended", watching.ended_after_s),
            )
            if after_s > 0
        ]
        summary += f"; conversations watched ({', '.join(windows) or 'no signal: both are 0'})"
    print(summary)
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from relay.route_preview import explain_route

    config = _load_or_exit(_config_path(args))
    body = _read_or_none(args.event)
    if body is None:
        return 1
    return explain_route(config, body, source=args.event, out=sys.stdout)


def _read_or_none(path: str) -> bytes | None:
    """Return a file's bytes, or None after saying on stderr why it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return None


def cmd_sign(args: argparse.Namespace) -> int:
    from relay.verify import sign, sign_account

    secret = args.secret or os.environ.get("RELAY_SECRET")
    if not secret:
        print("relay sign: give --secret (or set RELAY_SECRET)", file=sys.stderr)
        return 2
    if args.file and args.file != "-":
        read = _read_or_none(args.file)
        if read is None:
            return 1
        body = read
    else:
        body = sys.stdin.buffer.read()
    if args.timestamp is None:
        print(sign(body, secret))
        return 0
    if not (args.timestamp.isascii() and args.timestamp.isdigit()):
        print("relay sign: --timestamp takes Unix seconds, e.g. 1780417371", file=sys.stderr)
        return 2
    print(sign_account(body, secret, args.timestamp))
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    from relay.send_test import send_test

    config = None
    path = _config_path(args)
    if args.config or os.path.exists(path):
        config = _load_or_exit(path)
    return asyncio.run(send_test(args, config))


def cmd_test(args: argparse.Namespace) -> int:
    from relay.rule_tests import load_cases, run_cases

    config = _load_or_exit(_config_path(args))
    try:
        cases = load_cases(args.tests, config)
    except ConfigError as exc:
        # Like a bad config: every problem, and no case runs (exit 1, as for a failure).
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    return run_cases(config, cases, sys.stdout)


def cmd_deliveries(args: argparse.Namespace) -> int:
    from relay.delivery_log import print_deliveries, print_delivery

    config = _load_or_exit(_config_path(args))
    if args.id is not None:
        return asyncio.run(print_delivery(config, args.id, sys.stdout))
    return asyncio.run(print_deliveries(config, args.status, args.limit, sys.stdout))


def cmd_replay(args: argparse.Namespace) -> int:
    from relay.delivery_log import replay

    if not args.ids and not args.dead:
        print("relay replay: give delivery IDs or --dead", file=sys.stderr)
        return 2
    config = _load_or_exit(_config_path(args))
    return asyncio.run(replay(config, None if args.dead else args.ids, sys.stdout))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, with_config: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if with_config:
            sub.add_argument(
                "-c", "--config", help="config file (default: $RELAY_CONFIG or relay.yaml)"
            )
        return sub

    serve = command("serve", "run the server and the delivery workers")
    serve.add_argument(
        "--log-format",
        choices=_LOG_FORMATS,
        default=os.environ.get("RELAY_LOG_FORMAT", "text"),
        help="text (default) or json lines; also $RELAY_LOG_FORMAT",
    )
    serve.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default=os.environ.get("RELAY_LOG_LEVEL", "info"),
        help="info (default) logs start, reload, failures; debug adds a line per event "
        "and per delivery; also $RELAY_LOG_LEVEL",
    )
    serve.set_defaults(func=cmd_serve)

    command("check", "validate the config").set_defaults(func=cmd_check)

    route = command("route", "dry run: which rules an event matches and what would be sent")
    route.add_argument("event", metavar="EVENT.json")
    route.set_defaults(func=cmd_route)

    sign = command("sign", "print the sha256= signature of a body", with_config=False)
    sign.add_argument("file", nargs="?", help="body file (default: stdin)")
    sign.add_argument("--secret", help="the webhook secret (or $RELAY_SECRET)")
    sign.add_argument(
        "--timestamp",
        metavar="T",
        help="an account webhook's X-BitHuman-Timestamp: sign T + '.' + the body",
    )
    sign.set_defaults(func=cmd_sign)

    test = command(
        "send-test",
        "send a sample event authenticated as the config says, like the dashboard's Test button",
    )
    test.add_argument(
        "--url", help="webhook URL (default: from the config, else http://127.0.0.1:8080/webhook)"
    )
    test.add_argument(
        "--secret",
        help="signing secret (default: the config's first verify.secrets, or for account "
        "events its first verify.account.secrets)",
    )
    test.add_argument(
        "--event",
        choices=SESSION_EVENT_TYPES + ACCOUNT_EVENT_TYPES,
        default="room.join",
        metavar="EVENT",
        help=f"one of {', '.join(SESSION_EVENT_TYPES + ACCOUNT_EVENT_TYPES)} (default room.join)",
    )
    test.add_argument("--message", default="Hello from relay send-test", help="chat.push message")
    test.add_argument("--agent", help="the sample event's agent code (default A80HVD8577)")
    test.set_defaults(func=cmd_send_test)

    rule_tests = command(
        "test",
        "rule unit tests, offline: each case an event and the destinations (rule, template,"
        " text) it must reach; exit 1 on any failure",
    )
    rule_tests.add_argument(
        "tests",
        metavar="TESTS.yaml",
        help="the cases: tests: [{name, event or event_file, expect: {destinations,"
        " notifications}}]; event_file is relative to this file",
    )
    rule_tests.set_defaults(func=cmd_test)

    deliveries = command("deliveries", "the delivery log, newest first")
    deliveries.add_argument("--status", choices=("pending", "failed", "dead", "sent"))
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument(
        "--id", type=int, metavar="N", help="one delivery: its event, its rule and every attempt"
    )
    deliveries.set_defaults(func=cmd_deliveries)

    replay = command("replay", "put dead-lettered deliveries back in the queue")
    replay.add_argument("ids", nargs="*", type=_delivery_id, metavar="ID")
    replay.add_argument("--dead", action="store_true", help="replay every dead delivery")
    replay.set_defaults(func=cmd_replay)
    return parser


_LOG_FORMATS = ("text", "json")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _delivery_id(text: str) -> int:
    """A delivery id as the stores number them: 1 up to SQLite's largest integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a delivery id: {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"not a delivery id: {text} (ids run from 1 to {2**63 - 1})"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    # argparse checks the choices of what was typed, not of a default from the environment.
    for name, env, choices in (
        ("log_format", "RELAY_LOG_FORMAT", _LOG_FORMATS),
        ("log_level", "RELAY_LOG_LEVEL", _LOG_LEVELS),
    ):
        value = getattr(args, name, None)
        if value is not None and value not in choices:
            parser.error(f"${env} is {value!r}: choose from {', '.join(choices)}")
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `relay route … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    raise SystemExit(main())
