"""SPEC 8.1, a conversation: its transcript in order (the join, each message with its role,
time and text, the signals relay raised) and beside each event every destination it went
to, with that delivery's status, linked to the delivery's page; on both stores."""

from __future__ import annotations

import html
import re

from relay.app import STATE
from tests.console.conftest import ConsoleFactory
from tests.console.support import Client, console_yaml
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import event_body, signed_headers
from tests.test_delivery import wait_for_status
from tests.test_signals import Clock

WATCHING = "\nconversations:\n  unanswered_after: 2m\n"


async def post(relay: Client, kind: str, role: str, message: str, session: str = "s1") -> str:
    data = {"role": role, "message": message, "session_id": session}
    body = event_body(kind, data=data if kind == "chat.push" else {"session_id": session})
    response = await relay.post("/webhook", data=body, headers=signed_headers(body))
    answer = await response.json()
    assert response.status == 200, answer
    return str(answer["event_id"])


async def conversation(relay: Client, clock: Clock) -> None:
    """s1: a join, a refund question (to crm, which refuses it: dead; and to audit: sent),
    an answer, a second question nobody answers, then relay's unanswered signal."""
    await post(relay, "room.join", "", "")
    await post(relay, "chat.push", "user", "a refund please, <b>now</b>")
    await post(relay, "chat.push", "assistant", "Sure, which order?")
    await post(relay, "chat.push", "user", "hello?")
    await wait_for_status(relay, "dead")
    await wait_for_status(relay, "sent", 4)
    clock.at(121)
    raiser = relay.app[STATE].raiser
    assert raiser is not None
    assert await raiser.raise_due() == 1
    await wait_for_status(relay, "sent", 5)


async def test_a_transcript_in_order_with_each_destination_and_its_status(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(Answer(400, "no such order hook"))
    clock = Clock()
    console = await open_console(console_yaml(receiver, store_section + WATCHING), clock=clock)
    await conversation(console.relay, clock)

    twin = await console.json("/conversation?id=s1")
    assert twin["conversation"] == "s1" and not twin["earlier"]
    assert [(e["who"], e["event_type"]) for e in twin["events"]] == [
        ("visitor", "room.join"),
        ("visitor", "chat.push"),
        ("agent", "chat.push"),
        ("visitor", "chat.push"),
        ("relay", "conversation.unanswered"),
    ]
    assert [e["text"] for e in twin["events"][1:4]] == [
        "a refund please, <b>now</b>",
        "Sure, which order?",
        "hello?",
    ]
    went = [[(d["destination"], d["status"]) for d in e["deliveries"]] for e in twin["events"]]
    assert went == [
        [("audit", "sent")],
        [("crm", "dead"), ("audit", "sent")],  # in the order relay made them: rule order
        [("audit", "sent")],
        [("audit", "sent")],
        [("audit", "sent")],
    ]
    dead = twin["events"][1]["deliveries"][0]
    assert dead["url"] == f"/deliveries/{dead['id']}"
    assert twin["watch"]["visitor_messages"] == 2 and twin["watch"]["agent_messages"] == 1

    page = await console.page("/conversation?id=s1")
    items = re.findall(r'<li class="who-(\w+)">', page)
    assert items == ["visitor", "visitor", "agent", "visitor", "relay"]
    assert f'<a class="status status-dead" href="/deliveries/{dead["id"]}">crm: dead</a>' in page
    assert "a refund please, &lt;b&gt;now&lt;/b&gt;" in page  # markup is text
    assert "<b>now</b>" not in page
    # The delivery's page links back to its conversation.
    delivery_page = await console.page(f"/deliveries/{dead['id']}")
    assert '<a href="/conversation?id=s1">s1</a>' in delivery_page


async def test_an_unknown_conversation_or_a_missing_id_says_so(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver, WATCHING))
    response = await console.get("/conversation?id=nobody", as_json=True)
    assert response.status == 404
    said = (await response.json())["error"]
    assert said.startswith("no transcript of this conversation")
    response = await console.get("/conversation", as_json=True)
    assert response.status == 400
    assert await response.json() == {
        "error": "id: a session id of 1 to 10000 characters is required"
    }
    response = await console.get("/conversation?id=nobody")
    assert response.status == 404
    assert "no transcript of this conversation" in html.unescape(await response.text())
