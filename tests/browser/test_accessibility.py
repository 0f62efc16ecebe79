"""Basic accessibility in Chromium: a title and one main landmark on each page, an accessible
name for every control, and everything reachable and usable from the keyboard."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import Watched, filters, ids_shown
from tests.console.support import console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event, wait_for_status

# The element that has the focus: its id, or its tag and where it leads or what it says.
FOCUSED = """() => {
  const e = document.activeElement;
  if (e === null || e === document.body) return "BODY";
  return e.id || e.tagName + " " + (e.getAttribute("href") || e.textContent.trim());
}"""
CONTROLS = "input:not([type=hidden]), select, textarea, button"
FILTERS = ["f-status", "f-destination", "f-event-type", "f-since", "f-until", "f-text"]
NAMED = re.compile(r'^- (\w+) "([^"]+)"')  # the first line of a control's ARIA snapshot


async def started(browse: BrowsingFactory, receiver: FakeReceiver) -> tuple[Watched, int]:
    """A console with a dead delivery (crm) and two sent ones (audit); a page on it."""
    receiver.script(400)
    browsing = await browse(console_yaml(receiver))
    await post_event(browsing.relay, "a refund please", session="s1")
    [dead] = await wait_for_status(browsing.relay, "dead")
    await post_event(browsing.relay, "hello", session="s2")
    await wait_for_status(browsing.relay, "sent", 2)
    return await browsing.open(), dead.id


async def named_controls(page: Page) -> dict[str, str]:
    """Each form control's accessible name, as Chromium's accessibility tree gives it; a
    control without one fails."""
    controls = page.locator(CONTROLS)
    markup = await controls.evaluate_all("controls => controls.map(c => c.outerHTML)")
    names = {}
    for control, described in zip(await controls.all(), markup, strict=True):
        found = NAMED.match(await control.aria_snapshot())
        assert found is not None, f"{page.url}: no accessible name for {described}"
        names[described] = found.group(2)
    return names


async def test_each_page_has_a_title_one_main_and_named_controls(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    watched, dead_id = await started(browse, receiver)
    page = watched.page
    for path, title in (
        ("/deliveries", "Deliveries · relay console"),
        ("/deliveries?status=dead", "Dead letters · relay console"),
        (f"/deliveries/{dead_id}", f"Delivery {dead_id} · relay console"),
        ("/deliveries/424242", "404 Not Found · relay console"),
        ("/rules", "Rules · relay console"),
        ("/activity", "Activity · relay console"),
        ("/activity?period=30d", "Activity · relay console"),
        ("/conversation?id=nobody", "404 Not Found · relay console"),
        ("/conversations", "Conversations · relay console"),
        ("/rules?period=7d", "Rules · relay console"),
    ):
        await page.goto(path)
        await expect(page).to_have_title(title)
        await expect(page.get_by_role("main")).to_have_count(1)
        await expect(page.get_by_role("heading", level=1)).to_have_count(1)
        await named_controls(page)
    watched.noted_status("/deliveries/424242", 404)
    watched.noted_status("/conversation?id=nobody", 404)

    await page.goto("/deliveries")
    names = set((await named_controls(page)).values())
    labels = {"Status", "Destination", "Event type", "From (UTC)", "Before (UTC)"}
    assert labels | {"Text in the event", "Filter"} <= names
    for label in labels:  # each label is tied to its control
        await expect(filters(page).get_by_label(label, exact=True)).to_have_count(1)
    await page.goto(f"/deliveries/{dead_id}")
    assert "Replay" in (await named_controls(page)).values()


async def tab_until(page: Page, target: str, limit: int = 120) -> list[str]:
    """Press Tab until the element described as `target` has the focus; return what had it
    on the way, in order."""
    seen: list[str] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        seen.append(await page.evaluate(FOCUSED))
        if seen[-1] == target:
            return seen
    raise AssertionError(f"Tab never reached {target}; it went through {seen}")


async def test_the_deliveries_page_works_from_the_keyboard(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    watched, dead_id = await started(browse, receiver)
    page = watched.page
    await page.goto("/deliveries")
    [first, *_] = await ids_shown(page)

    # The skip link comes first and jumps to the content.
    await page.keyboard.press("Tab")
    assert await page.evaluate(FOCUSED) == "A #main"
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()

    # Every filter, the Filter button, then the deliveries, in that order.
    await page.goto("/deliveries")
    seen = await tab_until(page, f"A /deliveries/{first}")
    reached = [f for f in dict.fromkeys(seen) if f in [*FILTERS, "BUTTON Filter"]]
    assert reached == [*FILTERS, "BUTTON Filter"], seen
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(rf"/deliveries/{first}$"))
    await expect(page).to_have_title(f"Delivery {first} · relay console")

    # A filter chosen and submitted with keys alone.
    await page.goto("/deliveries")
    await tab_until(page, "f-status")
    await page.keyboard.type("dead")  # a closed select picks the option typed
    await expect(filters(page).get_by_label("Status")).to_have_value("dead")
    await tab_until(page, "BUTTON Filter")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"status=dead"))
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(1)
    assert await ids_shown(page) == [dead_id]


async def test_replay_works_from_the_keyboard(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    watched, dead_id = await started(browse, receiver)
    page = watched.page
    await page.goto(f"/deliveries/{dead_id}")
    await tab_until(page, "BUTTON Replay")
    await page.keyboard.press("Enter")
    status = page.get_by_role("heading", level=1).locator(".status")
    await expect(status).not_to_have_text("dead")
    await receiver.wait_for_requests(2)
    assert [r.status for r in receiver.requests] == [400, 200]
