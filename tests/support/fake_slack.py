"""A fake Slack on 127.0.0.1: incoming webhooks and chat.postMessage, answering from a script."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiohttp import web

from tests.support.fake_discord import (
    FAULT_ERROR,
    FAULT_RATE_LIMIT,
    FAULT_TIMEOUT,
    Faults,
    wait_until,
)
from tests.support.local_server import serve_locally

BOT_TOKEN = "xoxb-1111-2222-botsecret"
WEBHOOK_SECRET = "hooksecretXYZ"
CHANNELS = frozenset({"#alerts", "#support", "C0123456"})

# What Slack's incoming webhooks answer (text/plain) for each failure status.
WEBHOOK_BODIES = {
    200: "ok",
    400: "invalid_payload",
    403: "action_prohibited",
    404: "channel_not_found",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}

# The `error` a Web API answer carries for a status, when a script gives only the status.
API_ERRORS = {
    400: "invalid_arguments",
    401: "invalid_auth",
    403: "not_allowed_token_type",
    404: "channel_not_found",
    408: "request_timeout",
    429: "ratelimited",
}

Kind = Literal["webhook", "api", "update"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a text body for webhooks, a JSON object for the Web API."""

    status: int
    body: str | dict[str, Any] | None = None  # None: what Slack usually says for the status
    headers: dict[str, str] = field(default_factory=dict)


Answer = int | Reply


def rate_limited(retry_after: str = "1") -> Reply:
    """Return Slack's 429 with a Retry-After header."""
    return Reply(429, None, {"Retry-After": retry_after})


def api_error(code: str, status: int = 200) -> Reply:
    """Return a Web API `ok: false` answer (Slack answers most errors with 200)."""
    return Reply(status, {"ok": False, "error": code})


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    kind: Kind
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or None
    raw: bytes
    at: float  # time.monotonic() on arrival
    status: int = 0  # what the fake answered
    ok: bool = False  # whether the answer was a success (Web API: `ok: true`)
    answer: Any = None  # the Web API's JSON answer (its `ts` names the message)


