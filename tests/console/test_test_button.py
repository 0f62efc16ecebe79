"""SPEC 8, Test: a button that sends a sample event through relay itself, as `relay
send-test` does: signed as the config says, posted to relay's own webhook listener, through
the rules to the destinations; the page then says what relay answered."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient

from relay.app import STATE
from relay.console import create_console_app
from relay.console.sample import TEST_PATH, local_webhook_url, said
from tests.console.conftest import ConsoleFactory
from tests.console.support import AUTH, JSON, Console, console_yaml, hidden_fields
from tests.support.bithuman import ACCOUNT_SECRET
from tests.support.fake_receiver import FakeReceiver
from tests.support.relay import make_config
from tests.test_delivery import deliveries, wait_for_status

NOTICE = re.compile(r'<p class="notice" id="notice" role="status">([^<]*)</p>')


async def press(
    console: Console,
    fields: dict[str, str],
    *,
    path: str = TEST_PATH,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """POST the Test form, from the console's own origin unless told."""
    return await console.client.post(
        path,
        data=fields,
        headers={**AUTH, **({"Origin": console.origin} if headers is None else headers)},
        allow_redirects=False,
    )


async def the_form(console: Console, path: str = "/deliveries") -> dict[str, str]:
    page = await console.page(path)
    assert '<button type="submit">Send a test event</button>' in page
    assert '<label for="t-event">Test event type</label>' in page
    return hidden_fields(page, "send-test")


async def notice_after(console: Console, response: aiohttp.ClientResponse) -> str:
    assert response.status == 303, await response.text()
    found = NOTICE.search(await console.page(response.headers["Location"]))
    assert found is not None
    return html.unescape(found.group(1))


async def test_the_test_event_goes_through_relay_to_the_destinations(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section))
    fields = await the_form(console, "/deliveries?destination=crm")
    message = "a refund, from the console's Test button"
    response = await press(
        console,
        {**fields, "event": "chat.push", "message": message},
        path=f"{TEST_PATH}?destination=crm",
    )
    assert response.headers["Location"].startswith("/deliveries?destination=crm&notice=")
    said_here = await notice_after(console, response)

    # Through the rules: the refund rule to crm, the catch-all to audit.
    [to_audit, to_crm] = sorted(
        await wait_for_status(console.relay, "sent", 2), key=lambda d: d.destination
    )
    assert (to_audit.destination, to_crm.destination) == ("audit", "crm")
    assert to_crm.event_id == to_audit.event_id
    assert said_here == f"relay accepted the test event {to_crm.event_id}: 2 deliveries"
    assert json.loads(to_crm.body)["data"]["message"] == message
    await receiver.wait_for_requests(1)
    assert message in receiver.requests[0].body.decode()

    # The list shows them, as any other.
    rows = (await console.json("/deliveries"))["deliveries"]
    assert sorted((r["destination"], r["event_type"]) for r in rows) == [
        ("audit", "chat.push"),
        ("crm", "chat.push"),
    ]


async def test_each_press_sends_a_new_event(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    fields = await the_form(console)
    for event in ("room.join", "test"):
        response = await press(console, {**fields, "event": event})
        assert "relay accepted the test event" in await notice_after(console, response)
    response = await press(console, fields)  # the default: room.join, as send-test's
    assert ": 1 delivery" in await notice_after(console, response)
    sent = await wait_for_status(console.relay, "sent", 3)
    assert len({d.event_id for d in sent}) == 3  # never taken for a duplicate
    assert {d.destination for d in sent} == {"audit"}


async def test_what_relay_refuses_is_said(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    yaml_text = console_yaml(receiver).replace(
        'secrets: ["${SECRET}"]', 'secrets: ["${SECRET}"]\n  allow_ips: ["192.0.2.0/24"]'
    )
    console = await open_console(yaml_text)
    response = await press(console, await the_form(console))
    said_here = await notice_after(console, response)
    assert said_here.startswith("relay refused the test event: 403 ")
    assert await deliveries(console.relay) == []


async def test_account_events_are_offered_only_with_the_account_secret(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    found = re.search(
        r'<select id="t-event" name="event">(.*?)</select>', await console.page("/deliveries"), re.S
    )
    assert found is not None
    offered = re.findall(r'<option value="([^"]+)"( selected)?>', found.group(1))
    assert offered == [("room.join", " selected"), ("chat.push", ""), ("test", "")]
    response = await press(console, {**await the_form(console), "event": "agent.ready"})
    assert response.status == 400
    assert await deliveries(console.relay) == []


async def test_without_the_token_or_from_elsewhere_nothing_is_sent(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    fields = await the_form(console)
    for presented, headers in (
        ({}, {"Origin": console.origin}),
        (fields, {"Origin": "http://evil.example"}),
        (fields, {}),
    ):
        response = await press(console, presented, headers=headers)
        assert response.status == 403
    assert await deliveries(console.relay) == []


async def test_the_json_twin_says_what_relay_answered(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver))
    response = await press(
        console, await the_form(console), headers={"Origin": console.origin, **JSON}
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["event"] == "room.join"
    assert answer["outcome"].startswith("relay accepted the test event ")


def test_relays_own_url_is_the_port_it_bound(tmp_path: Path) -> None:
    config = make_config("server: { host: 0.0.0.0, port: 0, path: /in/hook }", tmp_path)
    assert local_webhook_url(config, 41234) == "http://127.0.0.1:41234/in/hook"
    assert local_webhook_url(replace(config, server=replace(config.server, port=8080))) == (
        "http://127.0.0.1:8080/in/hook"
    )


async def test_a_console_not_told_the_port_says_so(
    open_console: ConsoleFactory,
    receiver: FakeReceiver,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> None:
    console = await open_console(console_yaml(receiver))
    state = console.relay.app[STATE]
    state.use_config(replace(state.config, server=replace(state.config.server, port=0)))
    untold = Console(console.relay, await aiohttp_client(create_console_app(state)))
    response = await press(untold, await the_form(untold))
    assert "the console was not told which port relay's listener took" in await notice_after(
        untold, response
    )


def test_what_relay_said_in_words() -> None:
    accepted = '{"status": "accepted", "event_id": "evt_1", "deliveries": 1}'
    assert said(200, accepted) == "relay accepted the test event evt_1: 1 delivery"
    duplicate = '{"status": "duplicate", "event_id": "evt_1"}'
    assert "evt_1 for a duplicate" in said(200, duplicate)
    assert (
        said(401, '{"error": "bad signature"}') == "relay refused the test event: 401 bad signature"
    )
    assert said(503, "busy") == "relay answered 503: busy"


async def test_an_account_event_is_signed_with_the_account_secret(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    yaml_text = console_yaml(receiver).replace(
        'secrets: ["${SECRET}"]',
        f'secrets: ["${{SECRET}}"]\n  account:\n    secrets: ["{ACCOUNT_SECRET}"]',
    )
    console = await open_console(yaml_text)
    response = await press(console, {**await the_form(console), "event": "agent.ready"})
    said_here = await notice_after(console, response)
    assert re.fullmatch(r"relay accepted the test event evt_\w+: 1 delivery", said_here)
    [sent] = await wait_for_status(console.relay, "sent")
    assert json.loads(sent.body)["event"] == "agent.ready"
