"""Fixtures: Debian's Chromium, driven by Playwright for Python, against the console served
in-process on 127.0.0.1 (tests/console's `open_console`: relay and its console on free
loopback ports, sharing one RelayState).

Playwright's async API runs on the test's own event loop (pytest-aiohttp's, with
`asyncio_mode = auto`): the browser talks to a console that the same loop serves, so every
`await page...` lets the console answer meanwhile, and a test can post events to relay and
wait for deliveries between two browser steps with the same helpers as tests/console. The
sync API would need a thread of its own, and each call into relay handed across threads.
A browser is launched per test (about half a second): its objects belong to the loop that
made them, and pytest-aiohttp gives each test a loop of its own.

No browser is ever downloaded: Playwright drives /usr/bin/chromium (`.ci/run` installs
Debian's `chromium`) through `executable_path`. Without it the tests fail, saying so;
they never skip.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Protocol

import pytest
from playwright.async_api import Browser, async_playwright, expect

from relay.delivery import Clock
from tests.browser.support import Browsing
from tests.console.conftest import (
    ConsoleFactory,
    open_console,  # noqa: F401 (tests/console's fixture, here too)
)

# Actions and expectations wait on their condition, never longer than this; with a CPU hog
# beside the tests every step still takes well under it.
TIMEOUT_MS = 8_000


class BrowsingFactory(Protocol):
    """Starts relay, its console and a browser on a config text (relay on a clock of the
    test's, when given)."""

    def __call__(self, yaml_text: str, *, clock: Clock | None = None) -> Awaitable[Browsing]: ...


@pytest.fixture
def chromium_path() -> str:
    """Debian's Chromium; a test fails (never skips) where it is missing."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed (apt-get install chromium; .ci/run does it): "
            "the browser tests drive it through Playwright's executable_path, and no "
            "Playwright browser download is used",
            pytrace=False,
        )
    return path


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    """Chromium, headless, for this test. Playwright starts Chromium with --no-sandbox of its
    own accord (its `chromium_sandbox` is off by default), which Chromium needs as root, as
    the tests and CI run here; nothing is added to the command line."""
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def browse(
    open_console: ConsoleFactory,  # noqa: F811 (the fixture imported above)
    browser: Browser,
) -> Iterator[BrowsingFactory]:
    """Start relay and its console on a config text, and a browser beside them. When the
    test ends, every page it opened (but those it said were not to be quiet) must have had
    no dialog, no console error, no page error and no CSP violation."""
    started: list[Browsing] = []

    async def start(yaml_text: str, *, clock: Clock | None = None) -> Browsing:
        browsing = Browsing(await open_console(yaml_text, clock=clock), browser, TIMEOUT_MS)
        started.append(browsing)
        return browsing

    yield start
    for browsing in started:
        browsing.assert_quiet()
