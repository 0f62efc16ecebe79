"""Benchmark: `relay serve`'s resident memory, idle and with 1,000 open connections.

    python bench/memory.py                   # SQLite and Redis, about 40 s
    python bench/memory.py --no-redis        # SQLite only
    python bench/memory.py --bytecode source # every module compiled at start, as in Docker
    python bench/memory.py --with-console    # with conversations: and a console section
    python bench/memory.py --imports         # besides: what each imported package costs

Starts `relay serve` with bench/run.py's config (its rules, a console destination; plus
server.max_connections above --connections, and a read_timeout long enough that relay
keeps idle connections through the run) on an empty store, SQLite, then (unless
--no-redis, or without redis-server) a redis-server of its own started as run.py starts
it, and reads the process's memory at each stage:

idle        once /readyz answers 200 and the process has settled (--settle seconds, then
            until it spends under 1% of a core for half a second);
warm        after --warm-events accepted events (run.py's unique signed bodies, over 8
            keep-alive connections), settled: their notifications sent to the console;
held        with --connections TCP connections open to the webhook port, none of which
            has sent anything;
after-req   the same connections, each after one request answered 200 accepted (all sent
            at once), still open (keep-alive);
closed      all of them closed, settled;
again       as many new connections, one request each, closed: level with `closed` when
            what `closed` holds is the allocator's, kept for reuse; higher by as much
            again if relay kept something per connection or request.

For each stage: relay's RSS (VmRSS of /proc/PID/status), its anonymous part (RssAnon),
its PSS (/proc/PID/smaps_rollup, when readable) and the redis-server's RSS, in MB (10^6
bytes); then relay's peak RSS (VmHWM). The issue's target: idle RSS at most 60 MB per
process, judged at `idle` and `warm`.

What relay's modules cost depends on how they are loaded (--bytecode): compiled from
source, an import leaves the compiler's garbage in the process. By default the script
gives relay a bytecode cache of its own (PYTHONPYCACHEPREFIX in the temp dir), filled by
a warm-up start on a store of its own that accepts one event, as an install with its .pyc
files runs; `source` runs with an empty cache and no writes: every module compiled at
every start, as the Docker image runs relay and its dependencies (pip --no-compile,
PYTHONDONTWRITEBYTECODE), here the standard library's too.

--imports adds a table: in a fresh interpreter with the same bytecode, relay.cli,
relay.serve and the store's module imported as relay imports them, with the RSS and the
Python heap (tracemalloc) each module's import added less what its nested imports added,
summed by package (relay's by subpackage).

Validity: every request must be answered 200 accepted, no held connection may be closed
by relay before its stage is read, and the store must hold one event per request sent;
otherwise INVALID and exit 1. --strict exits 2 when the target is missed. Binds only
127.0.0.1; every process it starts is stopped by its pid on exit. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import conversations  # bench/conversations.py: its conversations: and console sections
import run  # bench/run.py, next to this script: config, bodies, processes, redis-server

HOST, PATH, SECRET = run.HOST, run.PATH, run.SECRET
TARGET_IDLE_MB = 60.0
MB = 1e6
# Held connections must outlive the stages that read them: relay closes a connection that
# has sent no request headers within server.read_timeout (10 s by default).
READ_TIMEOUT = "5m"
WARM_CONNECTIONS = 8
ANSWER_TIMEOUT_S = 30.0
# Connections relay must admit beyond the held ones: the script's /readyz probes, and the
# warm-up's, which may still be closing.
SPARE_CONNECTIONS = 100
# What --with-console appends: the sections bench/conversations.py's counters part uses.
CONSOLE_SECTIONS = conversations.CONVERSATIONS_SECTION + conversations.CONSOLE_SECTION
STAGES = ("idle", "warm", "held", "after-req", "closed", "again")


# ---------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Memory:
    rss_kb: int
    anon_kb: int
    peak_kb: int
    pss_kb: int | None  # smaps_rollup may be unreadable (older kernels, hardened /proc)


def read_memory(pid: int) -> Memory:
    status = Path(f"/proc/{pid}/status").read_text()

    def kb(key: str) -> int:
        match = re.search(rf"^{key}:\s+(\d+) kB$", status, re.MULTILINE)
        return int(match.group(1)) if match else 0

    pss = None
    with contextlib.suppress(OSError):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        if match := re.search(r"^Pss:\s+(\d+) kB$", rollup, re.MULTILINE):
            pss = int(match.group(1))
    return Memory(kb("VmRSS"), kb("RssAnon"), kb("VmHWM"), pss)


def open_files_limit(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE)
    return int(match.group(1)) if match else 0


def children(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return []


def raise_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files to `needed`: the held connections'
    client ends are here, and relay, started from here, inherits the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"ulimit -n: the hard limit {hard} is below the {needed} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        print(f"raised the open files soft limit from {soft} to {needed}")


async def settle(pid: int, minimum_s: float, limit_s: float = 20.0) -> None:
    """Wait `minimum_s`, then until the process spends under 1% of a core for half a
    second (its worker done with the deliveries, its connections' handlers idle)."""
    await asyncio.sleep(minimum_s)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = run.cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if run.cpu_seconds(pid) - before < 0.005:
            return
    print(f"pid {pid} still busy after {limit_s:.0f} s: reading its memory all the same")


# ---------------------------------------------------------------------------- HTTP


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def closed_by_peer(self) -> bool:
        return self.reader.at_eof() or self.writer.transport.is_closing()


async def connect(port: int) -> Connection:
    reader, writer = await asyncio.open_connection(HOST, port)
    return Connection(reader, writer)


async def post(conn: Connection, port: int, line: bytes) -> str | None:
    """Send one of run.py's body lines (`signature<TAB>body`) on a keep-alive connection;
    return what was wrong with the answer, or None when it is 200 accepted."""
    signature, _, body = line.rstrip(b"\n").partition(b"\t")
    conn.writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"X-bitHuman-Signature: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (PATH.encode(), HOST.encode(), port, signature, len(body), body)
    )
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await conn.writer.drain()
            head = await conn.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"^content-length:\s*(\d+)", head, re.MULTILINE | re.IGNORECASE)
            answer = await conn.reader.readexactly(int(length.group(1))) if length else b""
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        return f"no answer: {exc!r}"
    status = head.split(b" ", 2)[1]
    with contextlib.suppress(ValueError):
        if status == b"200" and json.loads(answer).get("status") == "accepted":
            return None
    return f"{status.decode()} {answer[:200]!r}"


