"""Slow and idle clients cannot use relay up (SPEC 3: server.read_timeout,
server.max_connections): bitHuman's event is answered while they hang on.

Each test runs `relay serve` as a real process and opens real TCP connections to it on
127.0.0.1 that send half a request line and stop, as a slowloris client does.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from relay.listener import BUSY_ANSWER
from tests.support.fake_discord import wait_until
from tests.support.processes import RelayProcess, RelayProcesses
from tests.support.relay import SECRET, event_body, signed_headers

READ_TIMEOUT_S = 1.0
HALF_A_REQUEST = b"POST /webh"


def write_config(
    tmp_path: Path, max_connections: int, read_timeout_s: float = READ_TIMEOUT_S
) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(
        f"""\
server: {{ host: 127.0.0.1, port: 0, read_timeout: {read_timeout_s:g}s,
          max_connections: {max_connections} }}
verify: {{ secrets: ["{SECRET}"] }}
store: {{ url: "sqlite:{tmp_path / "relay.db"}" }}
destinations: {{ stdout: {{ type: console }} }}
rules: [ {{ name: all, send_to: [stdout] }} ]
""",
        encoding="utf-8",
    )
    return path


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_slow(relay: RelayProcess, count: int) -> list[Stream]:
    """Open `count` connections that each send half a request line, in bursts of 200."""
    streams: list[Stream] = []
    for start in range(0, count, 200):
        burst = [
            asyncio.open_connection("127.0.0.1", relay.port) for _ in range(min(200, count - start))
        ]
        streams += await asyncio.gather(*burst)
    for _, writer in streams:
        writer.write(HALF_A_REQUEST)
    await asyncio.gather(*(writer.drain() for _, writer in streams))
    return streams


async def what_came_back(stream: Stream, timeout_s: float) -> bytes | None:
    """Read until relay closes the connection: what it sent, or None if it stayed open."""
    try:
        return await asyncio.wait_for(stream[0].read(), timeout_s)
    except TimeoutError:
        return None


def open_files(relay: RelayProcess) -> int:
    return len(os.listdir(f"/proc/{relay.popen.pid}/fd"))


async def post_real_event(relay: RelayProcess) -> tuple[int, float]:
    body = event_body(message=f"real-{time.monotonic()}")
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.post(relay.webhook_url, data=body, headers=signed_headers(body)) as answer,
    ):
        await answer.read()
        return answer.status, time.monotonic() - started


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


async def test_three_thousand_slow_connections_are_closed_and_a_real_event_gets_through(
    tmp_path: Path, processes: RelayProcesses
) -> None:
    # Long enough that all 3,000 are open at once on a busy machine: opening them takes
    # longer than relay's usual 1 s, and relay closes each read_timeout after it opened.
    read_timeout_s = 6.0
    relay = await processes.start(write_config(tmp_path, 4000, read_timeout_s))
    baseline = open_files(relay)
    streams = await open_slow(relay, 3000)
    try:
        await wait_until(
            "relay to hold the flood", lambda: open_files(relay) >= baseline + 2900, read_timeout_s
        )

        status, took_s = await post_real_event(relay)
        assert status == 200
        # Answered while the flood still hangs on, not once relay has closed it.
        assert took_s < read_timeout_s / 2, f"a real event took {took_s:.2f} s under the flood"

        # Within read_timeout of opening, relay closes every one of them.
        results = await asyncio.gather(*(what_came_back(s, 3 * read_timeout_s) for s in streams))
        assert results.count(None) == 0, f"{results.count(None)} connections stayed open"
        await wait_until("relay to let go of them", lambda: open_files(relay) <= baseline + 5, 5)
        print(f"\n3,000 slow connections closed; a real event took {took_s * 1000:.0f} ms")
    finally:
        close_all(streams)


async def test_connections_past_max_connections_are_refused_at_once(
    tmp_path: Path, processes: RelayProcesses
) -> None:
    read_timeout_s = 4.0  # far from "at once", however busy the machine
    relay = await processes.start(write_config(tmp_path, 100, read_timeout_s))
    streams = await open_slow(relay, 300)
    try:
        # Read for half of read_timeout: an answer in that time is a refusal at once,
        # not a connection that was held and then timed out.
        results = await asyncio.gather(*(what_came_back(s, read_timeout_s / 2) for s in streams))
        refused = [r for r in results if r is not None]
        assert len(refused) == 200, f"{len(refused)} refused, expected 300 - 100"
        assert all(r.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") for r in refused)
        assert all(b'{"error": "too many connections, retry later"}' in r for r in refused)

        # The 100 held are closed after read_timeout; then there is room again.
        await asyncio.sleep(read_timeout_s / 2 + 0.5)
        status, _ = await post_real_event(relay)
        assert status == 200
    finally:
        close_all(streams)


async def hold_the_only_connection(relay: RelayProcess) -> list[Stream]:
    """Open a slow connection that relay admitted, with max_connections 1.

    Just after start, relay may still count another connection for a moment (the
    readiness probe's, closed by the probe, is the likely one): a slow connection opened
    then is the one refused, and the first late client is admitted. Beside CPU hogs that
    happened in about half the runs. Until relay answers nothing on it, the slow
    connection is closed and opened again.
    """
    for _ in range(20):
        held = await open_slow(relay, 1)
        if await what_came_back(held[0], 0.1) is None:  # admitted: it waits for the rest
            return held
        close_all(held)  # refused: the slot was still taken
        await asyncio.sleep(0.05)
    raise AssertionError("relay refused every slow connection: its one slot stayed taken")


async def test_a_refused_client_that_sends_its_request_late_still_reads_the_503(
    tmp_path: Path, processes: RelayProcesses
) -> None:
    """The 503 must not be lost to a TCP reset: a client's request that arrives after
    relay refused the connection is read and dropped, so the client sees the answer and
    a clean end, as a real sender (bitHuman) would need to retry."""
    relay = await processes.start(write_config(tmp_path, max_connections=1))
    held = await hold_the_only_connection(relay)
    late = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", relay.port) for _ in range(20))
    )
    try:
        await asyncio.sleep(0.3)  # relay has answered and half-closed each of them by now
        body = event_body(message="late")
        for _, writer in late:
            writer.write(b"POST /webhook HTTP/1.1\r\nHost: relay\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answers = await asyncio.gather(*(what_came_back(s, 2.0) for s in late))
        assert answers == [BUSY_ANSWER] * 20
    finally:
        close_all(held + late)
