"""A fake Discord webhook on 127.0.0.1: records what it receives, answers from a script."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from tests.support.local_server import serve_locally

HANG_S = 60.0  # longer than relay's 30 s client timeout

Mode = Literal["up", "down", "hang"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Answer nothing until released (or HANG_S passes), then 503."""


HANG = Hang()

Answer = int | Reply | Hang

# Fault names understood by both fakes (FakeSlack adds none of its own).
FAULT_ERROR = "500"  # answer 500
FAULT_RATE_LIMIT = "429"  # answer the service's 429
FAULT_TIMEOUT = "timeout"  # hold the request past the client's timeout, then answer 503


class Faults:
    """Deterministic, recorded fault injection for a fake service.

    Each request's fate is drawn from a hash of its path, its body and how many times that
    same request came before, so a rerun injects the same faults into the same sends,
    whatever the timing; `injected` counts what was injected, by fault name.
    """

    def __init__(
        self, rates: Mapping[str, float], *, seed: str = "relay", hold_s: float = 1.5
    ) -> None:
        if sum(rates.values()) > 1.0 or any(rate < 0 for rate in rates.values()):
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1: {dict(rates)}")
        self.rates = dict(rates)
        self.hold_s = hold_s  # for FAULT_TIMEOUT: longer than the client waits
        self.injected: Counter[str] = Counter()
        self._seed = seed.encode()
        self._seen: Counter[bytes] = Counter()

    def decide(self, path: str, raw: bytes) -> str | None:
        """Return the fault to inject into this request, or None to answer normally."""
        key = hashlib.sha256(path.encode() + b"\0" + raw).digest()
        attempt = self._seen[key]
        self._seen[key] += 1
        digest = hashlib.sha256(self._seed + key + attempt.to_bytes(4, "big")).digest()
        draw = int.from_bytes(digest[:8], "big") / 2.0**64
        for name, rate in self.rates.items():
            if draw < rate:
                self.injected[name] += 1
                return name
            draw -= rate
        return None

    async def hold(self) -> None:
        """Keep a request waiting past the client's timeout.

        aiohttp does not cancel a handler whose client went away, so whatever is answered
        after this must not be a success: a late 2xx would count as a delivery.
        """
        await asyncio.sleep(self.hold_s)


def rate_limited(retry_after_s: float = 0.2, header_s: str | None = None) -> Reply:
    """Return Discord's 429; the header defaults to the body's value rounded up."""
    header = header_s if header_s is not None else str(max(int(retry_after_s + 0.999), 1))
    return Reply(
        429,
        {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False},
        {"Retry-After": header},
    )


def unknown_webhook() -> Reply:
    """Return Discord's answer for a deleted webhook (permanent)."""
    return Reply(404, {"message": "Unknown Webhook", "code": 10015})


def _reply(answer: int | Reply) -> Reply:
    if isinstance(answer, Reply):
        return answer
    return Reply(answer, {"message": f"scripted {answer}", "code": 0})


FORUM_CHANNEL_ID = "100000000000000001"


def _message(webhook_id: str, body: Any, thread_id: str | None) -> Reply:
    """Return a 200 like Discord's wait=true answer: the created message.

    Its channel_id is the thread it went to: the one named by `thread_id`, or, for a post
    that creates a forum thread (`thread_name`), the new thread's own id.
    """
    embeds = body.get("embeds", []) if isinstance(body, dict) else []
    message_id = str(time.monotonic_ns())
    if thread_id is None:
        creates_thread = isinstance(body, dict) and body.get("thread_name")
        thread_id = message_id if creates_thread else FORUM_CHANNEL_ID
    return Reply(
        200,
        {"id": message_id, "webhook_id": webhook_id, "channel_id": thread_id, "embeds": embeds},
    )


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    webhook_id: str
    token: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the parsed JSON, or None when the body was not JSON
    raw: bytes
    at: float  # time.monotonic() on arrival
    status: int = 0  # what the fake answered; 0 while it hangs
    answered_at: float = 0.0  # time.monotonic() when answered; 0 while it hangs
    answer: Any = None  # the JSON the fake answered (a created message has a channel_id)

    def description(self) -> str:
        """Return the first embed's description (the chat message for chat.push)."""
        embeds = self.body.get("embeds") if isinstance(self.body, dict) else None
        if not embeds:
            return ""
        return str(embeds[0].get("description", ""))


