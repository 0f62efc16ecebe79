"""Benchmark: delivery latency, from relay's 200 to the event's arrival at a webhook receiver.

    python bench/latency.py [--rate 200] [--sessions 50] [--duration 20] [--no-redis]

For each store (a SQLite file; then a redis-server of its own with bench/run.py's AOF
settings, skipped with --no-redis or without redis-server) it starts `relay serve` with
one `webhook` destination pointing at a receiver in this process (aiohttp on 127.0.0.1,
port 0, answering 200), and one rule sending it every event. A sender in the same process
POSTs signed bitHuman session events at a fixed rate (open loop: each POST leaves at its
scheduled time, whether or not the earlier ones were answered), spread over --sessions
conversations drawn at random, each opened by a room.join and continued by chat.push.

Both ends read one monotonic clock. For every event it records when the POST left, when
relay answered 200 accepted (the event and its delivery durably stored) and when the
webhook request carrying it reached the receiver. The webhook destination sends the event
byte for byte as received, so the receiver matches an arrival to its event by the
SHA-256 of the body, which is relay's event_id (SPEC 2: no id header is sent), and checks
the webhook-id header derived from it. Latency is from relay's 200 to the arrival; the
first --warmup seconds of events are sent and checked but left out of the figures.

Exit status: 0 when the run is valid; 1 when a POST was not answered 200 accepted, or an
event never arrived, arrived twice, or something arrived that was not sent.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import hashlib
import hmac
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import run  # bench/run.py, next to this script: bodies' vocabulary, processes, redis-server
from aiohttp import web

HOST, PATH, SECRET = run.HOST, run.PATH, run.SECRET
HOOK_PATH = "/hook"
DESTINATION = "receiver"
DUPLICATE_GRACE_S = 0.5  # after the last arrival, how long a repeat may still come

# run.py's settings (server, verify, store, delivery), then this.
SECTIONS = """\
destinations:
  {destination}:
    type: webhook
    url: "http://{host}:{receiver_port}{hook_path}"
    secret: "{webhook_secret}"  # signed, as a CRM would want it: relay's real work

rules:
  - name: every-event
    send_to: [ {destination} ]
