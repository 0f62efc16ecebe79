"""SPEC section 5: the delivery worker against fake Discord webhooks and a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.app import STATE
from relay.delivery import RetryPolicy
from relay.delivery import lane as lanes
from relay.senders.base import DeliveryError
from relay.store import Delivery, DeliveryStatus, NewDelivery, NewEvent, StoreUnavailable
from relay.store.sqlite import SqliteStore
from tests.conftest import RelayClientFactory
from tests.support.fake_discord import (
    HANG,
    Answer,
    FakeDiscord,
    Reply,
    assert_valid_payloads,
    rate_limited,
    unknown_webhook,
    wait_until,
)
from tests.support.relay import BASIC, Output, event_body, signed_headers

Client = TestClient[web.Request, web.Application]

GRACE_S = 0.3  # with backoff capped at 50ms, a wrongful retry would come well within this


def discord_config(
    *fakes: FakeDiscord,
    max_attempts: int = 8,
    first: str = "10ms",
    max_: str = "50ms",
    timeout: str = "30s",
    concurrency: int = 4,
) -> str:
    """Return a config sending every event to one Discord destination per fake (d0, d1, ...)."""
    names = [f"d{i}" for i in range(len(fakes))]
    destinations = "".join(
        f'  {name}: {{ type: discord, webhook_url: "{fake.url()}" }}\n'
        for name, fake in zip(names, fakes, strict=True)
    )
    return f"""
server:
  shutdown_timeout: 1s
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: {max_attempts}
  backoff: {{ first: {first}, max: {max_} }}
  timeout: {timeout}
  concurrency: {concurrency}
destinations:
{destinations}rules:
  - name: everything
    send_to: [{", ".join(names)}]
