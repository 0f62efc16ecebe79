"""Safety in Chromium: hostile event content shows as text and runs nothing; no page of the
console breaks its own CSP or logs an error. And the watchers behind "no dialog, no error"
do see one when there is one."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import filters, ids_shown
from tests.console.support import console_yaml
from tests.support.fake_discord import wait_until
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.test_delivery import post_event, wait_for_status

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
TEMPLATE = "{{7*7}}"
HOSTILE = f"{SCRIPT} {IMG} {TEMPLATE} refund"


async def assert_nothing_injected(page: Page) -> None:
    """No element came from the event: no script but the console's own static files, none
    inline, and no image or event handler attribute in the page's content."""
    scripts = await page.locator("script").evaluate_all(
        "scripts => scripts.map(s => [s.getAttribute('src'), s.textContent])"
    )
    assert all(src and src.startswith("/static/") and not text for src, text in scripts), scripts
    assert await page.locator("main img, [onerror]").count() == 0


async def test_hostile_content_is_literal_text_and_fires_no_dialog(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    # The CRM refuses the event and echoes its message back: that lands in the list too.
    receiver.script(Answer(400, f"rejected: {HOSTILE}"))
    browsing = await browse(console_yaml(receiver))
    await post_event(browsing.relay, HOSTILE)
    [dead] = await wait_for_status(browsing.relay, "dead")
    await wait_for_status(browsing.relay, "sent")

    watched = await browsing.open()
    page = watched.page
    await page.goto("/deliveries")
    last_error = page.locator("table.deliveries tbody tr", has_text="dead").locator(".last-error")
    await expect(last_error).to_have_text(f"webhook answered 400: rejected: {HOSTILE}")
    await assert_nothing_injected(page)

    # The text search, typed into the form: found, and echoed into its field as text.
    search = filters(page).get_by_label("Text in the event")
    await search.fill(f"{SCRIPT} {IMG}")
    await search.press("Enter")
    await expect(page).to_have_url(re.compile(r"text=%3Cscript%3E"))
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(2)
    await expect(search).to_have_value(f"{SCRIPT} {IMG}")
    await assert_nothing_injected(page)

    await page.get_by_role("link", name=str(dead.id), exact=True).click()
    await expect(page).to_have_url(re.compile(rf"/deliveries/{dead.id}$"))
    event = page.locator("pre.event")
    await expect(event).to_contain_text(f'"message": "{HOSTILE}"')
    await expect(page.locator(".attempts .detail")).to_have_text(
        [f"webhook answered 400: rejected: {HOSTILE}"]
    )
    await expect(page.locator("dl.fields .last-error")).to_contain_text(TEMPLATE)
    assert "49" not in await event.inner_text()  # {{7*7}} was never evaluated
    await assert_nothing_injected(page)
    assert await page.evaluate("() => document.title") == f"Delivery {dead.id} · relay console"

    # The dead-letter view, and a reload of each page, for good measure.
    await page.goto("/deliveries?status=dead")
    assert await ids_shown(page) == [dead.id]
    await page.reload()
    await assert_nothing_injected(page)
    assert watched.dialogs == []
    # And the `browse` fixture checks, at the end, that no page logged an error or broke CSP.


async def test_no_page_logs_an_error_or_breaks_the_csp(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    receiver.script(400)
    # Conversations watched: their pages (the list, a transcript) load as cleanly.
    browsing = await browse(console_yaml(receiver, "\nconversations:\n  unanswered_after: 1h\n"))
    await post_event(browsing.relay, "a refund please")
    [dead] = await wait_for_status(browsing.relay, "dead")
    [sent] = await wait_for_status(browsing.relay, "sent")

    watched = await browsing.open()
    page = watched.page
    for path in (
        "/",
        "/deliveries",
        "/deliveries?status=dead",
        "/deliveries?destination=audit&text=refund",
        f"/deliveries?before={sent.id}",
        f"/deliveries/{dead.id}",
        f"/deliveries/{sent.id}",
        "/rules",
        "/rules?period=30d",
        "/activity",
        "/activity?period=7d",
        "/conversations",
        "/conversations?agent=agent_abc123",
        "/conversation?id=s1",
    ):
        await assert_loads_cleanly(page, path, 200)
    # The replay form posts under `form-action 'self'` and comes back.
    await page.goto(f"/deliveries/{dead.id}")
    await page.get_by_role("button", name="Replay").click()
    await expect(page).to_have_url(re.compile(rf"/deliveries/{dead.id}$"))
    await receiver.wait_for_requests(2)
    watched.assert_quiet()

    # The error pages, as quiet, but for the line Chromium logs for each one's status.
    for path, status in (
        ("/deliveries/424242", 404),
        ("/deliveries?status=lost", 400),
        ("/nowhere", 404),
    ):
        await assert_loads_cleanly(page, path, status)
        await expect(page.get_by_role("heading", level=1)).to_contain_text(str(status))
        watched.noted_status(path, status)
    watched.assert_quiet()


async def assert_loads_cleanly(page: Page, path: str, status: int) -> None:
    """The page answers `status`, with its one main, and its stylesheet applied (one that
    the CSP blocked would have no rules, and log a violation)."""
    response = await page.goto(path)
    assert response is not None and response.status == status, path
    await page.wait_for_load_state("load")
    await expect(page.locator("main")).to_have_count(1)
    rules = await page.evaluate(
        "() => [...document.styleSheets].map(sheet => sheet.cssRules.length)"
    )
    assert rules and all(count > 0 for count in rules), (path, rules)


async def test_the_watchers_see_a_dialog_a_csp_violation_and_a_page_error(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    """What the other tests find none of, found here on purpose, so "none" means something."""
    browsing = await browse(console_yaml(receiver))
    watched = await browsing.open(quiet=False)
    page = watched.page
    await page.goto("/deliveries")
    # Playwright's evaluate is not governed by the page's CSP; what it starts is.
    await page.evaluate(
        """() => {
          const image = document.createElement("img");
          image.src = "http://evil.example/x.png";
          document.body.append(image);
          setTimeout(() => { throw new Error("boom"); }, 0);
        }"""
    )
    await page.evaluate("() => alert('hello')")

    def seen() -> bool:
        return (
            any("securitypolicyviolation: img-src blocked" in e for e in watched.errors)
            and any("Content Security Policy" in e for e in watched.errors)
            and any(e.startswith("page: ") and "boom" in e for e in watched.errors)
        )

    await wait_until(lambda: f"the errors; got {watched.errors}", seen, 5)
    assert watched.dialogs == ["alert: hello"]
