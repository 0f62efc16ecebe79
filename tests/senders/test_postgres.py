"""The postgres destination (SPEC 4.3) against Debian's PostgreSQL server: each event one
row, exactly once, through outages, crashes and refusals."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from relay.cli import main
from relay.senders.postgres.failures import is_retryable
from tests.conftest import RelayClientFactory
from tests.support.fake_discord import wait_until
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.processes import RelayProcesses, run_cli
from tests.support.relay import CHAT_PUSH, ROOM_JOIN, SECRET, event_body, signed_headers
from tests.support.secrets import watch
from tests.test_delivery import Client, deliveries, wait_for_status

WRONG_PASSWORD = "not-the-pg-password-3310"
watch(WRONG_PASSWORD)


def postgres_config(*, columns: str = "", table: str = "", max_attempts: int = 10000) -> str:
    """Every event to one postgres destination at ${PG_DSN}; quick retries."""
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: {max_attempts}
  backoff: {{ first: 50ms, max: 200ms }}
destinations:
  warehouse:
    type: postgres
    dsn: "${{PG_DSN}}"
{table}{columns}rules:
  - name: log-everything
    send_to: [warehouse]
"""


async def post(client: Client, body: bytes) -> str:
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    answer: dict[str, Any] = await response.json()
    assert response.status == 200, answer
    return str(answer["event_id"])


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    """Run one statement; return its rows (none for a statement that returns none)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(query)
        return cursor.fetchall() if cursor.description is not None else []


def at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


async def test_a_join_and_a_message_land_in_the_default_table_once(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    join_id = await post(client, ROOM_JOIN)
    chat_id = await post(client, CHAT_PUSH)
    await wait_for_status(client, "sent", count=2)
    # The same events again: duplicates, nothing new is sent or written.
    for body in (ROOM_JOIN, CHAT_PUSH):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert (await response.json())["status"] == "duplicate"

    received = {d.event_id: d.created_at for d in await deliveries(client)}
    found = rows(pg_db, "SELECT * FROM relay_events ORDER BY occurred_at")
    assert found == [
        (
            join_id,
            "room.join",
            "agent_abc123",
            "session_xyz789",
            None,
            None,
            at(1705312200.0),
            at(received[join_id]),
            json.loads(ROOM_JOIN),
        ),
        (
            chat_id,
            "chat.push",
            "agent_abc123",
            "session_xyz789",
            "user",
            "Hello, I need help with my order",
            at(1705312285.0),
            at(received[chat_id]),
            json.loads(CHAT_PUSH),
        ),
    ]
    types = rows(
        pg_db,
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'relay_events' ORDER BY ordinal_position",
    )
    assert types == [
        ("event_id", "text"),
        ("event_type", "text"),
        ("agent_id", "text"),
        ("session_id", "text"),
        ("role", "text"),
        ("message", "text"),
        ("occurred_at", "timestamp with time zone"),
        ("received_at", "timestamp with time zone"),
        ("payload", "jsonb"),
    ]


USER_SESSION = """
CREATE TABLE user_session (
    id serial PRIMARY KEY,
    agent text NOT NULL,
    room text,
    session text,
    visitors integer,
    said text,
    data jsonb,
    joined_at timestamptz,
    delivery_key text UNIQUE
)
"""
USER_SESSION_COLUMNS = """    table: user_session
    columns:
      agent: agent_id
      room: data.room_name
      session: data.session_id
      visitors: data.participant_count
      said: data.message
      data: data
      joined_at: timestamp
      delivery_key: event_id
