"""The store alone: CPU per accept through SqliteStore, against its bare SQL, in one run.

    python bench/store_bench.py [--callers 64] [--accepts 20000] [--rounds 3]

Without HTTP in the way, this shows what the store's machinery (queue, futures, batches,
BEGIN/COMMIT on a thread, checkpoints) costs on top of the statements it runs:

- store: `callers` coroutines call SqliteStore.accept one after another, as concurrent
  webhooks do, until `accepts` events (one delivery each) are stored;
- bare SQL: the same accepts through sqlite_ops.accept on one connection in the same mode
  (WAL, synchronous=FULL), in transactions of the store's average batch size.

Both use a new file in a temp dir. It prints accepts per second and the process's CPU per
accept (user + system: the fsyncs count) of each, and their ratio. Rounds alternate, so a
busy machine slows both alike. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from relay.store import sqlite_ops
from relay.store.base import NewDelivery, NewEvent
from relay.store.sqlite import SqliteStore

BODY = (
    b'{"agent_id": "agent_abc123", "event_type": "chat.push", "data": {"session_id":'
    b' "session_1", "message": "I want a refund", "role": "user", "room_name": "lobby"},'
    b' "timestamp": 1764200000}'
)
DEDUPE_WINDOW_S = 86400.0
_ids = itertools.count()


@dataclass
class Figures:
    per_s: float
    cpu_us: float
    batch: float


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _new_event() -> NewEvent:
    # Unique ids with random-looking order, as event ids (hex digests) are.
    return NewEvent(f"{next(_ids) * 2654435761 % 2**32:08x}-{next(_ids)}", BODY, time.time())


DELIVERY = (NewDelivery("ops-slack", "joins", None, "session_1"),)


async def _through_store(path: Path, callers: int, accepts: int) -> Figures:
    store = SqliteStore(str(path))
    await store.open()
    left = accepts

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await store.accept(_new_event(), DELIVERY, dedupe_window_s=DEDUPE_WINDOW_S)

    started, cpu = time.perf_counter(), _cpu_s()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed, cpu = time.perf_counter() - started, _cpu_s() - cpu
    await store.close()
    return Figures(accepts / elapsed, cpu * 1e6 / accepts, store.stats.ops / store.stats.commits)


def _bare_sql(path: Path, accepts: int, batch: int) -> Figures:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -32000")
    sqlite_ops.migrate(conn)
    started, cpu = time.perf_counter(), _cpu_s()
    for start in range(0, accepts, batch):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(min(batch, accepts - start)):
            sqlite_ops.accept(conn, _new_event(), DELIVERY, DEDUPE_WINDOW_S)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - started, _cpu_s() - cpu
    conn.close()
    return Figures(accepts / elapsed, cpu * 1e6 / accepts, float(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--accepts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'round':<6} {'target':<9} {'accepts/s':>10} {'CPU us/accept':>14} {'batch':>6}")
    ratios = []
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="relay-store-bench-") as tmp:
            store = asyncio.run(_through_store(Path(tmp, "store.db"), args.callers, args.accepts))
            bare = _bare_sql(Path(tmp, "bare.db"), args.accepts, max(round(store.batch), 1))
        for name, figures in (("store", store), ("bare SQL", bare)):
            print(
                f"{round_:<6} {name:<9} {figures.per_s:>10.0f} {figures.cpu_us:>14.0f}"
                f" {figures.batch:>6.1f}"
            )
        ratios.append(store.cpu_us / bare.cpu_us)
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"CPU per accept, store / bare SQL: {shown}")


if __name__ == "__main__":
    main()
