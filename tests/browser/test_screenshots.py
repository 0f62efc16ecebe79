"""The README's screenshots of the console, taken by this test's own Chromium from a realistic
store: three conversations, their deliveries to a CRM webhook and an audit log, most sent,
one refund dead after three attempts.

    RELAY_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser -k screenshot

writes docs/screenshots/deliveries.png, delivery.png, conversation.png and activity.png
(1280x800). Without RELAY_SCREENSHOTS the test still renders the pages and checks them, and
writes the images to its temporary folder instead.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.browser.conftest import BrowsingFactory
from tests.browser.support import VIEWPORT, ids_shown
from tests.console.support import Client, console_yaml
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import signed_headers
from tests.test_delivery import wait_for_status

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WATCHING = "\nconversations:\n  unanswered_after: 10m\n  ended_after: 30m\n"

# (agent, session, room) and what happens in it: a join, then (role, message) in order.
CONVERSATIONS: list[tuple[tuple[str, str, str], list[tuple[str, str]]]] = [
    (
        ("A80HVD8577", "8d947f06-2c36-4d98-aafe-b232da2433ff", "room-A80HVD8577-qtrJ"),
        [
            ("user", "What are your opening hours on Sunday?"),
            ("assistant", "We are open from 10:00 to 16:00 on Sundays."),
        ],
    ),
    (
        ("A80HVD8577", "3b1e0c52-7f4d-4c1a-9e0b-5d2f8a6c1e47", "room-A80HVD8577-x9Lm"),
        [
            ("user", "Hello, I need help with my order"),
            ("assistant", "Of course. What is the order number?"),
            ("user", "It is 4417. The shoes do not fit, I would like a refund."),
        ],
    ),
    (
        ("B22KQX1904", "c7a5e9d1-0b3f-4e62-8d1c-2f6b9a4e7c30", "room-B22KQX1904-Fe2w"),
        [
            ("user", "My parcel arrived damaged, I want a refund please."),
            ("assistant", "I am sorry to hear that. I have opened a claim for your parcel."),
        ],
    ),
]
REFUND_SESSION = CONVERSATIONS[2][0][1]


async def post(relay: Client, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    response = await relay.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200, await response.text()


async def realistic_store(relay: Client, receiver: FakeReceiver) -> int:
    """Post the conversations; the last refund finds the CRM down three times and dies.
    Returns that dead delivery's id. The events' own times are a few seconds apart, as a
    conversation's are (the first answers take 4, 12 and 20 s)."""
    said_at = time.time() - 900.0
    for n, ((agent, session, room), messages) in enumerate(CONVERSATIONS):
        if n == len(CONVERSATIONS) - 1:
            # The first two delivered (3 + 4 to the audit log, a refund to the CRM), the CRM
            # goes down.
            await wait_for_status(relay, "sent", 8)
            receiver.script(
                Answer(503, "Service Unavailable: CRM maintenance"),
                Answer(500, "Internal Server Error"),
                Answer(503, "Service Unavailable: CRM maintenance"),
            )
        join = {"room_name": room, "participant_count": 2, "session_id": session}
        said_at += 60.0
        await post(
            relay,
            {"agent_id": agent, "event_type": "room.join", "data": join, "timestamp": said_at},
        )
        for k, (role, message) in enumerate(messages):
            data = {"role": role, "message": message, "session_id": session}
            said_at += 4.0 + 8.0 * (k % 2) * n  # a first answer after 4, 12 or 20 s
            await post(
                relay,
                {"agent_id": agent, "event_type": "chat.push", "data": data, "timestamp": said_at},
            )
    [dead] = await wait_for_status(relay, "dead")
    await wait_for_status(relay, "sent", 11)  # 10 to the audit log, 1 refund to the CRM
    return dead.id


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


async def shoot(page: Page, path: Path) -> None:
    await page.screenshot(path=path)  # the viewport, 1280x800
    assert png_size(path) == (VIEWPORT["width"], VIEWPORT["height"])
    # A page of text and tables, not a blank one (that would be a few kilobytes), and small
    # enough to commit.
    assert 20_000 < path.stat().st_size < 400_000, path.stat().st_size


async def test_screenshots_of_the_console(
    browse: BrowsingFactory, receiver: FakeReceiver, tmp_path: Path
) -> None:
    folder = DOCS if os.environ.get("RELAY_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    browsing = await browse(console_yaml(receiver, WATCHING))
    dead_id = await realistic_store(browsing.relay, receiver)

    page = (await browsing.open()).page
    await page.goto("/deliveries")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(12)
    assert len(await ids_shown(page)) == 12
    await expect(page.locator(".counts a.status-dead strong")).to_have_text("1")
    await shoot(page, folder / "deliveries.png")

    await page.goto(f"/deliveries/{dead_id}")
    await expect(page.locator(".attempts .outcome")).to_have_text(["retried", "retried", "dead"])
    await expect(page.get_by_role("button", name="Replay")).to_be_visible()
    await shoot(page, folder / "delivery.png")

    await page.goto(f"/conversation?id={REFUND_SESSION}")
    await expect(page.locator("ol.transcript > li")).to_have_count(3)
    await expect(page.locator("ol.transcript .went a.status-dead")).to_have_text("crm: dead")
    await shoot(page, folder / "conversation.png")

    await page.goto("/activity")
    rows = page.get_by_role("table", name=re.compile("^Each agent")).locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first.locator("td").first).to_have_text("2")  # A80HVD8577's
    await expect(page.locator("#started-chart rect.bar").last).to_have_attribute(
        "height", re.compile(r"^[1-9]")
    )
    await shoot(page, folder / "activity.png")
