"""Benchmark: what `conversations:` (SPEC 4.4) costs ingest, and whether the cost grows
with the number of open conversations.

    python bench/conversations.py                    # SQLite and Redis, every part
    python bench/conversations.py --no-redis         # SQLite only
    python bench/conversations.py --parts onoff --rounds 5
    python bench/conversations.py --parts chats --chat-length 20
    python bench/conversations.py --parts scale,store --scale-rounds 3
    python bench/conversations.py --parts counters        # issue 18's activity counters

Five parts, each on SQLite and (unless --no-redis) on a redis-server of its own per run
(AOF, appendfsync always, as bench/run.py starts it):

onoff   `relay serve` measured from outside with wrk exactly as bench/run.py measures it
        (its config, rules, bodies, wrk flags, warm-up and duration), once without and once
        with a `conversations:` section, alternating off, on, off, on … for --rounds
        rounds; each run on an empty store. Prints every run and, per round and as the
        median, the ratio on/off of req/s (target >= 0.90) and of CPU per request.
chats   the same, with bodies in conversations of --chat-length events (default 10; 1,000
        conversations at a time, their events interleaved, run.py's mix of kinds and
        roles), as avatars' traffic comes: the first event of each opens a watch, the
        others move it on. onoff is the worst case, every event a new conversation.
counters  as onoff, with `conversations:` on in both runs, and the activity counters of the
        console (SPEC 8.1) off, then on: a `console` section (its listener idle) makes relay
        keep them, in the transaction of each event. Target >= 0.90 as well.
scale   the same relay with `conversations:` on, started on a store pre-filled through the
        store's own API (Store.accept with an Observation, 256 callers so group commit
        batches them) with --prefill-events events (default: the largest N) spread over N
        conversations, N each of --cases (default 10 and 100,000), so N open watches; then
        wrk with unique signed bodies whose data.session_id is drawn from those N, so every
        request moves an existing watch on. Interleaved 10, 100k, 10, 100k … for
        --scale-rounds rounds; prints each run, each case's spread between its own runs
        (the noise) next to the difference between each case and the first.
store   right after each scale run (relay stopped, the same store), the store alone in this
        process: --store-accepts accepts with an Observation from 64 callers, sessions
        drawn from the same N: accepts per second and CPU per accept (this process; on
        Redis the redis-server's CPU separately, since the watch's Lua runs there).

Each run also shows `others`: the cores that processes other than relay, redis-server, wrk
and this one kept busy meanwhile (from /proc/stat); above 0.25 the run is marked disturbed
(!), and the summaries are given again over the undisturbed runs alone. --wait-quiet S
waits up to S seconds before each run for the machine to be quiet.

Validity, as bench/run.py: relay must answer only 200 accepted, no body may be reused, and
the store must hold one event per accepted answer (plus the prefill, plus at most one in
flight per connection at wrk's stop); besides, the store must hold no watch with
conversations off, one per stored event on (every run.py body is a new session), one per
conversation with an event in chats (SQLite; Redis keeps no index to count by), exactly N
in the scale part (no request opened a new conversation), and relay must have raised no
signal (none is due within a run: the prefill's deadlines are 2m and 10m out). Any failure
prints INVALID and exits 1; --strict exits 2 when a target is missed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import run  # bench/run.py, next to this script: wrk, processes, bodies, config

import relay
from relay.conversations.watch import observation_of
from relay.events import Event, parse_event
from relay.store import NewEvent, open_store

HOST, PATH, SECRET = run.HOST, run.PATH, run.SECRET
UNANSWERED_AFTER_S = 120.0  # the section's defaults, written out in the config
ENDED_AFTER_S = 600.0
CONVERSATIONS_SECTION = """
conversations:
  unanswered_after: 2m
  ended_after: 10m
"""
DEDUPE_WINDOW_S = 86400.0  # run.py's config: dedupe_window 24h
TARGET_ONOFF = 0.90
DISTURBED = 0.25  # cores other processes kept busy during a run that make it disturbed
PREFILL_CALLERS = 256
STORE_CALLERS = 64
REDIS_PREFIX = "relay:{relay}:"
# The counters part: relay keeps the console's activity counters (SPEC 8.1) while a
# console section is set; both of its runs watch conversations.
CONSOLE_SECTION = """
console:
  listen: 127.0.0.1:0
  password: "bench-console-password"
