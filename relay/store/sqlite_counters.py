"""The SQLite store's activity counters (SPEC 8.1): a row per agent and hour, a row per
rule counter and hour.

Like sqlite_ops, every function runs inside a transaction the caller owns. An event adds
one to its agent's row of its hour and to a row per rule it matched: the rows of the
current hour share a handful of pages, so adding costs about the same however many hours
are kept.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

from relay.activity.tally import AGENT_COUNTERS, AgentCount, HourCount, RuleHits, Tally

# Version 12: the counters. scope is 'agent' (key: an agent id; name: one of tally's
# agent counters) or 'rule' (key: a rule's name, tally.NO_RULE for none; name:
# 'hits'). keep_until is set when an hour's row is made: console.history after the hour.
SCHEMA_V12 = """
CREATE TABLE counters (
    hour INTEGER NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    last_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (hour, scope, key, name)
) WITHOUT ROWID;
"""

# Version 15: days. The housekeeping rolls the hours before yesterday up into one row per
# day (roll_up), so that a page over 30 days reads about 30 rows per counter, not 720;
# the 24-hour view and its chart read hours, which stay for today and yesterday.
SCHEMA_V15 = """
CREATE TABLE counters_daily (
    day INTEGER NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    last_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (day, scope, key, name)
) WITHOUT ROWID;
"""
DAY_HOURS = 24

# Version 16: an agent's counters of an hour (and of a day) are one row, a column each,
# instead of a row each. A page sums an agent's rows of a period: with every agent busy
# every hour, that is a row per agent and hour or day, not a row per counter of them
# (about twenty times fewer), and an event writes one agent row instead of several. The
# 'agent' rows of version 12 move into the new tables. Rule counters stay rows of
# `counters`: a rule's name is open-ended, an agent's counters are not.
# The hours are in hour order, so that the rows an event adds to (its hour's) share a few
# pages; the days, written only by the roll-up, in agent order, so that a page sums each
# agent's days without sorting them first (index: for the purge, and a short period).
_COUNTER_COLUMNS = ",\n    ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in AGENT_COUNTERS)
_COLUMNS = ", ".join(AGENT_COUNTERS)
_SUMS = ", ".join(f"sum({name})" for name in AGENT_COUNTERS)
_AS_COLUMNS = ", ".join(
    f"sum(CASE WHEN name = '{name}' THEN value ELSE 0 END)" for name in AGENT_COUNTERS
)
_OF_NEW_ROW = ", ".join(
    f"CASE WHEN NEW.name = '{name}' THEN NEW.value ELSE 0 END" for name in AGENT_COUNTERS
)
_ADDED = ", ".join(f"{name} = {name} + excluded.{name}" for name in AGENT_COUNTERS)
SCHEMA_V16 = f"""
CREATE TABLE agent_hours (
    hour INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    {_COUNTER_COLUMNS},
    keep_until REAL NOT NULL,
    PRIMARY KEY (hour, agent_id)
) WITHOUT ROWID;
CREATE TABLE agent_days (
    day INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    {_COUNTER_COLUMNS},
    keep_until REAL NOT NULL,
    PRIMARY KEY (agent_id, day)
) WITHOUT ROWID;
CREATE INDEX agent_days_by_day ON agent_days (day);
INSERT INTO agent_hours (hour, agent_id, {_COLUMNS}, keep_until)
SELECT hour, key, {_AS_COLUMNS}, max(keep_until)
FROM counters WHERE scope = 'agent' GROUP BY hour, key;
INSERT INTO agent_days (day, agent_id, {_COLUMNS}, keep_until)
SELECT day, key, {_AS_COLUMNS}, max(keep_until)
FROM counters_daily WHERE scope = 'agent' GROUP BY day, key;
DELETE FROM counters WHERE scope = 'agent';
DELETE FROM counters_daily WHERE scope = 'agent';
CREATE TRIGGER agent_counters_of_an_older_relay AFTER INSERT ON counters
WHEN NEW.scope = 'agent'
BEGIN
    INSERT INTO agent_hours (hour, agent_id, {_COLUMNS}, keep_until)
    VALUES (NEW.hour, NEW.key, {_OF_NEW_ROW}, NEW.keep_until)
    ON CONFLICT (hour, agent_id) DO UPDATE SET {_ADDED};
    DELETE FROM counters
    WHERE hour = NEW.hour AND scope = 'agent' AND key = NEW.key AND name = NEW.name;
