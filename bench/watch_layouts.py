"""Three layouts of a conversation watch on SQLite, at 10 and 100,000 open conversations.

    python bench/watch_layouts.py [--events 20000] [--batch 64] [--rounds 2]
        [--layouts "in place,appended,deferred"] [--defer 4500,22500]

Issue 16 asks that an event cost the same with 100,000 open conversations as with 10. On
SQLite it does not (bench/README.md, "Conversations"): each event rewrites its watch's row
where it lies, and with 100,000 rows every event of a commit dirties a page of its own.
This script measures the statements alone, on one connection, in relay's mode (WAL,
synchronous=FULL, commits of `--batch` events, each with a 400-byte event row):

- in place: one row per conversation, keyed by it (relay's layout), an UPDATE per event;
- appended: a version of the watch per event, appended at the table's end (its last
  version read by rowid from a map the script keeps, as a process would), the superseded
  versions deleted oldest first every 8 commits;
- deferred N: the in-place table, but an event's commit stores only the event; its
  watch's UPDATE waits with those of the next events until N are waiting, and then they
  run sorted by conversation, in commits of --batch (the rows of one commit are
  neighbours, and no page is written by two of them). At relay's 4,500 events a second,
  N = 4,500 is a second's wait. What the wait would also need (the signals and the console reading
  watches only up to the events applied, the waiting observations found again after a
  crash) is not here.

Every conversation has its watch before the measured events; each event picks one at
random. Prints the process's CPU per event (user + system) of each layout and case, per
round, rounds alternating. It is not relay's code, and its row is narrower than relay's:
with relay's own statements, keeping the UPDATEs back saved nothing (bench/README.md,
"Measured again, and a third layout"). What the appended layout would also need (every
process's map of current versions, kept up to date under the write lock) is not here.
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import tempfile
from pathlib import Path

COLUMNS = 26  # about a watch's
BODY = b"x" * 400
WINDOW_S = 600.0
GC_EVERY_COMMITS = 8
GC_ROWS = 512


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _connect(path: Path, layout: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -32000")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB, received_at REAL)")
    fields = ", ".join(f"c{i} REAL" for i in range(COLUMNS))
    if layout != "appended":
        conn.execute(
            f"CREATE TABLE watches (conversation TEXT PRIMARY KEY, {fields}, due_floor REAL,"
            " quiet_at REAL) WITHOUT ROWID"
        )
        conn.execute("CREATE INDEX watches_due_floor ON watches (due_floor)")
        conn.execute("CREATE INDEX watches_quiet ON watches (quiet_at)")
    else:
        conn.execute(
            f"CREATE TABLE versions (conversation TEXT NOT NULL, {fields}, due_at REAL,"
            " quiet_at REAL)"
        )
        conn.execute("CREATE INDEX versions_due ON versions (due_at)")
    return conn


_UPDATE_SQL = "UPDATE watches SET c1 = c1 + 1, c2 = ?, c3 = ? WHERE conversation = ?"


def _apply_sorted(conn: sqlite3.Connection, waiting: list[tuple[float, str]], batch: int) -> None:
    """The deferred layout: run the waiting UPDATEs in conversation order, `batch` a
    commit; a conversation's own stay in their order (the sort is stable)."""
    waiting.sort(key=lambda update: update[1])
    for start in range(0, len(waiting), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            _UPDATE_SQL,
            [(now, now + WINDOW_S, name) for now, name in waiting[start : start + batch]],
        )
        conn.execute("COMMIT")
    waiting.clear()


def _collect(conn: sqlite3.Connection, current: dict[str, int], collected: int) -> int:
    """The appended layout: delete the superseded versions among the next GC_ROWS after
    `collected`; return the last rowid looked at."""
    rows = conn.execute(
        "SELECT rowid, conversation FROM versions WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (collected, GC_ROWS),
    ).fetchall()
    superseded = [(rowid,) for rowid, name in rows if current[name] != rowid]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("DELETE FROM versions WHERE rowid = ?", superseded)
    conn.execute("COMMIT")
    return int(rows[-1][0]) if rows else collected


