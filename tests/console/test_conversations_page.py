"""SPEC 8.1, Conversations: one entry per conversation, latest activity first, with its
agent, messages and the state of its deliveries; filtered by agent and time in the URL;
in pages; on both stores."""

from __future__ import annotations

import re

import pytest

from relay.console import conversations_listing
from tests.console.conftest import ConsoleFactory
from tests.console.support import Client, console_yaml
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import event_body, signed_headers
from tests.test_delivery import wait_for_status
from tests.test_signals import Clock

WATCHING = "\nconversations:\n  unanswered_after: 1h\n  ended_after: 2h\n"


async def say(relay: Client, session: str, message: str = "hello", agent: str = "A1") -> None:
    body = event_body(
        agent_id=agent, data={"role": "user", "message": message, "session_id": session}
    )
    response = await relay.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200, await response.text()


async def test_latest_activity_first_with_its_deliveries_state_and_an_agent_filter(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(Answer(400, "no such hook"))
    clock = Clock()
    console = await open_console(console_yaml(receiver, store_section + WATCHING), clock=clock)
    await say(console.relay, "s-refund", "a refund please")  # crm refuses it: dead
    await wait_for_status(console.relay, "dead")
    clock.at(100)
    await say(console.relay, "s-other", agent="A2")
    clock.at(800)  # past a quiet step: the stores' floors differ from the times
    await say(console.relay, "s-late")
    clock.at(900)
    await say(console.relay, "s-refund", "still waiting")
    await wait_for_status(console.relay, "sent", 4)

    twin = await console.json("/conversations")
    assert [c["session_id"] for c in twin["conversations"]] == ["s-refund", "s-late", "s-other"]
    refund = twin["conversations"][0]
    assert (refund["agent_id"], refund["visitor_messages"], refund["deliveries"]) == (
        "A1",
        2,
        "dead",
    )
    assert [c["deliveries"] for c in twin["conversations"][1:]] == ["sent", "sent"]
    assert twin["next"] is None

    mine = await console.json("/conversations?agent=A1")
    assert [c["session_id"] for c in mine["conversations"]] == ["s-refund", "s-late"]
    assert mine["filter"] == {"agent": "A1"}
    since = clock.start + 700
    recent = await console.json(f"/conversations?since={since}")
    assert [c["session_id"] for c in recent["conversations"]] == ["s-refund", "s-late"]

    page = await console.page("/conversations?agent=A1")
    assert '<input id="c-agent" name="agent" value="A1" maxlength="200">' in page
    links = re.findall(r'<td><a href="/conversation\?id=([^"]+)">', page)
    assert links == ["s-refund", "s-late"]
    assert '<td class="deliveries-dead">some dead</td>' in page


@pytest.mark.parametrize("step", [5, 200])
async def test_pages_list_every_conversation_once(
    open_console: ConsoleFactory,
    receiver: FakeReceiver,
    store_section: str,
    monkeypatch: pytest.MonkeyPatch,
    step: int,
) -> None:
    """Read in steps of `step` watches (round trips), pages of 10: every conversation
    once, latest activity first, whichever watches share a quiet floor."""
    monkeypatch.setattr(conversations_listing, "_STEP", step)
    monkeypatch.setattr(conversations_listing, "PAGE_SIZE", 10)
    clock = Clock()
    console = await open_console(console_yaml(receiver, store_section + WATCHING), clock=clock)
    count = 37
    for n in range(count):
        clock.at(n * 37.0)
        await say(console.relay, f"s{n:03d}")
    # Two conversations carry on within a quiet step of their start: their floors stay low
    # (22 x 37 = 814 s, 23 x 37 = 851 s) while they are the latest active of all.
    for n, at in ((22, 1340.0), (23, 1345.0)):
        clock.at(at)
        await say(console.relay, f"s{n:03d}", "still there?")
    expected = ["s023", "s022", *(f"s{n:03d}" for n in reversed(range(count)) if n not in (22, 23))]
    seen: list[str] = []
    url: str | None = "/conversations"
    while url is not None:
        twin = await console.json(url)
        seen += [c["session_id"] for c in twin["conversations"]]
        url = twin["next"]
    assert seen == expected


async def test_a_value_the_list_cannot_read_is_an_error_naming_it(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver, WATCHING))
    response = await console.get("/conversations?since=yesterday", as_json=True)
    assert response.status == 400
    said = (await response.json())["error"]
    assert said.startswith("since: expected a time like 2025-01-31T14:30 (UTC) or Unix seconds")