class FakeDiscord:
    """POST /api/webhooks/{id}/{token}: scripted answers, then the mode's default.

    Answers are taken, in order, from the first marked script whose marker occurs in
    the request body, else from the shared script, else from the mode: "up" answers
    200 with a message, "down" 503, "hang" never answers until released.
    POST /control/{up,down,hang} switches the mode from another process.
    With `faults`, a request the mode "up" would answer 200 may get a fault instead:
    FAULT_RATE_LIMIT answers a 429 whose body says `retry_after: rate_limit_retry_after_s`.
    """

    def __init__(
        self, *, faults: Faults | None = None, rate_limit_retry_after_s: float = 0.05
    ) -> None:
        self.requests: list[Received] = []  # every request, in arrival order
        self.delivered: list[Received] = []  # those answered 2xx, in answer order
        self.mode: Mode = "up"
        self.faults = faults
        self.rate_limit_retry_after_s = rate_limit_retry_after_s
        self.delay_s = 0.0  # how long each answer of mode "up" takes, like a slow service
        self.deleted_threads: set[str] = set()  # forum posts a moderator deleted
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self._script: deque[Answer] = deque()
        self._marked: list[tuple[str, deque[Answer]]] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_post("/api/webhooks/{webhook_id}/{token}", self._execute)
        app.router.add_post("/control/{mode}", self._control)
        self._runner, self.port = await serve_locally(app)
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, webhook_id: str = "1", token: str = "tok") -> str:
        return f"http://127.0.0.1:{self.port}/api/webhooks/{webhook_id}/{token}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/control"

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests, whatever they carry."""
        self._script.extend(answers)

    def script_for(self, marker: str, *answers: Answer) -> None:
        """Queue answers for the next requests whose body contains `marker`."""
        self._marked.append((marker, deque(answers)))

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "hang":
            self._release.clear()
        else:
            self._release.set()  # requests hanging so far answer 503

    def up(self) -> None:
        self.set_mode("up")

    def down(self) -> None:
        self.set_mode("down")

    def release(self) -> None:
        """Let every hanging request (and any later one) answer 503 now."""
        self._release.set()

    def delivered_texts(self) -> list[str]:
        return [r.description() for r in self.delivered]

    async def wait_for_delivered(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        await wait_until(
            f"{count} delivered request(s) (have {len(self.delivered)})",
            lambda: len(self.delivered) >= count,
            timeout_s,
        )
        return list(self.delivered)

    async def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        await wait_until(
            f"{count} request(s) (have {len(self.requests)})",
            lambda: len(self.requests) >= count,
            timeout_s,
        )
        return list(self.requests)

    def _next_answer(self, raw: bytes) -> Answer | None:
        text = raw.decode("utf-8", "replace")
        for marker, answers in self._marked:
            if answers and marker in text:
                return answers.popleft()
        if self._script:
            return self._script.popleft()
        return None

    async def _execute(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        webhook_id = request.match_info["webhook_id"]
        received = Received(
            webhook_id=webhook_id,
            token=request.match_info["token"],
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            raw=raw,
            at=time.monotonic(),
        )
        index = len(self.requests)
        self.requests.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = self._next_answer(raw)
            fault = await self._fault(request.path, raw) if answer is None else None
            reply = fault or await self._answer(
                answer, webhook_id, body, request.query.get("thread_id")
            )
        finally:
            self.in_flight -= 1
        received = dataclasses.replace(
            received, status=reply.status, answered_at=time.monotonic(), answer=reply.body
        )
        self.requests[index] = received
        if 200 <= reply.status < 300:
            self.delivered.append(received)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    async def _answer(
        self, answer: Answer | None, webhook_id: str, body: Any, thread_id: str | None
    ) -> Reply:
        if answer is None:
            if self.mode == "up":
                await asyncio.sleep(self.delay_s)
                if thread_id in self.deleted_threads:  # as Discord answers a gone thread
                    return Reply(404, {"message": "Unknown Channel", "code": 10003})
                return _message(webhook_id, body, thread_id)
            if self.mode == "down":
                return _reply(503)
            answer = HANG
        if isinstance(answer, Hang):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), HANG_S)
            return _reply(503)
        return _reply(answer)

    async def _fault(self, path: str, raw: bytes) -> Reply | None:
        """Return an injected fault's answer, only where mode "up" would answer 200."""
        if self.faults is None or self.mode != "up":
            return None
        fault = self.faults.decide(path, raw)
        if fault == FAULT_RATE_LIMIT:
            return rate_limited(self.rate_limit_retry_after_s)
        if fault == FAULT_TIMEOUT:
            await self.faults.hold()
            return _reply(503)
        if fault == FAULT_ERROR:
            return _reply(500)
        if fault is not None:
            raise ValueError(f"FakeDiscord cannot inject fault {fault!r}")
        return None

    async def _control(self, request: web.Request) -> web.Response:
        mode = _MODES.get(request.match_info["mode"])
        if mode is None:
            return web.json_response({"error": "unknown mode"}, status=404)
        self.set_mode(mode)
        return web.json_response({"mode": mode})


_MODES: dict[str, Mode] = {"up": "up", "down": "down", "hang": "hang"}


async def wait_until(
    what: str | Callable[[], str],
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout_s: float,
    *,
    poll_s: float = 0.02,
) -> None:
    """Wait (bounded) until predicate() holds; fail naming `what` when it never does.

    `what` may be a function, so the failure message can show state as it is at the end.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            shown = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {shown}")
        await asyncio.sleep(poll_s)


# Discord's published schema (discord/discord-api-spec, MIT), kept in tests/schemas so a
# clone of relay tests on its own.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas/discord-execute-webhook.schema.json"


@functools.cache
def discord_validator() -> Draft202012Validator:
    """Discord's published Execute Webhook schema, formats (uri, date-time) checked too."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid_payloads(*fakes: FakeDiscord) -> int:
    """Check every request the fakes received is an Execute Webhook that cannot ping.

    Return how many were checked, so a test can tell it checked something.
    """
    checked = 0
    for fake in fakes:
        for received in fake.requests:
            errors = [e.message for e in discord_validator().iter_errors(received.body)]
            assert not errors, f"payload does not match Discord's schema: {errors}"
            assert received.body["allowed_mentions"] == {"parse": []}, received.body
            # wait=true always (relay needs the message); thread_id for a forum post's replies.
            assert received.query.get("wait") == "true", received.query
            assert set(received.query) <= {"wait", "thread_id"}, received.query
            checked += 1
    return checked
