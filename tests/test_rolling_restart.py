"""A rolling restart behind a load balancer (SPEC 7) fails no request and loses nothing.

Real relay processes on one store (a SQLite file two share, or a redis-server three
share), behind a real HAProxy running deploy/haproxy.cfg; a sender posting a steady ~30
events a second, each once, as bitHuman does (no retry); each replica restarted in turn
with SIGTERM while it runs. Every event must be answered 200 and delivered exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_discord import FakeDiscord
from tests.support.haproxy import HAProxy
from tests.support.processes import RelayProcesses, write_discord_config
from tests.support.relay import event_body, signed_headers
from tests.support.smtp import free_port

RATE_PER_S = 30
RISE_S = 1.5  # HAProxy takes a replica back after two good checks 500 ms apart


def write_config(
    path: Path, port: int, store_url: str, discord: FakeDiscord, workers: int = 1
) -> Path:
    return write_discord_config(
        path.parent,
        discord,
        store_url=store_url,
        path=path,
        port=port,
        shutdown_timeout="5s",
        lease="2s",
        drain_grace="1s",  # HAProxy checks /readyz every 500 ms
        workers=workers,
    )


@pytest.fixture(params=["sqlite", "redis", "sqlite, 2 workers each"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, int, int]:
    """The store's URL, how many replicas share it, and how many workers each runs."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}", 2, 1
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url")), 3, 1
    return f"sqlite:{tmp_path / 'shared.db'}", 2, 2


@pytest.fixture
def haproxy_for(tmp_path: Path) -> Iterator[list[HAProxy]]:
    started: list[HAProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


class Sender:
    """Posts a new event every 1/RATE_PER_S seconds until stopped; one try each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: dict[str, int | str] = {}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)  # bitHuman's
        async with aiohttp.ClientSession(timeout=timeout) as http:
            posts: list[asyncio.Task[None]] = []
            n = 0
            while not self._stop.is_set():
                posts.append(asyncio.create_task(self._post(http, f"roll{n:04d}")))
                n += 1
                await asyncio.sleep(1 / RATE_PER_S)
            await asyncio.gather(*posts)

    async def _post(self, http: aiohttp.ClientSession, text: str) -> None:
        body = event_body(message=text, session=f"conv{hash(text) % 7}")
        try:
            async with http.post(self.url, data=body, headers=signed_headers(body)) as answer:
                await answer.read()
                self.answers[text] = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.answers[text] = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()


async def test_restarting_each_replica_in_turn_fails_no_request_and_loses_nothing(
    tmp_path: Path,
    processes: RelayProcesses,
    discord: FakeDiscord,
    shared_store: tuple[str, int, int],
    haproxy_for: list[HAProxy],
) -> None:
    store_url, count, workers = shared_store
    ports = [free_port() for _ in range(count)]
    configs = [
        write_config(tmp_path / f"relay{n}.yaml", port, store_url, discord, workers)
        for n, port in enumerate(ports)
    ]
    replicas = [await processes.start(config) for config in configs]
    proxy = HAProxy(tmp_path, ports).start()
    haproxy_for.append(proxy)
    await asyncio.sleep(RISE_S)

    sender = Sender(proxy.url + "/webhook")
    sending = asyncio.create_task(sender.run())
    started = time.monotonic()
    await asyncio.sleep(1.0)
    for n, config in enumerate(configs):
        assert await replicas[n].terminate() == 0
        replicas[n] = await processes.start(config)
        await asyncio.sleep(RISE_S)
    sender.stop()
    await sending
    took_s = time.monotonic() - started

    failed = {text: answer for text, answer in sender.answers.items() if answer != 200}
    print(f"\nrolling restart of {count} replicas: {len(sender.answers)} events in {took_s:.1f} s")
    assert failed == {}, f"{len(failed)} failed requests: {sorted(failed.items())[:5]}"
    await discord.wait_for_delivered(len(sender.answers), timeout_s=30.0)
    await asyncio.sleep(0.5)
    counts = Counter(discord.delivered_texts())
    assert set(counts) == set(sender.answers)
    assert [text for text, n in counts.items() if n > 1] == []
