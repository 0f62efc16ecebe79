"""Two processes on one SQLite file: how long their accepts wait for each other.

    python bench/sqlite_lock.py [--callers 32] [--accepts 3000] [--rounds 3] [--hogs 2]
        [--baseline PATH]

Two processes, as two `relay serve` on one file, each run `callers` coroutines that call
SqliteStore.accept one after another until each process stored `accepts` events. An
accept returns after its batch committed, so its time includes the wait for the write
lock the other process holds. It prints each round's median, 99th percentile and
longest accept, over both processes.

`--baseline PATH` runs the relay package found at PATH (a snapshot: `git archive <commit>
relay | tar -x -C PATH`) in alternate rounds with the one this script is run with, so a
busy machine slows both alike. `--hogs` starts that many CPU-bound processes beside them
for the run, as a shared CI machine has. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = (
    b'{"agent_id": "agent_abc123", "event_type": "chat.push", "data": {"session_id":'
    b' "session_1", "message": "I want a refund", "role": "user", "room_name": "lobby"},'
    b' "timestamp": 1764200000}'
)


async def _writer(path: str, name: str, callers: int, accepts: int) -> list[float]:
    """Store `accepts` events from `callers` coroutines; return each accept's seconds."""
    from relay.store.base import NewDelivery, NewEvent
    from relay.store.sqlite import SqliteStore

    store = SqliteStore(path)
    await store.open()
    ids = itertools.count()
    took: list[float] = []
    delivery = (NewDelivery("ops-slack", "joins", None, "session_1"),)

    async def caller() -> None:
        while (n := next(ids)) < accepts:
            event = NewEvent(f"{name}-{n}", BODY, time.time())
            started = time.perf_counter()
            await store.accept(event, delivery, dedupe_window_s=86400.0)
            took.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(callers)))
    await store.close()
    return took


def _one_process() -> None:
    """In a child: `path name callers accepts` in argv; print the accepts' seconds."""
    path, name, callers, accepts = sys.argv[2:6]
    print(json.dumps(asyncio.run(_writer(path, name, int(callers), int(accepts)))))


def _round(relay_path: str, callers: int, accepts: int) -> list[float]:
    """Two writer processes on a new file, started together; both processes' accepts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "relay.db")
        env = {**os.environ, "PYTHONPATH": relay_path}
        args = [sys.executable, __file__, "--child", path]
        # The file exists before both start: neither waits for the other's schema.
        subprocess.run([*args, "setup", "1", "1"], env=env, check=True, capture_output=True)
        children = [
            subprocess.Popen(
                [*args, name, str(callers), str(accepts)], env=env, stdout=subprocess.PIPE
            )
            for name in ("one", "two")
        ]
        took: list[float] = []
        for child in children:
            out, _ = child.communicate()
            took += json.loads(out)
        return took


def _hog() -> None:
    while True:
        pass


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _one_process()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--accepts", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--baseline", help="a snapshot of another relay to compare with")
    options = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    runs = [("this", here)] + ([("baseline", options.baseline)] if options.baseline else [])
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(options.hogs)]
    for hog in hogs:
        hog.start()
    try:
        for round_ in range(options.rounds):
            for label, relay_path in runs:
                started = time.perf_counter()
                took = sorted(_round(relay_path, options.callers, options.accepts))
                per_s = len(took) / (time.perf_counter() - started)
                p99 = took[int(len(took) * 0.99)]
                print(
                    f"round {round_ + 1} {label:8}: {len(took)} accepts, {per_s:.0f}/s,"
                    f" median {statistics.median(took) * 1000:.1f} ms,"
                    f" p99 {p99 * 1000:.1f} ms, longest {took[-1] * 1000:.1f} ms",
                    flush=True,
                )
    finally:
        for hog in hogs:
            hog.kill()


if __name__ == "__main__":
    main()
