"""Fixtures: relay with its console, in-process, on either store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest
from aiohttp.test_utils import TestClient

from relay.app import STATE, create_app
from relay.console import create_console_app
from relay.console.streams import LiveSettings
from relay.delivery import Clock
from tests.conftest import RelayClientFactory
from tests.console.support import CONSOLE_PASSWORD, Console
from tests.support.relay import Output, make_config


class ConsoleFactory(Protocol):
    """Starts relay and its console on a config text (and relay on a clock of the test's)."""

    def __call__(self, yaml_text: str, *, clock: Clock | None = None) -> Awaitable[Console]: ...


# Live streams that look often, so a test sees an update at once; and few of them.
TEST_LIVE = LiveSettings(poll_s=0.02, heartbeat_s=0.3, max_streams=5, retry_ms=100)


@pytest.fixture
def open_console(
    relay_client: RelayClientFactory,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> ConsoleFactory:
    """Start relay on a config text, and its console on the same state; the console's
    Test button posts to relay's test server (the config's port is not the one bound)."""

    async def start(yaml_text: str, *, clock: Clock | None = None) -> Console:
        relay = await relay_client(yaml_text, clock=clock, CONSOLE_PASSWORD=CONSOLE_PASSWORD)
        state = relay.app[STATE]
        webhook_url = str(relay.make_url(state.config.server.path))
        app = create_console_app(state, webhook_url=webhook_url, live_settings=TEST_LIVE)
        console = await aiohttp_client(app)
        return Console(relay, console)

    return start


@pytest.fixture
def open_quiet_console(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    tmp_path: Path,
) -> ConsoleFactory:
    """Like open_console, but relay runs no delivery worker: deliveries stay as the test
    leaves them (store.claim and record_failure make dead ones), so what a replay did is
    what the store shows, at once."""

    async def start(yaml_text: str, *, clock: Clock | None = None) -> Console:
        config = make_config(yaml_text, tmp_path, {"CONSOLE_PASSWORD": CONSOLE_PASSWORD})
        app = create_app(config, stdout=Output(), run_worker=False, clock=clock)
        relay = await aiohttp_client(app)
        state = relay.app[STATE]
        webhook_url = str(relay.make_url(state.config.server.path))
        app = create_console_app(state, webhook_url=webhook_url, live_settings=TEST_LIVE)
        return Console(relay, await aiohttp_client(app))

    return start
