"""SPEC section 2: a store that cannot write answers 503 (never 200), and relay recovers
without a restart once the store can write again.

Two real faults, no mocks:
- `relay serve` as a subprocess whose file-size limit is lowered at run time
  (RLIMIT_FSIZE): every write to the WAL or the database fails with EFBIG, so COMMIT fails.
- the app in-process, with another connection holding the write lock (BEGIN IMMEDIATE)
  longer than the store's busy timeout, so BEGIN fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient

from relay.app import create_app
from relay.store.sqlite import SqliteStore
from tests.support.fake_discord import FakeDiscord, wait_until
from tests.support.processes import LISTENING, write_discord_config
from tests.support.relay import SECRET, Output, event_body, make_config, signed_headers

UNAVAILABLE = {"error": "store unavailable, retry later"}
START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0


# --- relay serve with its stderr on a pipe -------------------------------------------------


@dataclass
class PipedRelay:
    """`relay serve` whose stderr is drained from a pipe by a thread.

    A pipe, not a file: the file-size limit applies to every regular file the process
    writes, its own log included, and the log is what explains a failure.
    """

    popen: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    path: str = "/webhook"

    def drain(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    def log(self) -> str:
        return "".join(self.lines)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listening(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"relay exited with {self.popen.returncode}:\n{self.log()}")
        match = LISTENING.search(self.log())
        if match is None:
            return False
        self.port, self.path = int(match.group(2)), match.group(3)
        return True


@contextlib.contextmanager
def piped_relay(config_path: Path) -> Iterator[PipedRelay]:
    popen = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve", "-c", str(config_path)],
        cwd=config_path.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    relay = PipedRelay(popen)
    drainer = threading.Thread(target=relay.drain, daemon=True)
    drainer.start()
    try:
        yield relay
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
        drainer.join(timeout=5)


def body_for(text: str) -> bytes:
    return event_body(data={"role": "user", "message": text, "session_id": f"s-{text}"})


async def post(http: aiohttp.ClientSession, url: str, text: str) -> tuple[int, object]:
    body = body_for(text)
    async with http.post(url, data=body, headers=signed_headers(body)) as response:
        return response.status, await response.json()


async def wait_ready(http: aiohttp.ClientSession, relay: PipedRelay) -> None:
    async def ready() -> bool:
        try:
            async with http.get(relay.base_url + "/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(lambda: f"relay to be ready; its log:\n{relay.log()}", ready, 10.0)


async def wait_delivered(discord: FakeDiscord, texts: list[str], relay: PipedRelay) -> None:
    await wait_until(
        lambda: f"deliveries of {texts}, have {discord.delivered_texts()}; log:\n{relay.log()}",
        lambda: set(texts) <= set(discord.delivered_texts()),
        15.0,
    )


def limit_file_size(pid: int, limit_bytes: int) -> None:
    """Set the soft file-size limit of a running process (root may raise it back)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))


async def test_file_size_limit_gives_503_then_relay_recovers_without_restart(
    tmp_path: Path, discord: FakeDiscord
) -> None:
    before = ["before1", "before2", "before3"]
    during = [f"during{i}" for i in range(6)]
    after = ["after1", "after2"]
    with piped_relay(write_discord_config(tmp_path, discord)) as relay:
        await wait_until(lambda: f"relay to listen; log:\n{relay.log()}", relay.listening, 20.0)
        url = relay.base_url + relay.path
        pid = relay.popen.pid
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await wait_ready(http, relay)
            for text in before:
                status, answer = await post(http, url, text)
                assert status == 200, (text, answer, relay.log())
            await wait_delivered(discord, before, relay)
            await asyncio.sleep(0.3)  # let the worker record the sends before the fault
            # One accepted event still waits for Discord when the fault starts: the worker
            # sends it while it cannot record anything, and must survive that.
            discord.down()
            assert (await post(http, url, "pending"))[0] == 200
            await discord.wait_for_requests(len(before) + 1)

            # 1 byte: whatever SQLite writes next (WAL frame, checkpoint) is past the limit.
            limit_file_size(pid, 1)
            one_by_one = [await post(http, url, text) for text in during[:3]]
            together = await asyncio.gather(*(post(http, url, text) for text in during[3:]))
            for text, (status, answer) in zip(during, [*one_by_one, *together], strict=True):
                assert (status, answer) == (503, UNAVAILABLE), (text, relay.log())
            async with http.get(relay.base_url + "/healthz") as health:
                assert health.status == 200
            assert relay.popen.poll() is None, relay.log()
            discord.up()
            await asyncio.sleep(0.5)  # retries of "pending" run into the fault

            limit_file_size(pid, resource.RLIM_INFINITY)
            # bitHuman's retries of the refused events: they were never stored, so they are
            # new events now, not duplicates.
            for text in [*during, *after]:
                status, answer = await post(http, url, text)
                assert status == 200, (text, answer, relay.log())
            await wait_delivered(discord, [*before, "pending", *during, *after], relay)
            async with http.get(relay.base_url + "/healthz") as health:
                assert health.status == 200
        assert relay.popen.poll() is None, relay.log()
        assert relay.popen.pid == pid
        assert "store unavailable, answering 503" in relay.log()


# --- in-process: another connection holds the write lock -----------------------------------

BASIC = f"""
verify:
  secrets: ["{SECRET}"]
destinations:
  stdout: {{ type: console }}
rules:
  - name: everything
    send_to: [stdout]
delivery:
  backoff: {{ first: 50ms, max: 200ms }}
"""

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


async def wait_for_texts(output: Output, texts: list[str], timeout_s: float = 10.0) -> None:
    await wait_until(
        lambda: f"console blocks for {texts}; have:\n{output.getvalue()}",
        lambda: all(text in output.getvalue() for text in texts),
        timeout_s,
    )


async def test_write_lock_held_past_busy_timeout_gives_503_then_recovers(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    output = Output()
    config = make_config(BASIC, tmp_path)
    db_path = tmp_path / "relay.db"
    store = SqliteStore(str(db_path), busy_timeout_ms=100)
    client = await aiohttp_client(create_app(config, store=store, stdout=output))

    async def post_text(text: str) -> tuple[int, object]:
        body = body_for(text)
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        return response.status, await response.json()

    assert (await post_text("before-lock"))[0] == 200
    await wait_for_texts(output, ["before-lock"])
    await asyncio.sleep(0.3)  # the worker records the send

    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        during = ["locked1", "locked2", "locked3"]
        answers = await asyncio.gather(*(post_text(text) for text in during))
        assert answers == [(503, UNAVAILABLE)] * len(during)
        assert (await post_text("locked4")) == (503, UNAVAILABLE)
        assert (await client.get("/healthz")).status == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    retried = [*during, "locked4", "after-lock"]
    for text in retried:
        status, answer = await post_text(text)
        assert status == 200, (text, answer)
    await wait_for_texts(output, ["before-lock", *retried])
    assert store.stats.failed_batches >= 2
