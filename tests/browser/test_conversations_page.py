"""The Conversations page in Chromium (SPEC 8.1): the list filtered by agent from its form,
the filter kept in the URL (a reload shows the same), each entry a link to its
transcript."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.console.test_conversations_page import WATCHING, say
from tests.support.fake_receiver import FakeReceiver
from tests.test_signals import Clock


async def test_the_list_filtered_by_agent_keeps_its_filter_in_the_url(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    clock = Clock()
    browsing = await browse(console_yaml(receiver, WATCHING), clock=clock)
    for n, (session, agent) in enumerate((("s-a1", "A1"), ("s-a2", "A2"), ("s-a1b", "A1"))):
        clock.at(n * 10.0)
        await say(browsing.relay, session, agent=agent)
    page = (await browsing.open()).page
    await page.goto("/deliveries")
    nav = page.get_by_role("navigation", name="Console")
    await nav.get_by_role("link", name="Conversations").click()
    rows = page.locator("table.conversations tbody tr")
    await expect(rows.locator("td:first-child")).to_have_text(["s-a1b", "s-a2", "s-a1"])

    await page.get_by_label("Agent").fill("A1")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"/conversations\?agent=A1"))
    await expect(rows.locator("td:first-child")).to_have_text(["s-a1b", "s-a1"])
    await page.reload()
    await expect(page.get_by_label("Agent")).to_have_value("A1")
    await expect(rows.locator("td:first-child")).to_have_text(["s-a1b", "s-a1"])

    await rows.first.get_by_role("link", name="s-a1b").click()
    await expect(page).to_have_url(re.compile(r"/conversation\?id=s-a1b$"))
    await expect(page.locator("ol.transcript > li")).to_have_count(1)
