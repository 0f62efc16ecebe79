"""SPEC 4.4: the default layouts of the conversation signals, read at a glance, on every
destination that a person reads: Slack (blocks checked with slack-sdk), Discord (Discord's
schema), Teams (the Adaptive Card schema), email and the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.events import event_from_payload
from relay.formatting import summarize
from relay.notification import Notification
from tests.senders.conftest import Fakes
from tests.senders.test_account_layouts import send_everywhere
from tests.senders.test_discord import assert_valid
from tests.senders.test_email import parts
from tests.senders.test_slack import assert_valid_blocks, blocks_of, texts
from tests.senders.test_teams import assert_valid as assert_valid_card
from tests.senders.test_teams import teams, teams_sender  # noqa: F401 (a fixture)
from tests.support.fake_teams import FakeTeams

AGENT = "A80HVD8577"
SESSION = "8d947f06-2c36-4d98-aafe-b232da2433ff"

UNANSWERED = {
    "session_id": SESSION,
    "room_name": "room-A80HVD8577-qtrJ-cOFR",
    "message": "Hello, I need help with my order",
    "asked_at": 1790607268.9,
    "waited_s": 120.4,
}
ENDED = {
    "session_id": SESSION,
    "room_name": "room-A80HVD8577-qtrJ-cOFR",
    "started_at": 1790607253.5,
    "last_event_at": 1790607493.5,
    "duration_s": 240.0,
    "visitor_messages": 5,
    "agent_messages": 4,
    "first_answer_s": 3.2,
    "unanswered": False,
}


def signal(kind: str, data: dict[str, Any]) -> Notification:
    """A signal as relay raises it: a session event's shape, its data as SPEC 4.4 lists."""
    payload = {"agent_id": AGENT, "event_type": kind, "data": data, "timestamp": 1790607500.0}
    event = event_from_payload(payload, event_id="sig-1", received_at=1790607500.0)
    return Notification(event=event, rule="no-answer")


@pytest.mark.parametrize(
    ("kind", "data", "title", "text"),
    [
        (
            "conversation.unanswered",
            UNANSWERED,
            f"No answer for 2m from agent {AGENT}",
            "'Hello, I need help with my order'",
        ),
        (
            "conversation.ended",
            ENDED,
            f"Conversation with {AGENT} ended after 4m",
            "5 visitor messages, 4 answers, first answer after 3s",
        ),
        (
            "conversation.ended",
            {**ENDED, "visitor_messages": 1, "agent_messages": 0, "first_answer_s": None,
             "unanswered": True},
            f"Conversation with {AGENT} ended after 4m",
            "1 visitor message, 0 answers, no answer",
        ),
        (
            "conversation.ended",
            {**ENDED, "unanswered": True},
            f"Conversation with {AGENT} ended after 4m",
            "5 visitor messages, 4 answers, first answer after 3s, the last visitor message"
            " got no answer",
        ),
        (
            "conversation.unanswered",
            {"session_id": SESSION, "waited_s": "soon"},  # not a number: said without it
            f"No answer from agent {AGENT}",
            "",
        ),
    ],
)  # fmt: skip
def test_a_signal_reads_at_a_glance(kind: str, data: dict[str, Any], title: str, text: str) -> None:
    summary = summarize(signal(kind, data))

    assert (summary.title, summary.text) == (title, text)
    assert ("Session", SESSION) in summary.fields


@pytest.mark.parametrize(("kind", "data"), [
    ("conversation.unanswered", UNANSWERED), ("conversation.ended", ENDED),
])  # fmt: skip
async def test_every_destination_shows_a_signal_validly(
    fakes: Fakes,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    teams: FakeTeams,  # noqa: F811
    kind: str,
    data: dict[str, Any],
) -> None:
    notice = signal(kind, data)
    summary = summarize(notice)
    printed = await send_everywhere(fakes, http, tmp_path, notice)
    await teams_sender(teams.url(), http).send(notice)

    for received in fakes.slack.delivered:
        blocks = blocks_of(received)
        assert_valid_blocks(blocks)
        assert texts(blocks, "header") == [summary.title]
    embed = assert_valid(fakes.discord.delivered[0])
    assert embed["title"].replace("\\", "") == summary.title
    [card_request] = teams.delivered
    card = assert_valid_card(card_request)
    assert card.title == summary.title
    [mail] = fakes.handler.mails
    assert mail.message["Subject"] == summary.title
    assert summary.text in parts(mail)[0]
    assert printed.startswith(f"== {summary.title} ==\n{summary.text}\n")