"""


# ---------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class Outgoing:
    event_id: str  # the SHA-256 of the body, as relay computes it without an id header
    body: bytes
    signature: str
    session: int
    kind: str


def build_events(count: int, sessions: int, rate: float) -> list[Outgoing]:
    """`count` unique signed session events (run.py's agents, rooms and messages) over
    `sessions` conversations drawn at random: a conversation's first event is its
    room.join, the rest are chat.push, as bitHuman sends them."""
    rng = random.Random(1705312200 + sessions)
    tag = os.urandom(4).hex()
    agents = [rng.choice(run.AGENTS) for _ in range(sessions)]
    joined: set[int] = set()
    key = SECRET.encode()
    now = time.time()
    events = []
    for n in range(count):
        s = rng.randrange(sessions)
        session = f"session_{tag}_{s}"
        # Each event's own time, 1/rate apart: no two bodies are alike, so relay's dedupe
        # never takes one for a repeat of another.
        stamp = round(now + n / rate, 6)
        data: dict[str, object]
        if s not in joined:
            joined.add(s)
            kind = "room.join"
            data = {
                "room_name": rng.choice(run.ROOMS),
                "participant_count": rng.randint(2, 4),
                "session_id": session,
            }
        else:
            kind = "chat.push"
            data = {
                "role": rng.choice(("user", "assistant")),
                "message": rng.choice(run.MESSAGES).format(n=n),
                "session_id": session,
                "timestamp": stamp,
            }
        event = {"agent_id": agents[s], "event_type": kind, "data": data, "timestamp": stamp}
        body = json.dumps(event, separators=(",", ":")).encode()
        signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        events.append(Outgoing(hashlib.sha256(body).hexdigest(), body, signature, s, kind))
    if len({e.event_id for e in events}) != count:
        raise SystemExit("two bodies are alike: relay would take one for a repeat")
    return events


def webhook_id(event_id: str) -> str:
    """The webhook-id relay's webhook destination sends for this event
    (relay/senders/webhook.py, WebhookSender.message_id)."""
    key = f"{DESTINATION}\n{event_id}".encode()
    return "msg_" + hashlib.sha256(key).hexdigest()[:32]


# ---------------------------------------------------------------------------- receiver


@dataclass
class Arrival:
    event_id: str
    at: float
    webhook_id_ok: bool


class Receiver:
    """The webhook destination's endpoint: answers 200 at once and notes each arrival."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(HOOK_PATH, self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        event_id = hashlib.sha256(body).hexdigest()
        ok = request.headers.get("webhook-id") == webhook_id(event_id)
        self.arrivals.append(Arrival(event_id, at, ok))
        return web.Response(status=200)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ---------------------------------------------------------------------------- sender


@dataclass
class Post:
    event: Outgoing
    due: float  # when the schedule said to send it
    # When the POST was begun; with every pooled connection busy it then waits for one.
    posted: float = 0.0
    answered: float = 0.0  # when relay's answer came (its status line and headers)
    status: int = 0
    answer: dict[str, object] = field(default_factory=dict)
    error: str = ""


async def _post(http: aiohttp.ClientSession, url: str, post: Post) -> None:
    headers = {"Content-Type": "application/json", "X-bitHuman-Signature": post.event.signature}
    post.posted = time.monotonic()
    try:
        async with http.post(url, data=post.event.body, headers=headers) as answer:
            post.answered = time.monotonic()
            post.status = answer.status
            text = await answer.text()
        post.answer = json.loads(text) if text.startswith("{") else {"text": text[:200]}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        post.error = f"{type(exc).__name__}: {exc}"


async def send_all(
    url: str, events: Sequence[Outgoing], rate: float, connections: int
) -> list[Post]:
    """POST every event at its scheduled time, rate per second (open loop: a slow answer
    delays no later POST, as bitHuman's own sends do not wait for each other)."""
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    posts: list[Post] = []
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.monotonic() + 0.05
        for n, event in enumerate(events):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            post = Post(event, due)
            posts.append(post)
            tasks.append(asyncio.create_task(_post(http, url, post)))
        await asyncio.gather(*tasks)
    return posts


async def wait_arrivals(receiver: Receiver, expected: set[str], drain_s: float) -> None:
    """Wait until every accepted event arrived (or drain_s passed), then a little longer
    for a repeat of one, which would make the run invalid."""
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        if expected <= {a.event_id for a in receiver.arrivals}:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(DUPLICATE_GRACE_S)


# ---------------------------------------------------------------------------- report


@dataclass
class Result:
    store: str
    sent: int
    accepted: int
    arrived: int
    missing: int
    duplicated: int
    unexpected: int
    bad_webhook_id: int
    answer_problems: list[str]
    latency_ms: list[float]  # relay's 200 -> arrival, measured events only
    from_post_ms: list[float]  # POST left -> arrival
    ingest_ms: list[float]  # POST left -> relay's 200
    send_rate: float
    max_lag_ms: float  # how late the sender's worst POST left against its schedule
    cpu_us: float  # relay's CPU per event sent, from the first POST to the last arrival

    @property
    def problems(self) -> list[str]:
        found = list(self.answer_problems)
        for count, what in (
            (self.missing, "accepted events never arrived"),
            (self.duplicated, "events arrived more than once"),
            (self.unexpected, "arrivals match no event sent"),
            (self.bad_webhook_id, "arrivals carry a webhook-id not derived from their event"),
        ):
            if count:
                found.append(f"{self.store}: {count} {what}")
        return found


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), -(-len(values) * p // 100)))
    return values[int(rank) - 1]


def summarize(
    store: str, posts: Sequence[Post], receiver: Receiver, measured_from: float, cpu_s: float
) -> Result:
    problems: list[str] = []
    accepted = {}
    for post in posts:
        answer_id = post.answer.get("event_id")
        if post.error:
            problems.append(f"{store}: POST failed: {post.error}")
        elif post.status != 200 or post.answer.get("status") != "accepted":
            problems.append(f"{store}: answered {post.status} {post.answer}")
        elif answer_id != post.event.event_id:
            problems.append(f"{store}: relay's event_id {answer_id} is not the body's SHA-256")
        elif post.answer.get("deliveries") != 1:
            problems.append(f"{store}: {post.answer.get('deliveries')} deliveries, not 1")
        else:
            accepted[post.event.event_id] = post
    counts = Counter(a.event_id for a in receiver.arrivals)
    first: dict[str, float] = {}
    for arrival in receiver.arrivals:
        first.setdefault(arrival.event_id, arrival.at)
    sent_ids = {p.event.event_id for p in posts}
    latency, from_post, ingest = [], [], []
    for event_id, post in accepted.items():
        if event_id in first and post.due >= measured_from:
            latency.append((first[event_id] - post.answered) * 1000)
            from_post.append((first[event_id] - post.posted) * 1000)
            ingest.append((post.answered - post.posted) * 1000)
    span = posts[-1].posted - posts[0].posted if len(posts) > 1 else 0.0
    return Result(
        store=store,
        sent=len(posts),
        accepted=len(accepted),
        arrived=len(receiver.arrivals),
        missing=len(accepted.keys() - first.keys()),
        duplicated=sum(1 for n in counts.values() if n > 1),
        unexpected=len(counts.keys() - sent_ids),
        bad_webhook_id=sum(1 for a in receiver.arrivals if not a.webhook_id_ok),
        answer_problems=problems[:5]
        + ([f"… {len(problems) - 5} more"] if len(problems) > 5 else []),
        latency_ms=sorted(latency),
        from_post_ms=sorted(from_post),
        ingest_ms=sorted(ingest),
        send_rate=(len(posts) - 1) / span if span > 0 else 0.0,
        max_lag_ms=max((p.posted - p.due) * 1000 for p in posts) if posts else 0.0,
        cpu_us=cpu_s * 1e6 / len(posts) if posts else 0.0,
    )


def print_report(args: argparse.Namespace, results: Sequence[Result]) -> None:
    print()
    print(
        f"{args.rate:g} events/s over {args.sessions} sessions, {args.duration} s"
        f" (+{args.warmup} s warm-up, not in the figures); {os.cpu_count()} CPUs shared by"
        " relay, its store and this process (sender and receiver)"
    )
    print("latency = relay's 200 accepted -> arrival at the receiver, ms")
    print(
        f"{'store':<7} {'sent':>6} {'arrived':>7} {'missing':>7} {'dup':>4}"
        f" {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}   {'sent/s':>7} {'lag max':>7}"
    )
    for r in results:
        lat = r.latency_ms
        print(
            f"{r.store:<7} {r.sent:>6} {r.arrived:>7} {r.missing:>7} {r.duplicated:>4}"
            f" {percentile(lat, 50):>7.2f} {percentile(lat, 90):>7.2f}"
            f" {percentile(lat, 99):>7.2f} {(lat[-1] if lat else float('nan')):>7.2f}"
            f"   {r.send_rate:>7.1f} {r.max_lag_ms:>7.2f}"
        )
    print("for reference: POST left -> arrival, and POST left -> relay's 200 (ingest), ms")
    for r in results:
        print(
            f"{r.store:<7} post->arrival p50 {percentile(r.from_post_ms, 50):.2f}"
            f" p99 {percentile(r.from_post_ms, 99):.2f};"
            f" post->200 p50 {percentile(r.ingest_ms, 50):.2f}"
            f" p99 {percentile(r.ingest_ms, 99):.2f}"
            f" ({len(r.latency_ms)} events measured)"
        )
    print("relay's CPU (all its threads) per event, accept and delivery, warm-up included")
    for r in results:
        print(f"{r.store:<7} {r.cpu_us:.0f} us")


# ---------------------------------------------------------------------------- runs


async def start_relay(
    args: argparse.Namespace, tmp: Path, procs: run.Processes, label: str, store_url: str,
    receiver_port: int,
) -> tuple[subprocess.Popen[bytes], int]:  # fmt: skip
    port = run.free_port()
    config = tmp / f"{label}.yaml"
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    sections = SECTIONS.format(
        host=HOST, destination=DESTINATION, receiver_port=receiver_port, hook_path=HOOK_PATH,
        webhook_secret=secret,
    )  # fmt: skip
    config.write_text(
        "# Generated by bench/latency.py: every event to one webhook destination.\n"
        + run.settings_text(port, store_url)
        + sections
    )
    command = run.relay_command(args.relay_cmd)
    await asyncio.to_thread(
        subprocess.run, [*command, "check", "-c", str(config)], check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    log = tmp / f"{label}.log"
    relay = procs.start([*command, "serve", "-c", str(config)], log, tmp)
    await asyncio.to_thread(run.wait_ready, relay, f"http://{HOST}:{port}/readyz", "GET", log)
    print(f"{label} pid {relay.pid} on :{port} ({store_url.partition(':')[0]} store)", flush=True)
    return relay, port


async def measure(
    args: argparse.Namespace, tmp: Path, procs: run.Processes, store: str, store_url: str,
    events: Sequence[Outgoing],
) -> Result:  # fmt: skip
    receiver = Receiver()
    await receiver.start()
    try:
        relay, port = await start_relay(
            args, tmp, procs, f"relay-{store}", store_url, receiver.port
        )
        print(
            f"{store}: sending {len(events)} events at {args.rate:g}/s"
            f" ({args.warmup} s warm-up + {args.duration} s)",
            flush=True,
        )
        url = f"http://{HOST}:{port}{PATH}"
        cpu_before = run.cpu_seconds(relay.pid)
        posts = await send_all(url, events, args.rate, args.connections)
        accepted = {p.event.event_id for p in posts if p.status == 200 and not p.error}
        await wait_arrivals(receiver, accepted, args.drain)
        cpu_s = run.cpu_seconds(relay.pid) - cpu_before
        # Stopped while the receiver still answers: a send under way ends normally.
        await asyncio.to_thread(procs.stop, relay)
    finally:
        await receiver.close()
    if args.keep:
        write_events(tmp / f"{store}-events.csv", posts, receiver)
    measured_from = posts[0].due + args.warmup if posts else 0.0
    return summarize(store, posts, receiver, measured_from, cpu_s)


def write_events(path: Path, posts: Sequence[Post], receiver: Receiver) -> None:
    """One line per event, times in ms from the first POST's schedule: for looking at when
    the slow ones happened (a pattern in time, a session, a kind)."""
    arrivals: dict[str, list[float]] = {}
    for arrival in receiver.arrivals:
        arrivals.setdefault(arrival.event_id, []).append(arrival.at)
    zero = posts[0].due if posts else 0.0
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["n", "session", "kind", "due", "posted", "answered", "arrived", "status"])
        for n, post in enumerate(posts):
            times = [post.due, post.posted, post.answered, *arrivals.get(post.event.event_id, [])]
            cells = [f"{(t - zero) * 1000:.3f}" if t else "" for t in times]
            arrived = ";".join(cells[3:])  # more than one: a repeat
            writer.writerow(
                [n, post.event.session, post.event.kind, *cells[:3], arrived, post.status]
            )


async def bench(args: argparse.Namespace, tmp: Path, procs: run.Processes) -> int:
    count = int(args.rate * (args.warmup + args.duration))
    events = build_events(count, args.sessions, args.rate)
    spec = importlib.util.find_spec("relay")
    print(f"relay package: {Path(spec.origin).parent if spec and spec.origin else 'not found'}")
    stores = {"sqlite": f"sqlite:{tmp / 'relay.db'}"}
    results = [await measure(args, tmp, procs, "sqlite", stores["sqlite"], events)]
    if not args.no_redis:
        redis_url = await asyncio.to_thread(run.start_redis, tmp, procs)
        if redis_url is not None:
            redis = procs.procs[-1]
            # Each store starts empty, so the same bodies are new to relay on Redis too.
            results.append(await measure(args, tmp, procs, "redis", redis_url, events))
            await asyncio.to_thread(procs.stop, redis)
    print_report(args, results)
    problems = [problem for r in results for problem in r.problems]
    for problem in problems:
        print(f"INVALID: {problem}")
    return 1 if problems else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--sessions", type=int, default=50, help="conversations they spread over")
    parser.add_argument("--duration", type=int, default=20, help="seconds measured, per store")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds sent first and left out of the figures"
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds to wait for arrivals after the last POST"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="the sender's connection pool to relay"
    )
    parser.add_argument(
        "--relay-cmd",
        help="command that runs relay (default: the venv's `relay`); for A/B runs of variants",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip relay on Redis")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, stores, per-event CSV)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= run.MAX_DURATION_S or not 0 <= args.warmup <= 30:
        parser.error(f"--duration must be 1..{run.MAX_DURATION_S}, --warmup 0..30")
    if not 0 < args.rate <= 5000 or args.sessions < 1 or args.connections < 1:
        parser.error("need 0 < --rate <= 5000, --sessions >= 1, --connections >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_redis and shutil.which("redis-server") is None:
        print("redis-server not found (Debian: apt-get install redis-server): SQLite only")
        args.no_redis = True
    return run.run_in_workdir(args.keep, lambda tmp, procs: asyncio.run(bench(args, tmp, procs)))


if __name__ == "__main__":
    sys.exit(main())
