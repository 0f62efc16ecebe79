"""GET /metrics: the relay_ series an operator alerts on, with real values."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from relay.app import STATE
from relay.config import load_text
from tests.conftest import RelayClientFactory
from tests.support.redis_server import RedisServer
from tests.support.relay import CHAT_PUSH, ROOM_JOIN, SECRET, Output, signed_headers

CONFIG = """
verify:
  secrets: ["${SECRET}"]
destinations:
  stdout: { type: console }
  never: { type: console }
rules:
  - name: joins
    when: { event: room.join }
    send_to: [stdout]
"""


Client = TestClient[web.Request, web.Application]


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_events_rejections_and_deliveries(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(CONFIG)
    for body in (ROOM_JOIN, ROOM_JOIN, CHAT_PUSH):
        await client.post("/webhook", data=body, headers=signed_headers(body))
    await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN, "wrong"))
    await client.post("/webhook", data=b"[]", headers=signed_headers(b"[]"))
    async with asyncio.timeout(5):
        while not output.blocks():
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the lane records the send after printing it

    samples = await scrape(client)
    assert (
        samples[("relay_events_total", (("event_type", "room.join"), ("outcome", "accepted")))] == 1
    )
    assert (
        samples[("relay_events_total", (("event_type", "room.join"), ("outcome", "duplicate")))]
        == 1
    )
    assert (
        samples[("relay_events_total", (("event_type", "chat.push"), ("outcome", "accepted")))] == 1
    )
    assert (
        samples[("relay_events_total", (("event_type", "unknown"), ("outcome", "rejected")))] == 2
    )
    assert samples[("relay_rejected_requests_total", (("reason", "signature"),))] == 1
    assert samples[("relay_rejected_requests_total", (("reason", "invalid_event"),))] == 1
    sent = (("destination", "stdout"), ("outcome", "sent"))
    assert samples[("relay_deliveries_total", sent)] == 1
    assert samples[("relay_delivery_seconds_count", (("destination_type", "console"),))] == 1
    assert samples[("relay_queue_depth", (("destination", "stdout"),))] == 0
    assert samples[("relay_queue_depth", (("destination", "never"),))] == 0
    bucket = ("relay_delivery_seconds_bucket", (("destination_type", "console"), ("le", "+Inf")))
    assert samples[bucket] == 1


async def queue_joins(client: Client, count: int) -> None:
    """Stop the worker, so that deliveries wait in the store; post `count` joins."""
    worker = client.app[STATE].worker
    assert worker is not None
    await worker.stop(1.0)
    for i in range(count):
        body = ROOM_JOIN.replace(b"session_xyz789", f"s{i}".encode())
        assert (
            await client.post("/webhook", data=body, headers=signed_headers(body))
        ).status == 200


async def test_queue_depth_counts_waiting_deliveries(relay_client: RelayClientFactory) -> None:
    client = await relay_client(CONFIG)
    await queue_joins(client, 3)
    samples = await scrape(client)
    assert samples[("relay_queue_depth", (("destination", "stdout"),))] == 3


async def test_while_the_store_is_down_queue_depths_keep_their_last_reading(
    relay_client: RelayClientFactory, redis_server: RedisServer
) -> None:
    """Not a depth of 0, which would read as an empty queue: relay_store_up says 0."""
    client = await relay_client(CONFIG + f'store: {{ url: "{redis_server.url}" }}\n')
    await queue_joins(client, 2)
    samples = await scrape(client)
    assert samples[("relay_store_up", ())] == 1
    assert samples[("relay_queue_depth", (("destination", "stdout"),))] == 2

    redis_server.kill()
    samples = await scrape(client)
    assert samples[("relay_store_up", ())] == 0
    assert samples[("relay_queue_depth", (("destination", "stdout"),))] == 2
    assert samples[("relay_queue_depth", (("destination", "never"),))] == 0


async def test_a_removed_destination_whose_queue_emptied_reads_0(
    relay_client: RelayClientFactory,
) -> None:
    """Once a reload removed it and its deliveries died, it is configured nowhere and
    queued nowhere: its depth is 0, not its last reading."""
    client = await relay_client(CONFIG)
    await queue_joins(client, 2)
    assert (await scrape(client))[("relay_queue_depth", (("destination", "stdout"),))] == 2

    state = client.app[STATE]
    removed = CONFIG.replace("stdout", "elsewhere")
    state.config = load_text(removed, "relay.yaml", {"SECRET": SECRET})
    for delivery in await state.store.claim("stdout", 9e9, 10, owner="test", lease_s=10):
        assert await state.store.record_failure(
            delivery.id, "removed", retry_at=None, now=9e9, owner="test"
        )
    samples = await scrape(client)
    assert samples[("relay_queue_depth", (("destination", "stdout"),))] == 0
    assert samples[("relay_queue_depth", (("destination", "elsewhere"),))] == 0