"""


async def test_columns_write_into_a_table_of_ones_own(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    rows(pg_db, USER_SESSION)
    client = await relay_client(postgres_config(columns=USER_SESSION_COLUMNS), PG_DSN=pg_db)
    join_id = await post(client, ROOM_JOIN)
    await wait_for_status(client, "sent")

    found = rows(
        pg_db,
        "SELECT agent, room, session, visitors, said, data, joined_at,"
        " delivery_key FROM user_session",
    )
    assert found == [
        (
            "agent_abc123",
            "customer-support",
            "session_xyz789",
            1,  # a JSON number into an integer column
            None,  # a join has no message: NULL
            {
                "room_name": "customer-support",
                "participant_count": 1,
                "session_id": "session_xyz789",
            },
            at(1705312200.0),
            join_id,
        )
    ]


HOSTILE = [
    "'); DROP TABLE relay_events; --",
    "quotes \" and ' and `",
    "back\\slashes \\\\ and \\n not a newline",
    "emoji 🧑‍🚀🎉 and 中文",
    "nul-free but \t tabbed\nand newlined",
]


async def test_hostile_text_is_stored_verbatim(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    for index, text in enumerate(HOSTILE):
        await post(client, event_body(message=text, session=f"h{index}"))
    await wait_for_status(client, "sent", count=len(HOSTILE))

    stored = rows(pg_db, "SELECT message, payload->'data'->>'message' FROM relay_events")
    assert sorted(stored) == sorted((text, text) for text in HOSTILE)


async def test_events_accepted_while_postgres_is_down_are_all_there_once_after(
    relay_client: RelayClientFactory, postgres_own: PostgresServer
) -> None:
    count = 12
    client = await relay_client(postgres_config(), PG_DSN=postgres_own.dsn)
    await post(client, event_body(message="before", session="s-before"))
    await wait_for_status(client, "sent")  # the table is made and the pool is warm
    postgres_own.stop()

    for index in range(count):
        await post(client, event_body(message=f"during {index}", session=f"s{index % 5}"))
    await wait_for_status(client, "failed", count=1, timeout_s=20.0)
    [failed, *_] = [d for d in await deliveries(client) if d.status == "failed"]
    assert failed.last_error is not None and "PostgreSQL" in failed.last_error
    postgres_own.start()

    await wait_for_status(client, "sent", count=count + 1, timeout_s=60.0)
    stored = rows(postgres_own.dsn, "SELECT message, count(*) FROM relay_events GROUP BY 1")
    assert sorted(stored) == sorted([("before", 1)] + [(f"during {i}", 1) for i in range(count)])


# Once 20 rows are in, an insert waits for advisory lock 42, which the test holds: the
# kill lands while inserts are under way, however fast or slow the machine is.
GATE_LOCK = 42
GATED_INSERTS = f"""
CREATE FUNCTION gated() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    IF (SELECT count(*) FROM user_session) >= 20 THEN
        PERFORM pg_advisory_xact_lock_shared({GATE_LOCK});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gated BEFORE INSERT ON user_session FOR EACH ROW EXECUTE FUNCTION gated();
