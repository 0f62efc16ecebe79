"""Live updates in Chromium: with the deliveries page open, an event relay accepts shows up
as a new row, and its status changes as the delivery goes out, without a reload."""

from __future__ import annotations

from playwright.async_api import Frame, expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import ids_shown
from tests.console.support import USERNAME
from tests.support.fake_discord import FakeDiscord
from tests.test_delivery import deliveries, post_event, wait_for_status

MARKER = "set before the event, gone after any reload"


def discord_console_yaml(discord: FakeDiscord) -> str:
    """Every event to one Discord webhook (the fake), with the console; quick retries."""
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: 3
  backoff: {{ first: 10ms, max: 20ms }}
destinations:
  chat: {{ type: discord, webhook_url: "{discord.url()}" }}
rules:
  - name: everything
    send_to: [chat]
console:
  listen: 127.0.0.1:0
  username: {USERNAME}
  password: "${{CONSOLE_PASSWORD}}"
"""


async def test_a_new_delivery_and_its_status_change_show_without_a_reload(
    browse: BrowsingFactory, discord: FakeDiscord
) -> None:
    discord.set_mode("hang")  # the delivery's request waits there until the test says
    browsing = await browse(discord_console_yaml(discord))
    page = (await browsing.open()).page
    navigations: list[str] = []

    def navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    await page.goto("/deliveries")
    await expect(page.get_by_text("No delivery.", exact=True)).to_be_visible()
    live_status = page.locator("#live-status")
    await expect(live_status).to_have_text(
        "Live: new deliveries and status changes show here as they happen."
    )
    page.on("framenavigated", navigated)
    await page.evaluate("marker => { window.relayTestMarker = marker; }", MARKER)

    await post_event(browsing.relay, "hello from the live test")
    await discord.wait_for_requests(1)  # in flight: it stays pending until released
    [delivery] = await deliveries(browsing.relay)
    assert delivery.status == "pending"
    row = page.locator("table.deliveries tbody tr")
    await expect(row).to_have_count(1)
    assert await ids_shown(page) == [delivery.id]
    await expect(row.locator(".status")).to_have_text("pending")
    await expect(live_status).to_contain_text("Live: updated at ")

    discord.up()  # the held request answers 503; the retry finds Discord up
    await wait_for_status(browsing.relay, "sent")
    await expect(row.locator(".status")).to_have_text("sent")
    await expect(row.locator("td.number")).to_have_text("2")  # attempts: the 503, then 200
    assert await ids_shown(page) == [delivery.id]

    assert await page.evaluate("() => window.relayTestMarker") == MARKER
    assert navigations == []
