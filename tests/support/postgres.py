"""A real PostgreSQL server (Debian's) on 127.0.0.1, set up, started and stopped by the tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.abc import Params

from tests.support.smtp import free_port

USER = "relay"
PASSWORD = "relay-pg-secret-7731"
DATABASE = "bithuman"
ADMIN_USER = "postgres"
ADMIN_PASSWORD = "relay-pg-admin-4416"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
DEBIAN_DIR = Path("/usr/lib/postgresql")  # Debian keeps initdb off PATH, one folder per version


def postgres_bin_dir() -> Path:
    """Return the folder holding initdb and postgres: Debian's newest version, else PATH's."""
    found = sorted(DEBIAN_DIR.glob("*/bin/initdb"), key=lambda path: _version(path.parents[1]))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL is not installed: install Debian's postgresql package "
        "(apt-get install postgresql; .ci/run does it when initdb is missing)"
    )


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in folder.name.split(".") if part.isdigit())


def _server_account() -> tuple[int, int] | None:
    """The postgres OS user's uid and gid when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "tests run as root need the postgres OS user to run PostgreSQL; "
            "Debian's postgresql package creates it"
        ) from None
    return account.pw_uid, account.pw_gid


class PostgresServer:
    """One postgres server with its data directory in a fresh temporary folder.

    The first start() runs initdb (password authentication everywhere, so a wrong password
    really fails) and creates the role `relay` and its database `bithuman`; later starts reuse
    the data directory and the port. The process we start is the postmaster itself, so
    stop() and kill() act on its pid. close() always stops it and removes the folder.
    """

    def __init__(self, port: int | None = None) -> None:
        self.bin_dir = postgres_bin_dir()
        self.port = port or free_port()
        self.password = PASSWORD
        self.process: subprocess.Popen[bytes] | None = None
        self._account = _server_account()
        # Our own folder rather than pytest's tmp_path: the postgres user must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="relay-postgres-"))
        if self._account is not None:
            os.chown(self.workdir, *self._account)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def dsn(self) -> str:
        """The `relay` role on the `bithuman` database."""
        return self.dsn_for(DATABASE)

    @property
    def admin_dsn(self) -> str:
        """The superuser on the `postgres` database."""
        return self.dsn_for("postgres", admin=True)

    def dsn_for(self, database: str, *, admin: bool = False) -> str:
        user, password = (ADMIN_USER, ADMIN_PASSWORD) if admin else (USER, PASSWORD)
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Start (initialising the data directory the first time) and wait until it answers."""
        first = not (self.data_dir / "PG_VERSION").exists()
        if first:
            self._initdb()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D", str(self.data_dir),
                    "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.data_dir}",
                    "-c", "fsync=off",  # a killed process loses nothing the OS already has
                    "-c", "shared_buffers=16MB",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._run_as(),
            )  # fmt: skip
        self._wait_ready()
        if first:
            self._create_relay_database()
        return self

    def _initdb(self) -> None:
        password_file = self.workdir / "admin-password"
        password_file.write_text(ADMIN_PASSWORD + "\n", encoding="utf-8")
        if self._account is not None:
            os.chown(password_file, *self._account)
        initdb_log = self.workdir / "initdb.log"
        try:
            with initdb_log.open("wb") as log:
                done = subprocess.run(
                    [
                        str(self.bin_dir / "initdb"),
                        "-D", str(self.data_dir),
                        "-U", ADMIN_USER,
                        f"--pwfile={password_file}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=START_TIMEOUT_S,
                    **self._run_as(),
                )  # fmt: skip
        finally:
            password_file.unlink()
        if done.returncode != 0:
            tail = initdb_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"initdb failed with {done.returncode}:\n{tail}")

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments: as root, run as the postgres user without root's groups."""
        if self._account is None:
            return {}
        uid, gid = self._account
        return {"user": uid, "group": gid, "extra_groups": []}

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode} at start; "
                    f"the end of its log:\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"postgres did not accept connections on port {self.port} within "
            f"{START_TIMEOUT_S:.0f} s; the end of its log:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            psycopg.connect(self.admin_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:  # refused, or "the database system is starting up"
            return False
        return True

    def _create_relay_database(self) -> None:
        self.admin_sql(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(USER), sql.Literal(PASSWORD)
            )
        )
        self.create_database(DATABASE)

    def admin_sql(
        self,
        query: LiteralString | sql.Composed,
        params: Params | None = None,
        *,
        database: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, autocommit; return its rows (none for a command)."""
        with psycopg.connect(self.dsn_for(database, admin=True), autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database owned by `relay` (a fresh name by default); return its name."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {} OWNER {}")
        self.admin_sql(query.format(sql.Identifier(name), sql.Identifier(USER)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending whatever connections to it are left."""
        self.admin_sql(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Fast shutdown (what `pg_ctl stop -m fast` sends); return once the server is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"postgres did not stop within {STOP_TIMEOUT_S:.0f} s; killed it. "
                f"The end of its log:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash or an OOM kill would; start() then recovers.

        Its backends notice and exit on their own; this returns once they have, because
        a new postmaster refuses to start while any of them still holds the shared memory.
        """
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.process.pid
        os.kill(pid, signal.SIGSTOP)  # it can start no new backend while we list them
        children = _children(pid)
        self.process.kill()
        self.process.wait(timeout=10)
        _wait_gone(children)

    def close(self) -> None:
        """Stop the server (killing it if it will not stop) and remove its folder."""
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.workdir, ignore_errors=True)


# Processes, from /proc: "pid (comm) state ppid … starttime (field 22) …" -----------------


def _stat(pid: int) -> list[str] | None:
    """The fields after `(comm)`: state is [0], ppid [1], start time [19]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children(parent: int) -> dict[int, str]:
    """The processes whose parent is `parent`, with their start times (pids get reused)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(parent):
                found[int(entry.name)] = fields[19]
    return found


def _running(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _wait_gone(processes: dict[int, str], timeout_s: float = 10.0) -> None:
    """Wait until these processes have exited; SIGKILL any still there at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_running(pid, started) for pid, started in processes.items()):
            return
        time.sleep(0.02)
    for pid, started in processes.items():
        if _running(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
