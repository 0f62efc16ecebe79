"""Pacing: the token bucket, shared buckets, and a 429 that pauses only its destination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.limits import take_token
from relay.senders import SenderContext, build_senders
from tests.conftest import RelayClientFactory
from tests.support.fake_slack import FakeSlack, rate_limited
from tests.support.relay import event_body, make_config, signed_headers

Client = TestClient[web.Request, web.Application]


class Bucket:
    """take_token's state, kept between calls as a store keeps it."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self.tokens: float | None = None
        self.updated: float | None = None

    def take(self, now: float) -> float:
        wait_s, self.tokens = take_token(
            self.tokens, self.updated, now, self.rate_per_s, self.burst
        )
        self.updated = now
        return wait_s


def test_token_bucket_allows_a_burst_then_one_per_second() -> None:
    bucket = Bucket(1.0, 3)
    assert [bucket.take(1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1000.0) == pytest.approx(1.0)  # nothing taken: no token was free
    assert bucket.take(1000.4) == pytest.approx(0.6)
    assert bucket.take(1001.0) == 0.0
    assert bucket.take(1001.0) == pytest.approx(1.0)


def test_token_bucket_idle_time_refills_only_up_to_the_burst() -> None:
    bucket = Bucket(1.0, 3)
    bucket.take(1000.0)
    assert [bucket.take(4600.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(4600.0) == pytest.approx(1.0)


def test_token_bucket_rate_is_respected() -> None:
    bucket = Bucket(4.0, 1)
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(0.25)


async def test_destinations_with_one_webhook_url_share_one_limit(
    slack: FakeSlack, tmp_path: Path
) -> None:
    config = make_config(
        f"""
        destinations:
          a: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}
          b: {{ type: slack, webhook_url: "{slack.webhook_url()}", max_per_second: 2 }}
          c: {{ type: slack, webhook_url: "{slack.webhook_url("elsewhere")}" }}
        """,
        tmp_path,
    )
    senders = build_senders(config.destinations, SenderContext())
    a, b, c = (senders[name].limit for name in "abc")
    assert a is not None and b is not None and c is not None
    assert a.key == b.key != c.key
    assert (a.rate_per_s, a.burst, b.rate_per_s) == (1.0, 3, 2.0)
    assert slack.webhook_url() not in repr(senders["a"].limit)  # a digest, not the URL


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


def test_a_new_rate_applies_to_the_tokens_already_spent() -> None:
    """A reload that changes max_per_second: the store keeps the bucket, the rate is new."""
    bucket = Bucket(1.0, 1)
    assert bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(1.0)
    bucket.rate_per_s = 4.0
    assert bucket.take(1000.0) == pytest.approx(0.25)
