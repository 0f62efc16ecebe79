"""Fixtures: a relay app on a real SQLite file, served on 127.0.0.1 by pytest-aiohttp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from relay.app import create_app
from relay.delivery import Clock
from tests.support.relay import Output, make_config

RelayClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
def output() -> Output:
    return Output()


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
