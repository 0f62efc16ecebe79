"""The SQLite store's activity counters (SPEC 8.1): one row per counter and hour.

Like sqlite_ops, every function runs inside a transaction the caller owns. An event adds
one to a few rows of its hour: the rows of the current hour share a handful of pages, so
adding costs about the same however many hours are kept.
"""

from __future__ import annotations

import sqlite3

from relay.activity.tally import AgentCount, HourCount, RuleHits, Tally

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

_ADD_SQL = """
INSERT INTO counters (hour, scope, key, name, value, last_at, keep_until)
VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (hour, scope, key, name)
DO UPDATE SET value = value + 1, last_at = max(last_at, excluded.last_at)
"""

# The rows of a period: its hours from `since` on, and the days that overlap it (whole:
# a day's row counts all of it). Each branch reads its own index range.
_PERIOD = """
SELECT hour, key, name, value FROM counters WHERE hour >= :since AND scope = :scope
UNION ALL
SELECT day * 24, key, name, value FROM counters_daily
WHERE day >= :since / 24 AND scope = :scope
"""
_AGENT_COUNTS_SQL = f"SELECT key, name, sum(value) FROM ({_PERIOD}) GROUP BY key, name"
_HOURLY_SQL = f"""
SELECT hour, sum(value) FROM ({_PERIOD}) WHERE name = :name GROUP BY hour ORDER BY hour
"""
# A rule's latest match is of all kept rows, within the period or not.
_RULE_HITS_SQL = f"""
SELECT key, sum(value), NULL FROM ({_PERIOD}) GROUP BY key
UNION ALL
SELECT key, 0, max(last_at) FROM (
    SELECT key, last_at FROM counters WHERE scope = 'rule'
    UNION ALL
    SELECT key, last_at FROM counters_daily WHERE scope = 'rule'
) GROUP BY key
"""
_ROLL_UP_SQL = """
INSERT INTO counters_daily (day, scope, key, name, value, last_at, keep_until)
SELECT :day, scope, key, name, sum(value), max(last_at), max(keep_until) FROM counters
WHERE hour >= :first AND hour < :end GROUP BY scope, key, name
ON CONFLICT (day, scope, key, name) DO UPDATE SET value = value + excluded.value,
    last_at = max(last_at, excluded.last_at), keep_until = max(keep_until, excluded.keep_until)
"""


def add(conn: sqlite3.Connection, tally: Tally) -> None:
    """Add one event's tally."""
    hour, at, keep = tally.hour, tally.at, tally.keep_until
    rows = [(hour, "agent", tally.agent_id, name, at, keep) for name in tally.counters]
    rows += [(hour, "rule", rule, "hits", at, keep) for rule in tally.rules]
    conn.executemany(_ADD_SQL, rows)


def rule_hits(conn: sqlite3.Connection, since_hour: int) -> list[RuleHits]:
    """Return each rule's hits from `since_hour` on, and its latest match of all kept."""
    hits: dict[str, int] = {}
    last: dict[str, float] = {}
    for rule, count, last_at in conn.execute(
        _RULE_HITS_SQL, {"since": since_hour, "scope": "rule"}
    ):
        hits[rule] = hits.get(rule, 0) + int(count)
        if last_at is not None:
            last[rule] = float(last_at)
    return [RuleHits(rule, hits.get(rule, 0), at) for rule, at in last.items()]


def agent_counts(conn: sqlite3.Connection, since_hour: int) -> list[AgentCount]:
    """Return each agent's counters summed from `since_hour` on."""
    rows = conn.execute(_AGENT_COUNTS_SQL, {"since": since_hour, "scope": "agent"}).fetchall()
    return [AgentCount(agent, name, int(value)) for agent, name, value in rows]


def hourly_counts(conn: sqlite3.Connection, since_hour: int, counter: str) -> list[HourCount]:
    """Return one agent counter of all agents, hour by hour from `since_hour` on (a day
    rolled up counts as its first hour)."""
    params = {"since": since_hour, "scope": "agent", "name": counter}
    rows = conn.execute(_HOURLY_SQL, params).fetchall()
    return [HourCount(int(hour), int(value)) for hour, value in rows]


def roll_up(conn: sqlite3.Connection, now: float) -> int:
    """Roll the oldest day of hours before yesterday (UTC, by `now`) up into its day's
    rows; return how many hourly rows went (0: none is left to roll)."""
    (first,) = conn.execute("SELECT min(hour) FROM counters").fetchone()
    yesterday = (int(now // 86400) - 1) * DAY_HOURS
    if first is None or first >= yesterday:
        return 0
    day = first // DAY_HOURS
    bounds = {"day": day, "first": day * DAY_HOURS, "end": (day + 1) * DAY_HOURS}
    conn.execute(_ROLL_UP_SQL, bounds)
    return conn.execute(
        "DELETE FROM counters WHERE hour >= :first AND hour < :end", bounds
    ).rowcount


def purge(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Forget at most `limit` counters whose hour or day is past keeping, oldest first.

    Rows go in the order of their hours, which is about the order of their keep_until
    (console.history changes seldom); a row kept longer holds back only the hours after
    it, until it goes too."""
    params = {"limit": limit, "now": now}
    gone = conn.execute(
        "DELETE FROM counters WHERE (hour, scope, key, name) IN ("
        " SELECT hour, scope, key, name FROM counters ORDER BY hour LIMIT :limit"
        ") AND keep_until <= :now",
        params,
    ).rowcount
    return (
        gone
        + conn.execute(
            "DELETE FROM counters_daily WHERE (day, scope, key, name) IN ("
            " SELECT day, scope, key, name FROM counters_daily ORDER BY day LIMIT :limit"
            ") AND keep_until <= :now",
            params,
        ).rowcount
    )