END;
"""
# The trigger: a relay of version 15 still running beside this one during a rolling
# upgrade adds its agent counters as rows of `counters`; each moves into its agent's row
# at once, so none is lost and none is left for the pages to miss. (Its row is inserted
# every time, since the trigger deletes it, so its ON CONFLICT update never runs.)

# Version 17: each day's kept hours, summed, an agent's row each (kept by triggers as the
# hours are added to, by this relay and by an older one alike, so that it always equals
# them): a page over a week or a month reads a row per agent and day, not one per hour of
# today and yesterday, and the 24 hours read only yesterday's hours, today's as one row.
# The roll-up forgets a day's sum with its hours, so the purge never needs to.
_DELTAS = ", ".join(f"NEW.{name} - OLD.{name}" for name in AGENT_COUNTERS)
_NEW_VALUES = ", ".join(f"NEW.{name}" for name in AGENT_COUNTERS)
_ADD_TO_DAY = f"""
    INSERT INTO agent_hours_by_day (agent_id, day, {_COLUMNS}, keep_until)
    VALUES (NEW.agent_id, NEW.hour / {DAY_HOURS}, {{values}}, NEW.keep_until)
    ON CONFLICT (agent_id, day) DO UPDATE SET {_ADDED},
        keep_until = max(keep_until, excluded.keep_until);"""
SCHEMA_V17 = f"""
CREATE TABLE agent_hours_by_day (
    agent_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    {_COUNTER_COLUMNS},
    keep_until REAL NOT NULL,
    PRIMARY KEY (agent_id, day)
) WITHOUT ROWID;
INSERT INTO agent_hours_by_day (agent_id, day, {_COLUMNS}, keep_until)
SELECT agent_id, hour / {DAY_HOURS}, {_SUMS}, max(keep_until)
FROM agent_hours GROUP BY agent_id, hour / {DAY_HOURS};
CREATE TRIGGER agent_hours_added AFTER INSERT ON agent_hours
BEGIN{_ADD_TO_DAY.format(values=_NEW_VALUES)}
END;
CREATE TRIGGER agent_hours_added_to AFTER UPDATE ON agent_hours
BEGIN{_ADD_TO_DAY.format(values=_DELTAS)}
END;
"""
_RULES_ADD_SQL = """
INSERT INTO counters (hour, scope, key, name, value, last_at, keep_until)
VALUES (?, 'rule', ?, 'hits', ?, ?, ?)
ON CONFLICT (hour, scope, key, name)
DO UPDATE SET value = value + excluded.value, last_at = max(last_at, excluded.last_at)
"""
_AGENTS_ADD_SQL = f"""
INSERT INTO agent_hours (hour, agent_id, keep_until, {_COLUMNS})
VALUES (?, ?, ?, {", ".join("?" * len(AGENT_COUNTERS))})
ON CONFLICT (hour, agent_id) DO UPDATE SET {_ADDED}
"""
_PLACES = {name: place for place, name in enumerate(AGENT_COUNTERS)}

# A rule's hits in a period: its hours from `since` on, and the days that overlap it
# (whole: a day's row counts all of it). Each branch reads its own index range.
_RULE_PERIOD = """
SELECT key, value FROM counters WHERE hour >= :since AND scope = 'rule'
UNION ALL
SELECT key, value FROM counters_daily WHERE day >= :since / 24 AND scope = 'rule'
"""
# A rule's latest match is of all kept rows, within the period or not.
_RULE_HITS_SQL = f"""
SELECT key, sum(value), NULL FROM ({_RULE_PERIOD}) GROUP BY key
UNION ALL
SELECT key, 0, max(last_at) FROM (
    SELECT key, last_at FROM counters WHERE scope = 'rule'
    UNION ALL
    SELECT key, last_at FROM counters_daily WHERE scope = 'rule'
) GROUP BY key
"""

# An agent's counters in a period: each table apart, so that each groups its own range.
_AGENT_HOURS_SQL = (
    f"SELECT agent_id, {_SUMS} FROM agent_hours WHERE hour >= ? AND hour < ? GROUP BY agent_id"
)
_AGENT_DAYS_SQL = f"SELECT agent_id, {_SUMS} FROM agent_days WHERE day >= ? GROUP BY agent_id"
_AGENT_HOURS_BY_DAY_SQL = (
    f"SELECT agent_id, {_SUMS} FROM agent_hours_by_day WHERE day > ? GROUP BY agent_id"
)

_ROLL_UP_RULES_SQL = """
INSERT INTO counters_daily (day, scope, key, name, value, last_at, keep_until)
SELECT :day, scope, key, name, sum(value), max(last_at), max(keep_until) FROM counters
WHERE hour >= :first AND hour < :end GROUP BY scope, key, name
ON CONFLICT (day, scope, key, name) DO UPDATE SET value = value + excluded.value,
    last_at = max(last_at, excluded.last_at), keep_until = max(keep_until, excluded.keep_until)
