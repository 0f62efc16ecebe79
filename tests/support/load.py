"""A load generator: N concurrent clients posting signed bodies the way bitHuman does.

Each body is posted until it gets a 2xx; a connection error, a timeout or a 5xx is retried
with the identical body (as bitHuman retries), a 4xx is final. Unlike bitHuman (1 s, 5 s,
30 s, then it gives up) the retries come quickly and go on until `give_up_s`, so a test
can restart relay under the clients without losing events to the client's patience.
Every attempt's answer is recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from tests.support.relay import SECRET, signed_headers

NO_ANSWER = 0  # the status recorded for an attempt that got no HTTP answer


@dataclass(frozen=True)
class Attempt:
    """One POST of a body: its answer's status, or NO_ANSWER and why."""

    status: int
    error: str | None
    at: float  # time.monotonic() when the answer (or the error) came
    answer: str | None = None  # a 200's "status": accepted, or duplicate (already stored)


@dataclass
class Sent:
    """One body and every attempt to post it."""

    index: int
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def final_status(self) -> int:
        return self.attempts[-1].status if self.attempts else NO_ANSWER

    @property
    def stored(self) -> bool:
        """Whether relay said it holds the event: 200, accepted or a duplicate of one it has."""
        return self.final_status == 200


class Load:
    """Post every body once (retrying failures), from `concurrency` concurrent clients.

    `url` may be changed while the load runs (relay restarted on another port); attempts
    after the change go to the new address.
    """

    def __init__(
        self,
        url: str,
        bodies: Sequence[bytes],
        *,
        concurrency: int = 32,
        secret: str = SECRET,
        retry_delay_s: float = 0.05,
        give_up_s: float = 60.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.sent = [Sent(i, body) for i, body in enumerate(bodies)]
        self.concurrency = concurrency
        self.answered = 0  # bodies that got their final 2xx so far
        self._secret = secret
        self._retry_delay_s = retry_delay_s
        self._give_up_s = give_up_s
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._next = 0

    async def run(self) -> list[Sent]:
        """Post every body; return them all with their attempts."""
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=self._timeout) as http:
            await asyncio.gather(*(self._client(http) for _ in range(self.concurrency)))
        return self.sent

    async def _client(self, http: aiohttp.ClientSession) -> None:
        while self._next < len(self.sent):
            sent = self.sent[self._next]
            self._next += 1
            await self._post_until_answered(http, sent)

    async def _post_until_answered(self, http: aiohttp.ClientSession, sent: Sent) -> None:
        headers = signed_headers(sent.body, self._secret)
        deadline = time.monotonic() + self._give_up_s
        while True:
            attempt = await self._post(http, sent.body, headers)
            sent.attempts.append(attempt)
            if 200 <= attempt.status < 300:
                self.answered += 1
                return
            retryable = attempt.status == NO_ANSWER or attempt.status >= 500
            if not retryable or time.monotonic() >= deadline:
                return
            await asyncio.sleep(self._retry_delay_s)

    async def _post(
        self, http: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
    ) -> Attempt:
        try:
            async with http.post(self.url, data=body, headers=headers) as response:
                text = await response.text()
                answer = json.loads(text).get("status") if response.status == 200 else None
                return Attempt(response.status, None, time.monotonic(), answer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(NO_ANSWER, f"{type(exc).__name__}: {exc}", time.monotonic())

    # --- what happened ---------------------------------------------------------------------

    def first_statuses(self) -> Counter[int]:
        """Count the status of each body's first attempt (NO_ANSWER: none came)."""
        return Counter(s.attempts[0].status if s.attempts else NO_ANSWER for s in self.sent)

    def all_statuses(self) -> Counter[int]:
        """Count the status of every attempt of every body."""
        return Counter(a.status for s in self.sent for a in s.attempts)

    def all_answers(self) -> Counter[str | None]:
        """Count the `status` of every 200 answer: accepted, or duplicate."""
        return Counter(a.answer for s in self.sent for a in s.attempts if a.status == 200)

    def errors(self, limit: int = 5) -> list[str]:
        """Return a few of the connection errors seen, for failure messages."""
        seen = [a.error for s in self.sent for a in s.attempts if a.error is not None]
        return seen[:limit]

    def not_stored(self) -> list[Sent]:
        """Return the bodies relay never said it holds."""
        return [s for s in self.sent if not s.stored]
