from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.store.base import Store
from relay.store.redis import RedisStore
from relay.store.sqlite import SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "relay.db")


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path, busy_timeout_ms=100)
    await s.open()
    yield s
    await s.close()


@dataclass
class Stores:
    one: Store  # one relay process
    other: Store  # another, on the same data


@pytest.fixture(params=["sqlite", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    one: Store
    other: Store
    if request.param == "sqlite":
        path = str(tmp_path / "relay.db")
        one, other = SqliteStore(path), SqliteStore(path)
    else:
        url = request.getfixturevalue("redis_url")
        one, other = RedisStore(url), RedisStore(url)
    await one.open()
    await other.open()
    yield Stores(one, other)
    await other.close()
    await one.close()
