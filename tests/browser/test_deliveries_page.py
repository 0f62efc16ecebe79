"""The deliveries page in Chromium: filters chosen in the form live in the URL and survive a
reload; the text search finds the one delivery whose message matches."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import filters, ids_shown
from tests.console.support import console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import deliveries, post_event, wait_for_status


async def test_filters_chosen_in_the_form_are_in_the_url_and_survive_a_reload(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    receiver.script(400, 400)  # the first two refunds die at crm, the third goes through
    browsing = await browse(console_yaml(receiver))
    for n in (1, 2):
        await post_event(browsing.relay, f"refund number {n}", session=f"s{n}")
        await wait_for_status(browsing.relay, "dead", n)
    await post_event(browsing.relay, "refund number 3", session="s3")
    await post_event(browsing.relay, "hello", session="s4")
    await wait_for_status(browsing.relay, "sent", 5)  # 4 to audit, 1 to crm
    everything = await deliveries(browsing.relay)
    dead_at_crm = sorted(
        (d.id for d in everything if d.status == "dead" and d.destination == "crm"), reverse=True
    )
    assert len(dead_at_crm) == 2 and len(everything) == 7

    watched = await browsing.open()
    page = watched.page
    await page.goto("/deliveries")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(7)
    await filters(page).get_by_label("Status").select_option("dead")
    await filters(page).get_by_label("Destination").select_option("crm")
    await filters(page).get_by_role("button", name="Filter").click()

    await expect(page).to_have_url(re.compile(r"/deliveries\?.*status=dead"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["status"] == ["dead"] and query["destination"] == ["crm"]
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(2)
    assert await ids_shown(page) == dead_at_crm
    await expect(page).to_have_title("Dead letters · relay console")

    url = page.url
    await page.reload()
    assert page.url == url
    await expect(filters(page).get_by_label("Status")).to_have_value("dead")
    await expect(filters(page).get_by_label("Destination")).to_have_value("crm")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(2)
    assert await ids_shown(page) == dead_at_crm
    for row in await page.locator("table.deliveries tbody tr").all():
        await expect(row.locator("td").nth(2)).to_have_text("crm")
        await expect(row.locator(".status")).to_have_text("dead")

    # The same URL, opened afresh by another operator, shows the same.
    other = await browsing.open()
    await other.page.goto(url)
    await expect(filters(other.page).get_by_label("Status")).to_have_value("dead")
    await expect(other.page.locator("table.deliveries tbody tr")).to_have_count(2)
    assert await ids_shown(other.page) == dead_at_crm

    # Clearing the filters shows everything again.
    await page.get_by_role("link", name="Clear filters").click()
    await expect(page).to_have_url(re.compile(r"/deliveries$"))
    await expect(filters(page).get_by_label("Status")).to_have_value("")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(7)


async def test_the_text_search_finds_the_one_delivery_whose_message_matches(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    browsing = await browse(console_yaml(receiver))
    messages = [
        "Hello, I need help with my order",
        "What are your opening hours on Sunday?",
        "Can I change the delivery address?",
        "Thanks, that is all",
    ]
    for n, message in enumerate(messages):
        await post_event(browsing.relay, message, session=f"s{n}")
    await wait_for_status(browsing.relay, "sent", len(messages))  # each to audit only
    [wanted] = [d for d in await deliveries(browsing.relay) if b"opening hours" in d.body]

    watched = await browsing.open()
    page = watched.page
    await page.goto("/deliveries")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(4)
    search = filters(page).get_by_label("Text in the event")
    await search.fill("OPENING HOURS")
    await search.press("Enter")  # submits the form, as in any search box

    await expect(page).to_have_url(re.compile(r"text=OPENING\+HOURS"))
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(1)
    assert await ids_shown(page) == [wanted.id]
    await expect(search).to_have_value("OPENING HOURS")
    await page.reload()
    await expect(search).to_have_value("OPENING HOURS")
    assert await ids_shown(page) == [wanted.id]

    await page.get_by_role("link", name=str(wanted.id), exact=True).click()
    await expect(page).to_have_url(re.compile(rf"/deliveries/{wanted.id}$"))
    await expect(page.locator("pre.event")).to_contain_text(
        '"message": "What are your opening hours on Sunday?"'
    )

    await page.go_back()
    await search.fill("no message says this")
    await search.press("Enter")
    await expect(page.get_by_text("No delivery matches these filters.")).to_be_visible()
    await expect(page.locator("table.deliveries")).to_have_count(0)