"""


async def post_event(client: Client, message: str = "hello", session: str = "s1") -> str:
    """Post a signed chat.push; return its event id after checking the 200."""
    body = event_body(data={"role": "user", "message": message, "session_id": session})
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    answer: dict[str, Any] = await response.json()
    assert response.status == 200, answer
    return str(answer["event_id"])


async def deliveries(client: Client) -> list[Delivery]:
    return await client.app[STATE].store.list_deliveries(limit=1000)


async def wait_for_status(
    client: Client, status: DeliveryStatus, count: int = 1, timeout_s: float = 10.0
) -> list[Delivery]:
    """Wait until `count` deliveries have `status`; return them."""

    async def reached() -> bool:
        return sum(d.status == status for d in await deliveries(client)) >= count

    await wait_until(f"{count} delivery(ies) {status}", reached, timeout_s)
    return [d for d in await deliveries(client) if d.status == status]


async def test_transient_failures_are_retried_and_delivered_once(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    discord.script(503, rate_limited(0.05), 200)
    client = await relay_client(discord_config(discord))
    event_id = await post_event(client)

    await discord.wait_for_delivered(1)
    [sent] = await wait_for_status(client, "sent")
    await asyncio.sleep(GRACE_S)

    assert [r.status for r in discord.requests] == [503, 429, 200]
    assert len(discord.delivered) == 1
    assert (sent.event_id, sent.destination, sent.attempts) == (event_id, "d0", 3)
    assert sent.last_error is None
    assert [d.status for d in await deliveries(client)] == ["sent"]
    assert assert_valid_payloads(discord) == 3


async def test_retry_after_of_a_429_is_honoured_and_the_body_value_wins(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    retry_after_s = 0.3  # backoff alone would retry after 5 to 10 ms
    discord.script(rate_limited(retry_after_s, header_s="5"))
    client = await relay_client(discord_config(discord))
    await post_event(client)

    await discord.wait_for_delivered(1, timeout_s=4.0)  # the header's 5 s would miss this

    limited, success = discord.requests
    assert (limited.status, success.status) == (429, 200)
    # The fake stamps arrival with time.monotonic(), relay pauses on time.time(): allow
    # a few milliseconds for the two clocks, far below the 5 ms a backoff retry would take.
    assert success.at - limited.at >= retry_after_s - 0.005
    assert assert_valid_payloads(discord) == 2


async def test_an_empty_rate_limit_bucket_holds_the_next_send_until_it_resets(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    reset_after_s = 0.3
    bucket = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": str(reset_after_s)}
    discord.script(Reply(200, {"id": "1"}, bucket))
    client = await relay_client(discord_config(discord))
    await post_event(client, message="first", session="s1")
    await discord.wait_for_delivered(1)  # answered: the bucket is empty
    await post_event(client, message="second", session="s2")

    first, second = await discord.wait_for_delivered(2)

    assert (first.description(), second.description()) == ("first", "second")
    assert second.at - first.at >= reset_after_s - 0.005
    assert assert_valid_payloads(discord) == 2


async def test_a_send_that_times_out_is_retried(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    discord.script(HANG)
    client = await relay_client(discord_config(discord, timeout="200ms"))
    await post_event(client)

    await discord.wait_for_delivered(1, timeout_s=5.0)
    [sent] = await wait_for_status(client, "sent")

    assert sent.attempts == 2
    assert len(discord.requests) == 2
    first, second = await client.app[STATE].store.attempts(sent.id)
    assert (first.outcome, first.detail) == ("retried", "timed out after 0.2s")
    assert first.duration_s >= 0.2
    assert second.outcome == "sent"
    discord.release()
    assert assert_valid_payloads(discord) == 2


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (unknown_webhook(), "Discord answered 404: Unknown Webhook (code 10015)"),
        (400, "Discord answered 400"),
        (Reply(400, {"message": "Invalid Form Body", "code": 50035}), "code 50035"),
    ],
    ids=["unknown-webhook-10015", "plain-400", "invalid-form-body-50035"],
)
async def test_permanent_failure_is_dead_lettered_at_once(
    relay_client: RelayClientFactory, discord: FakeDiscord, answer: Answer, reason: str
) -> None:
    discord.script(answer)
    client = await relay_client(discord_config(discord))
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    await asyncio.sleep(GRACE_S)

    assert len(discord.requests) == 1
    assert discord.delivered == []
    assert dead.attempts == 1
    assert dead.last_error is not None and reason in dead.last_error
    assert assert_valid_payloads(discord) == 1


async def test_max_attempts_reached_dead_letters_after_exactly_that_many_requests(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    discord.down()
    client = await relay_client(discord_config(discord, max_attempts=3))
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    await asyncio.sleep(GRACE_S)

    assert [r.status for r in discord.requests] == [503, 503, 503]
    assert dead.attempts == 3
    assert dead.last_error is not None and "503" in dead.last_error
    assert assert_valid_payloads(discord) == 3


def _hang(fake: FakeDiscord) -> None:
    fake.set_mode("hang")  # relay gives up on a send only after delivery.timeout, 30 s


def _rate_limit_for_long(fake: FakeDiscord) -> None:
    fake.script(rate_limited(30.0))  # must pause this webhook only


def _down(fake: FakeDiscord) -> None:
    fake.down()


@pytest.mark.parametrize("trouble", [_hang, _rate_limit_for_long, _down], ids=lambda f: f.__name__)
async def test_one_destination_in_trouble_never_delays_another(
    relay_client: RelayClientFactory,
    discord: FakeDiscord,
    other_discord: FakeDiscord,
    trouble: Any,
) -> None:
    trouble(discord)
    # One send at a time, so the troubled destination's first send holds all it has;
    # tests/test_concurrency.py covers several sessions at once.
    client = await relay_client(discord_config(discord, other_discord, concurrency=1))
    for i in range(3):
        await post_event(client, message=f"msg{i}", session=f"s{i}")

    # Far below the 30 s the troubled destination holds its lane for.
    await other_discord.wait_for_delivered(3, timeout_s=5.0)

    assert other_discord.delivered_texts() == ["msg0", "msg1", "msg2"]
    assert discord.delivered == []
    assert discord.requests, "the troubled destination was never even tried"
    if trouble is not _down:
        # Hanging, or paused by its 429: it must not have moved on to the other events.
        assert len(discord.requests) == 1
    discord.release()  # let a hanging request end before relay shuts down
    assert assert_valid_payloads(discord, other_discord) >= 4


async def test_a_session_stays_in_order_and_does_not_hold_up_another(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    # Each retry of the first message waits 150 to 300 ms: plenty of time for a
    # wrongly unordered worker to send the second one first.
    discord.script_for("s1first", 503, 503)
    client = await relay_client(discord_config(discord, first="300ms", max_="300ms"))
    await post_event(client, message="s1first", session="s1")
    await post_event(client, message="s1second", session="s1")
    await post_event(client, message="s2only", session="s2")

    await discord.wait_for_delivered(3)

    texts = discord.delivered_texts()
    assert sorted(texts) == ["s1first", "s1second", "s2only"]
    assert texts.index("s1first") < texts.index("s1second")
    assert texts.index("s2only") < texts.index("s1first"), "s2 waited for s1's retries"
    tried = [r.description() for r in discord.requests]
    assert tried.index("s1second") > tried.index("s1first") + 2, (
        f"s1second was tried before s1first succeeded: {tried}"
    )
    assert tried.count("s1first") == 3
    assert assert_valid_payloads(discord) == 5


async def test_each_event_is_delivered_exactly_once_with_many_sessions(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    discord.script(*([503] * 10))
    client = await relay_client(discord_config(discord))
    messages = [f"bulk{i}" for i in range(20)]
    for i, message in enumerate(messages):
        await post_event(client, message=message, session=f"s{i % 4}")

    await discord.wait_for_delivered(len(messages))
    await wait_for_status(client, "sent", len(messages))
    await asyncio.sleep(GRACE_S)

    texts = discord.delivered_texts()
    assert sorted(texts) == sorted(messages)  # each exactly once
    for session in range(4):
        in_session = [m for i, m in enumerate(messages) if i % 4 == session]
        assert [t for t in texts if t in in_session] == in_session
    assert assert_valid_payloads(discord) == len(messages) + 10


# --- RetryPolicy -----------------------------------------------------------------------------


def test_delay_grows_exponentially_is_capped_and_jittered_within_half_to_full() -> None:
    policy = RetryPolicy(max_attempts=10, first_s=1.0, max_s=8.0)
    rng = random.Random(1234)
    expected_ceilings = {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 8.0, 9: 8.0}
    for attempts, ceiling in expected_ceilings.items():
        delays = [policy.delay_s(attempts, rng) for _ in range(500)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, min(delays))
        # Jitter really spreads over the whole range, not a point inside it.
        assert min(delays) < ceiling * 0.55
        assert max(delays) > ceiling * 0.95


def test_delay_is_reproducible_with_a_seeded_random() -> None:
    policy = RetryPolicy(max_attempts=10, first_s=0.01, max_s=0.05)
    first = [policy.delay_s(a, random.Random(7)) for a in range(1, 8)]
    again = [policy.delay_s(a, random.Random(7)) for a in range(1, 8)]
    assert first == again
    assert max(first) <= 0.05


def test_retry_at_prefers_retry_after_and_stops_at_max_attempts_or_permanent_errors() -> None:
    policy = RetryPolicy(max_attempts=3, first_s=1.0, max_s=8.0)
    rng = random.Random(0)
    transient = DeliveryError("503", retryable=True)
    limited = DeliveryError("429", retryable=True, retry_after_s=42.0)
    permanent = DeliveryError("404", retryable=False, retry_after_s=1.0)

    assert policy.retry_at(limited, 1, 100.0, rng) == 142.0
    retry = policy.retry_at(transient, 2, 100.0, rng)
    assert retry is not None and 101.0 <= retry <= 102.0
    assert policy.retry_at(transient, 3, 100.0, rng) is None
    assert policy.retry_at(limited, 3, 100.0, rng) is None
    assert policy.retry_at(permanent, 1, 100.0, rng) is None


async def test_history_past_store_retention_is_purged_while_relay_runs(
    relay_client: RelayClientFactory, tmp_path: Path, output: Output
) -> None:
    db_path = tmp_path / "relay.db"
    config = f"""
