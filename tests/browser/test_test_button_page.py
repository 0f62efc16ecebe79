"""The Test button in Chromium: it sends a sample event through relay itself (signed, to
relay's own webhook listener, through the rules), and the page says what relay answered."""

from __future__ import annotations

import json
import re

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import deliveries, wait_for_status

ACCEPTED = re.compile(r"relay accepted the test event (\S+): 2 deliveries")


async def test_the_test_button_sends_a_sample_through_relay_to_its_destinations(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    browsing = await browse(console_yaml(receiver))
    page = (await browsing.open()).page
    await page.goto("/deliveries")
    await expect(page.get_by_text("No delivery.", exact=True)).to_be_visible()
    message = "a refund, from the Test button in the browser"

    test_form = page.get_by_role("region", name="Send a test event")
    await test_form.get_by_label("Test event type").select_option("chat.push")
    await test_form.get_by_label("Test message (chat.push)").fill(message)
    await test_form.get_by_role("button", name="Send a test event").click()

    notice = page.locator("p.notice")
    await expect(notice).to_have_text(ACCEPTED)
    await expect(page).to_have_url(re.compile(r"/deliveries\?notice="))
    found = ACCEPTED.fullmatch(await notice.inner_text())
    assert found is not None
    event_id = found.group(1)

    # Stored, and routed by the rules: the refund rule to crm, the catch-all to audit.
    sent = await wait_for_status(browsing.relay, "sent", 2)
    assert sorted((d.destination, d.rule, d.event_id) for d in sent) == [
        ("audit", "everything", event_id),
        ("crm", "refunds", event_id),
    ]
    assert all(d.status == "sent" for d in await deliveries(browsing.relay))  # none left
    [to_crm] = [d for d in sent if d.destination == "crm"]
    event = json.loads(to_crm.body)
    assert (event["event_type"], event["data"]["message"]) == ("chat.push", message)
    # The receiver got it exactly once, as relay sends any event: the event's own body.
    [received] = receiver.requests
    assert received.status == 200 and received.body == to_crm.body

    # And the page lists them.
    rows = page.locator("table.deliveries tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.locator("td:nth-child(4)")).to_have_text(["chat.push", "chat.push"])