def _per_event_us(
    path: Path, layout: str, conversations: int, events: int, batch: int, defer: int = 0
) -> float:
    conn = _connect(path, layout)
    names = [f"{random.Random(n).getrandbits(64):016x}" for n in range(conversations)]
    row = [1.0] * COLUMNS
    marks = ",".join("?" * (COLUMNS + 3))
    table = "versions" if layout == "appended" else "watches"
    current: dict[str, int] = {}  # the appended layout: each conversation's last version
    now = 1_000_000.0
    conn.execute("BEGIN")
    for name in names:
        now += 0.001
        cursor = conn.execute(f"INSERT INTO {table} VALUES ({marks})", (name, *row, now, now))
        current[name] = int(cursor.lastrowid or 0)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    chosen = random.Random(1)
    collected = max(current.values(), default=0)  # the versions the GC has looked at
    waiting: list[tuple[float, str]] = []  # the deferred layout's UPDATEs not run yet
    started = _cpu_s()
    for commit in range(events // batch):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(batch):
            now += 0.001
            name = chosen.choice(names)
            conn.execute("INSERT INTO events (body, received_at) VALUES (?, ?)", (BODY, now))
            if layout == "in place":
                conn.execute(_UPDATE_SQL, (now, now + WINDOW_S, name))
                continue
            if layout == "deferred":
                waiting.append((now, name))
                continue
            last = conn.execute("SELECT * FROM versions WHERE rowid = ?", (current[name],))
            values = last.fetchone()[1 : COLUMNS + 1]
            cursor = conn.execute(
                f"INSERT INTO versions VALUES ({marks})", (name, *values, now + WINDOW_S, now)
            )
            current[name] = int(cursor.lastrowid or 0)
        conn.execute("COMMIT")
        if layout == "deferred" and len(waiting) >= defer:
            _apply_sorted(conn, waiting, batch)
        if layout == "appended" and commit % GC_EVERY_COMMITS == 0:
            collected = _collect(conn, current, collected)
        if commit % 50 == 0:  # relay checkpoints every 50 commits, beside them
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    if waiting:  # the last ones count too
        _apply_sorted(conn, waiting, batch)
    spent = _cpu_s() - started
    conn.close()
    return spent / (events // batch * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="measured events per run")
    parser.add_argument("--batch", type=int, default=64, help="events per commit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="10,100000", help="open conversations")
    parser.add_argument("--layouts", default="in place,appended,deferred")
    parser.add_argument(
        "--defer", default="4500,22500", help="the deferred layout's waiting UPDATEs, each N"
    )
    args = parser.parse_args()
    cases = [int(n) for n in args.cases.split(",")]
    if args.events < args.batch or args.batch < 1 or min(cases) < 1:
        parser.error("need --events >= --batch >= 1 and cases >= 1")
    layouts: list[tuple[str, int]] = []
    for layout in args.layouts.split(","):
        if layout not in ("in place", "appended", "deferred"):
            parser.error(f'--layouts: unknown layout "{layout}"')
        if layout == "deferred":
            layouts += [(layout, int(n)) for n in args.defer.split(",")]
        else:
            layouts.append((layout, 0))
    print(f"{args.events:,} events a run, commits of {args.batch}; CPU per event, in us")
    print(f"{'round':>5} {'layout':>16} " + " ".join(f"{n:>9,}" for n in cases))
    with tempfile.TemporaryDirectory(prefix="relay-watch-layouts-") as tmp:
        for round_ in range(1, args.rounds + 1):
            for layout, defer in layouts:
                label = f"{layout} {defer:,}" if defer else layout
                figures = []
                for n in cases:
                    path = Path(tmp) / f"{label.replace(' ', '-')}-{n}-{round_}.db"
                    figures.append(_per_event_us(path, layout, n, args.events, args.batch, defer))
                print(f"{round_:>5} {label:>16} " + " ".join(f"{f:>9.1f}" for f in figures))


if __name__ == "__main__":
    main()
