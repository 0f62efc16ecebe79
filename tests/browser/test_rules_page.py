"""The Rules page in Chromium (SPEC 8.1): a rule that never matched, the events that no rule
matched, and the period chosen from the page, kept in the URL."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.console.test_rules_page import RULES, post
from tests.support.fake_receiver import FakeReceiver


async def test_the_rules_page_shows_the_never_matched_rule_and_the_unmatched_events(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    browsing = await browse(console_yaml(receiver, rules=RULES))
    await post(browsing.relay, "chat.push", "a refund please", "e-refund")
    await post(browsing.relay, "room.join", "", "e-join")
    await post(browsing.relay, "chat.push", "hello", "e-hello")
    page = (await browsing.open()).page
    await page.goto("/deliveries")
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Rules").click()
    await expect(page).to_have_url(re.compile(r"/rules$"))

    table = page.get_by_role("table", name=re.compile("^Each rule"))
    rows = table.locator("tbody tr")
    await expect(rows.locator("th")).to_have_text(
        ["refunds", "joins", "vip-agent", "all-refunds-audited"]
    )
    await expect(rows.locator("td:nth-child(3)")).to_have_text(["1", "1", "0", "1"])
    await expect(rows.nth(2).locator("td:nth-child(4)")).to_have_text("never")
    never = page.get_by_role("region", name="Never matched")
    await expect(never.get_by_role("listitem")).to_have_text(["vip-agent"])
    await expect(page.locator("#unmatched-count")).to_have_text("1")

    await page.get_by_role("navigation", name="Period").get_by_role("link", name="Last 7d").click()
    await expect(page).to_have_url(re.compile(r"/rules\?period=7d$"))
    await expect(page.get_by_role("link", name="Last 7d")).to_have_attribute("aria-current", "page")
    await page.reload()
    await expect(rows.locator("td:nth-child(3)")).to_have_text(["1", "1", "0", "1"])
