"""SPEC 8.1, Rules: each rule's matches in the period and its latest, the rules that never
matched, and the events no rule matched; read from the counters, on both stores."""

from __future__ import annotations

import dataclasses
import html
import re

from relay.app import STATE
from tests.conftest import RelayClientFactory
from tests.console.conftest import ConsoleFactory
from tests.console.support import Client, console_yaml
from tests.support.fake_receiver import FakeReceiver
from tests.support.relay import event_body, signed_headers
from tests.test_signals import Clock

RULES = """
  - name: refunds
    when: { message: { contains: refund } }
    send_to: [crm]
  - name: joins
    when: { event: room.join }
    send_to: [audit]
  - name: vip-agent
    when: { agent: VIP0000001 }
    send_to: [audit]
  - name: all-refunds-audited
    when: { message: { contains: refund } }
    send_to: [audit, crm]
"""


async def post(relay: Client, kind: str, message: str, event_id: str) -> None:
    body = event_body(kind, message=message, event_id=event_id)
    response = await relay.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200, await response.text()


async def test_each_rule_its_matches_the_never_matched_and_the_unmatched_events(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    clock = Clock()
    console = await open_console(console_yaml(receiver, store_section, rules=RULES), clock=clock)
    await post(console.relay, "chat.push", "a refund please", "e-old")  # 2 days ago
    clock.at(2 * 86400)
    await post(console.relay, "chat.push", "another refund", "e-refund")
    await post(console.relay, "room.join", "", "e-join")
    await post(console.relay, "chat.push", "hello", "e-hello-1")
    await post(console.relay, "chat.push", "still there?", "e-hello-2")
    now = clock.now

    twin = await console.json("/rules")
    assert twin["period"] == "24h"
    assert twin["unmatched_events"] == 2
    assert twin["never_matched"] == ["vip-agent"]
    by_name = {rule["name"]: rule for rule in twin["rules"]}
    assert list(by_name) == ["refunds", "joins", "vip-agent", "all-refunds-audited"]
    # all-refunds-audited matched too, though refunds had already taken crm: it counts.
    assert {name: rule["matched"] for name, rule in by_name.items()} == {
        "refunds": 1,
        "joins": 1,
        "vip-agent": 0,
        "all-refunds-audited": 1,
    }
    assert by_name["vip-agent"]["last_matched_at"] is None
    assert by_name["refunds"]["send_to"] == ["crm"]
    assert by_name["refunds"]["last_matched_at"] is not None
    assert twin["former_rules"] == []

    week = await console.json("/rules?period=7d")
    assert {rule["name"]: rule["matched"] for rule in week["rules"]}["refunds"] == 2

    page = await console.page("/rules")
    assert '<strong id="unmatched-count">2</strong>' in page
    never = re.search(r'<ul class="never-matched">(.*?)</ul>', page, re.S)
    assert never is not None and re.findall(r"<li>(.*?)</li>", never.group(1)) == ["vip-agent"]
    row = re.search(r'<th scope="row">refunds</th>\s*<td>crm</td>\s*<td class="number">(\d+)', page)
    assert row is not None and row.group(1) == "1"
    assert '<a href="?period=24h" aria-current="page">Last 24h</a>' in page
    assert console.relay.app[STATE].clock() == now


async def test_a_rule_no_longer_configured_is_shown_apart(
    open_console: ConsoleFactory, receiver: FakeReceiver, store_section: str
) -> None:
    console = await open_console(console_yaml(receiver, store_section, rules=RULES))
    await post(console.relay, "room.join", "", "e-join")
    state = console.relay.app[STATE]
    kept = [rule for rule in state.config.rules if rule.name != "joins"]
    state.config = dataclasses.replace(state.config, rules=tuple(kept))  # as a reload would
    twin = await console.json("/rules")
    assert [rule["name"] for rule in twin["former_rules"]] == ["joins"]
    assert twin["former_rules"][0]["matched"] == 1
    assert "joins" not in [rule["name"] for rule in twin["rules"]]
    page = await console.page("/rules")
    assert '<h2 id="former-heading">No longer configured</h2>' in page


async def test_a_period_the_console_cannot_show_is_an_error_naming_it(
    open_console: ConsoleFactory, receiver: FakeReceiver
) -> None:
    text = console_yaml(receiver, rules=RULES).replace(
        "  username: ops\n", "  username: ops\n  history: 7d\n"
    )
    console = await open_console(text)
    for query, said in (
        ("period=1y", "period: must be one of 24h, 7d, 30d, got '1y'"),
        ("period=30d", "period: 30d is longer than console.history (7d)"),
    ):
        response = await console.get(f"/rules?{query}", as_json=True)
        assert response.status == 400
        assert await response.json() == {"error": said}
        response = await console.get(f"/rules?{query}")
        assert response.status == 400
        assert said in html.unescape(await response.text())
    page = await console.page("/rules")
    assert 'href="?period=30d"' not in page
    assert 'href="?period=7d"' in page


async def test_without_a_console_no_counter_is_kept(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    text = console_yaml(receiver, rules=RULES)
    relay = await relay_client(text[: text.index("console:")])
    await post(relay, "chat.push", "a refund please", "e-refund")
    assert await relay.app[STATE].store.rule_hits(0) == []
