"""Fixtures for the reliability tests: relay subprocesses, the store they share, a report."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.store.sqlite import SqliteStore

REPORT_ENV = "RELAY_RELIABILITY_REPORT"

Report = Callable[[str, dict[str, Any]], None]
StoreStatuses = Callable[[], Awaitable[Counter[str]]]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """The SQLite file every relay of a test uses, across restarts."""
    return tmp_path / "relay.db"


@pytest.fixture
def store_statuses(store_path: Path) -> StoreStatuses:
    """Count the deliveries in the store by status (readable while relay runs: WAL)."""

    async def statuses() -> Counter[str]:
        store = SqliteStore(str(store_path))
        await store.open()
        try:
            return Counter(d.status for d in await store.list_deliveries(limit=1_000_000))
        finally:
            await store.close()

    return statuses


@pytest.fixture
def report() -> Report:
    """Merge a test's figures, under its key, into the JSON file $RELAY_RELIABILITY_REPORT
    names (when set), so the figures of the last run can go into the docs."""

    def write(key: str, figures: dict[str, Any]) -> None:
        target = os.environ.get(REPORT_ENV)
        if not target:
            return
        path = Path(target)
        merged: dict[str, Any] = {}
        if path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
            merged = loaded if isinstance(loaded, dict) else {}
        merged[key] = figures
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return write
