"""Fixtures: a relay app on a real SQLite file, served on 127.0.0.1 by pytest-aiohttp."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestClient

from relay.app import create_app
from relay.delivery import Clock
from relay.logs import TextFormatter
from tests.support.bithuman import ACCOUNT_SECRET, DASHBOARD_HEADER_VALUE
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_receiver import FakeReceiver
from tests.support.fake_slack import BOT_TOKEN, WEBHOOK_SECRET, FakeSlack
from tests.support.postgres import ADMIN_PASSWORD as PG_ADMIN_PASSWORD
from tests.support.postgres import PASSWORD as PG_PASSWORD
from tests.support.postgres import PostgresServer
from tests.support.processes import RelayProcesses
from tests.support.redis_server import RedisServer
from tests.support.relay import SECRET, Output, make_config
from tests.support.secrets import LOG_FILES, WATCHED, leaks, watch
from tests.support.smtp import PASSWORD as SMTP_PASSWORD

RelayClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
def output() -> Output:
    return Output()


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    """A fake Discord webhook on 127.0.0.1, answering 200 until told otherwise."""
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


@pytest.fixture
async def other_discord() -> AsyncIterator[FakeDiscord]:
    """A second fake Discord, for tests about one destination not holding up another."""
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    """A webhook receiver (a CRM) on 127.0.0.1 that verifies each request's signature."""
    fake = await FakeReceiver().start()
    yield fake
    await fake.close()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack (incoming webhooks and the Web API) on 127.0.0.1."""
    fake = await FakeSlack().start()
    yield fake
    await fake.close()


@pytest.fixture
async def other_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The one HTTP session senders share, as in the app."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's tests that do not stop it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """The shared redis-server, emptied for this test."""
    with redis.Redis.from_url(shared_redis.url) as client:
        client.flushall()
    return shared_redis.url


@pytest.fixture(params=["sqlite", "redis"])
def store_section(request: pytest.FixtureRequest) -> str:
    """A relay.yaml `store` section, once for each store: empty for SQLite (make_config
    adds a file of the test's own), the shared redis-server, emptied, for Redis."""
    if request.param == "sqlite":
        return ""
    return f'store: {{ url: "{request.getfixturevalue("redis_url")}" }}\n'


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session's tests that do not stop it; a test writes
    to a database of its own (`pg_db`)."""
    with PostgresServer() as server:
        yield server.start()


@pytest.fixture
def pg_db(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of an empty database of this test's own on the shared server, owned by
    `relay`; dropped afterwards."""
    name = postgres.create_database()
    yield postgres.dsn_for(name)
    postgres.drop_database(name)


@pytest.fixture
def postgres_own() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, which it may stop, kill and restart."""
    with PostgresServer() as server:
        yield server.start()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[RelayProcesses]:
    """Start `relay serve` subprocesses; whatever still runs is killed at teardown."""
    started = RelayProcesses(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture
def relay_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    tmp_path: Path,
    output: Output,
) -> RelayClientFactory:
    """Start relay on a config text; returns a client for it."""

    async def start(yaml_text: str, *, clock: Clock | None = None, **env: str) -> TestClient:  # type: ignore[type-arg]
        config = make_config(yaml_text, tmp_path, env)
        return await aiohttp_client(create_app(config, stdout=output, clock=clock))

    return start


# Secrets never reach a log: watched for across the whole session ------------------------

watch(
    SECRET,
    BOT_TOKEN,
    WEBHOOK_SECRET,
    SMTP_PASSWORD,
    "discordTokenSecret42",
    DASHBOARD_HEADER_VALUE,
    ACCOUNT_SECRET,
    PG_PASSWORD,
    PG_ADMIN_PASSWORD,
)


class _Everything(logging.Handler):
    """Keeps every log record of the session, formatted as relay formats them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(TextFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_SESSION_LOG = _Everything()


def pytest_sessionstart(session: pytest.Session) -> None:
    root = logging.getLogger()
    root.addHandler(_SESSION_LOG)
    root.setLevel(logging.DEBUG)  # debug lines too: a secret must not hide there either


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = {"test process logs": leaks("\n".join(_SESSION_LOG.lines))}
    for path in LOG_FILES:
        if path.exists():
            found[str(path)] = leaks(path.read_text(errors="replace"))
    leaked = {where: names for where, names in found.items() if names}
    records, files = len(_SESSION_LOG.lines), len(LOG_FILES)
    print(f"\nsecrets check: {len(WATCHED)} secrets, {records} log records, {files} relay logs")
    if leaked:
        print(f"SECRETS LEAKED INTO LOGS: {leaked}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