verify:
  secrets: ["${{SECRET}}"]
store:
  url: sqlite:{db_path}
  retention: 1h
destinations:
  stdout: {{ type: console }}
rules:
  - name: everything
    send_to: [stdout]
"""
    now = [1705312285.0]
    client = await relay_client(config, clock=lambda: now[0])

    async def post(body: bytes) -> None:
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert response.status == 200

    def stored() -> list[tuple[str, str]]:
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute(
                "SELECT e.body, d.status FROM events AS e"
                " LEFT JOIN deliveries AS d ON d.event_ref = e.id ORDER BY e.id"
            ).fetchall()
        return [(json.loads(body)["data"]["message"], str(status)) for body, status in rows]

    await post(event_body(message="two hours ago", session="old"))
    await wait_until("the first event sent", lambda: stored() == [("two hours ago", "sent")], 5)
    now[0] += 7200
    for n in range(30):  # each its own batch: the purge runs every few batches
        await post(event_body(message=f"now {n}", session=f"s{n}"))
    await wait_until("31 notifications", lambda: len(output.blocks()) == 31, 5)
    messages = [message for message, _ in stored()]
    assert "two hours ago" not in messages
    assert messages == [f"now {n}" for n in range(30)]


async def test_deliveries_queued_for_a_destination_gone_from_the_config_are_dead_lettered(
    relay_client: RelayClientFactory, tmp_path: Path, output: Output
) -> None:
    # Queued by an earlier run whose config had a "pager" destination; this run has not.
    db_path = tmp_path / "relay.db"
    store = SqliteStore(str(db_path))
    await store.open()
    queued = NewDelivery("pager", "everything", None, "s1")
    await store.accept(NewEvent("e1", event_body(), 1000.0), [queued], dedupe_window_s=60.0)
    await store.close()

    client = await relay_client(BASIC)
    store = client.app[STATE].store

    async def dead_lettered() -> bool:
        return bool(await store.list_deliveries("dead"))

    await wait_until("the pager delivery dead-lettered", dead_lettered, 5)
    (delivery,) = await store.list_deliveries("dead")
    assert (delivery.destination, delivery.attempts) == ("pager", 1)
    assert delivery.last_error == 'destination "pager" is no longer configured'
    assert output.blocks() == []


async def test_idle_lanes_ask_the_store_nothing_and_work_queued_elsewhere_is_found(
    relay_client: RelayClientFactory,
    tmp_path: Path,
    discord: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agency has a destination per customer. Idle lanes wait to be woken instead of
    asking the store for work every IDLE_POLL_S each; one look at the store per interval
    finds what another process queued (and wakes only that destination's lane)."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 0.1)
    count = 200
    destinations = "".join(
        f'  c{n}: {{ type: discord, webhook_url: "{discord.url()}" }}\n' for n in range(count)
    )
    client = await relay_client(
        f"""
