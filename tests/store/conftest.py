from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
