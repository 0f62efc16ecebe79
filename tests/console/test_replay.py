"""SPEC 8, Replay: a dead delivery put back in the queue from its page, by a POST that must
carry the CSRF token and come from the console's own origin; anything else is 403 and
changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from relay.console.csrf import CsrfTokens
from relay.console.keys import CSRF
from tests.console.conftest import ConsoleFactory
from tests.console.support import USERNAME, Console, console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.test_delivery import post_event, wait_for_status

GRACE_S = 0.3  # with a 10 ms backoff, a wrongful send would come well within this


async def a_dead_delivery(
    open_console: ConsoleFactory, receiver: FakeReceiver, store: str = ""
) -> tuple[Console, int]:
    receiver.script(400)  # a permanent failure: dead at once; later requests get 200
    console = await open_console(console_yaml(receiver, store))
    await post_event(console.relay, "a refund please")
    [dead] = await wait_for_status(console.relay, "dead")
    return console, dead.id


async def test_replay_from_the_page_sends_it_again(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console, dead_id = await a_dead_delivery(open_console, receiver, store_section)
    page = await console.page(f"/deliveries/{dead_id}")
    assert f'<form class="replay" method="post" action="/deliveries/{dead_id}/replay">' in page
    assert "Replay</button>" in page

    response = await console.replay(dead_id, token=await console.token(dead_id))
    assert response.status == 303
    assert response.headers["Location"] == f"/deliveries/{dead_id}"

    await wait_for_status(console.relay, "sent", 2)  # audit's, and crm's now
    await receiver.wait_for_requests(2)
    assert [r.status for r in receiver.requests] == [400, 200]
    twin = await console.json(f"/deliveries/{dead_id}")
    assert twin["delivery"]["status"] == "sent"
    assert [a["outcome"] for a in twin["attempts"]] == ["dead", "sent"]


async def test_a_referer_of_the_console_will_do_without_an_origin(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console, dead_id = await a_dead_delivery(open_console, receiver)
    token = await console.token(dead_id)
    referer = {"Referer": f"{console.origin}/deliveries/{dead_id}"}
    response = await console.replay(dead_id, token=token, headers=referer)
    assert response.status == 303
    await receiver.wait_for_requests(2)


REFUSALS = [
    "no token",
    "an empty token",
    "a wrong token",
    "another process's token",
    "another site's origin",
    "another port's origin",
    "origin null",
    "another site's referer",
    "neither origin nor referer",
    "a foreign origin with our referer",
]


def refusal(case: str, console: Console, token: str) -> tuple[str | None, dict[str, str]]:
    """The token a refused POST carries, and its Origin or Referer."""
    own = {"Origin": console.origin}
    evil = "http://evil.example"
    return {
        "no token": (None, own),
        "an empty token": ("", own),
        "a wrong token": ("0" * 64, own),
        "another process's token": (CsrfTokens().token(USERNAME), own),
        "another site's origin": (token, {"Origin": evil}),
        "another port's origin": (token, {"Origin": f"http://{console.client.host}:1"}),
        "origin null": (token, {"Origin": "null"}),
        "another site's referer": (token, {"Referer": f"{evil}/deliveries/1"}),
        "neither origin nor referer": (token, {}),
        "a foreign origin with our referer": (
            token,
            {"Origin": evil, "Referer": f"{console.origin}/deliveries/1"},
        ),
    }[case]


@pytest.mark.parametrize("case", REFUSALS)
async def test_a_replay_without_the_token_or_from_elsewhere_is_refused(
    open_console: ConsoleFactory, receiver: FakeReceiver, case: str
) -> None:
    console, dead_id = await a_dead_delivery(open_console, receiver)
    presented, headers = refusal(case, console, await console.token(dead_id))
    response = await console.replay(dead_id, token=presented, headers=headers)
    assert response.status == 403
    assert "<h1>403 Forbidden</h1>" in await response.text()
    await asyncio.sleep(GRACE_S)
    assert len(receiver.requests) == 1  # the first attempt only
    twin = await console.json(f"/deliveries/{dead_id}")
    assert twin["delivery"]["status"] == "dead"
    assert len(twin["attempts"]) == 1


async def test_replay_of_a_delivery_that_is_not_dead_changes_nothing(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console, _ = await a_dead_delivery(open_console, receiver)
    [sent] = await wait_for_status(console.relay, "sent")  # audit's
    token = console.client.app[CSRF].token(USERNAME)  # what a page of this console holds
    response = await console.replay(sent.id, token=token)
    assert response.status == 303
    await asyncio.sleep(GRACE_S)
    assert (await console.json(f"/deliveries/{sent.id}"))["delivery"]["attempts"] == 1
    response = await console.replay(424242, token=token)
    assert response.status == 404
