"""Benchmark: end-to-end deliveries per second, SQLite against Redis, concurrency 1 and 4.

    python bench/deliveries.py [--events 2000] [--sessions 200] [--latency-ms 0]

For each store and each `delivery.concurrency`, it fills an empty store with EVENTS
events (one delivery each, spread over SESSIONS conversations) through relay's own Store
API, starts `relay serve` on it, and times the sends arriving at a fake Discord on
127.0.0.1 that answers at once (or after --latency-ms): deliveries per second from the
first arrival to the last, with every delivery claimed, sent and recorded by relay. The
redis-server is Debian's, started here with AOF and appendfsync always.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from relay.store import NewDelivery, NewEvent, open_store

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class FakeDiscord:
    """Answers every Execute Webhook at once (or after a latency) and counts arrivals."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.arrivals: list[float] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/webhooks/{id}/{token}", self._execute)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def _execute(self, request: web.Request) -> web.Response:
        await request.read()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self.arrivals.append(time.monotonic())
        return web.json_response({"id": str(len(self.arrivals))})

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def fill(store_url: str, events: int, sessions: int) -> None:
    """Accept `events` events into an empty store, one delivery each."""
    store = open_store(store_url)
    await store.open()
    now = time.time()
    try:
        for n in range(events):
            session = f"bench-session-{n % sessions}"
            body = json.dumps({
                "agent_id": "A80HVD8577", "event_type": "chat.push", "timestamp": now,
                "data": {"role": "user", "message": f"message {n}", "session_id": session},
            }).encode()  # fmt: skip
            await store.accept(
                NewEvent(f"bench-{n}", body, now),
                [NewDelivery("community", "all", None, session)],
                dedupe_window_s=3600,
            )
    finally:
        await store.close()


def write_config(path: Path, store_url: str, discord_port: int, concurrency: int) -> None:
    path.write_text(
        f"""\
server: {{ host: {HOST}, port: {free_port()}, shutdown_timeout: 2s }}
store: {{ url: "{store_url}" }}
delivery: {{ concurrency: {concurrency} }}
destinations:
  community: {{ type: discord, webhook_url: "http://{HOST}:{discord_port}/api/webhooks/1/t" }}
rules: [ {{ name: all, send_to: [community] }} ]
""",
        encoding="utf-8",
    )


async def run_one(
    tmp: Path, store_url: str, concurrency: int, args: argparse.Namespace, fake: FakeDiscord
) -> float:
    """Fill the store, start relay on it, return deliveries per second."""
    await fill(store_url, args.events, args.sessions)
    config = tmp / "relay.yaml"
    write_config(config, store_url, fake.port, concurrency)
    fake.arrivals.clear()
    relay = subprocess.Popen(
        [str(Path(sys.executable).with_name("relay")), "serve", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "relay.log").open("ab"),
        cwd=tmp,
    )
    try:
        deadline = time.monotonic() + args.timeout
        while len(fake.arrivals) < args.events:
            if time.monotonic() > deadline or relay.poll() is not None:
                raise SystemExit(f"only {len(fake.arrivals)} of {args.events} delivered")
            await asyncio.sleep(0.05)
    finally:
        relay.send_signal(signal.SIGTERM)
        await asyncio.to_thread(relay.wait, 30)
    span_s = fake.arrivals[-1] - fake.arrivals[0]
    return (len(fake.arrivals) - 1) / span_s if span_s > 0 else float("inf")


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    port = free_port()
    (tmp / "redis").mkdir()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--dir", str(tmp / "redis"),
         "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return proc, f"redis://{HOST}:{port}/0"


async def flush(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    await client.flushall()
    await client.aclose()


async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="relay-deliveries-"))
    fake = FakeDiscord(args.latency_ms / 1000)
    await fake.start()
    redis_proc, redis_url = start_redis(tmp)
    results: dict[tuple[str, int], float] = {}
    try:
        for store in ("sqlite", "redis"):
            for concurrency in (1, 4):
                if store == "sqlite":
                    url = f"sqlite:{tmp / f'relay-{concurrency}.db'}"
                else:
                    url = redis_url
                    await flush(url)
                rate = await run_one(tmp, url, concurrency, args, fake)
                results[store, concurrency] = rate
                print(f"{store}, concurrency {concurrency}: {rate:,.0f} deliveries/s", flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        await fake.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"{args.events} deliveries over {args.sessions} conversations, fake Discord answering"
        f" after {args.latency_ms:g} ms"
    )
    print(f"{'store':<8} {'concurrency 1':>14} {'concurrency 4':>14} {'4 / 1':>6}")
    for store in ("sqlite", "redis"):
        one, four = results[store, 1], results[store, 4]
        print(f"{store:<8} {one:>12,.0f}/s {four:>12,.0f}/s {four / one:>6.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per run")
    args = parser.parse_args(argv)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