class FakeSlack:
    """POST /services/{T}/{B}/{token} and POST /api/chat.postMessage.

    Scripted answers are used in order for either endpoint; with the script empty, a
    webhook answers 200 `ok` and the Web API checks the bearer token and the channel
    (answering `invalid_auth` or `channel_not_found`) and otherwise `{"ok": true}`.
    With `faults`, a request the empty script would answer may get a fault instead:
    FAULT_ERROR a 500, FAULT_RATE_LIMIT a 429 with `Retry-After: rate_limit_retry_after`,
    FAULT_TIMEOUT a 503 after holding the request for `faults.hold_s`.
    """

    def __init__(
        self,
        token: str = BOT_TOKEN,
        *,
        faults: Faults | None = None,
        rate_limit_retry_after: str = "1",
    ) -> None:
        self.token = token
        self.faults = faults
        self.rate_limit_retry_after = rate_limit_retry_after
        self.requests: list[Received] = []
        self.delivered: list[Received] = []
        self.updates: list[Received] = []  # chat.update calls, apart from messages
        self._script: deque[Answer] = deque()
        self._runner: web.AppRunner | None = None
        self._messages = 0
        self._delays: deque[float] = deque()
        self.update_delay_s = 0.0  # how long each chat.update answer takes
        self.port = 0

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/services/{team}/{bot}/{secret}", self._webhook)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/chat.update", self._update)
        self._runner, self.port = await serve_locally(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def webhook_url(self, secret: str = WEBHOOK_SECRET) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0001/B0001/{secret}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests, whichever endpoint they reach."""
        self._script.extend(answers)

    async def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        await wait_until(
            lambda: f"{count} request(s) (have {len(self.requests)})",
            lambda: len(self.requests) >= count,
            timeout_s,
        )
        return list(self.requests)

    async def wait_for_delivered(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        await wait_until(
            lambda: f"{count} delivered request(s) (have {len(self.delivered)})",
            lambda: len(self.delivered) >= count,
            timeout_s,
        )
        return list(self.delivered)

    async def _record(self, request: web.Request, kind: Kind) -> tuple[int, Received]:
        """Record a request; return its index in `requests` and what was recorded."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        received = Received(
            kind=kind,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            raw=raw,
            at=time.monotonic(),
        )
        self.requests.append(received)
        # The index, not requests.index(received): that is a scan, too slow under load.
        return len(self.requests) - 1, received

    def _answered(self, index: int, status: int, ok: bool, answer: Any = None) -> None:
        received = replace(self.requests[index], status=status, ok=ok, answer=answer)
        self.requests[index] = received
        if ok:
            self.delivered.append(received)

    async def _fault(self, received: Received) -> Reply | None:
        """Return an injected fault's answer (after holding the request, for a timeout)."""
        if self.faults is None:
            return None
        fault = self.faults.decide(received.path, received.raw)
        if fault == FAULT_ERROR:
            return Reply(500)
        if fault == FAULT_RATE_LIMIT:
            return rate_limited(self.rate_limit_retry_after)
        if fault == FAULT_TIMEOUT:
            await self.faults.hold()
            unavailable = {"ok": False, "error": "service_unavailable"}
            return Reply(503, None if received.kind == "webhook" else unavailable)
        if fault is not None:
            raise ValueError(f"FakeSlack cannot inject fault {fault!r}")
        return None

    async def _webhook(self, request: web.Request) -> web.Response:
        index, received = await self._record(request, "webhook")
        if self._script:
            reply: Answer = self._script.popleft()
        else:
            reply = await self._fault(received) or Reply(200)
        if isinstance(reply, int):
            reply = Reply(reply)
        if reply.status == 200 and not isinstance(received.body, dict):
            reply = Reply(400)
        text = reply.body if isinstance(reply.body, str) else None
        text = text or WEBHOOK_BODIES.get(reply.status, f"scripted {reply.status}")
        self._answered(index, reply.status, reply.status == 200)
        return web.Response(status=reply.status, text=text, headers=reply.headers)

    def delay_next(self, seconds: float) -> None:
        """Make the next Web API answer take this long, like a slow Slack."""
        self._delays.append(seconds)

    async def _post_message(self, request: web.Request) -> web.Response:
        index, received = await self._record(request, "api")
        if self._delays:
            await asyncio.sleep(self._delays.popleft())
        fault = None if self._script else await self._fault(received)
        reply = fault or self._api_reply(request, received)
        body = reply.body if isinstance(reply.body, dict) else None
        if body is None and reply.status == 200:
            # A unique ts, as Slack's are within a channel: replies name their parent by it.
            self._messages += 1
            body = {
                "ok": True,
                "channel": "C0123456",
                "ts": f"{int(time.time())}.{self._messages:06d}",
            }
        elif body is None:
            error = API_ERRORS.get(reply.status, "internal_error")
            body = {"ok": False, "error": error}
        ok = reply.status == 200 and body.get("ok") is True
        self._answered(index, reply.status, ok, body)
        return web.json_response(body, status=reply.status, headers=reply.headers)

    async def _update(self, request: web.Request) -> web.Response:
        """chat.update: Slack answers with the message's channel, ts and new text."""
        raw = await request.read()
        body: Any = json.loads(raw)
        received = Received(
            kind="update", path=request.path, headers=dict(request.headers), body=body,
            raw=raw, at=time.monotonic(), status=200, ok=True,
        )  # fmt: skip
        self.updates.append(received)
        await asyncio.sleep(self.update_delay_s)
        answer = {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")}
        return web.json_response(answer)

    def _api_reply(self, request: web.Request, received: Received) -> Reply:
        if self._script:
            answer = self._script.popleft()
            return Reply(answer) if isinstance(answer, int) else answer
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return api_error("invalid_auth")
        body = received.body if isinstance(received.body, dict) else {}
        if body.get("channel") not in CHANNELS:
            return api_error("channel_not_found")
        return Reply(200)
