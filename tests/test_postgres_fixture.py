"""The PostgreSQL fixture: a real server that checks passwords, stops, crashes and comes back."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.postgres import PASSWORD, PostgresServer


def test_the_dsn_connects_as_relay_to_bithuman(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        row = conn.execute("select current_user, current_database()").fetchone()
    assert row == ("relay", "bithuman")


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    wrong = postgres.dsn.replace(PASSWORD, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5).close()


def test_pg_db_is_an_empty_database_relay_owns(pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        owner = conn.execute(
            "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
        ).fetchone()
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'")
        assert (owner, tables.fetchone()) == (("relay",), (0,))
        conn.execute("create table deliveries (id int primary key)")  # relay may create tables


def test_stop_refuses_connections_and_start_keeps_the_data(postgres_own: PostgresServer) -> None:
    with psycopg.connect(postgres_own.dsn) as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept values (7)")
    port = postgres_own.port

    postgres_own.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_own.dsn, connect_timeout=2).close()

    postgres_own.start()
    assert postgres_own.port == port
    with psycopg.connect(postgres_own.dsn) as conn:
        assert conn.execute("select n from kept").fetchall() == [(7,)]


def test_kill_then_start_recovers_committed_rows(postgres_own: PostgresServer) -> None:
    with psycopg.connect(postgres_own.dsn) as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept values (1)")
    idle = psycopg.connect(postgres_own.dsn)  # its backend must go too before a restart

    postgres_own.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_own.dsn, connect_timeout=2).close()
    idle.close()

    postgres_own.start()
    with psycopg.connect(postgres_own.dsn) as conn:
        assert conn.execute("select n from kept").fetchall() == [(1,)]
    assert "automatic recovery in progress" in postgres_own.log_tail(10_000)


def test_close_ends_the_server_and_removes_its_folder() -> None:
    with PostgresServer() as server:
        server.start()
    assert server.process is not None
    assert server.process.poll() is not None  # the postmaster has exited and been reaped
    assert not server.workdir.exists()
