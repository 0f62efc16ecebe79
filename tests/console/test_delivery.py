"""SPEC 8, A delivery: its event pretty-printed, the headers that mattered of the request it
came in (never a secret), where it went and by which rule, and every attempt (time,
outcome, error or answer, duration); its JSON twin; on both stores."""

from __future__ import annotations

import json
import re

import pytest

from relay.app import STATE
from relay.store.base import NewDelivery, NewEvent
from tests.console.conftest import ConsoleFactory
from tests.console.support import (
    HEADER_SECRET,
    SENDER_API_KEY,
    SENDER_TOKEN,
    console_yaml,
    post_with_credentials,
    request_shown,
)
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.relay import SECRET, event_body
from tests.test_delivery import post_event, wait_for_status
from tests.test_signals import Clock


async def test_a_delivery_shows_its_three_attempts_and_its_event(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    receiver.script(Answer(503, "busy"), Answer(500, "broken"), 200)
    console = await open_console(console_yaml(receiver, store_section))
    await post_event(console.relay, "a refund please", session="s-3")
    sent = [d for d in await wait_for_status(console.relay, "sent", 2) if d.destination == "crm"]
    [delivery] = sent

    page = await console.page(f"/deliveries/{delivery.id}")
    assert f"<title>Delivery {delivery.id} · relay console</title>" in page
    rows = re.findall(r"<tr>\s*<td class=\"number\">(\d+)</td>(.*?)</tr>", page, re.S)
    assert [number for number, _ in rows] == ["1", "2", "3"]
    outcomes = [re.search(r"outcome-(\w+)", row).group(1) for _, row in rows]  # type: ignore[union-attr]
    assert outcomes == ["retried", "retried", "sent"]
    assert "webhook answered 503: busy" in rows[0][1]
    assert "webhook answered 500: broken" in rows[1][1]
    assert all(re.search(r"\d+\.\d{3} s</td>", row) for _, row in rows)
    assert all("<time datetime=" in row for _, row in rows)
    assert "<dd>refunds</dd>" in page  # the rule
    assert "(webhook)" in page  # the destination's type, never its URL
    pretty = json.dumps(json.loads(delivery.body), indent=2).replace('"', "&#34;")
    assert pretty in page  # the event, pretty-printed, as text
    assert "Replay</button>" not in page  # only a dead delivery has one

    twin = await console.json(f"/deliveries/{delivery.id}")
    assert twin["delivery"]["id"] == delivery.id
    assert twin["delivery"]["rule"] == "refunds" and twin["delivery"]["status"] == "sent"
    assert twin["event"]["data"]["message"] == "a refund please"
    assert [a["outcome"] for a in twin["attempts"]] == ["retried", "retried", "sent"]
    assert [a["number"] for a in twin["attempts"]] == [1, 2, 3]
    assert twin["attempts"][0]["detail"] == "webhook answered 503: busy"
    assert all(a["duration_s"] >= 0 and a["started"].endswith("Z") for a in twin["attempts"])


NO_SUCH = ["424242", "0", "abc", "99999999999999999999", "-1", "1%2F..%2F2"]


@pytest.mark.parametrize("path", [f"/deliveries/{n}" for n in NO_SUCH])
async def test_no_such_delivery_is_a_404_page(
    open_console: ConsoleFactory, receiver: FakeReceiver, path: str
) -> None:
    console = await open_console(console_yaml(receiver))
    response = await console.get(path)
    assert response.status == 404
    page = await response.text()
    assert "<h1>404 Not Found</h1>" in page
    assert "no delivery" in page and "<main" in page
    response = await console.get(path, as_json=True)
    assert response.status == 404
    assert (await response.json())["error"].startswith("no delivery")


DIGEST_RULES = """
  - name: transcripts
    when: { event: chat.push }
    send_to: [audit]
    digest: 1s
"""


async def test_a_digest_lists_its_events(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section, rules=DIGEST_RULES))
    for n in range(3):
        await post_event(console.relay, f"message {n}", session="s-digest")
    [digest] = await wait_for_status(console.relay, "sent")

    page = await console.page(f"/deliveries/{digest.id}")
    assert '<h2 id="digest-heading">The digest\'s events (3)</h2>' in page
    assert [int(n) for n in re.findall(r"&#34;message (\d)&#34;", page)] == [0, 0, 1, 2]
    assert '<span class="tag">digest</span>' in await console.page("/deliveries")
    twin = await console.json(f"/deliveries/{digest.id}")
    assert twin["delivery"]["digest"] is True
    assert [e["event"]["data"]["message"] for e in twin["digest_events"]] == [
        "message 0",
        "message 1",
        "message 2",
    ]