"""
WAITING_AT_THE_GATE = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    f" AND objid = {GATE_LOCK}"
)


def write_serve_config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "relay.yaml"
    text = postgres_config().replace("${PG_DSN}", dsn).replace("${SECRET}", SECRET)
    path.write_text(
        f"server: {{ host: 127.0.0.1, port: 0, shutdown_timeout: 2s }}\n"
        f"store: {{ url: 'sqlite:{tmp_path / 'relay.db'}' }}\n" + text,
        encoding="utf-8",
    )
    return path


async def test_a_kill_9_mid_stream_leaves_no_duplicate_row(
    processes: RelayProcesses, pg_db: str, tmp_path: Path
) -> None:
    count = 300
    rows(pg_db, USER_SESSION)
    rows(pg_db, GATED_INSERTS)
    config = write_serve_config(tmp_path, pg_db)
    config.write_text(
        config.read_text().replace("    dsn:", USER_SESSION_COLUMNS + "    dsn:"), encoding="utf-8"
    )
    with psycopg.connect(pg_db, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        relay = await processes.start(config)
        bodies = [event_body(message=f"m{i}", session=f"k{i % 8}") for i in range(count)]
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                headers = signed_headers(body)
                async with http.post(relay.webhook_url, data=body, headers=headers) as r:
                    assert r.status == 200
        # Kill while rows are being written: some are in, inserts wait at the gate.
        await wait_until("inserts to wait", lambda: rows(pg_db, WAITING_AT_THE_GATE)[0][0] > 0, 30)
        waiting = rows(pg_db, WAITING_AT_THE_GATE)[0][0]
        before = rows(pg_db, "SELECT count(*) FROM user_session")[0][0]
        # The waiting inserts go on and commit, but relay cannot record them sent: its
        # store's write lock is the test's. Killed then, relay sends them again after its
        # restart, and must not write them twice.
        with holding_the_write_lock(tmp_path / "relay.db"):
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
            await wait_until(
                lambda: f"{waiting} waiting inserts to commit",
                lambda: rows(pg_db, "SELECT count(*) FROM user_session")[0][0] >= before + waiting,
                30,
            )
            relay.kill()
            await relay.wait_exit()
        written_at_kill = rows(pg_db, "SELECT count(*) FROM user_session")[0][0]

    await processes.start(config)
    await wait_until(
        lambda: f"{count} rows; {rows(pg_db, 'SELECT count(*) FROM user_session')[0][0]}",
        lambda: rows(pg_db, "SELECT count(*) FROM user_session")[0][0] >= count,
        60,
    )
    # Each delivery ends sent: a row written again would have been refused, not skipped.
    await wait_until(
        lambda: f"every delivery sent; {statuses(tmp_path / 'relay.db')}",
        lambda: statuses(tmp_path / "relay.db") == {"sent": count},
        60,
    )
    said = rows(pg_db, "SELECT said, count(*) FROM user_session GROUP BY 1 HAVING count(*) > 1")
    assert said == []
    assert rows(pg_db, "SELECT count(*) FROM user_session")[0][0] == count
    assert written_at_kill < count  # the kill did land mid-stream


@contextlib.contextmanager
def holding_the_write_lock(db: Path) -> Iterator[None]:
    """Hold a SQLite file's write lock, as another process's transaction does."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=30)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


