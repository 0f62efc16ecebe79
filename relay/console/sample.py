"""The Test button (SPEC 8): a sample event sent through relay itself, as `relay send-test`.

send_test.py builds and signs it, so it authenticates exactly as that command's does (the
config's verify.headers and first verify.secrets; for an account event, the first
verify.account.secrets), and it is posted over HTTP to relay's own webhook listener: it
takes the path a real event takes, through the listener's checks, the rules and the
store to the destinations. The page then says what relay answered.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from relay.config.model import Config
from relay.console import answers
from relay.console.filters import LIST_PATH, FilterError, read_query
from relay.console.keys import NOTICES, STATE, WEBHOOK_URL
from relay.console.notices import with_notice
from relay.events import ACCOUNT_EVENT_TYPES, SESSION_EVENT_TYPES
from relay.send_test import SendTestError, account_request, default_url, session_request

TEST_PATH = "/deliveries/test"
DEFAULT_EVENT = "room.join"  # what `relay send-test` sends unless told
DEFAULT_MESSAGE = "Hello from the relay console"
MAX_MESSAGE = 500
TIMEOUT_S = 10.0
_SHOWN = 300  # of relay's answer, in the notice


def events_offered(config: Config) -> tuple[str, ...]:
    """The event types the button can send: account ones need the account secret."""
    account = ACCOUNT_EVENT_TYPES if config.verify.account.secrets else ()
    return (*SESSION_EVENT_TYPES, *account)


def local_webhook_url(config: Config, port: int | None = None) -> str:
    """relay's webhook URL as this host reaches it, as `relay send-test` works it out, on
    `port` when given (the port bound, when the config says 0)."""
    server = config.server if port is None else replace(config.server, port=port)
    return default_url(replace(config, server=server))


def build(config: Config, event: str, message: str) -> tuple[bytes, dict[str, str]]:
    """The sample's body and headers, signed: raise SendTestError when it cannot be."""
    args = argparse.Namespace(event=event, message=message, agent=None, secret=None, url=None)
    request = account_request if event in ACCOUNT_EVENT_TYPES else session_request
    return request(args, config)


async def deliver(url: str, body: bytes, headers: dict[str, str]) -> str:
    """Post the sample to relay's listener; return what relay answered, in words."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            # Not verified when relay serves TLS: this is relay's own listener, reached at
            # the loopback address its certificate does not name.
            session.post(
                url, data=body, headers=headers, ssl=False, allow_redirects=False
            ) as response,
        ):
            text = await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The error names host and port, never the path (which may be chosen as a secret).
        return f"relay's webhook listener did not answer: {str(exc) or type(exc).__name__}"
    return said(response.status, text)


def said(status: int, text: str) -> str:
    """relay's answer (SPEC 2) to the sample, in words."""
    try:
        answer: Any = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return f"relay answered {status}: {text[:_SHOWN]}"
    event_id = answer.get("event_id")
    if status == 200 and answer.get("status") == "accepted":
        n = answer.get("deliveries", 0)
        return f"relay accepted the test event {event_id}: {n} {_deliveries(n)}"
    if status == 200 and answer.get("status") == "duplicate":
        return f"relay took the test event {event_id} for a duplicate: nothing was sent"
    return f"relay refused the test event: {status} {str(answer.get('error', ''))[:_SHOWN]}"


async def _send(url: str, config: Config, event: str, message: str) -> str:
    try:
        body, headers = build(config, event, message.strip()[:MAX_MESSAGE] or DEFAULT_MESSAGE)
    except SendTestError as exc:
        return f"no test event sent: {exc}"
    return await deliver(url, body, headers)


def _deliveries(n: object) -> str:
    return "delivery" if n == 1 else "deliveries"


async def send_test(request: web.Request) -> web.StreamResponse:
    """Send a sample event through relay (a POST, guarded by guard_posts); 303 back to the
    deliveries, which say what relay answered."""
    form = await request.post()
    config = request.app[STATE].config
    event, message = form.get("event", DEFAULT_EVENT), form.get("message", "")
    offered = events_offered(config)
    if not isinstance(event, str) or event not in offered or not isinstance(message, str):
        return answers.error(request, 400, f"event: expected one of {', '.join(offered)}")
    url = request.app[WEBHOOK_URL]
    if url is None and config.server.port == 0:
        outcome = "no test event sent: the console was not told which port relay's listener took"
    else:
        outcome = await _send(url or local_webhook_url(config), config, event, message)
    if answers.wants_json(request):
        return answers.data({"event": event, "outcome": outcome})
    try:
        back = read_query(request.query).newest().url()
    except FilterError:
        back = LIST_PATH
    raise web.HTTPSeeOther(with_notice(back, request.app[NOTICES].add(outcome)))