async def close_all(conns: Sequence[Connection]) -> None:
    for conn in conns:
        conn.writer.close()
    await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)


async def warm(port: int, lines: Sequence[bytes]) -> list[str]:
    """Send `lines` over WARM_CONNECTIONS keep-alive connections, one request at a time
    on each; return the problems."""
    conns = [await connect(port) for _ in range(WARM_CONNECTIONS)]

    async def send(conn: Connection, share: Sequence[bytes]) -> list[str]:
        answers = [await post(conn, port, line) for line in share]
        return [problem for problem in answers if problem]

    try:
        shares = [lines[i::WARM_CONNECTIONS] for i in range(WARM_CONNECTIONS)]
        results = await asyncio.gather(*(send(c, s) for c, s in zip(conns, shares, strict=True)))
    finally:
        await close_all(conns)
    return [problem for result in results for problem in result]


# ---------------------------------------------------------------------------- one store


@dataclass
class StoreRun:
    store: str
    stages: dict[str, Memory] = field(default_factory=dict)
    redis: dict[str, Memory] = field(default_factory=dict)
    peak: Memory | None = None
    problems: list[str] = field(default_factory=list)


def config_text(port: int, store_url: str, max_connections: int, with_console: bool) -> str:
    text = run.CONFIG_TEMPLATE.format(
        host=HOST, port=port, path=PATH, secret=SECRET, store_url=store_url, workers=1
    )
    anchor = "  shutdown_timeout: 2s\n"
    if anchor not in text:
        raise SystemExit("run.py's config changed: no `shutdown_timeout: 2s` to add the limits to")
    limits = f"  max_connections: {max_connections}\n  read_timeout: {READ_TIMEOUT}\n"
    text = text.replace(anchor, anchor + limits)
    return text + CONSOLE_SECTIONS if with_console else text


@dataclass(frozen=True)
class Bytecode:
    """How relay gets its modules' bytecode: `env` arguments for its command line."""

    measured: list[str]  # for the measured start
    fill: list[str] | None  # for a start before it that writes the cache it reads; or none


