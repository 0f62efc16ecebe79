"""A conversation's page in Chromium (SPEC 8.1): the transcript in order, each event with
the destinations it went to and their statuses (one sent, one dead), each a link to its
delivery; reached from a delivery's page."""

from __future__ import annotations

import re

from playwright.async_api import Frame, expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.console.test_conversation_page import WATCHING, conversation, post
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.test_delivery import deliveries
from tests.test_signals import Clock


async def test_a_transcript_in_order_whose_statuses_link_to_their_deliveries(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    receiver.script(Answer(400, "no such order hook"))
    clock = Clock()
    browsing = await browse(console_yaml(receiver, WATCHING), clock=clock)
    await conversation(browsing.relay, clock)
    [dead] = [d for d in await deliveries(browsing.relay) if d.status == "dead"]
    watched = await browsing.open()
    page = watched.page
    await page.goto(f"/deliveries/{dead.id}")
    await page.get_by_role("link", name="s1", exact=True).click()
    await expect(page).to_have_url(re.compile(r"/conversation\?id=s1$"))
    await expect(page).to_have_title("Conversation · relay console")

    items = page.locator("ol.transcript > li")
    await expect(items.locator(".who")).to_have_text(
        ["visitor", "visitor", "agent", "visitor", "relay"]
    )
    await expect(items.nth(1).locator(".text")).to_have_text("a refund please, <b>now</b>")
    went = items.nth(1).get_by_role("list", name="Where it went").get_by_role("link")
    await expect(went).to_have_text(["crm: dead", "audit: sent"])
    await went.first.click()
    await expect(page).to_have_url(re.compile(rf"/deliveries/{dead.id}$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("dead")


MARKER = "set before the message, gone after any reload"


async def test_a_new_message_shows_in_the_open_transcript_without_a_reload(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    browsing = await browse(console_yaml(receiver, WATCHING))
    await post(browsing.relay, "chat.push", "user", "is anyone there?")
    page = (await browsing.open()).page
    navigations: list[str] = []

    def navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    await page.goto("/conversation?id=s1")
    items = page.locator("ol.transcript > li")
    await expect(items).to_have_count(1)
    await expect(page.locator("#live-status")).to_have_text(
        "Live: new events and status changes show here as they happen."
    )
    page.on("framenavigated", navigated)
    await page.evaluate("marker => { window.relayTestMarker = marker; }", MARKER)

    await post(browsing.relay, "chat.push", "assistant", "Yes, how can I help?")
    await expect(items).to_have_count(2)
    await expect(items.locator(".who")).to_have_text(["visitor", "agent"])
    await expect(items.nth(1).locator(".text")).to_have_text("Yes, how can I help?")
    await expect(items.nth(1).get_by_role("link")).to_have_text("audit: sent")
    assert await page.evaluate("() => window.relayTestMarker") == MARKER
    assert navigations == []
