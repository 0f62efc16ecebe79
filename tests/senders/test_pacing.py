"""Pacing: the token bucket, shared buckets, and a 429 that pauses only its destination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.senders import SenderContext, build_senders
from relay.senders.pacing import TokenBucket
from tests.conftest import RelayClientFactory
from tests.support.fake_slack import FakeSlack, rate_limited
from tests.support.notifications import chat
from tests.support.relay import event_body, make_config, signed_headers

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_one_per_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 3, clock=clock)

    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(1.0)  # nothing taken: no token was free

    clock.now += 0.4
    assert bucket.reserve() == pytest.approx(0.6)
    clock.now += 0.6
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(1.0)


def test_token_bucket_idle_time_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 3, clock=clock)
    clock.now += 3600.0
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(1.0)


def test_token_bucket_rate_is_respected() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.25)


def test_two_users_of_one_bucket_cannot_both_take_the_last_token() -> None:
    bucket = TokenBucket(1.0, 1, clock=FakeClock())
    assert [bucket.reserve(), bucket.reserve()] == [0.0, pytest.approx(1.0)]


async def test_destinations_with_one_webhook_url_share_one_pace(
    slack: FakeSlack, tmp_path: Path
) -> None:
    config = make_config(
        f"""
        destinations:
          a: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}
          b: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}
          c: {{ type: slack, webhook_url: "{slack.webhook_url("elsewhere")}" }}
        """,
        tmp_path,
    )
    async with aiohttp.ClientSession() as http:
        context = SenderContext(http=http)
        senders = build_senders(config.destinations, context)
        for _ in range(3):  # the burst, reserved the way the worker does before each send
            assert senders["a"].wait_s() == 0.0
            await senders["a"].send(chat("hi"))

        assert senders["b"].wait_s() > 0.0
        assert senders["c"].wait_s() == 0.0
        # A reload builds new senders on the same context: the pace carries over.
        assert build_senders(config.destinations, context)["b"].wait_s() > 0.0
    assert len(slack.delivered) == 3


def two_slacks_config(a_url: str, b_url: str) -> str:
    return f"""
server:
  shutdown_timeout: 1s
verify:
  secrets: ["${{SECRET}}"]
delivery:
  backoff: {{ first: 10ms, max: 50ms }}
destinations:
  a: {{ type: slack, webhook_url: "{a_url}" }}
  b: {{ type: slack, webhook_url: "{b_url}" }}
rules:
  - name: everything
    send_to: [a, b]
"""


async def post_event(client: Client, message: str, session: str = "s1") -> None:
    body = event_body(data={"role": "user", "message": message, "session_id": session})
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    answer: dict[str, Any] = await response.json()
    assert response.status == 200, answer


async def test_worker_paces_sends_to_one_webhook_shared_by_two_destinations(
    relay_client: RelayClientFactory, slack: FakeSlack
) -> None:
    client = await relay_client(two_slacks_config(slack.webhook_url(), slack.webhook_url()))
    for n in range(3):
        await post_event(client, f"event {n}", f"s{n}")

    received = await slack.wait_for_delivered(6)

    # Six sends at about one a second, after a burst of three: at least two seconds, less
    # a tolerance. (The two lanes can each pass the check on the last token, so the burst
    # may be one larger, but the bucket then owes that token: the rate still holds.)
    assert received[5].at - received[0].at >= 1.8


async def test_a_429_pauses_only_the_destination_that_answered_it(
    relay_client: RelayClientFactory, slack: FakeSlack, other_slack: FakeSlack
) -> None:
    slack.script(rate_limited("1"))
    client = await relay_client(two_slacks_config(slack.webhook_url(), other_slack.webhook_url()))
    await post_event(client, "one", "s1")
    await slack.wait_for_requests(1)  # answered 429: the pause starts
    await post_event(client, "two", "s2")

    a = await slack.wait_for_delivered(2)
    b = await other_slack.wait_for_delivered(2)

    assert [r.status for r in slack.requests] == [429, 200, 200]
    paused_at = slack.requests[0].at
    # Backoff alone would retry within 50ms, and the other event would not wait at all.
    assert all(r.at - paused_at >= 0.9 for r in a)
    assert all(r.at < a[0].at for r in b)  # B did not wait for A's pause
    assert sorted(r.body["text"] for r in a) == sorted(r.body["text"] for r in b)


def test_a_reload_keeps_the_tokens_spent_but_takes_the_new_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(1.0)
    bucket.retune(4.0, 1)
    assert bucket.reserve() == pytest.approx(0.25)
