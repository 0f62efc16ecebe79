"""SPEC sections 5 and 7: no accepted event is lost or sent twice across SIGKILL and SIGTERM.

`relay serve` runs as a real subprocess on a real SQLite file; Discord is a fake in this
process, down while events arrive and up once relay has been restarted.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from relay.store.sqlite import SqliteStore
from tests.support.fake_discord import FakeDiscord, assert_valid_payloads, wait_until
from tests.support.processes import RelayProcess, RelayProcesses, write_discord_config
from tests.support.relay import event_body, signed_headers

SESSIONS = 10
GRACE_S = 0.5  # backoff is capped at 200 ms: a duplicate would arrive within this
DELIVER_TIMEOUT_S = 30.0


def messages(count: int) -> list[str]:
    """Distinct chat messages (plain letters and digits: Discord escaping leaves them as is)."""
    return [f"restart{i:03d}" for i in range(count)]


def session_of(index: int) -> str:
    return f"sess{index % SESSIONS}"


def body_of(index: int, text: str) -> bytes:
    return event_body(data={"role": "user", "message": text, "session_id": session_of(index)})


async def post_all(process: RelayProcess, texts: list[str], expect: int = 200) -> None:
    """Post one signed chat.push per text; every one must be answered `expect`."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i, text in enumerate(texts):
            body = body_of(i, text)
            async with http.post(
                process.webhook_url, data=body, headers=signed_headers(body)
            ) as response:
                answer = await response.text()
                assert response.status == expect, f"event {i}: {response.status} {answer}"


async def store_statuses(tmp_path: Path) -> Counter[str]:
    """Read the delivery statuses from the SQLite file relay uses."""
    store = SqliteStore(str(tmp_path / "relay.db"))
    await store.open()
    try:
        return Counter(d.status for d in await store.list_deliveries(limit=10_000))
    finally:
        await store.close()


async def wait_for_a_failed_attempt(tmp_path: Path, discord: FakeDiscord) -> None:
    statuses: Counter[str] = Counter()

    async def failed_recorded() -> bool:
        nonlocal statuses
        statuses = await store_statuses(tmp_path)
        return statuses["failed"] >= 1

    await wait_until(
        lambda: (
            f"a failed attempt in the store (statuses {dict(statuses)},"
            f" {len(discord.requests)} request(s) to Discord)"
        ),
        failed_recorded,
        10.0,
        poll_s=0.05,
    )


async def assert_each_delivered_once(discord: FakeDiscord, texts: list[str]) -> None:
    """Wait for a 2xx for every text, then check none came twice or out of session order."""
    await wait_until(
        lambda: f"{len(texts)} deliveries (have {len(discord.delivered)})",
        lambda: len(discord.delivered) >= len(texts),
        DELIVER_TIMEOUT_S,
    )
    await asyncio.sleep(GRACE_S)
    delivered = discord.delivered_texts()
    duplicates = {text: n for text, n in Counter(delivered).items() if n > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    assert sorted(delivered) == sorted(texts)
    for session in range(SESSIONS):
        expected = [t for i, t in enumerate(texts) if i % SESSIONS == session]
        assert [t for t in delivered if t in expected] == expected, f"session {session} order"
    assert assert_valid_payloads(discord) == len(discord.requests)


async def test_sigkill_while_discord_fails_loses_and_duplicates_nothing(
    tmp_path: Path, discord: FakeDiscord, processes: RelayProcesses
) -> None:
    config = write_discord_config(tmp_path, discord)
    texts = messages(50)
    discord.down()
    first = await processes.start(config)
    await post_all(first, texts)
    await wait_for_a_failed_attempt(tmp_path, discord)

    first.kill()
    assert await first.wait_exit() == -9
    assert discord.delivered == []

    second = await processes.start(config)
    # bitHuman retrying events accepted before the crash: the dedupe keys survived too.
    await post_all(second, texts[:5], expect=200)
    discord.up()
    await assert_each_delivered_once(discord, texts)
    assert await store_statuses(tmp_path) == {"sent": len(texts)}
    assert await second.terminate() == 0


async def test_sigterm_exits_0_and_the_next_start_sends_what_was_pending(
    tmp_path: Path, discord: FakeDiscord, processes: RelayProcesses
) -> None:
    config = write_discord_config(tmp_path, discord)
    texts = messages(10)
    discord.down()
    first = await processes.start(config)
    await post_all(first, texts)
    await wait_for_a_failed_attempt(tmp_path, discord)

    assert await first.terminate() == 0, first.log()
    statuses = await store_statuses(tmp_path)
    assert statuses["sent"] == 0
    assert statuses["pending"] + statuses["failed"] == len(texts), statuses

    second = await processes.start(config)
    # Flip it the way another process would, through the fake's control endpoint.
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.post(discord.control_url + "/up") as response,
    ):
        assert response.status == 200
    await assert_each_delivered_once(discord, texts)
    assert await store_statuses(tmp_path) == {"sent": len(texts)}
    assert await second.terminate() == 0, second.log()


async def test_sigterm_during_a_hanging_send_drains_then_exits_0_and_loses_nothing(
    tmp_path: Path, discord: FakeDiscord, processes: RelayProcesses
) -> None:
    # shutdown_timeout: 2s; the send on the wire is not cut off then, it times out at 3s
    config = write_discord_config(tmp_path, discord, send_timeout="3s")
    texts = messages(3)
    discord.set_mode("hang")
    first = await processes.start(config)
    await post_all(first, texts)
    await discord.wait_for_requests(1)  # a send is in flight, and will not come back

    first.popen.send_signal(signal.SIGTERM)
    # While it drains, relay is not ready (a load balancer sends new events elsewhere), but
    # an event that still reaches it is kept: bitHuman would not send it again.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:

        async def not_ready() -> bool:
            async with http.get(first.base_url + "/readyz") as response:
                return response.status == 503

        # The signal lands asynchronously; the drain lasts shutdown_timeout (2 s).
        await wait_until("/readyz to answer 503 after SIGTERM", not_ready, 1.5)
        late = body_of(0, "latecomer")
        async with http.post(
            first.webhook_url, data=late, headers=signed_headers(late)
        ) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "accepted"
    assert await first.wait_exit() == 0, first.log()
    assert discord.delivered == []
    statuses = await store_statuses(tmp_path)
    assert statuses["pending"] + statuses["failed"] == len(texts) + 1, statuses

    await processes.start(config)
    discord.up()
    await assert_each_delivered_once(discord, [*texts, "latecomer"])