def bytecode(mode: str, tmp: Path) -> Bytecode:
    """cached: compiled once into a cache of the run's own (a warm-up start fills it), as
    an install that has its .pyc files runs; source: compiled at every start, nothing
    cached or written (the Docker image's relay and dependencies: pip --no-compile,
    PYTHONDONTWRITEBYTECODE); as-is: whatever this environment does."""
    if mode == "as-is":
        return Bytecode([], None)
    cache = tmp / ("pycache" if mode == "cached" else "pycache-empty")
    cache.mkdir(exist_ok=True)
    measured = ["env", "PYTHONDONTWRITEBYTECODE=1", f"PYTHONPYCACHEPREFIX={cache}"]
    if mode == "source":
        return Bytecode(measured, None)
    return Bytecode(
        measured, ["env", "-u", "PYTHONDONTWRITEBYTECODE", f"PYTHONPYCACHEPREFIX={cache}"]
    )


def start_relay(
    args: argparse.Namespace,
    procs: run.Processes,
    rundir: Path,
    label: str,
    store_url: str,
    env: Sequence[str],
) -> tuple[subprocess.Popen[bytes], int]:
    port = run.free_port()
    config = rundir / f"{label}.yaml"
    max_connections = args.connections + SPARE_CONNECTIONS
    config.write_text(config_text(port, store_url, max_connections, args.with_console))
    command = [*env, *run.relay_command(args.relay_cmd)]
    subprocess.run([*command, "check", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)
    log = rundir / f"{label}.log"
    relay = procs.start([*command, "serve", "-c", str(config)], log, rundir)
    run.wait_ready(relay, f"http://{HOST}:{port}/readyz", "GET", log)
    if (limit := open_files_limit(relay.pid)) < max_connections + 50:
        raise SystemExit(f"relay may open {limit} files, too few for {max_connections}")
    return relay, port


async def fill_bytecode(
    args: argparse.Namespace,
    procs: run.Processes,
    rundir: Path,
    store_url: str,
    env: Sequence[str],
    line: bytes,
) -> None:
    """Start relay with bytecode writes on, on a store of its own, and have it accept an
    event: what it imports to start, to ingest and to deliver is then in the cache."""
    relay, port = start_relay(args, procs, rundir, "fill", store_url, env)
    conn = await connect(port)
    try:
        if problem := await post(conn, port, line):
            raise SystemExit(f"the warm-up start did not accept its event: {problem}")
    finally:
        await close_all([conn])
    await settle(relay.pid, 0.5)  # its delivery
    procs.stop(relay)


async def measure_store(
    args: argparse.Namespace,
    tmp: Path,
    procs: run.Processes,
    store: str,
    lines: Sequence[bytes],
) -> StoreRun:
    result = StoreRun(store)
    rundir = tmp / store
    rundir.mkdir()
    redis = None
    if store == "sqlite":
        store_url, fill_url = f"sqlite:{rundir / 'relay.db'}", f"sqlite:{rundir / 'fill.db'}"
    else:
        url = run.start_redis(rundir, procs)
        assert url is not None  # bench() checked that redis-server exists
        redis = procs.procs[-1]
        store_url, fill_url = url, url.rpartition("/")[0] + "/1"  # a database of its own
    env = bytecode(args.bytecode, tmp)
    if env.fill is not None:
        await fill_bytecode(args, procs, rundir, fill_url, env.fill, lines[0])
        if redis is not None:
            _flush(fill_url)

    relay, port = start_relay(args, procs, rundir, "relay", store_url, env.measured)
    print(f"relay-{store} pid {relay.pid} on :{port}", flush=True)
    if kids := children(relay.pid):
        print(f"note: relay has child processes {kids}: only its own memory is read")

    def read(stage: str) -> None:
        result.stages[stage] = read_memory(relay.pid)
        if redis is not None:
            result.redis[stage] = read_memory(redis.pid)
        print(f"  {stage:<10} RSS {result.stages[stage].rss_kb * 1024 / MB:6.1f} MB", flush=True)

    await settle(relay.pid, args.settle)
    read("idle")
    await run_stages(args, relay.pid, port, lines, read, result.problems)
    result.peak = read_memory(relay.pid)

    await asyncio.sleep(0.5)  # let the last answers' events reach the store
    procs.stop(relay)
    events, _deliveries = run.stored_events(store_url)
    if events != len(lines):
        result.problems.append(f"the store holds {events} events, {len(lines)} were sent")
    if redis is not None:
        procs.stop(redis)
    return result


def _flush(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()


async def run_stages(
    args: argparse.Namespace,
    pid: int,
    port: int,
    lines: Sequence[bytes],
    read: Callable[[str], None],
    problems: list[str],
) -> None:
    """The stages after idle: warm, held, after-req, closed, again."""
    warm_lines, held_lines = lines[: args.warm_events], lines[args.warm_events :]
    held_lines, again_lines = held_lines[: args.connections], held_lines[args.connections :]
    problems += await warm(port, warm_lines)
    await settle(pid, args.settle)
    read("warm")

    held: list[Connection] = []
    try:
        # One at a time, as clients arriving do: the whole set at once would overflow the
        # listen backlog (1,024) and time out some on the SYN retry.
        for _ in range(args.connections):
            held.append(await connect(port))
        await settle(pid, args.settle)
        read("held")
        problems += _dropped(held, "held")

        problems += await post_each(held, port, held_lines)
        await settle(pid, args.settle)
        read("after-req")
        problems += _dropped(held, "after-req")
    finally:
        await close_all(held)
    await settle(pid, args.settle)
    read("closed")

    # The same again on new connections, closed before the reading: if `closed` is memory
    # the allocator kept for reuse, this finds it and stays level; if relay keeps
    # something per connection or per request, this grows by as much again.
    again: list[Connection] = []
    try:
        for _ in range(args.connections):
            again.append(await connect(port))
        problems += await post_each(again, port, again_lines)
    finally:
        await close_all(again)
    await settle(pid, args.settle)
    read("again")


async def post_each(conns: Sequence[Connection], port: int, lines: Sequence[bytes]) -> list[str]:
    """One request on each connection, all at once; the problems."""
    answers = await asyncio.gather(
        *(post(conn, port, line) for conn, line in zip(conns, lines, strict=True))
    )
    return [problem for problem in answers if problem]


def _dropped(conns: Sequence[Connection], stage: str) -> list[str]:
    dropped = sum(conn.closed_by_peer for conn in conns)
    if dropped:
        return [f"{stage}: relay closed {dropped} of the {len(conns)} connections"]
    return []


# ---------------------------------------------------------------------------- imports

# Run in a fresh interpreter: imports the modules named, as relay does, with every import
# statement that loads something measured as -X importtime times it: what the process's
# RSS (argv[1] "rss") or its Python heap (tracemalloc, "heap") grew by during the import,
# less what the imports nested in it added (its "self" cost), printed per module. Then the
# whole, after a collection, as relay serve collects once started (serve._tune_gc).
_IMPORT_PROBE = """
import builtins, gc, importlib.util, re, sys, tracemalloc

def rss_kb():
    text = open("/proc/self/status").read()
    return int(re.search(r"^VmRSS:\\s+(\\d+) kB$", text, re.M).group(1))

def heap_kb():
    return tracemalloc.get_traced_memory()[0] // 1024

memory = heap_kb if sys.argv[1] == "heap" else rss_kb
original = builtins.__import__
nested = []  # per import in progress: what the imports inside it added

def traced(name, globals=None, locals=None, fromlist=(), level=0):
    full = name
    if level:
        package = (globals or {}).get("__package__") or ""
        full = importlib.util.resolve_name("." * level + name, package) if name else package
    if full in sys.modules and not fromlist:
        return original(name, globals, locals, fromlist, level)
    before = memory()
    nested.append(0)
    try:
        return original(name, globals, locals, fromlist, level)
    finally:
        inner, grown = nested.pop(), memory() - before
        if nested:
            nested[-1] += grown
        print("SELF", full, grown - inner)

if memory is heap_kb:
    tracemalloc.start()
gc.collect()
print("START", memory())
builtins.__import__ = traced
for name in sys.argv[2:]:
    __import__(name)
builtins.__import__ = original
gc.collect()
print("TOTAL", memory())
"""


def _import_key(module: str) -> str:
    """The row a module's cost is shown in: relay's by subpackage, others by package, the
    standard library's C part with its Python one (_ssl with ssl)."""
    parts = module.split(".")
    if parts[0] == "relay":
        return ".".join(parts[:2])
    return parts[0].lstrip("_") if _in_stdlib(parts[0]) else parts[0]


def _in_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name.lstrip("_") in sys.stdlib_module_names


@dataclass(frozen=True)
class ImportCosts:
    start_kb: int  # the interpreter alone
    added_kb: dict[str, int]  # what each row's modules added to it
    total_kb: int  # the interpreter once every module is imported


def import_costs(modules: Sequence[str], what: str, env: Sequence[str], cwd: Path) -> ImportCosts:
    """What importing `modules` in a fresh interpreter (its command line prefixed with
    `env`) costs, module by module, in RSS or in Python heap (`what`). `cwd` is away from
    the source tree: `python -c` looks for modules in its working directory first, where
    relay serve does not, so from the repository it would import the tree's relay, not
    the one PYTHONPATH names."""
    proc = subprocess.run(
        [*env, sys.executable, "-c", _IMPORT_PROBE, what, *modules],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise SystemExit(f"importing {modules} failed:\n{proc.stderr[-2000:]}")
    start = total = 0
    added: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        kind, *rest = line.split()
        if kind == "START":
            start = int(rest[0])
        elif kind == "TOTAL":
            total = int(rest[0])
        elif kind == "SELF":
            key = _import_key(rest[0])
            added[key] = added.get(key, 0) + int(rest[1])
    return ImportCosts(start, added, total)


def print_imports(runs: Sequence[StoreRun], env: Bytecode, cwd: Path, rows: int = 12) -> None:
    """RSS shows what the process pays, shared libraries included, but a module can reuse
    memory an earlier one freed; the Python heap (tracemalloc) is exact, Python objects
    only. Both, so that neither misleads alone."""
    if env.fill is not None:  # the probe's own imports, which relay may not make
        probe = "import gc, importlib.util, re, tracemalloc"
        subprocess.run([*env.fill, sys.executable, "-c", probe], check=True, cwd=cwd)
    columns = [
        import_costs(
            ["relay.cli", "relay.serve", f"relay.store.{r.store}"], what, env.measured, cwd
        )
        for r in runs
        for what in ("rss", "heap")
    ]
    names = {name for cost in columns for name in cost.added_kb}

    def largest(name: str) -> int:
        return max(cost.added_kb.get(name, 0) for cost in columns)

    ordered = sorted(names, key=lambda name: (-largest(name), name))
    packages = [name for name in ordered if not _in_stdlib(name)]
    stdlib = [name for name in ordered if _in_stdlib(name)]
    print()
    print("imports of relay.cli, relay.serve and the store's module, in a fresh interpreter:")
    print(f"{'what':<26}" + "".join(f" {r.store + ' RSS':>11} {'heap':>6}" for r in runs))

    def row(label: str, values: Iterable[int | None]) -> None:
        cells = [_mb(kb) for kb in values]  # RSS and heap, store by store
        pairs = zip(cells[::2], cells[1::2], strict=True)
        print(f"{label:<26}" + "".join(f" {rss:>11} {heap:>6}" for rss, heap in pairs))

    def total(cost: ImportCosts, names: Iterable[str]) -> int:
        return sum(cost.added_kb.get(name, 0) for name in names)

    row("interpreter, before them", (cost.start_kb for cost in columns))
    for name in packages[:rows]:
        row(name, (cost.added_kb.get(name, 0) for cost in columns))
    row(
        f"{len(packages[rows:])} other packages", (total(cost, packages[rows:]) for cost in columns)
    )
    relay_rows = [name for name in names if name.startswith("relay")]
    row("(relay's own, in the above)", (total(cost, relay_rows) for cost in columns))
    row(f"standard library, {len(stdlib)}", (total(cost, stdlib) for cost in columns))
    for name in stdlib[:5]:
        row(f"  {name}", (cost.added_kb.get(name, 0) for cost in columns))
    row("interpreter and imports", (cost.total_kb for cost in columns))
    idle = [r.stages["idle"].rss_kb for r in runs]
    row("relay serve idle", (kb for rss in idle for kb in (rss, None)))
    row(
        "idle less imports",
        (
            kb
            for rss, cost in zip(idle, columns[::2], strict=True)
            for kb in (rss - cost.total_kb, None)
        ),
    )


# ---------------------------------------------------------------------------- report


def _mb(kb: int | None) -> str:
    return f"{kb * 1024 / MB:.1f}" if kb is not None else "-"


def print_table(runs: Sequence[StoreRun], connections: int) -> None:
    print()
    print(
        f"{'store':<7} {'stage':<10} {'relay RSS':>10} {'anon':>7} {'PSS':>7}"
        f" {'redis RSS':>10}   (MB = 10^6 bytes)"
    )
    for r in runs:
        for stage in STAGES:
            if stage not in r.stages:
                continue
            mem = r.stages[stage]
            redis = _mb(r.redis[stage].rss_kb) if stage in r.redis else "-"
            print(
                f"{r.store:<7} {stage:<10} {_mb(mem.rss_kb):>10} {_mb(mem.anon_kb):>7}"
                f" {_mb(mem.pss_kb):>7} {redis:>10}"
            )
        if r.peak is not None:
            print(f"{r.store:<7} {'peak':<10} {_mb(r.peak.peak_kb):>10}")
    for r in runs:
        if {"warm", "held", "after-req"} <= set(r.stages):
            warm = r.stages["warm"].rss_kb
            held = (r.stages["held"].rss_kb - warm) * 1024 / connections
            after = (r.stages["after-req"].rss_kb - warm) * 1024 / connections
            print(
                f"{r.store}: per connection over warm, {held / 1000:.1f} kB held,"
                f" {after / 1000:.1f} kB after a request (kB = 10^3 bytes)"
            )


def judge(runs: Sequence[StoreRun]) -> bool:
    met = True
    for r in runs:
        for stage in ("idle", "warm"):
            if stage not in r.stages:
                continue
            mb = r.stages[stage].rss_kb * 1024 / MB
            ok = mb <= TARGET_IDLE_MB
            met = met and ok
            print(
                f"{r.store} {stage}: RSS {mb:.1f} MB (target <= {TARGET_IDLE_MB:g} MB:"
                f" {'met' if ok else 'NOT met'})"
            )
    return met


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000, help="connections held open")
    parser.add_argument(
        "--warm-events", type=int, default=300, help="events accepted before `warm`"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds to wait before each reading, at least"
    )
    parser.add_argument(
        "--with-console",
        action="store_true",
        help="append a conversations: and a console section (its listener idle)",
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "source", "as-is"),
        default="cached",
        help="relay's modules from a bytecode cache filled first (default), compiled from"
        " source at start (as the Docker image does), or as this environment has them",
    )
    parser.add_argument(
        "--imports", action="store_true", help="also: what each imported package adds"
    )
    parser.add_argument(
        "--relay-cmd",
        help="command that runs relay (default: the venv's `relay`); for A/B runs of variants",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip relay on Redis")
    parser.add_argument("--strict", action="store_true", help="exit 2 when the target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 20_000 or not 0 <= args.warm_events <= 100_000:
        parser.error("--connections must be 1..20000, --warm-events 0..100000")
    if not 0 <= args.settle <= 60:
        parser.error("--settle must be 0..60")
    return args


def bench(args: argparse.Namespace, tmp: Path, procs: run.Processes) -> int:
    # The held connections' client ends, relay's server ends (it inherits the limit) and
    # what else either process has open.
    raise_open_files(args.connections + SPARE_CONNECTIONS + 256)
    bodies = tmp / "bodies.txt"
    count = args.warm_events + 2 * args.connections  # the `again` stage's too
    stores = ["sqlite"]
    if not args.no_redis:
        if shutil.which("redis-server"):
            stores.append("redis")
        else:
            print("redis-server not found (Debian: apt-get install redis-server): no Redis run")
    spec = importlib.util.find_spec("relay")
    print(f"relay package: {Path(spec.origin).parent if spec and spec.origin else '?'}")
    print(f"bytecode: {args.bytecode}", flush=True)
    # The same bodies for each store, as run.py does: each store starts empty.
    run.write_bodies(bodies, count, SECRET)
    lines = bodies.read_bytes().splitlines()
    runs = [asyncio.run(measure_store(args, tmp, procs, store, lines)) for store in stores]
    print_table(runs, args.connections)
    met = judge(runs)
    if args.imports:
        print_imports(runs, bytecode(args.bytecode, tmp), tmp)
    problems = [f"{r.store}: {problem}" for r in runs for problem in r.problems]
    for problem in problems[:20]:
        print(f"INVALID: {problem}")
    if problems:
        return 1
    return 2 if args.strict and not met else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run.run_in_workdir(args.keep, lambda tmp, procs: bench(args, tmp, procs))


if __name__ == "__main__":
    raise SystemExit(main())
