"""Bulk replay in Chromium: the operator filters the deliveries, follows the bulk-replay link
to a page that counts the dead deliveries the filters select (nothing is replayed yet),
confirms, and exactly those go out again, once each; the others do not."""

from __future__ import annotations

import re
from collections import Counter

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import filters
from tests.console.test_bulk_replay import statuses, two_destinations
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import deliveries, post_event, wait_for_status


async def test_bulk_replay_counts_first_then_sends_exactly_the_selected_dead_again(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    # Four events, each to support and the three refunds to crm too: all 7 dead at once.
    receiver.script(*[400] * 7)
    browsing = await browse(two_destinations(receiver))
    relay = browsing.relay
    for n, message in enumerate(
        ["refund for order 1", "refund for order 2", "refund for my shoes", "hello"]
    ):
        await post_event(relay, message, session=f"s{n}")
    await wait_for_status(relay, "dead", 7)
    # Then one more refund of an order, sent: the filter selects it, but it is not dead.
    await post_event(relay, "refund for order 3", session="s4")
    await wait_for_status(relay, "sent", 2)
    assert len(receiver.requests) == 9
    everything = await deliveries(relay)
    selected = {
        d.id: d.body
        for d in everything
        if d.destination == "crm" and d.status == "dead" and b"order" in d.body
    }
    assert len(selected) == 2 and len(everything) == 9
    before = await statuses(browsing.console)

    page = (await browsing.open()).page
    await page.goto("/deliveries")
    await filters(page).get_by_label("Destination").select_option("crm")
    await filters(page).get_by_label("Text in the event").fill("order")
    await filters(page).get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"/deliveries\?.*destination=crm.*&text=order$"))
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(3)  # 2 dead, 1 sent

    await page.get_by_role("link", name="Replay all 2 dead…").click()
    await expect(page).to_have_url(re.compile(r"/deliveries/replay\?destination=crm&text=order$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Replay 2 dead deliveries to crm matching 'order'?"
    )
    confirm = page.get_by_role("button", name="Replay 2 dead deliveries")
    await expect(confirm).to_be_visible()
    # Counted, not replayed: the store and the receiver are as they were.
    assert await statuses(browsing.console) == before
    assert len(receiver.requests) == 9

    await confirm.click()
    await expect(page.locator("p.notice")).to_have_text("Replayed 2 dead deliveries.")
    await expect(page).to_have_url(re.compile(r"/deliveries\?destination=crm&text=order&notice="))

    await receiver.wait_for_requests(11)
    await wait_for_status(relay, "sent", 4)
    after = await statuses(browsing.console)
    # Nothing is left to send, so no further request can come.
    assert all(status in ("sent", "dead") for _, status in after.values()), after
    changed = {i for i in before if after[i] != before[i]}
    assert changed == set(selected)
    assert all(after[i] == ("crm", "sent") for i in selected)
    again = receiver.requests[9:]
    assert [(r.path, r.status) for r in again] == [("/crm", 200)] * 2
    assert Counter(r.body for r in again) == Counter(selected.values())  # each exactly once
