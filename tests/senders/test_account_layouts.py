"""SPEC 4: every destination's default layout for the Test button and each account event.

Each notification is sent for real: to a fake Slack (both ways of connecting, the blocks
checked with slack-sdk's models), a fake Discord (every payload checked against Discord's
published schema), an aiosmtpd server, and the console.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.config.model import ConsoleDestination
from relay.events import event_from_payload
from relay.notification import Notification
from relay.senders import SenderContext, build_senders
from tests.senders.conftest import Fakes
from tests.senders.test_discord import assert_valid
from tests.senders.test_email import parts
from tests.senders.test_notifications import config_for
from tests.senders.test_slack import assert_valid_blocks, blocks_of, texts
from tests.support.bithuman import ACCOUNT_DATA, AGENT

VIDEO_URL = ACCOUNT_DATA["video.completed"]["video_url"]
TEST_SAYS = "This is a test from bitHuman: it reached relay, and relay's rules sent it here"


@dataclass(frozen=True)
class Expected:
    title: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()
    link: str | None = None
    agent: bool = True  # a ping names no agent


EXPECTED: dict[str, Expected] = {
    "test": Expected("Test event from bitHuman", f"{TEST_SAYS} (the dashboard's Test button)."),
    "ping": Expected(
        "Test ping from bitHuman", f"{TEST_SAYS} (an account webhook ping).", agent=False
    ),
    "agent.ready": Expected(f"Agent {AGENT} is ready", "The agent finished generating."),
    "agent.failed": Expected(
        f"Agent {AGENT} failed", "Reason: Face not detected in the source image"
    ),
    "video.completed": Expected(
        f"Video completed for agent {AGENT}",
        "A 12.5 s video is ready.",
        (("Job", "job_7d2f0c1a9b"), ("Model", "essence"), ("Credits", "25")),
        VIDEO_URL,
    ),
    "video.failed": Expected(
        f"Video failed for agent {AGENT}",
        "Reason: Audio file could not be decoded",
        (("Job", "job_3e4f5a6b7c"),),
    ),
}


def notification_of(kind: str, data: dict[str, Any] | None = None) -> Notification:
    """The notification the worker builds for the stored body of one event."""
    if kind == "test":  # the Test button's body: no data, no timestamp
        payload: dict[str, Any] = {"event_type": "test", "agent_id": AGENT}
    else:
        payload = {"id": "evt_1", "event": kind, "created": 1780417371, "data": data}
        if data is None:
            payload["data"] = ACCOUNT_DATA[kind]
    event = event_from_payload(payload, event_id="evt_1", received_at=1780417371.0)
    return Notification(event=event, rule="agents")


async def send_everywhere(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path, notice: Notification
) -> str:
    """Send one notification to every fake destination and the console; return the console's."""
    config = config_for(fakes.slack.port, fakes.discord.port, fakes.smtp.port, tmp_path)
    console = io.StringIO()
    senders = build_senders(config.destinations, SenderContext(http=http))
    for sender in senders.values():
        await sender.send(notice)
    stdout = {"stdout": ConsoleDestination(name="stdout")}
    await build_senders(stdout, SenderContext(stdout=console))["stdout"].send(notice)
    return console.getvalue()


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_each_event_has_a_readable_default_layout_everywhere(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path, kind: str
) -> None:
    expected = EXPECTED[kind]
    printed = await send_everywhere(fakes, http, tmp_path, notification_of(kind))

    # Slack: an incoming webhook and a bot token, the same blocks.
    assert len(fakes.slack.delivered) == 2
    for received in fakes.slack.delivered:
        blocks = blocks_of(received)
        assert_valid_blocks(blocks)
        assert texts(blocks, "header") == [expected.title]
        sections = texts(blocks, "section")
        assert sections[0] == expected.text
        assert (f"*Agent*\n{AGENT}" in sections) is expected.agent
        for label, value in expected.fields:
            assert f"*{label}*\n{value}" in sections
        links = [s for s in sections if s.startswith("<http")]
        wanted = [f"<{VIDEO_URL.replace('&', '&amp;')}|Watch the video>"]
        assert links == (wanted if expected.link else [])
        assert received.body["text"] == f"{expected.title}: {expected.text}"

    # Discord: the schema, the limits, and the title linking to the video.
    [posted] = fakes.discord.delivered
    embed = assert_valid(posted)
    assert embed["title"].replace("\\", "") == expected.title
    assert embed["description"].replace("\\", "") == expected.text
    assert embed.get("url") == expected.link
    fields = {f["name"]: f["value"].replace("\\", "") for f in embed["fields"]}
    assert fields.get("Agent") == (AGENT if expected.agent else None)
    assert all(fields[label] == value for label, value in expected.fields)

    # Email: the title is the subject, the link is a real anchor in the HTML part.
    [mail] = fakes.handler.mails
    assert mail.message["Subject"] == expected.title
    text, html = parts(mail)
    assert expected.text in text
    if expected.link:
        assert f"Watch the video: {expected.link}" in text
        assert f"<a href='{expected.link.replace('&', '&amp;')}'>Watch the video</a>" in html
    else:
        assert "<a " not in html

    # Console.
    agent_line = f"  Agent: {AGENT}\n" if expected.agent else ""
    assert printed.startswith(f"== {expected.title} ==\n{expected.text}\n{agent_line}")
    assert (f"  Watch the video: {VIDEO_URL}\n" in printed) is bool(expected.link)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://ok.example.com/a b.mp4",
        "https://ok.example.com/x.mp4\n<!channel>",
        "//no-scheme.example.com/x.mp4",
        42,
    ],
)
async def test_a_video_link_that_is_not_http_is_never_a_link(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path, url: object
) -> None:
    data = {**ACCOUNT_DATA["video.completed"], "video_url": url}
    printed = await send_everywhere(fakes, http, tmp_path, notification_of("video.completed", data))
    note = "A 12.5 s video is ready. Its link is not an http(s) URL, so it is not shown."
    for received in fakes.slack.delivered:
        assert_valid_blocks(blocks_of(received))
        assert "Watch the video" not in received.raw.decode()
    embed = assert_valid(fakes.discord.delivered[0])
    assert "url" not in embed
    assert "Watch the video" not in json.dumps(fakes.discord.delivered[0].body)
    _, html = parts(fakes.handler.mails[0])
    assert "<a " not in html
    assert note in printed


async def test_a_link_cannot_break_out_of_slacks_link_syntax(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = "https://v.example.com/x.mp4?a=<!channel>|label>&b=1"
    data = {**ACCOUNT_DATA["video.completed"], "video_url": url}
    await send_everywhere(fakes, http, tmp_path, notification_of("video.completed", data))
    for received in fakes.slack.delivered:
        [link] = [s for s in texts(blocks_of(received), "section") if s.startswith("<http")]
        assert link == (
            "<https://v.example.com/x.mp4?a=&lt;!channel&gt;%7Clabel&gt;&amp;b=1|Watch the video>"
        )


async def test_an_unknown_account_event_lists_its_data(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    notice = notification_of("agent.renamed", {"agent_id": AGENT, "name": "Sales <b>bot</b>"})
    printed = await send_everywhere(fakes, http, tmp_path, notice)
    assert printed.startswith(f"== bitHuman event agent.renamed ==\n  Agent: {AGENT}\n")
    assert "  name: Sales <b>bot</b>\n" in printed
    _, html = parts(fakes.handler.mails[0])
    assert "Sales &lt;b&gt;bot&lt;/b&gt;" in html
    assert_valid(fakes.discord.delivered[0])
