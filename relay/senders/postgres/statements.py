"""The SQL relay runs: identifiers always quoted by psycopg.sql, values always bound."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

# relay's own table, created when absent (SPEC 4.3).
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    agent_id text,
    session_id text,
    role text,
    message text,
    occurred_at timestamptz,
    received_at timestamptz,
    payload jsonb NOT NULL
)"""
# Two replicas creating the table at once would race in the catalog (a duplicate pg_type
# row): one waits for the other's transaction instead.
CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"

# What relay needs to know of the table before its first insert: whether it exists, has
# the key column, and a unique index on exactly that column that backs ON CONFLICT (not
# partial, not an expression, not deferred); and which columns take JSON.
TABLE_FACTS = """
SELECT t.rel IS NOT NULL,
  EXISTS (SELECT 1 FROM pg_attribute a
          WHERE a.attrelid = t.rel AND a.attname = %(column)s AND a.attnum > 0
            AND NOT a.attisdropped),
  EXISTS (SELECT 1 FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = t.rel AND i.indisunique AND i.indimmediate
            AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
            AND a.attname = %(column)s),
  ARRAY(SELECT a.attname::text FROM pg_attribute a
        WHERE a.attrelid = t.rel AND a.attnum > 0 AND NOT a.attisdropped
          AND a.atttypid IN ('json'::regtype, 'jsonb'::regtype))
FROM (SELECT to_regclass(%(table)s) AS rel) AS t
"""

# The conflict target names the event_id column: a clash on another unique column of the
# user's table is the database's refusal to say, not a row quietly dropped.
_INSERT = "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO NOTHING"


def table_name(table: Sequence[str]) -> sql.Identifier:
    """A table's name, `name` or `schema.name`, quoted."""
    return sql.Identifier(*table)


def insert(table: Sequence[str], columns: Sequence[str], key: str) -> sql.Composed:
    """The INSERT of one row: a repeat of the same event inserts nothing."""
    return sql.SQL(_INSERT).format(
        table=table_name(table),
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        key=sql.Identifier(key),
    )
