"""A webhook receiver on 127.0.0.1, as a CRM would run one: it verifies every request with
the `standardwebhooks` package, records it, and answers from a script."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.fake_discord import wait_until
from tests.support.local_server import serve_locally

# A receiver's signing secret: whsec_ and the base64 of 32 bytes.
RECEIVER_SECRET = "whsec_cmVsYXktdGVzdC1yZWNlaXZlci1zZWNyZXQtMzJiIQ=="


@dataclass(frozen=True)
class Answer:
    """One scripted answer."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool  # the signature held, checked the way a receiver checks it
    verify_error: str | None
    status: int  # what the receiver answered
    at: float  # time.monotonic() on arrival


class FakeReceiver:
    """Records every request; answers the script's next entry, then 200 once it is used up."""

    def __init__(self, secret: str | None = RECEIVER_SECRET) -> None:
        self._verifier = Webhook(secret) if secret is not None else None
        self.requests: list[Received] = []
        self._script: list[Answer] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> FakeReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_locally(app)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hooks/bithuman") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *answers: int | Answer) -> None:
        self._script = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    @property
    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> None:
        await wait_until(
            lambda: f"{count} request(s); got {len(self.requests)}",
            lambda: len(self.requests) >= count,
            timeout_s,
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        verified, error = True, None
        if self._verifier is not None:
            try:
                self._verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                verified, error = False, str(exc)
        answer = self._script.pop(0) if self._script else Answer(200, "ok")
        self.requests.append(
            Received(
                request.path_qs, headers, body, verified, error, answer.status, time.monotonic()
            )
        )
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