"""
ALL_PARTS = ("onoff", "chats", "counters", "scale", "store")


# ---------------------------------------------------------------------------- bodies


def session_name(tag: str, index: int) -> str:
    return f"conv_{tag}_{index}"


def _event_in(rng: random.Random, body_tag: str, n: int, session: str) -> bytes:
    """A run.py event (same mix of kinds, roles, agents, messages) in a given session.
    run.py's bodies are unique through their session ids; these share sessions, so each
    carries `data.seq`, unique to its file and line, lest two be one event to relay."""
    event = run._event(rng, body_tag, n, time.time())
    data = event["data"]
    assert isinstance(data, dict)
    data["session_id"] = session
    data["seq"] = f"{body_tag}.{n}"
    return json.dumps(event, separators=(",", ":")).encode()


def write_chat_bodies(path: Path, count: int, length: int, tag: str, open_: int = 1000) -> None:
    """Write `count` unique signed bodies (run.py's format) in conversations of `length`
    events: `open_` conversations at a time, their events interleaved, then the next
    `open_`; so any first stretch of the file (what a run sends) holds conversations of
    `length` events, as avatars' traffic does."""
    rng = random.Random(1705312200 + length)
    body_tag = os.urandom(4).hex()
    key = SECRET.encode()
    block = length * open_
    with path.open("wb") as out:
        for n in range(count):
            session = session_name(tag, (n // block) * open_ + n % open_)
            body = _event_in(rng, body_tag, n, session)
            signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write(signature.encode() + b"\t" + body + b"\n")


def write_scale_bodies(path: Path, count: int, conversations: int, tag: str) -> None:
    """Write `count` unique signed bodies (run.py's format), each in one of the
    `conversations` sessions, drawn at random."""
    rng = random.Random(1705312200 + conversations)
    body_tag = os.urandom(4).hex()
    key = SECRET.encode()
    with path.open("wb") as out:
        for n in range(count):
            session = session_name(tag, rng.randrange(conversations))
            body = _event_in(rng, body_tag, n, session)
            signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write(signature.encode() + b"\t" + body + b"\n")


def accepts(
    tag: str, conversations: int, count: int, *, spread: bool
) -> Iterator[tuple[NewEvent, Any]]:
    """Events as relay's ingest hands them to the store: event k in conversation
    k % conversations (spread=False, so every one of them gets an event) or in one drawn at
    random; each with the Observation ingest makes of it."""
    rng = random.Random(count + conversations)
    body_tag = os.urandom(4).hex()
    for k in range(count):
        index = rng.randrange(conversations) if spread else k % conversations
        body = _event_in(rng, body_tag, k, session_name(tag, index))
        now = time.time()
        event = parse_event(body, event_id=None, received_at=now)
        yield NewEvent(event.event_id, body, now), _observation(event)


def _observation(event: Event) -> Any:
    """What ingest hands the store with `conversations:` on, whichever relay this is: an
    observation_of that takes the windows as a pair, or (commit d46ffb8) as keywords."""
    if "windows" in inspect.signature(observation_of).parameters:
        return observation_of(event, (UNANSWERED_AFTER_S, ENDED_AFTER_S))
    older: Any = observation_of  # the keywords' signature is not this relay's
    return older(event, unanswered_after_s=UNANSWERED_AFTER_S, ended_after_s=ENDED_AFTER_S)


# ---------------------------------------------------------------------------- the store


async def _accept_all(url: str, items: Iterable[tuple[NewEvent, Any]], callers: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        iterator = iter(items)

        async def caller() -> None:
            for event, seen in iterator:
                await store.accept(event, (), dedupe_window_s=DEDUPE_WINDOW_S, observation=seen)

        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        await store.close()


def prefill(url: str, tag: str, conversations: int, events: int) -> float:
    """Fill a store with `events` events over `conversations` open conversations, through
    the store's own accept; return the seconds it took."""
    started = time.monotonic()
    asyncio.run(
        _accept_all(url, accepts(tag, conversations, events, spread=False), PREFILL_CALLERS)
    )
    return time.monotonic() - started


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def store_accepts(
    url: str, tag: str, conversations: int, count: int, redis_pid: int | None
) -> dict[str, float]:
    """Time `count` accepts against the store alone: per second, CPU per accept."""
    items = list(accepts(tag, conversations, count, spread=True))  # made before the clock
    redis_before = _cpu_s(redis_pid) if redis_pid else 0.0
    started, cpu, busy = time.perf_counter(), _own_cpu_s(), _busy_s()
    asyncio.run(_accept_all(url, items, STORE_CALLERS))
    elapsed, cpu, busy = time.perf_counter() - started, _own_cpu_s() - cpu, _busy_s() - busy
    redis_cpu = _cpu_s(redis_pid) - redis_before if redis_pid else 0.0
    return {
        "per_s": count / elapsed,
        "cpu_us": cpu * 1e6 / count,
        "redis_cpu_us": redis_cpu * 1e6 / count,
        "others": (busy - cpu - redis_cpu) / elapsed,
    }


@dataclass
class Counts:
    events: int
    watches: int


def store_counts(url: str) -> Counts:
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(url) as client:
            events = int(client.zcard(REDIS_PREFIX + "events"))
            return Counts(events, int(client.zcard(REDIS_PREFIX + "w-quiet")))
    db = url.removeprefix("sqlite:")
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        watches = conn.execute("SELECT count(*) FROM watches").fetchone()[0]
    return Counts(int(events), int(watches))


def distinct_sessions(url: str, otherwise: int) -> int:
    """How many conversations the stored events are in; on Redis, which keeps no index
    of them, `otherwise` (the watch count stands unchecked there)."""
    if url.startswith("redis"):
        return otherwise
    db = url.removeprefix("sqlite:")
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        query = "SELECT count(DISTINCT json_extract(body, '$.data.session_id')) FROM events"
        return int(conn.execute(query).fetchone()[0])


def _redis_persistence(url: str) -> dict[str, Any]:
    import redis

    with redis.Redis.from_url(url) as client:
        return dict(client.info("persistence"))


def aof_rewrites(url: str) -> int:
    """How many AOF rewrites the redis-server has done (0 for SQLite)."""
    return int(_redis_persistence(url)["aof_rewrites"]) if url.startswith("redis") else 0


def settle(url: str, limit_s: float = 120) -> float:
    """Rewrite a redis-server's AOF after the prefill and wait for it, so no rewrite the
    prefill's growth started or made due (a fork writing the whole data set) runs during
    a measured run, whatever the case; return the seconds it took (0 for SQLite)."""
    if not url.startswith("redis"):
        return 0.0
    import redis

    started = time.monotonic()

    def busy() -> bool:
        info = _redis_persistence(url)
        return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])

    for step in ("before", "after"):
        while busy():
            if time.monotonic() - started > limit_s:
                raise SystemExit(f"redis-server still rewriting its AOF after {limit_s:.0f} s")
            time.sleep(0.2)
        if step == "before":
            with redis.Redis.from_url(url) as client:
                client.bgrewriteaof()
    return time.monotonic() - started


# ---------------------------------------------------------------------------- relay runs


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    procs: run.Processes
    plan: run.Plan
    tag: str  # the scale part's session names
    wrk_log: Path
    runs: int = 0

    def rundir(self, label: str) -> Path:
        self.runs += 1
        path = self.tmp / f"{self.runs:02d}-{label}"
        path.mkdir()
        return path

    def done_with(self, path: Path) -> None:
        if not self.args.keep:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class StoreUnderTest:
    url: str
    redis: subprocess.Popen[bytes] | None


def fresh_store(bench: Bench, kind: str, rundir: Path) -> StoreUnderTest:
    if kind == "sqlite":
        return StoreUnderTest(f"sqlite:{rundir / 'relay.db'}", None)
    url = run.start_redis(rundir, bench.procs)
    assert url is not None  # main() checked that redis-server exists
    return StoreUnderTest(url, bench.procs.procs[-1])


@dataclass
class Row:
    part: str
    store: str
    round: int
    case: str
    values: dict[str, float] = field(default_factory=dict)


def _metric_sum(text: str, name: str, label: str) -> float:
    pattern = re.compile(rf"^{name}\{{[^}}]*{label}[^}}]*\}} (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def scrape(port: int) -> dict[str, float]:
    url = f"http://{HOST}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        "raised": _metric_sum(text, "relay_events_total", 'outcome="raised"'),
        "sent": _metric_sum(text, "relay_deliveries_total", 'outcome="sent"'),
    }


def start_relay(
    bench: Bench, rundir: Path, store_url: str, sections: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start relay serve on run.py's config with `sections` (YAML text) appended."""
    port = run.free_port()
    config = rundir / "relay-bench.yaml"
    text = run.CONFIG_TEMPLATE.format(
        host=HOST, port=port, path=PATH, secret=SECRET, store_url=store_url, workers=1
    )
    config.write_text(text + sections)
    command = run.relay_command(bench.args.relay_cmd)
    subprocess.run([*command, "check", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)
    log = rundir / "relay.log"
    relay = bench.procs.start([*command, "serve", "-c", str(config)], log, rundir)
    run.wait_ready(relay, f"http://{HOST}:{port}/readyz", "GET", log)
    return relay, port


def _busy_s() -> float:
    """CPU time the whole machine has spent busy so far, all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """run.cpu_seconds (a process and its running children) plus the children it has reaped:
    redis-server's AOF rewrites run in a child of their own."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return run.cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
    return usage.ru_utime + usage.ru_stime


def wait_quiet(limit_s: float) -> None:
    """Wait, at most `limit_s`, for two seconds in which other processes keep less than a
    tenth of a core busy: a run then starts on a quiet machine, whichever case it is."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy, own = _busy_s(), _own_cpu_s() + _children_cpu_s()
        time.sleep(2)
        if _busy_s() - busy - (_own_cpu_s() + _children_cpu_s() - own) < 0.2:
            return
    if limit_s > 0:
        print(f"the machine stayed busy for {limit_s:.0f} s: measuring all the same", flush=True)


def measure(
    bench: Bench, load: run.Load, label: str, relay: int, redis: int | None
) -> list[run.WrkResult]:
    """run.py's measure, with the redis-server's CPU per request besides relay's, and how
    many cores everything else on the machine kept busy meanwhile (`others`: not relay,
    redis-server or wrk; other jobs on a shared machine), to tell a disturbed run."""
    plan, runs = bench.plan, []
    if plan.warmup:
        runs.append(
            run.run_wrk(load, f"{label}-warm", plan.warmup, 0, plan.warm_count, bench.wrk_log)
        )
    pids = [relay] if redis is None else [relay, redis]
    before = [_cpu_s(pid) for pid in pids]
    busy, wrk_cpu, started = _busy_s(), _children_cpu_s(), time.monotonic()
    result = run.run_wrk(
        load, label, plan.duration, plan.warm_count, plan.measured_count, bench.wrk_log
    )
    spent = [_cpu_s(pid) - cpu for pid, cpu in zip(pids, before, strict=True)]
    busy, wrk_cpu = _busy_s() - busy, _children_cpu_s() - wrk_cpu
    result.values["others"] = (busy - sum(spent) - wrk_cpu) / (time.monotonic() - started)
    requests = max(result["requests"], 1)
    result.values["cpu_us_per_req"] = spent[0] * 1e6 / requests
    result.values["redis_cpu_us_per_req"] = spent[1] * 1e6 / requests if redis else 0.0
    runs.append(result)
    return runs


def answer_problems(label: str, runs: Sequence[run.WrkResult]) -> list[str]:
    problems = []
    for r in runs:
        if r.non_2xx:
            problems.append(f"{label}: {r.non_2xx} non-2xx answers or socket errors")
        if r["status_other_2xx"]:
            problems.append(f"{label}: {int(r['status_other_2xx'])} 2xx other than accepted")
        if r["reused"]:
            problems.append(
                f"{label}: {int(r['reused'])} requests reused a body (raise --max-rate)"
            )
    return problems


def store_problems(
    label: str,
    runs: Sequence[run.WrkResult],
    counts: Counts,
    prefilled: int,
    watches: int,
    connections: int,
) -> list[str]:
    """The store must hold the prefill plus one event per accepted answer (plus those in
    flight at wrk's stop) and exactly `watches` watches."""
    counted = int(sum(r["accepted"] for r in runs))
    extra = counts.events - prefilled - counted
    slack = connections * len(runs)
    problems = []
    if not 0 <= extra <= slack:
        problems.append(
            f"{label}: store holds {counts.events} events, expected {prefilled} prefilled"
            f" + {counted} accepted (+ at most {slack} in flight)"
        )
    if counts.watches != watches:
        problems.append(f"{label}: store holds {counts.watches} watches, expected {watches}")
    return problems


def relay_run(
    bench: Bench,
    label: str,
    store: StoreUnderTest,
    rundir: Path,
    *,
    sections: str,
    bodies: Path,
) -> tuple[list[run.WrkResult], dict[str, float]]:
    relay, port = start_relay(bench, rundir, store.url, sections)
    wait_quiet(bench.args.wait_quiet)
    print(f"{label}: relay pid {relay.pid} on :{port}", flush=True)
    load = run.Load(
        f"http://{HOST}:{port}{PATH}", bodies, bench.args.threads, bench.args.connections
    )
    rewrites = aof_rewrites(store.url)
    runs = measure(bench, load, label, relay.pid, store.redis.pid if store.redis else None)
    time.sleep(0.5)  # let the requests in flight at wrk's stop reach the store
    scraped = scrape(port)
    scraped["aof_rewrites"] = aof_rewrites(store.url) - rewrites
    bench.procs.stop(relay)
    return runs, scraped


# ---------------------------------------------------------------------------- the parts


def onoff_part(
    bench: Bench, kind: str, bodies: Path, part: str = "onoff"
) -> tuple[list[Row], list[str]]:
    """Off and on, alternating: `conversations:` without and with (onoff, chats), or the
    activity counters without and with, conversations watched in both (counters)."""
    off, on = ("", CONVERSATIONS_SECTION)
    if part == "counters":
        off, on = (CONVERSATIONS_SECTION, CONVERSATIONS_SECTION + CONSOLE_SECTION)
    rows, problems = [], []
    for round_ in range(1, bench.args.rounds + 1):
        for mode in ("off", "on"):
            label = f"{part}-{kind}-{round_}-{mode}"
            rundir = bench.rundir(label)
            store = fresh_store(bench, kind, rundir)
            runs, scraped = relay_run(
                bench,
                label,
                store,
                rundir,
                sections=on if mode == "on" else off,
                bodies=bodies,
            )
            counts = store_counts(store.url)
            problems += answer_problems(label, runs)
            if mode == "off" and part != "counters":
                watches = 0
            elif part in ("onoff", "counters"):
                watches = counts.events  # every body a new session
            else:  # one per conversation that had an event
                watches = distinct_sessions(store.url, counts.watches)
            problems += store_problems(label, runs, counts, 0, watches, bench.args.connections)
            if scraped["raised"]:
                problems.append(f"{label}: relay raised {int(scraped['raised'])} signals")
            if store.redis:
                bench.procs.stop(store.redis)
            rows.append(Row(part, kind, round_, mode, _figures(runs[-1], scraped)))
            bench.done_with(rundir)
    return rows, problems


def _figures(result: run.WrkResult, scraped: dict[str, float]) -> dict[str, float]:
    return {
        "rps": result.rps,
        "p50": result.p50_ms,
        "p99": result.p99_ms,
        "cpu": result["cpu_us_per_req"],
        "redis_cpu": result["redis_cpu_us_per_req"],
        "requests": result["requests"],
        "sent": scraped["sent"],
        "others": result["others"],
        "aof_rewrites": scraped["aof_rewrites"],
    }


def scale_part(
    bench: Bench, kind: str, bodies: dict[int, Path], parts: Sequence[str]
) -> tuple[list[Row], list[str]]:
    args = bench.args
    rows, problems = [], []
    for round_ in range(1, args.scale_rounds + 1):
        for n in args.cases:
            label = f"scale-{kind}-{round_}-{n}"
            rundir = bench.rundir(label)
            store = fresh_store(bench, kind, rundir)
            print(f"{label}: prefilling {args.prefill_events} events over {n} conversations",
                  flush=True)  # fmt: skip
            took = prefill(store.url, bench.tag, n, args.prefill_events)
            took += settle(store.url)
            counts = store_counts(store.url)
            if counts.watches != n or counts.events != args.prefill_events:
                raise SystemExit(
                    f"INVALID: {label}: the prefill left {counts.events} events and"
                    f" {counts.watches} watches, expected {args.prefill_events} and {n}"
                    " (does this store keep watches yet?)"
                )
            if "scale" in parts:
                runs, scraped = relay_run(
                    bench, label, store, rundir, sections=CONVERSATIONS_SECTION, bodies=bodies[n]
                )
                counts = store_counts(store.url)
                problems += answer_problems(label, runs)
                problems += store_problems(
                    label, runs, counts, args.prefill_events, n, args.connections
                )
                if scraped["raised"]:
                    problems.append(f"{label}: relay raised {int(scraped['raised'])} signals")
                figures = _figures(runs[-1], scraped)
                rows.append(Row("scale", kind, round_, str(n), {**figures, "prefill_s": took}))
            if "store" in parts:
                redis_pid = store.redis.pid if store.redis else None
                wait_quiet(args.wait_quiet)
                figures = store_accepts(store.url, bench.tag, n, args.store_accepts, redis_pid)
                rows.append(Row("store", kind, round_, str(n), figures))
                counts = store_counts(store.url)
                if counts.watches != n:
                    problems.append(f"store-{label}: {counts.watches} watches, expected {n}")
            if store.redis:
                bench.procs.stop(store.redis)
            bench.done_with(rundir)
    return rows, problems


# ---------------------------------------------------------------------------- report


def _spread(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return (max(values) - min(values)) / mean if mean else 0.0


def print_wrk_rows(rows: Sequence[Row]) -> None:
    print(
        f"{'store':<7} {'round':>5} {'case':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU us/req':>10} {'redis us/req':>12} {'requests':>9} {'sent':>7} {'others':>6}"
        f" {'AOF rw':>6} {'prefill s':>9}"
    )
    for r in rows:
        v = r.values
        prefill_s = f"{v['prefill_s']:>9.1f}" if "prefill_s" in v else f"{'':>9}"
        redis_cpu = f"{v['redis_cpu']:>12.0f}" if v["redis_cpu"] else f"{'-':>12}"
        rewrites = f"{int(v['aof_rewrites']):>6d}" if r.store == "redis" else f"{'-':>6}"
        print(
            f"{r.store:<7} {r.round:>5} {r.case:>7} {v['rps']:>8.0f} {v['p50']:>7.2f}"
            f" {v['p99']:>7.2f} {v['cpu']:>10.0f} {redis_cpu} {int(v['requests']):>9d}"
            f" {int(v['sent']):>7d} {v['others']:>6.2f}{'!' if v['others'] > DISTURBED else ' '}"
            f"{rewrites} {prefill_s}"
        )
    _disturbed_note(rows)


def _quiet(values: dict[str, float]) -> bool:
    return values["others"] <= DISTURBED


def _disturbed_note(rows: Sequence[Row]) -> None:
    disturbed = sum(not _quiet(r.values) for r in rows)
    if disturbed:
        print(
            f"! {disturbed} of {len(rows)} runs disturbed: other processes kept more than"
            f" {DISTURBED} of a core busy meanwhile (`others`); rerun on a quieter machine"
        )


def report_onoff(
    rows: Sequence[Row], kinds: Sequence[str], load: str, what: str = "conversations"
) -> bool:
    print(f"\n== {what} off / on: relay serve, {load}, alternating ==")
    print_wrk_rows(rows)
    met = True
    for kind in kinds:
        by_round: dict[int, dict[str, dict[str, float]]] = {}
        for r in rows:
            if r.store == kind:
                by_round.setdefault(r.round, {})[r.case] = r.values
        quiet = {n: v for n, v in by_round.items() if _quiet(v["off"]) and _quiet(v["on"])}
        for rounds, which in ((by_round, "every round"), (quiet, "undisturbed rounds")):
            if which != "every round" and len(quiet) == len(by_round):
                continue  # the same rounds again
            if rounds:
                met = _onoff_ratios(kind, which, list(rounds.values())) and met
            else:
                print(f"{kind}: no undisturbed round (both runs at most {DISTURBED} others)")
    return met


def _onoff_ratios(kind: str, which: str, rounds: Sequence[dict[str, dict[str, float]]]) -> bool:
    rps = [v["on"]["rps"] / v["off"]["rps"] for v in rounds]
    cpu = [v["on"]["cpu"] / v["off"]["cpu"] for v in rounds]
    both = [
        (v["on"]["cpu"] + v["on"]["redis_cpu"]) / (v["off"]["cpu"] + v["off"]["redis_cpu"])
        for v in rounds
    ]
    median = statistics.median(rps)
    ok = median >= TARGET_ONOFF
    print(
        f"{kind}, {which}: req/s on/off {_shown(rps)}; median {median:.2f}"
        f" (target >= {TARGET_ONOFF:.2f}: {'met' if ok else 'NOT met'})"
    )
    print(f"{kind}, {which}: CPU/req on/off {_shown(cpu)}; median {statistics.median(cpu):.2f}")
    if kind == "redis":
        print(
            f"{kind}, {which}: CPU/req of relay + redis-server on/off {_shown(both)};"
            f" median {statistics.median(both):.2f}"
        )
    return ok


def _shown(values: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" if x < 100 else f"{x:.0f}" for x in values)


def compare_cases(rows: Sequence[Row], kind: str, metric: str, worse: int) -> tuple[str, bool]:
    """Each case's runs and their spread (the noise), and each case against the first:
    the difference of the means next to the larger of the two cases' spreads. `worse` is
    +1 when a higher value is worse (a cost), -1 when a lower one is (req/s). Held when
    the largest case is not worse than the first by more than that noise."""
    cases: dict[int, list[float]] = {}
    for r in rows:
        if r.store == kind:
            cases.setdefault(int(r.case), []).append(r.values[metric])
    (first, base), *others = sorted(cases.items())
    parts = [f"{metric}: {first}: {_shown(base)} (spread {_spread(base):.1%})"]
    held = True
    for n, values in others:
        noise = max(_spread(base), _spread(values))
        difference = statistics.fmean(values) / statistics.fmean(base) - 1
        verdict = "within the noise" if abs(difference) <= noise else "OUTSIDE the noise"
        if min(len(base), len(values)) < 2:
            verdict = "no noise figure with one run per case"
        parts.append(
            f"{n}: {_shown(values)} (spread {_spread(values):.1%}),"
            f" {difference:+.1%} against {first}, {verdict}"
        )
        held = difference * worse <= noise  # the last, largest case decides
    return "; ".join(parts), held


def report_scale(rows: Sequence[Row], kinds: Sequence[str], part: str) -> bool:
    if part == "scale":
        print("\n== open conversations: relay serve on a prefilled store, wrk ==")
        print_wrk_rows(rows)
        metrics = (("rps", -1), ("cpu", +1), ("p99", +1))
    else:
        print("\n== open conversations: the store alone, in-process ==")
        print(f"{'store':<7} {'round':>5} {'case':>7} {'accepts/s':>10} {'CPU us/accept':>14}"
              f" {'redis us/accept':>16} {'others':>6}")  # fmt: skip
        for r in rows:
            v = r.values
            redis_cpu = f"{v['redis_cpu_us']:>16.0f}" if v["redis_cpu_us"] else f"{'-':>16}"
            print(f"{r.store:<7} {r.round:>5} {r.case:>7} {v['per_s']:>10.0f}"
                  f" {v['cpu_us']:>14.0f} {redis_cpu} {v['others']:>6.2f}"
                  f"{'' if _quiet(v) else '!'}")  # fmt: skip
        _disturbed_note(rows)
        metrics = (("per_s", -1), ("cpu_us", +1), ("redis_cpu_us", +1))
    met = True
    for kind in kinds:
        for metric, worse in metrics:
            if not any(r.store == kind and r.values.get(metric) for r in rows):
                continue
            line, held = compare_cases(rows, kind, metric, worse)
            met = met and held
            print(f"{kind} {line}")
            own = [r for r in rows if r.store == kind]
            quiet = [r for r in own if _quiet(r.values)]
            if len(quiet) < len(own) and _two_each(quiet, {r.case for r in own}, kind):
                line, held = compare_cases(quiet, kind, metric, worse)
                met = met and held
                print(f"{kind}, undisturbed runs only: {line}")
    return met


def _two_each(rows: Sequence[Row], cases: set[str], kind: str) -> bool:
    """Whether every case has two runs or more of the store among `rows`."""
    runs = [r.case for r in rows if r.store == kind]
    return all(runs.count(case) >= 2 for case in cases)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default=",".join(ALL_PARTS), help=",".join(ALL_PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="off/on rounds per store")
    parser.add_argument("--scale-rounds", type=int, default=2, help="10/100k rounds per store")
    parser.add_argument(
        "--cases", default="10,100000", help="open conversations in the scale and store parts"
    )
    parser.add_argument(
        "--prefill-events",
        type=int,
        help="events prefilled in every case (default: the largest case)",
    )
    parser.add_argument("--store-accepts", type=int, default=20_000, help="per store-part run")
    parser.add_argument(
        "--chat-length", type=int, default=10, help="events per conversation in the chats part"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--max-rate", type=int, default=15000, help="req/s the bodies are sized for"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        help="before each run, wait up to this many seconds for a quiet machine",
    )
    parser.add_argument("--relay-cmd", help="command that runs relay (default: the venv's)")
    parser.add_argument("--stores", default="sqlite,redis", help="sqlite,redis or either")
    parser.add_argument("--no-redis", action="store_true", help="SQLite only")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    if not args.parts or set(args.parts) - set(ALL_PARTS):
        parser.error(f"--parts: a comma-separated subset of {','.join(ALL_PARTS)}")
    args.stores = [s for s in ("sqlite", "redis") if s in args.stores.split(",")]
    if args.no_redis and "redis" in args.stores:
        args.stores.remove("redis")
    if not args.stores:
        parser.error("--stores: sqlite, redis or both (and not redis with --no-redis)")
    try:
        args.cases = sorted({int(n) for n in args.cases.split(",")})
    except ValueError:
        parser.error("--cases: comma-separated numbers of conversations")
    args.prefill_events = args.prefill_events or args.cases[-1]
    if not 1 <= args.duration <= run.MAX_DURATION_S or not 0 <= args.warmup <= 30:
        parser.error(f"--duration must be 1..{run.MAX_DURATION_S}, --warmup 0..30")
    if min(args.rounds, args.scale_rounds) < 1 or len(args.cases) < 2 or args.cases[0] < 1:
        parser.error("need --rounds, --scale-rounds >= 1 and two --cases or more, each >= 1")
    if args.prefill_events < args.cases[-1]:
        parser.error("--prefill-events must be at least the largest case (one event each)")
    if args.connections < args.threads or args.threads < 1:
        parser.error("need 1 <= --threads <= --connections")
    # A prefilled watch is due UNANSWERED_AFTER_S after the prefill: a run must end first.
    if args.warmup + args.duration + 2 * args.wait_quiet > UNANSWERED_AFTER_S / 2:
        parser.error(
            f"--warmup + --duration + 2 x --wait-quiet must stay under"
            f" {UNANSWERED_AFTER_S / 2:.0f} s"
        )
    return args


def bench_all(args: argparse.Namespace, tmp: Path, procs: run.Processes) -> int:
    plan = run.Plan(
        args.warmup,
        args.duration,
        args.max_rate * max(args.warmup, 1),
        args.max_rate * args.duration,
    )
    bench = Bench(args, tmp, procs, plan, os.urandom(4).hex(), tmp / "wrk.log")
    count = plan.warm_count + plan.measured_count
    started = time.monotonic()
    onoff_bodies = tmp / "bodies-onoff.txt"
    scale_bodies = {n: tmp / f"bodies-{n}.txt" for n in args.cases}
    chats_bodies = tmp / "bodies-chats.txt"
    if "onoff" in args.parts or "counters" in args.parts:
        run.write_bodies(onoff_bodies, count, SECRET)
    if "chats" in args.parts:
        write_chat_bodies(chats_bodies, count, args.chat_length, "chat" + bench.tag)
    if "scale" in args.parts:
        for n, path in scale_bodies.items():
            write_scale_bodies(path, count, n, bench.tag)
    print(f"bodies written in {time.monotonic() - started:.1f} s ({count} per file)", flush=True)
    print(f"relay package: {Path(relay.__file__).parent}", flush=True)
    kinds = args.stores
    rows: list[Row] = []
    problems: list[str] = []
    for kind in kinds:
        if "onoff" in args.parts:
            more, wrong = onoff_part(bench, kind, onoff_bodies)
            rows, problems = rows + more, problems + wrong
        if "chats" in args.parts:
            more, wrong = onoff_part(bench, kind, chats_bodies, "chats")
            rows, problems = rows + more, problems + wrong
        if "counters" in args.parts:
            more, wrong = onoff_part(bench, kind, onoff_bodies, "counters")
            rows, problems = rows + more, problems + wrong
        if "scale" in args.parts or "store" in args.parts:
            more, wrong = scale_part(bench, kind, scale_bodies, args.parts)
            rows, problems = rows + more, problems + wrong
    return report(args, rows, problems, kinds, time.monotonic() - started)


def report(
    args: argparse.Namespace,
    rows: Sequence[Row],
    problems: Sequence[str],
    kinds: Sequence[str],
    elapsed: float,
) -> int:
    print(
        f"\nwrk: {args.threads} thread(s), {args.connections} connections, {args.duration} s"
        f" (+{args.warmup} s warm-up) per run, unique signed bodies; {os.cpu_count()} CPUs"
        f" shared by wrk, relay and redis-server; {elapsed:.0f} s in all"
    )
    met = True
    for part in ALL_PARTS:
        part_rows = [r for r in rows if r.part == part]
        if not part_rows:
            continue
        if part == "onoff":
            load = "run.py's load (each event a new conversation)"
            met = report_onoff(part_rows, kinds, load) and met
        elif part == "chats":
            load = f"conversations of {args.chat_length} events, 1,000 open at a time"
            met = report_onoff(part_rows, kinds, load) and met
        elif part == "counters":
            load = "run.py's load, conversations watched in both"
            met = report_onoff(part_rows, kinds, load, "activity counters (console)") and met
        else:
            met = report_scale(part_rows, kinds, part) and met
    for problem in problems:
        print(f"INVALID: {problem}")
    if problems:
        return 1
    return 2 if args.strict and not met else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", *(("redis-server",) if "redis" in args.stores else ())):
        if shutil.which(tool) is None:
            print(
                f"{tool} not found (Debian: apt-get install {tool}; or --no-redis)", file=sys.stderr
            )
            return 1
    return run.run_in_workdir(args.keep, lambda tmp, procs: bench_all(args, tmp, procs))


if __name__ == "__main__":
    raise SystemExit(main())
