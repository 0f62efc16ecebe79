"""The Activity page in Chromium (SPEC 8.1): the figures of crafted conversations, and a
chart of conversations started that the page really draws."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.console.test_activity_page import WATCHING, clock_early_in_an_hour, crafted
from tests.support.fake_receiver import FakeReceiver


async def test_the_activity_page_shows_crafted_conversations_and_draws_its_chart(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    clock = clock_early_in_an_hour()
    browsing = await browse(console_yaml(receiver, WATCHING), clock=clock)
    await crafted(browsing.relay, clock)
    page = (await browsing.open()).page
    await page.goto("/deliveries")
    console_nav = page.get_by_role("navigation", name="Console")
    await console_nav.get_by_role("link", name="Activity").click()
    await expect(page).to_have_url(re.compile(r"/activity$"))

    table = page.get_by_role("table", name=re.compile("^Each agent"))
    a1 = table.get_by_role("row", name=re.compile("^A1 "))
    await expect(a1.get_by_role("cell")).to_have_text(["2", "3", "2", "≤ 5 s", "≤ 15 s", "1"])
    a2 = table.get_by_role("row", name=re.compile("^A2 "))
    await expect(a2.get_by_role("cell")).to_have_text(["1", "1", "0", "—", "—", "1"])

    chart = page.get_by_role("img", name=re.compile("^Conversations started per hour"))
    await expect(chart).to_be_visible()
    box = await chart.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 50
    tallest = page.locator("#started-chart rect.bar").last
    bar = await tallest.bounding_box()
    assert bar is not None and bar["height"] > 10 and bar["width"] > 1

    await page.get_by_role("navigation", name="Period").get_by_role("link", name="Last 7d").click()
    await expect(page).to_have_url(re.compile(r"/activity\?period=7d$"))
    await expect(
        page.get_by_role("img", name=re.compile("^Conversations started per day"))
    ).to_be_visible()
