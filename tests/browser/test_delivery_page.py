"""A delivery's page in Chromium: every attempt, the request its event came in, and Replay
of a dead delivery."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import BrowsingFactory
from tests.console.support import console_yaml
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import SECRET
from tests.test_delivery import post_event, wait_for_status


async def test_a_delivery_page_shows_its_three_attempts(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    receiver.script(Answer(503, "busy"), Answer(500, "broken"), 200)
    browsing = await browse(console_yaml(receiver))
    await post_event(browsing.relay, "a refund please", session="s-3")
    [crm] = [d for d in await wait_for_status(browsing.relay, "sent", 2) if d.destination == "crm"]
    assert [r.status for r in receiver.requests] == [503, 500, 200]

    watched = await browsing.open()
    page = watched.page
    await page.goto("/deliveries?destination=crm")
    await page.get_by_role("link", name=str(crm.id), exact=True).click()  # from the list

    await expect(page).to_have_url(re.compile(rf"/deliveries/{crm.id}$"))
    await expect(page).to_have_title(f"Delivery {crm.id} · relay console")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Delivery {crm.id} sent")
    attempts = page.get_by_role("table", name="Every attempt, first first")
    rows = attempts.locator("tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.locator("td:nth-child(1)")).to_have_text(["1", "2", "3"])
    await expect(rows.locator(".outcome")).to_have_text(["retried", "retried", "sent"])
    await expect(rows.locator(".detail")).to_have_text(
        ["webhook answered 503: busy", "webhook answered 500: broken", ""]
    )
    await expect(rows.locator("td:nth-child(5)")).to_have_text([re.compile(r"^\d+\.\d{3} s$")] * 3)
    times = await rows.locator("time").evaluate_all(
        "elements => elements.map(e => e.getAttribute('datetime'))"
    )
    assert len(times) == 3 and times == sorted(times), times  # in order, each with its time
    fields = page.locator("dl.fields")
    await expect(fields).to_contain_text("refunds")  # the rule
    await expect(fields).to_contain_text("crm (webhook)")
    await expect(page.locator("pre.event")).to_contain_text('"message": "a refund please"')
    await expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    # The request the event came in: what mattered of it, the signature by its state.
    request = page.get_by_role("region", name="Request", exact=True)
    await expect(request.locator("dt")).to_have_text(
        ["Peer address", "Content-Type", "Content-Length", "User-Agent", "X-bitHuman-Signature"]
    )
    await expect(request.locator("dd").first).to_have_text("127.0.0.1")
    await expect(request.locator("dd").last).to_have_text("(present, verified)")
    content = await page.content()
    assert receiver.url() not in content  # where it went, never its URL
    assert SECRET not in content


async def test_replay_of_a_dead_delivery_sends_it_again_and_the_page_says_so(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    receiver.script(400)  # a permanent failure: dead at once; then 200
    browsing = await browse(console_yaml(receiver))
    await post_event(browsing.relay, "a refund please")
    [dead] = await wait_for_status(browsing.relay, "dead")
    await wait_for_status(browsing.relay, "sent")  # audit's

    watched = await browsing.open()
    page = watched.page
    await page.goto("/deliveries?status=dead")
    await page.get_by_role("link", name=str(dead.id), exact=True).click()
    status = page.get_by_role("heading", level=1).locator(".status")
    await expect(status).to_have_text("dead")
    await expect(page.locator(".attempts .outcome")).to_have_text(["dead"])
    assert len(receiver.requests) == 1

    await page.get_by_role("button", name="Replay").click()

    await expect(status).not_to_have_text("dead")  # the page it was sent back to
    await expect(page).to_have_url(re.compile(rf"/deliveries/{dead.id}$"))
    await receiver.wait_for_requests(2)
    assert [r.status for r in receiver.requests] == [400, 200]
    assert receiver.requests[1].body == receiver.requests[0].body  # the same event, again
    await wait_for_status(browsing.relay, "sent", 2)
    await page.reload()
    await expect(status).to_have_text("sent")
    await expect(page.locator(".attempts .outcome")).to_have_text(["dead", "sent"])
    await expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    await page.goto("/deliveries?status=dead")
    await expect(page.get_by_text("No delivery matches these filters.")).to_be_visible()