async def test_a_delivery_shows_the_request_its_event_came_in_and_no_secret(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section, required_header=True))
    agent = "bitHuman-Webhooks/1.0 (+https://bithuman.ai)"
    event_id, sent = await post_with_credentials(
        console.relay, **{"User-Agent": agent, "X-bitHuman-Event-Id": "evt-7f3a"}
    )
    assert event_id == "evt-7f3a"
    [crm] = [d for d in await wait_for_status(console.relay, "sent", 2) if d.destination == "crm"]
    expected = [
        ("Peer address", "127.0.0.1"),
        ("Content-Type", "application/json"),
        ("Content-Length", sent["Content-Length"]),
        ("User-Agent", agent),
        ("X-bitHuman-Event-Id", "evt-7f3a"),
        ("X-bitHuman-Signature", "(present, verified)"),
        ("X-Webhook-Secret", "(verified, not shown)"),
        ("Authorization", "(not shown)"),
    ]

    page = await console.page(f"/deliveries/{crm.id}")
    assert '<h2 id="request-heading">Request</h2>' in page
    assert request_shown(page) == expected
    twin = await console.json(f"/deliveries/{crm.id}")
    assert twin["request"] == {
        "kept": "received",
        "peer": "127.0.0.1",
        "headers": [{"name": name, "value": value} for name, value in expected[1:]],
    }
    for text in (page, json.dumps(twin)):
        for secret in (HEADER_SECRET, SECRET, SENDER_TOKEN, SENDER_API_KEY):
            assert secret not in text
        assert sent["X-bitHuman-Signature"].removeprefix("sha256=") not in text
        assert "X-API-Key" not in text  # a header relay does not keep at all


async def test_a_hostile_header_is_cut_and_shown_as_text(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    console = await open_console(console_yaml(receiver, required_header=True))
    agent = "<script>alert(1)</script>" + "A" * 5000
    await post_with_credentials(console.relay, **{"User-Agent": agent})
    [crm] = [d for d in await wait_for_status(console.relay, "sent", 2) if d.destination == "crm"]

    page = await console.page(f"/deliveries/{crm.id}")
    assert dict(request_shown(page))["User-Agent"] == agent[:199] + "…"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;AAA" in page
    assert page.count("<script") == page.count('<script src="/static/live.js" defer>')


SIGNAL_RULES = """
  - name: signals
    when: { event: conversation.unanswered }
    send_to: [audit]
"""


async def test_an_event_relay_raised_or_stored_without_a_request_says_so(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    clock = Clock()
    watching = f"{store_section}\nconversations:\n  unanswered_after: 2m\n"
    console = await open_console(console_yaml(receiver, watching, rules=SIGNAL_RULES), clock=clock)
    await post_event(console.relay, "anyone there?")
    clock.at(120)
    raiser = console.relay.app[STATE].raiser
    assert raiser is not None
    await raiser.raise_due()
    [signal] = await wait_for_status(console.relay, "sent")
    assert signal.event_id.startswith("conversation.unanswered:")
    # An event stored by another path than a webhook's (before relay kept requests: an
    # older relay's database, upgraded).
    store = console.relay.app[STATE].store
    older = NewEvent("kept-before", event_body(message="old"), clock.now)
    await store.accept(older, [NewDelivery("audit", "r", None, "s-old")], dedupe_window_s=60)
    [stored] = [d for d in await store.list_deliveries() if d.event_id == "kept-before"]

    for delivery_id, kept, said in (
        (signal.id, "raised_by_relay", "None: relay raised this event itself"),
        (stored.id, "not_recorded", "Not recorded: relay kept no request for this event"),
    ):
        page = await console.page(f"/deliveries/{delivery_id}")
        assert '<h2 id="request-heading">Request</h2>' in page
        assert f'<p class="empty">{said}' in page
        assert '<dl class="headers">' not in page
        twin = await console.json(f"/deliveries/{delivery_id}")
        assert twin["request"] == {"kept": kept, "peer": None, "headers": []}
