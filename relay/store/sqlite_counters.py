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

_ADD_SQL = """
INSERT INTO counters (hour, scope, key, name, value, last_at, keep_until)
VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (hour, scope, key, name)
DO UPDATE SET value = value + 1, last_at = max(last_at, excluded.last_at)
"""

_RULE_HITS_SQL = """
SELECT key, sum(CASE WHEN hour >= :since THEN value ELSE 0 END), max(last_at)
FROM counters WHERE scope = 'rule' GROUP BY key
"""


def add(conn: sqlite3.Connection, tally: Tally) -> None:
    """Add one event's tally."""
    hour, at, keep = tally.hour, tally.at, tally.keep_until
    rows = [(hour, "agent", tally.agent_id, name, at, keep) for name in tally.counters]
    rows += [(hour, "rule", rule, "hits", at, keep) for rule in tally.rules]
    conn.executemany(_ADD_SQL, rows)


def rule_hits(conn: sqlite3.Connection, since_hour: int) -> list[RuleHits]:
    """Return each rule's hits from `since_hour` on, and its latest match of all kept."""
    rows = conn.execute(_RULE_HITS_SQL, {"since": since_hour}).fetchall()
    return [RuleHits(rule, int(hits), float(last_at)) for rule, hits, last_at in rows]


def agent_counts(conn: sqlite3.Connection, since_hour: int) -> list[AgentCount]:
    """Return each agent's counters summed from `since_hour` on."""
    rows = conn.execute(
        "SELECT key, name, sum(value) FROM counters WHERE hour >= ? AND scope = 'agent'"
        " GROUP BY key, name",
        (since_hour,),
    ).fetchall()
    return [AgentCount(agent, name, int(value)) for agent, name, value in rows]


def hourly_counts(conn: sqlite3.Connection, since_hour: int, counter: str) -> list[HourCount]:
    """Return one agent counter of all agents, hour by hour from `since_hour` on."""
    rows = conn.execute(
        "SELECT hour, sum(value) FROM counters WHERE hour >= ? AND scope = 'agent'"
        " AND name = ? GROUP BY hour ORDER BY hour",
        (since_hour, counter),
    ).fetchall()
    return [HourCount(int(hour), int(value)) for hour, value in rows]


def purge(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Forget at most `limit` counters whose hour is past keeping, oldest hour first.

    Rows go in the order of their hours, which is about the order of their keep_until
    (console.history changes seldom); a row kept longer holds back only the hours after
    it, until it goes too."""
    return conn.execute(
        "DELETE FROM counters WHERE (hour, scope, key, name) IN ("
        " SELECT hour, scope, key, name FROM counters ORDER BY hour LIMIT :limit"
        ") AND keep_until <= :now",
        {"limit": limit, "now": now},
    ).rowcount