def statuses(db: Path) -> dict[str, int]:
    """How many of relay's deliveries have each status, read from its SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return dict(connection.execute("SELECT status, count(*) FROM deliveries GROUP BY 1"))


def check_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], destinations: str
) -> tuple[Path, list[str]]:
    """Run `relay check` on a config of these destinations (every event to `warehouse`);
    return the file and the error lines it printed, after checking it exits 1."""
    path = tmp_path / "relay.yaml"
    path.write_text(
        f"destinations:\n{destinations}rules: [{{name: r, send_to: [warehouse]}}]\n",
        encoding="utf-8",
    )
    with pytest.raises(SystemExit) as exited:
        main(["check", "-c", str(path)])
    assert exited.value.code == 1
    return path, capsys.readouterr().err.splitlines()


def test_a_table_or_column_that_is_not_an_identifier_is_a_check_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, errors = check_errors(
        tmp_path,
        capsys,
        "  warehouse:\n"
        "    type: postgres\n"
        '    dsn: "postgresql://relay:pw@db/bithuman"\n'
        '    table: "events; drop"\n'
        "    columns:\n"
        '      "agent id": agent_id\n'
        "      delivery_key: event_id\n",
    )

    assert errors == [
        f'{path}:5: destinations.warehouse.table: "events; drop": "events; drop" is not a plain'
        " identifier (letters, digits and _, not starting with a digit)",
        f'{path}:7: destinations.warehouse.columns.agent id: column "agent id" is not a plain'
        " identifier (letters, digits and _, not starting with a digit)",
    ]


async def test_a_missing_table_dead_letters_then_replay_delivers_it_once(
    relay_client: RelayClientFactory, pg_db: str, tmp_path: Path
) -> None:
    client = await relay_client(postgres_config(columns=USER_SESSION_COLUMNS), PG_DSN=pg_db)
    await post(client, ROOM_JOIN)

    [dead] = await wait_for_status(client, "dead")
    assert dead.attempts == 1
    assert dead.last_error == (
        'PostgreSQL refused the row: relation "user_session" does not exist (SQLSTATE 42P01)'
    )
    rows(pg_db, USER_SESSION)
    config = tmp_path / "replay.yaml"
    config.write_text(f"store: {{ url: 'sqlite:{tmp_path / 'relay.db'}' }}\n", encoding="utf-8")
    status, out = await run_cli("replay", "--dead", "-c", str(config))
    assert status == 0, out

    await wait_for_status(client, "sent", timeout_s=15.0)
    assert rows(pg_db, "SELECT agent, count(*) FROM user_session GROUP BY 1") == [
        ("agent_abc123", 1)
    ]


async def test_a_table_without_a_unique_event_id_dead_letters_saying_why(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    rows(pg_db, USER_SESSION.replace("delivery_key text UNIQUE", "delivery_key text"))
    client = await relay_client(postgres_config(columns=USER_SESSION_COLUMNS), PG_DSN=pg_db)
    await post(client, ROOM_JOIN)

    [dead] = await wait_for_status(client, "dead")
    assert dead.last_error == (
        "table user_session has no unique index on its delivery_key column, which takes"
        " event_id: a delivery repeated after a crash would insert a second row"
        ' (CREATE UNIQUE INDEX ON "user_session" ("delivery_key"))'
    )
    assert rows(pg_db, "SELECT count(*) FROM user_session") == [(0,)]


async def test_a_wrong_password_is_reported_without_the_password(
    relay_client: RelayClientFactory,
    postgres: PostgresServer,
    pg_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = pg_db.replace(PASSWORD, WRONG_PASSWORD)
    client = await relay_client(postgres_config(max_attempts=2), PG_DSN=wrong)
    await post(client, ROOM_JOIN)

    [dead] = await wait_for_status(client, "dead", timeout_s=30.0)
    assert dead.last_error is not None
    assert dead.last_error.startswith("cannot connect to PostgreSQL: ")
    assert 'password authentication failed for user "relay"' in dead.last_error
    config = tmp_path / "list.yaml"
    config.write_text(f"store: {{ url: 'sqlite:{tmp_path / 'relay.db'}' }}\n", encoding="utf-8")
    status, listed = await run_cli("deliveries", "-c", str(config))
    assert status == 0
    assert "password authentication failed" in listed
    for text in (dead.last_error, listed, caplog.text, repr(dead)):
        assert WRONG_PASSWORD not in text
        assert PASSWORD not in text


def test_route_shows_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        postgres_config(columns=USER_SESSION_COLUMNS)
        .replace("${PG_DSN}", f"postgresql://relay:{WRONG_PASSWORD}@db.example.com:5433/bithuman")
        .replace('secrets: ["${SECRET}"]', ""),
        encoding="utf-8",
    )
    event = tmp_path / "join.json"
    event.write_bytes(ROOM_JOIN)

    assert main(["route", str(event), "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        "--- warehouse (rule log-everything) ---\n"
        "INSERT INTO user_session at db.example.com:5433/bithuman, once per event"
        " (delivery_key unique):\n"
        '  agent = "agent_abc123"\n'
        '  room = "customer-support"\n'
        '  session = "session_xyz789"\n'
        "  visitors = 1\n"
        "  said = NULL\n"
        '  data = {"room_name": "customer-support", "participant_count": 1,'
        ' "session_id": "session_xyz789"} (jsonb)\n'
        "  joined_at = 2024-01-15T09:50:00+00:00\n"
        f'  delivery_key = "{hashlib.sha256(ROOM_JOIN).hexdigest()}"\n'
    )
    assert WRONG_PASSWORD not in out


async def test_pools_are_closed_when_relay_stops(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    await post(client, ROOM_JOIN)
    await wait_for_status(client, "sent")
    await client.close()

    async def no_relay_connection() -> bool:
        found = await asyncio.to_thread(
            rows,
            pg_db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'relay%'",
        )
        return found == [(0,)]

    await wait_until("relay's connections closed", no_relay_connection, 10.0)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (psycopg.errors.AdminShutdown, True),  # 57P01: a restart
        (psycopg.errors.ConnectionFailure, True),  # 08006
        (psycopg.errors.SerializationFailure, True),  # 40001
        (psycopg.errors.DeadlockDetected, True),  # 40P01
        (psycopg.errors.TooManyConnections, True),  # 53300
        (psycopg.errors.QueryCanceled, True),  # 57014: a statement timeout
        (psycopg.errors.LockNotAvailable, True),  # 55P03: a migration holds the table
        (psycopg.errors.ReadOnlySqlTransaction, True),  # 25006: a standby, mid-failover
        (psycopg.errors.UndefinedTable, False),  # 42P01
        (psycopg.errors.UndefinedColumn, False),  # 42703
        (psycopg.errors.InsufficientPrivilege, False),  # 42501
        (psycopg.errors.InvalidTextRepresentation, False),  # 22P02
        (psycopg.errors.NotNullViolation, False),  # 23502
        (psycopg.errors.UniqueViolation, False),  # 23505: another unique column
        (psycopg.OperationalError, True),  # the driver lost the connection
        (psycopg.DataError, False),  # the driver refused a value
    ],
)
def test_failures_are_retried_or_dead_lettered_by_class(
    error: type[psycopg.Error], retryable: bool
) -> None:
    assert is_retryable(error("x")) is retryable


async def test_a_clash_on_another_unique_column_is_refused_not_dropped(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    rows(pg_db, USER_SESSION.replace("session text,", "session text UNIQUE,"))
    client = await relay_client(postgres_config(columns=USER_SESSION_COLUMNS), PG_DSN=pg_db)
    await post(client, ROOM_JOIN)
    await wait_for_status(client, "sent")
    await post(client, CHAT_PUSH)  # the same session: the table allows one row of it

    [dead] = await wait_for_status(client, "dead")
    assert dead.last_error is not None
    assert dead.last_error.startswith(
        "PostgreSQL refused the row: duplicate key value violates unique constraint"
        ' "user_session_session_key" (Key (session)=(session_xyz789) already exists.)'
        " (SQLSTATE 23505)"
    )


async def test_many_first_sends_at_once_create_the_table_once(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    count = 16
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    for index in range(count):
        await post(client, event_body(message=f"m{index}", session=f"race{index}"))

    await wait_for_status(client, "sent", count=count)
    assert rows(pg_db, "SELECT count(*) FROM relay_events") == [(count,)]
    assert [d.status for d in await deliveries(client)] == ["sent"] * count


async def test_a_role_that_may_only_insert_writes_into_relays_table(
    relay_client: RelayClientFactory, postgres: PostgresServer, pg_db: str
) -> None:
    writer_password = "writer-pg-secret-5521"
    watch(writer_password)
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    await post(client, ROOM_JOIN)
    await wait_for_status(client, "sent")  # relay_events made by its owner
    await client.close()
    database = pg_db.rsplit("/", 1)[1]
    postgres.admin_sql(
        f"DROP ROLE IF EXISTS writer; CREATE ROLE writer LOGIN PASSWORD '{writer_password}'"
    )
    postgres.admin_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=database)
    rows(pg_db, "GRANT SELECT, INSERT ON relay_events TO writer")
    writer = pg_db.replace(f"relay:{PASSWORD}", f"writer:{writer_password}")
    other = await relay_client(postgres_config(), PG_DSN=writer)

    await post(other, CHAT_PUSH)

    await wait_for_status(other, "sent", count=2)
    assert rows(pg_db, "SELECT count(*) FROM relay_events") == [(2,)]


async def test_a_nul_character_is_stored_as_a_replacement_character(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    await post(client, event_body(message="before\u0000after"))

    await wait_for_status(client, "sent")
    assert rows(pg_db, "SELECT message, payload->'data'->>'message' FROM relay_events") == [
        ("before\ufffdafter", "before\ufffdafter")
    ]


async def test_a_lone_surrogate_is_stored_as_a_replacement_character(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    """Valid JSON may escape one ("\\ud800"); neither text nor jsonb takes it."""
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    body = json.dumps(
        {
            "agent_id": "A80HVD8577",
            "event_type": "chat.push",
            "data": {"session_id": "s1", "role": "user", "message": "x\ud800y", "k\udc00": 1},
        }
    ).encode()
    await post(client, body)

    await wait_for_status(client, "sent")
    assert rows(pg_db, "SELECT message, payload->'data'->>'message' FROM relay_events") == [
        ("x\ufffdy", "x\ufffdy")
    ]
    assert rows(pg_db, "SELECT payload->'data'->>'k\ufffd' FROM relay_events") == [("1",)]


async def test_a_timestamp_past_what_a_date_holds_is_stored_as_null(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    """A timestamp in milliseconds, sent as seconds, is year 58712: the row goes in with
    occurred_at NULL and the payload as sent, rather than fail every attempt."""
    client = await relay_client(postgres_config(), PG_DSN=pg_db)
    await post(client, event_body(message="ms", timestamp=1790607268895))

    await wait_for_status(client, "sent")
    assert rows(
        pg_db, "SELECT message, occurred_at, (payload->>'timestamp')::bigint FROM relay_events"
    ) == [("ms", None, 1790607268895)]


async def test_values_bound_for_json_columns_keep_their_json_type(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    rows(
        pg_db,
        "CREATE TABLE typed (k text UNIQUE, said jsonb, visitors jsonb, room json, at jsonb)",
    )
    columns = (
        "    table: Typed\n"  # PostgreSQL folds unquoted names: this is the table `typed`
        "    columns: { K: event_id, said: data.message, visitors: data.participant_count,"
        " room: data.room_name, at: timestamp }\n"
    )
    client = await relay_client(postgres_config(columns=columns), PG_DSN=pg_db)
    await post(client, event_body(message="123"))
    await post(client, ROOM_JOIN)

    await wait_for_status(client, "sent", count=2)
    found = rows(
        pg_db,
        "SELECT jsonb_typeof(said), said, jsonb_typeof(visitors), room::text, at FROM typed"
        " ORDER BY k",
    )
    assert sorted(found, key=str) == sorted(
        [
            ("string", "123", None, None, "2024-01-15T09:51:25+00:00"),
            (None, None, "number", '"customer-support"', "2024-01-15T09:50:00+00:00"),
        ],
        key=str,
    )


async def test_a_restart_of_the_database_costs_no_attempt(
    relay_client: RelayClientFactory, postgres_own: PostgresServer
) -> None:
    client = await relay_client(postgres_config(max_attempts=1), PG_DSN=postgres_own.dsn)
    for index in range(8):  # the pool holds a few connections now
        await post(client, event_body(message=f"warm {index}", session=f"w{index}"))
    await wait_for_status(client, "sent", count=8)
    postgres_own.stop()
    postgres_own.start()

    for index in range(4):
        await post(client, event_body(message=f"after {index}", session=f"w{index}"))

    await wait_for_status(client, "sent", count=12, timeout_s=20.0)
    assert rows(postgres_own.dsn, "SELECT count(*) FROM relay_events") == [(12,)]


def test_a_password_holding_an_at_sign_is_a_check_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, errors = check_errors(
        tmp_path,
        capsys,
        '  warehouse: { type: postgres, dsn: "postgresql://relay:K@tTail-secret@db/bithuman" }\n',
    )

    assert errors == [
        f"{path}:2: destinations.warehouse.dsn: its password holds an @: write it %40"
        " (value not shown)"
    ]
