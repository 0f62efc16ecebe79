"""The login, in Chromium: HTTP Basic, asked for by the console on every page."""

from __future__ import annotations

import re

from playwright.async_api import Error, Response, expect

from relay.console.auth import CHALLENGE
from tests.browser.conftest import BrowsingFactory
from tests.browser.support import ids_shown
from tests.console.support import CONSOLE_PASSWORD, USERNAME, console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event, wait_for_status


async def test_without_credentials_the_console_shows_nothing_but_its_401(
    browse: BrowsingFactory, receiver: FakeReceiver
) -> None:
    browsing = await browse(console_yaml(receiver))
    await post_event(browsing.relay, "a refund please")
    await wait_for_status(browsing.relay, "sent", 2)

    # No credentials at all: the console asks for them. Headless Chromium 156 cannot prompt
    # for them and ends the navigation (ERR_INVALID_AUTH_CREDENTIALS); a browser that shows
    # the 401 answer instead would pass too. Either way nothing of the console is shown.
    anonymous = await browsing.open(credentials=None, quiet=False)
    answers: list[Response] = []
    anonymous.page.on("response", lambda response: answers.append(response))
    try:
        shown = await anonymous.page.goto("/deliveries")
    except Error as error:
        assert "ERR_INVALID_AUTH_CREDENTIALS" in error.message
        shown = None
    [answer] = answers
    assert answer.status == 401 and (shown is None or shown.status == 401)
    assert await answer.header_value("www-authenticate") == CHALLENGE
    await anonymous.page.wait_for_load_state()
    await expect(anonymous.page).not_to_have_title(re.compile("relay console"))
    await expect(anonymous.page.locator("main")).to_have_count(0)
    assert anonymous.dialogs == []

    # A wrong password: the browser tries it, the console refuses it again, and the browser
    # shows the console's 401 page (as after cancelling a login prompt).
    wrong = await browsing.open(credentials=(USERNAME, "not-the-password"), quiet=False)
    response = await wrong.page.goto("/deliveries")
    assert response is not None and response.status == 401
    await expect(wrong.page.locator("body")).to_contain_text(
        "the relay console needs its username and password"
    )
    assert await wrong.page.locator("table.deliveries").count() == 0
    assert all("status of 401" in error for error in wrong.errors), wrong.errors
    assert wrong.dialogs == []

    # The right ones: the deliveries.
    operator = await browsing.open()
    response = await operator.page.goto("/deliveries")
    assert response is not None and response.status == 200
    await expect(operator.page).to_have_title("Deliveries · relay console")
    await expect(operator.page.get_by_role("heading", level=1)).to_have_text("Deliveries")
    assert len(await ids_shown(operator.page)) == 2
    # The stylesheet came through the same login, and applies.
    rules = await operator.page.evaluate(
        "() => [...document.styleSheets].map(sheet => sheet.cssRules.length)"
    )
    assert rules and all(count > 0 for count in rules), rules
    assert CONSOLE_PASSWORD not in await operator.page.content()