"""
_ROLL_UP_AGENTS_SQL = f"""
INSERT INTO agent_days (day, agent_id, {_COLUMNS}, keep_until)
SELECT :day, agent_id, {_SUMS}, max(keep_until) FROM agent_hours
WHERE hour >= :first AND hour < :end GROUP BY agent_id
ON CONFLICT (agent_id, day) DO UPDATE SET {_ADDED},
    keep_until = max(keep_until, excluded.keep_until)
"""


class Adding:
    """Tallies added together, in one transaction: the events of one agent in one hour add
    to one row, and those that matched one rule in one hour to another, so a batch of
    accepts writes a row per agent and hour and per rule and hour it touched, not a
    statement per event and counter."""

    def __init__(self) -> None:
        self._agents: dict[tuple[int, str], tuple[list[int], float]] = {}
        self._rules: dict[tuple[int, str], list[float]] = {}

    def add(self, tally: Tally, more: Sequence[str] = ()) -> None:
        """Count one event's tally, and `more` of its agent's counters (its watch's)."""
        key = (tally.hour, tally.agent_id)
        found = self._agents.get(key)
        if found is None:
            found = self._agents[key] = ([0] * len(AGENT_COUNTERS), tally.keep_until)
        counts = found[0]
        for name in (*tally.counters, *more):
            place = _PLACES.get(name)
            if place is None:
                raise ValueError(f"unknown agent counter {name!r}")
            counts[place] += 1
        for rule in tally.rules:
            hits = self._rules.get((tally.hour, rule))
            if hits is None:
                self._rules[(tally.hour, rule)] = [1, tally.at, tally.keep_until]
            else:
                hits[0] += 1
                hits[1] = max(hits[1], tally.at)

    def write(self, conn: sqlite3.Connection) -> None:
        """Add what was counted to the counters, and start again from nothing."""
        agents = self._agents.items()
        rules = self._rules.items()
        if agents:
            rows = [(hour, agent, keep, *counts) for (hour, agent), (counts, keep) in agents]
            conn.executemany(_AGENTS_ADD_SQL, rows)
        if rules:
            hits = [(hour, rule, int(n), at, keep) for (hour, rule), (n, at, keep) in rules]
            conn.executemany(_RULES_ADD_SQL, hits)
        self.clear()

    def clear(self) -> None:
        self._agents.clear()
        self._rules.clear()


def add(conn: sqlite3.Connection, tally: Tally, more: Sequence[str] = ()) -> None:
    """Add one event's tally, and `more` of its agent's counters."""
    adding = Adding()
    adding.add(tally, more)
    adding.write(conn)


def rule_hits(conn: sqlite3.Connection, since_hour: int) -> list[RuleHits]:
    """Return each rule's hits from `since_hour` on, and its latest match of all kept."""
    hits: dict[str, int] = {}
    last: dict[str, float] = {}
    for rule, count, last_at in conn.execute(_RULE_HITS_SQL, {"since": since_hour}):
        hits[rule] = hits.get(rule, 0) + int(count)
        if last_at is not None:
            last[rule] = float(last_at)
    return [RuleHits(rule, hits.get(rule, 0), at) for rule, at in last.items()]


def agent_counts(conn: sqlite3.Connection, since_hour: int) -> list[AgentCount]:
    """Return each agent's counters summed from `since_hour` on (those above zero): the
    hours of its first day from `since_hour`, the days after it as their hours' sums, and
    the days rolled up, whole (a day's row counts all of it)."""
    since_day = since_hour // DAY_HOURS
    totals: dict[str, list[int]] = {}
    reads = (
        (_AGENT_HOURS_SQL, (since_hour, (since_day + 1) * DAY_HOURS)),
        (_AGENT_HOURS_BY_DAY_SQL, (since_day,)),
        (_AGENT_DAYS_SQL, (since_day,)),
    )
    for sql, params in reads:
        for agent, *values in conn.execute(sql, params):
            known = totals.get(agent)
            totals[agent] = (
                values if known is None else [a + b for a, b in zip(known, values, strict=True)]
            )
    return [
        AgentCount(agent, name, value)
        for agent, values in sorted(totals.items())
        for name, value in zip(AGENT_COUNTERS, values, strict=True)
        if value
    ]


@functools.cache
def _hourly_sql(counter: str) -> tuple[str, str]:
    if counter not in AGENT_COUNTERS:
        raise ValueError(f"unknown agent counter {counter!r}")
    return (
        f"SELECT hour, sum({counter}) FROM agent_hours WHERE hour >= ?"
        f" GROUP BY hour HAVING sum({counter}) > 0",
        f"SELECT day * {DAY_HOURS}, sum({counter}) FROM agent_days WHERE day >= ?"
        f" GROUP BY day HAVING sum({counter}) > 0",
    )


def hourly_counts(conn: sqlite3.Connection, since_hour: int, counter: str) -> list[HourCount]:
    """Return one agent counter of all agents, hour by hour from `since_hour` on (a day
    rolled up counts as its first hour)."""
    hours_sql, days_sql = _hourly_sql(counter)
    totals: dict[int, int] = {}
    for sql, since in ((hours_sql, since_hour), (days_sql, since_hour // DAY_HOURS)):
        for hour, value in conn.execute(sql, (since,)):
            totals[hour] = totals.get(hour, 0) + value
    return [HourCount(hour, value) for hour, value in sorted(totals.items())]


def roll_up(conn: sqlite3.Connection, now: float) -> int:
    """Roll the oldest day of hours before yesterday (UTC, by `now`) up into its day's
    rows; return how many hourly rows went (0: none is left to roll)."""
    firsts = [
        conn.execute(f"SELECT min(hour) FROM {table}").fetchone()[0]
        for table in ("counters", "agent_hours")
    ]
    known = [first for first in firsts if first is not None]
    yesterday = (int(now // 86400) - 1) * DAY_HOURS
    if not known or min(known) >= yesterday:
        # No day before yesterday has hours left, so none has a sum of them either: a
        # relay of version 16 rolls a day up and leaves its sum behind.
        conn.execute("DELETE FROM agent_hours_by_day WHERE day < ?", (yesterday // DAY_HOURS,))
        return 0
    day = min(known) // DAY_HOURS
    bounds = {"day": day, "first": day * DAY_HOURS, "end": (day + 1) * DAY_HOURS}
    conn.execute(_ROLL_UP_RULES_SQL, bounds)
    conn.execute(_ROLL_UP_AGENTS_SQL, bounds)
    conn.execute("DELETE FROM agent_hours_by_day WHERE day = :day", bounds)
    return sum(
        conn.execute(f"DELETE FROM {table} WHERE hour >= :first AND hour < :end", bounds).rowcount
        for table in ("counters", "agent_hours")
    )


# Rows go in the order of their hours, which is about the order of their keep_until
# (console.history changes seldom); a row kept longer holds back only the hours after it,
# until it goes too.
_PURGES = tuple(
    f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table}{indexed} ORDER BY {unit}"
    " LIMIT :limit) AND keep_until <= :now"
    for table, indexed, unit, key in (
        ("counters", "", "hour", "hour, scope, key, name"),
        ("counters_daily", "", "day", "day, scope, key, name"),
        ("agent_hours", "", "hour", "hour, agent_id"),
        ("agent_days", " INDEXED BY agent_days_by_day", "day", "agent_id, day"),
    )
)


def purge(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Forget at most `limit` counters of each table whose hour or day is past keeping,
    oldest first."""
    params = {"limit": limit, "now": now}
    return sum(conn.execute(sql, params).rowcount for sql in _PURGES)
