"""Fixtures: relay with its console, in-process, on either store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from relay.app import STATE
from relay.console import create_console_app
from tests.conftest import RelayClientFactory
from tests.console.support import CONSOLE_PASSWORD, Console

ConsoleFactory = Callable[[str], Awaitable[Console]]


@pytest.fixture
def open_console(
    relay_client: RelayClientFactory,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> ConsoleFactory:
    """Start relay on a config text, and its console on the same state."""

    async def start(yaml_text: str) -> Console:
        relay = await relay_client(yaml_text, CONSOLE_PASSWORD=CONSOLE_PASSWORD)
        console = await aiohttp_client(create_console_app(relay.app[STATE]))
        return Console(relay, console)

    return start