verify: {{ secrets: ["${{SECRET}}"] }}
destinations:
{destinations}rules:
  - name: first
    send_to: [c0]
"""
    )
    worker = client.app[STATE].worker
    store = client.app[STATE].store
    assert isinstance(store, SqliteStore)
    await wait_until(
        "every destination to wait for work",
        lambda: all(worker.waiting_for_work(f"c{n}") for n in range(count)),
        10,
    )
    assert worker.lanes == 0  # nothing queued: no destination needs a lane yet
    ops_before = store.stats.ops
    await asyncio.sleep(1.0)  # ten intervals: 200 polling lanes would make ~4,000 operations
    assert store.stats.ops - ops_before == 0

    # Another process on the same file queues a delivery for c7: nobody here wakes c7.
    elsewhere = SqliteStore(str(tmp_path / "relay.db"))
    await elsewhere.open()
    try:
        body = event_body(message="queued elsewhere")
        queued = NewDelivery("c7", "first", None, "s1")
        await elsewhere.accept(
            NewEvent("e-elsewhere", body, 1000.0), [queued], dedupe_window_s=60.0
        )
    finally:
        await elsewhere.close()
    delivered = await discord.wait_for_delivered(1, timeout_s=5)
    assert [r.description() for r in delivered] == ["queued elsewhere"]
    await asyncio.sleep(GRACE_S)
    assert len(discord.delivered) == 1


async def test_a_lane_sends_a_delivery_with_few_store_operations(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    """An agency has a destination per customer and sends most deliveries through lanes that
    handle one at a time: each store operation a lane makes per delivery is paid by every
    destination. One webhook to an idle lane: its accept, which claims the delivery for
    the lane (no claim of the lane's own), Discord's rate limit (a token taken) and the
    record, which says nothing else of the destination is queued, so the lane does not
    look again."""
    client = await relay_client(discord_config(discord))
    worker = client.app[STATE].worker
    store = client.app[STATE].store
    assert isinstance(store, SqliteStore)
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    ops_before = store.stats.ops
    await post_event(client)
    await discord.wait_for_delivered(1, timeout_s=5)
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    assert store.stats.ops - ops_before == 3


async def test_a_lane_left_idle_retires_and_its_next_delivery_costs_no_more(
    relay_client: RelayClientFactory, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination per customer: a lane that has waited for work RETIRE_AFTER_S ends,
    so idle destinations hold no task and no memory. Its destination's next event is
    sent once, as cheaply as by a parked lane (claimed by its accept)."""
    monkeypatch.setattr(lanes, "RETIRE_AFTER_S", 0.2)
    client = await relay_client(discord_config(discord))
    worker = client.app[STATE].worker
    store = client.app[STATE].store
    assert isinstance(store, SqliteStore)
    await wait_until("the destination to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    assert worker.lanes == 0
    await post_event(client, "first", session="s1")
    await discord.wait_for_delivered(1, timeout_s=5)
    await wait_until("the lane to retire", lambda: worker.lanes == 0, 10)
    ops_before = store.stats.ops
    await post_event(client, "second", session="s2")
    await discord.wait_for_delivered(2, timeout_s=5)
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    await asyncio.sleep(GRACE_S)
    assert discord.delivered_texts() == ["first", "second"]
    assert store.stats.ops - ops_before == 3  # the accept, Discord's token, the record


async def test_accepts_that_claim_for_a_lane_keep_to_its_concurrency(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    """Accepts hand their deliveries to a parked lane only while it has a slot for them:
    eight accepted at once to a lane of two slots, and still at most two are sent at a
    time, each once."""
    discord.delay_s = 0.2  # a slow service: the sends overlap the accepts
    client = await relay_client(discord_config(discord, concurrency=2))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    messages = [f"m{n}" for n in range(8)]
    await asyncio.gather(*(post_event(client, m, session=f"s-{m}") for m in messages))
    delivered = await discord.wait_for_delivered(8, timeout_s=10)
    await asyncio.sleep(GRACE_S)
    assert sorted(r.description() for r in discord.delivered) == messages
    assert len(delivered) == 8
    assert discord.max_in_flight == 2


class HeldAccepts:
    """Holds the SQLite store's accepts before their commit, once `holding` is set, until
    `go_on` is: an accept that reserved its lanes' slots and is slow to be stored."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding, self.entered, self.go_on = asyncio.Event(), asyncio.Event(), asyncio.Event()
        accept = SqliteStore.accept

        async def held_before_the_commit(store: SqliteStore, *args: Any, **kwargs: Any) -> Any:
            if self.holding.is_set():
                self.entered.set()
                await self.go_on.wait()
            return await accept(store, *args, **kwargs)

        monkeypatch.setattr(SqliteStore, "accept", held_before_the_commit)


async def test_what_an_accept_claims_as_relay_stops_is_released_for_the_next_process(
    relay_client: RelayClientFactory,
    discord: FakeDiscord,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An accept set out to claim its delivery for a parked lane, and the worker began to
    stop before it was stored: the delivery is not sent from here, and not left to its
    lease either. Released, another process claims it at once."""
    held = HeldAccepts(monkeypatch)
    client = await relay_client(discord_config(discord))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    held.holding.set()
    posted = asyncio.create_task(post_event(client, "as relay stops"))
    await asyncio.wait_for(held.entered.wait(), timeout=5)
    stopped = asyncio.create_task(worker.stop(5.0))
    await wait_until("the worker to stop", lambda: worker.stopping, 5)
    held.go_on.set()
    event_id = await posted
    await asyncio.wait_for(stopped, timeout=10)
    elsewhere = SqliteStore(str(tmp_path / "relay.db"))
    await elsewhere.open()
    try:
        claimed = await elsewhere.claim("d0", time.time(), 10, owner="next", lease_s=60.0)
    finally:
        await elsewhere.close()
    assert [d.event_id for d in claimed] == [event_id]
    assert discord.delivered == []


async def test_a_lane_does_not_retire_while_an_accept_claims_for_it(
    relay_client: RelayClientFactory, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An accept reserved a slot of a parked lane and is slow to commit; meanwhile the
    lane's wait for work runs out. The lane stays, and the accept hands it the delivery,
    which is sent once."""
    monkeypatch.setattr(lanes, "RETIRE_AFTER_S", 0.2)
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 60.0)  # no look of the worker's meanwhile
    held = HeldAccepts(monkeypatch)
    client = await relay_client(discord_config(discord))
    worker = client.app[STATE].worker
    store = client.app[STATE].store
    assert isinstance(store, SqliteStore)
    await wait_until("the destination to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    held.holding.set()
    posted = asyncio.create_task(post_event(client, "slow to commit"))
    await asyncio.wait_for(held.entered.wait(), timeout=5)
    assert worker.lanes == 1  # made parked, for the accept to claim for
    ops_before = store.stats.ops
    # Its wait ran out, and it looked (a claim that finds nothing: the accept is held).
    await wait_until("the lane to look", lambda: store.stats.ops > ops_before, 10)
    assert worker.lanes == 1
    held.go_on.set()
    await posted
    await discord.wait_for_delivered(1, timeout_s=5)
    await asyncio.sleep(GRACE_S)
    assert discord.delivered_texts() == ["slow to commit"]


async def test_an_accept_that_fails_after_its_commit_leaves_its_claim_to_its_lease(
    relay_client: RelayClientFactory, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store kept the event and claimed its delivery for the lane, but the answer
    never came back (a timeout after the commit): relay answers 503 and nothing is
    handed. The lane looks, and sends it once the claim's lease ends, not at the worker's
    next look at the store (a minute away here)."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 60.0)
    accept = SqliteStore.accept
    failures = [StoreUnavailable("no answer in time")]

    async def lost_answer(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        result = await accept(self, *args, **kwargs)
        if failures:
            raise failures.pop()
        return result

    monkeypatch.setattr(SqliteStore, "accept", lost_answer)
    config = discord_config(discord).replace("delivery:\n", "delivery:\n  lease: 1s\n")
    client = await relay_client(config)
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    body = event_body(data={"role": "user", "message": "kept", "session_id": "s1"})
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 503
    delivered = await discord.wait_for_delivered(1, timeout_s=5)
    assert [r.description() for r in delivered] == ["kept"]
    await asyncio.sleep(GRACE_S)
    assert len(discord.delivered) == 1


async def test_a_slot_an_accept_gives_back_unused_lets_waiting_work_go(
    relay_client: RelayClientFactory, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane of one slot: a sender's retry of an event already accepted reserves it, and
    another conversation's event, accepted meanwhile, finds the lane full. The retry is a
    duplicate and claims nothing: the slot comes back and the other event goes at once,
    not at the worker's next look (a minute away here)."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 60.0)
    accept = SqliteStore.accept
    entered, go_on = asyncio.Event(), asyncio.Event()
    go_on.set()

    async def held_retry(self: SqliteStore, event: NewEvent, *args: Any, **kwargs: Any) -> Any:
        if b"retried" in event.body and not go_on.is_set():
            entered.set()
            await go_on.wait()
        return await accept(self, event, *args, **kwargs)

    monkeypatch.setattr(SqliteStore, "accept", held_retry)
    client = await relay_client(discord_config(discord, concurrency=1))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    body = event_body(data={"role": "user", "message": "retried", "session_id": "s1"})
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert (await response.json())["status"] == "accepted"
    await discord.wait_for_delivered(1, timeout_s=5)
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    go_on.clear()
    retry = asyncio.create_task(client.post("/webhook", data=body, headers=signed_headers(body)))
    await asyncio.wait_for(entered.wait(), timeout=5)  # it holds the lane's one slot
    await post_event(client, "other conversation", session="s2")
    go_on.set()
    assert (await (await retry).json())["status"] == "duplicate"
    delivered = await discord.wait_for_delivered(2, timeout_s=5)
    assert [r.description() for r in delivered] == ["retried", "other conversation"]


async def test_a_lane_sending_what_its_accepts_handed_it_still_takes_work_from_elsewhere(
    relay_client: RelayClientFactory,
    discord: FakeDiscord,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lane of two slots sends a delivery its accept handed it, and the send hangs.
    Another process queues a delivery for the same destination: the worker's look at the
    store finds it and the lane sends it with its free slot, without waiting for the send
    that hangs."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 0.1)
    discord.script_for("hangs", HANG)
    client = await relay_client(discord_config(discord, concurrency=2))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    await post_event(client, "hangs", session="s1")
    await discord.wait_for_requests(1, timeout_s=5)
    elsewhere = SqliteStore(str(tmp_path / "relay.db"))
    await elsewhere.open()
    try:
        body = event_body(data={"role": "user", "message": "queued elsewhere", "session_id": "s2"})
        queued = NewDelivery("d0", "everything", None, "s2")
        await elsewhere.accept(
            NewEvent("e-elsewhere", body, time.time()), [queued], dedupe_window_s=60.0
        )
    finally:
        await elsewhere.close()
    delivered = await discord.wait_for_delivered(1, timeout_s=5)
    assert [r.description() for r in delivered] == ["queued elsewhere"]
    discord.release()  # the hanging send answers 503, and is retried
    await discord.wait_for_delivered(2, timeout_s=5)


async def test_work_accepted_after_a_sends_record_but_before_it_ends_is_sent_at_once(
    relay_client: RelayClientFactory, discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send's record said nothing else was queued, and an event accepted after that
    record, but before the send's task ended, woke the lane: the lane must not trust the
    record, and sends the new event at once, not at the worker's next look at the store
    (a minute away here). One send at a time, so that the lane cannot claim meanwhile."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 60.0)
    recorded, go_on = asyncio.Event(), asyncio.Event()
    record_sent = SqliteStore.record_sent

    async def held_after_the_record(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        result = await record_sent(self, *args, **kwargs)
        if not go_on.is_set():
            recorded.set()  # committed; the send's task has not ended yet
            await go_on.wait()
        return result

    monkeypatch.setattr(SqliteStore, "record_sent", held_after_the_record)
    client = await relay_client(discord_config(discord, concurrency=1))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    await post_event(client, "first", session="s1")
    await asyncio.wait_for(recorded.wait(), timeout=5)
    await post_event(client, "second", session="s2")
    go_on.set()
    delivered = await discord.wait_for_delivered(2, timeout_s=5)
    assert [r.description() for r in delivered] == ["first", "second"]


async def test_a_lane_looks_again_after_a_send_whose_session_has_more_queued(
    relay_client: RelayClientFactory,
    tmp_path: Path,
    discord: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send's record tells the lane whether to look again. Another process queued two
    events of one conversation (the second waits for the first): after the first is
    sent, the lane claims the second at once, not at the worker's next look at the store
    (made a minute away here, so that only the lane's own look can send it in time)."""
    monkeypatch.setattr(lanes, "IDLE_POLL_S", 60.0)
    client = await relay_client(discord_config(discord))
    worker = client.app[STATE].worker
    await wait_until("the lane to wait for work", lambda: worker.waiting_for_work("d0"), 10)
    elsewhere = SqliteStore(str(tmp_path / "relay.db"))
    await elsewhere.open()
    try:
        for n in (1, 2):
            body = event_body(data={"role": "user", "message": f"m{n}", "session_id": "s1"})
            queued = NewDelivery("d0", "everything", None, "s1")
            await elsewhere.accept(NewEvent(f"e{n}", body, 1000.0), [queued], dedupe_window_s=60.0)
    finally:
        await elsewhere.close()
    worker.wake(["d0"])  # as if accepted here: the lane claims the first
    delivered = await discord.wait_for_delivered(2, timeout_s=5)
    assert [r.description() for r in delivered] == ["m1", "m2"]
