"""Rule templates: rendered per event; one that fails on an event still delivers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relay.config import load_text
from relay.formatting import summarize
from relay.notification import Notification, as_digest, build_notification
from tests.conftest import RelayClientFactory
from tests.support.notifications import notification
from tests.support.relay import ROOM_JOIN, Output, event_body, signed_headers

CONFIG = """
verify:
  secrets: ["${SECRET}"]
destinations:
  stdout: { type: console }
rules:
  - name: everything
    send_to: [stdout]
    template: quoted
templates:
  quoted:
    title: "{{ agent_id }} says"
    text: "{{ data.message | upper }} ({{ data.session_id }})"
"""


async def blocks(output: Output, count: int) -> list[str]:
    async with asyncio.timeout(5):
        while len(output.blocks()) < count:
            await asyncio.sleep(0.01)
    return output.blocks()


async def test_template_renders_title_and_text(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(CONFIG)
    body = event_body(message="refund please", session="s9")
    assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status == 200
    [block] = await blocks(output, 1)
    assert block.startswith("== agent_abc123 says ==\nREFUND PLEASE (s9)\n")


async def test_a_template_failing_on_one_event_still_delivers_the_default_layout(
    relay_client: RelayClientFactory, output: Output, caplog: pytest.LogCaptureFixture
) -> None:
    client = await relay_client(CONFIG)
    caplog.set_level(logging.WARNING, logger="relay.delivery")
    # A room.join has no data.message: strict undefined makes the template fail.
    response = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN))
    assert response.status == 200
    [block] = await blocks(output, 1)
    assert block.startswith("== A user joined customer-support ==")
    assert any(
        "template quoted failed: 'dict object' has no attribute 'message'" in record.message
        and "sending the default layout" in record.message
        for record in caplog.records
    ), [r.message for r in caplog.records]


def digest_of(template_yaml: str, messages: list[str]) -> Notification:
    """A digest of one chat message per text, shaped by the template `t`."""
    config = load_text(
        f"templates:\n  t:\n{template_yaml}destinations: {{ s: {{ type: console }} }}\n"
        "rules: [ { name: r, send_to: [s], digest: 1m, template: t } ]\n",
        "test.yaml",
    )
    events = tuple(notification(role="user", message=m, session_id="s1").event for m in messages)
    template = config.templates["t"]
    return as_digest(build_notification(events[0], "r", template), events, template)


def test_a_digest_line_the_template_fails_on_keeps_the_default_line() -> None:
    digest = digest_of(
        '    title: "Chat"\n    text: "{{ 100 // (data.message | length - 3) }}"\n',
        ["hello", "abc", "world"],
    )

    summary = summarize(digest)
    assert summary.title == "Chat"
    first, second, third = summary.lines
    assert (first, third) == ("50", "50")
    assert second.endswith(" user: abc")  # 100 // 0 on this event: its default line


def test_a_digest_keeps_its_title_when_the_text_fails_on_the_first_event() -> None:
    digest = digest_of(
        '    title: "Chat with {{ agent_id }}"\n    text: ">> {{ data.extra }}"\n',
        ["a", "b"],
    )

    assert summarize(digest).title == "Chat with agent_abc123"
