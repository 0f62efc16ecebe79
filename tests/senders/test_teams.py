"""Teams: the Adaptive Card, its escaping and size, answers and secrets, against a fake trigger."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from relay.config.model import TeamsDestination
from relay.events import event_from_payload
from relay.formatting import TRUNCATION_MARKER
from relay.notification import Notification
from relay.secrets import Secret
from relay.senders.base import DeliveryError, Sender, SenderContext, Sent
from relay.senders.teams import (
    BODY_LIMIT_BYTES,
    FACT_TITLE_BYTES,
    FACT_VALUE_BYTES,
    TITLE_BYTES,
    TeamsSender,
    escape,
)
from tests.senders.test_account_layouts import EXPECTED, VIDEO_URL, notification_of
from tests.senders.test_http import STATUS_TABLE
from tests.support.bithuman import AGENT
from tests.support.fake_teams import (
    QUERY,
    SIGNATURE,
    WORKFLOW_PATH,
    FakeTeams,
    Received,
    Reply,
    card_errors,
)
from tests.support.notifications import chat, notification
from tests.support.secrets import watch
from tests.support.smtp import free_port

INJECTION = "<at>x</at> [link](http://x) **bold**"
INJECTION_SHOWN = "&lt;at&gt;x&lt;/at&gt; \\[link\\](http://x) \\*\\*bold\\*\\*"
# truncate()'s marker, escaped like the rest: Teams shows "… [truncated]".
MARKER_SHOWN = TRUNCATION_MARKER.replace("[", "\\[").replace("]", "\\]")
FOOTER = "· rule r · 2023-11-14 22:13:20 UTC"


@pytest.fixture
async def teams() -> AsyncIterator[FakeTeams]:
    watch(SIGNATURE)  # the session fails if it ever reaches a log
    fake = await FakeTeams().start()
    yield fake
    await fake.close()


def teams_sender(url: str, http: aiohttp.ClientSession | None) -> TeamsSender:
    destination = TeamsDestination(name="teams", webhook_url=Secret(url))
    return TeamsSender(destination, SenderContext(http=http))


@pytest.fixture
def sender(teams: FakeTeams, http: aiohttp.ClientSession) -> Sender:
    return teams_sender(teams.url(), http)


@dataclass(frozen=True)
class Card:
    """What a card shows, element by element."""

    title: str
    text: str | None
    facts: list[tuple[str, str]]
    footer: str
    actions: list[dict[str, Any]]


def assert_valid(received: Received) -> Card:
    """Check one request is a Workflows message carrying a valid card; return what it shows."""
    assert received.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(received.raw) <= BODY_LIMIT_BYTES
    assert received.path_qs == f"{WORKFLOW_PATH}?{QUERY}"  # sent as configured
    card = received.card()
    assert received.body == {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
             "content": card}
        ],
    }  # fmt: skip
    assert card_errors(card) == []
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.5")
    assert b"msteams" not in received.raw  # no mention entities, nor anything else
    return shown(card)


def shown(card: dict[str, Any]) -> Card:
    title, *middle, footer = card["body"]
    assert title.keys() == {"type", "text", "weight", "size", "wrap"}
    assert (title["type"], title["weight"], title["size"], title["wrap"]) == (
        "TextBlock", "bolder", "medium", True,
    )  # fmt: skip
    assert footer == {"type": "TextBlock", "text": footer["text"], "size": "small",
                      "isSubtle": True, "wrap": True}  # fmt: skip
    texts = [block for block in middle if block["type"] == "TextBlock"]
    fact_sets = [block for block in middle if block["type"] == "FactSet"]
    assert len(texts) <= 1 and len(fact_sets) <= 1 and len(middle) == len(texts) + len(fact_sets)
    assert all(
        block == {"type": "TextBlock", "text": block["text"], "wrap": True} for block in texts
    )
    return Card(
        title=title["text"],
        text=texts[0]["text"] if texts else None,
        facts=[(f["title"], f["value"]) for s in fact_sets for f in s["facts"]],
        footer=footer["text"],
        actions=card.get("actions", []),
    )


# Layouts --------------------------------------------------------------------------------


def test_the_schema_check_catches_what_teams_would_refuse() -> None:
    """Without the reasons, a wrong card would only say "not valid under any of the given
    schemas"; and mention entities (msteams) are no part of a card relay may send."""
    bad = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "msteams": {"entities": []},
        "body": [
            {"type": "TextBlock", "wrap": True},
            {"type": "FactSet", "facts": [{"title": "a"}]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "x", "url": "not a url"}],
    }
    assert card_errors(bad) == [
        ": Additional properties are not allowed ('msteams' was unexpected)",
        "actions/0/url: 'not a url' is not a 'uri-reference'",
        "body/0: 'text' is a required property",
        "body/1/facts/0: 'value' is a required property",
    ]


@pytest.mark.parametrize(
    ("kind", "data", "title", "text", "facts"),
    [
        ("room.join", {"room_name": "lobby", "participant_count": 2, "session_id": "s1"},
         "A user joined lobby", "2 participant(s) in the room",
         [("Room", "lobby"), ("Session", "s1")]),
        ("chat.push", {"role": "user", "message": "hi there", "session_id": "s1"},
         "New chat message from user", "hi there", [("Session", "s1")]),
        ("agent.error", {"reason": "boom", "retry_count": 3},
         "bitHuman event agent.error", None, [("reason", "boom"), ("retry\\_count", "3")]),
    ],
)  # fmt: skip
async def test_default_cards_per_event_type(
    kind: str,
    data: dict[str, Any],
    title: str,
    text: str | None,
    facts: list[tuple[str, str]],
    sender: Sender,
    teams: FakeTeams,
) -> None:
    assert await sender.send(notification(kind, **data)) == Sent()

    [received] = teams.delivered
    assert received.status == 202
    card = assert_valid(received)
    assert card == Card(title, text, [("Agent", "agent\\_abc123"), *facts], f"{kind} {FOOTER}", [])


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_the_test_button_and_each_account_event(
    kind: str, sender: Sender, teams: FakeTeams
) -> None:
    expected = EXPECTED[kind]

    await sender.send(notification_of(kind))

    card = assert_valid(teams.delivered[0])
    assert card.title == expected.title
    assert card.text == escape(expected.text)
    agent = [("Agent", AGENT)] if expected.agent else []
    assert card.facts == agent + [(label, escape(value)) for label, value in expected.fields]
    assert card.footer.startswith(f"{kind} · rule agents · ")
    watch_video = [{"type": "Action.OpenUrl", "title": "Watch the video", "url": VIDEO_URL}]
    assert card.actions == (watch_video if expected.link else [])


def digest(*messages: str) -> Notification:
    """A conversation's digest: a user's chat messages, one a second."""
    events = tuple(
        event_from_payload(
            {"agent_id": "agent_abc123", "event_type": "chat.push", "timestamp": 1.7e9 + i,
             "data": {"role": "user", "message": message, "session_id": "s1"}},
            event_id=f"e{i}", received_at=0.0,
        )
        for i, message in enumerate(messages)
    )  # fmt: skip
    return Notification(event=events[0], rule="r", conversation="s1", transcript=events)


async def test_a_digest_shows_its_transcript_a_line_each(sender: Sender, teams: FakeTeams) -> None:
    await sender.send(digest("hello", "I need **help**", "- with <at>this</at>"))

    card = assert_valid(teams.delivered[0])
    assert card.title == "Conversation with agent\\_abc123: 3 events"
    # Markdown joins lines one newline apart: two keep each its own.
    assert card.text == (
        "22:13:20 user: hello\n\n"
        "22:13:21 user: I need \\*\\*help\\*\\*\n\n"
        "22:13:22 user: - with &lt;at&gt;this&lt;/at&gt;"
    )
    assert card.facts == [("Agent", "agent\\_abc123"), ("Session", "s1")]
    assert card.footer == "digest · rule r · from 2023-11-14 22:13:20 UTC"


async def test_a_long_digest_shows_whole_lines_then_how_many_more(
    sender: Sender, teams: FakeTeams
) -> None:
    await sender.send(digest(*(f"message {i} " + "<" * 100 for i in range(1_000))))

    card = assert_valid(teams.delivered[0])
    assert card.text is not None
    *lines, more = card.text.split("\n\n")
    assert more == f"… and {1_000 - len(lines)} more"
    last = len(lines) - 1
    when = time.strftime("%H:%M:%S", time.gmtime(1.7e9 + last))
    assert lines[-1] == f"{when} user: message {last} " + "&lt;" * 100


async def test_a_rule_template_sets_title_and_text(sender: Sender, teams: FakeTeams) -> None:
    templated = Notification(
        event=chat("hi").event, rule="r", title="Order **42** for <at>Sam</at>",
        text="Steps:\n- one\n2. two",
    )  # fmt: skip

    await sender.send(templated)

    card = assert_valid(teams.delivered[0])
    assert card.title == "Order \\*\\*42\\*\\* for &lt;at&gt;Sam&lt;/at&gt;"
    assert card.text == "Steps:\n\n\\- one\n\n2\\. two"


# Escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("<at>x</at>", "&lt;at&gt;x&lt;/at&gt;"),
        ("[link](http://x)", "\\[link\\](http://x)"),
        ("**bold**", "\\*\\*bold\\*\\*"),
        (INJECTION, INJECTION_SHOWN),
        ("_it_ ~del~ `code` back\\slash", "\\_it\\_ \\~del\\~ \\`code\\` back\\\\slash"),
        ("- item\r\n1. first\r# head\n+ more", "\\- item\n\n1\\. first\n\n\\# head\n\n\\+ more"),
        ("&lt;at&gt;x&lt;/at&gt;", "&amp;lt;at&amp;gt;x&amp;lt;/at&amp;gt;"),
        ("{{DATE(2017-02-14T06:00:00Z, SHORT)}}", "{\u200b{DATE(2017-02-14T06:00:00Z, SHORT)}}"),
        ("bell\x07 and esc\x1b[31m", "bell\ufffd and esc\ufffd\\[31m"),
    ],
)
async def test_a_chat_message_arrives_as_typed(
    message: str, text: str, sender: Sender, teams: FakeTeams
) -> None:
    await sender.send(chat(message))

    card = assert_valid(teams.delivered[0])
    assert card.text == text
    assert b"<at>" not in teams.delivered[0].raw


async def test_every_piece_of_event_content_is_escaped(sender: Sender, teams: FakeTeams) -> None:
    """Title, fact titles and values and the footer come from the event too."""
    await sender.send(notification("agent.**odd**<at>x</at>", **{"<at>k</at>": INJECTION}))

    card = assert_valid(teams.delivered[0])
    kind = "agent.\\*\\*odd\\*\\*&lt;at&gt;x&lt;/at&gt;"
    assert card.title == f"bitHuman event {kind}"
    assert card.facts == [("Agent", "agent\\_abc123"), ("&lt;at&gt;k&lt;/at&gt;", INJECTION_SHOWN)]
    assert card.footer == f"{kind} {FOOTER}"


# Size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    ["a" * 40_000, "😀" * 10_000, "<" * 40_000, '"*' * 20_000, "\n" * 40_000],
    ids=["ascii", "emoji", "escaped-4x", "json-escaped", "newlines"],
)
async def test_a_40_kb_message_is_cut_within_the_limit(
    message: str, sender: Sender, teams: FakeTeams
) -> None:
    assert len(message.encode()) >= 40_000

    await sender.send(chat(message))

    [received] = teams.delivered
    card = assert_valid(received)
    assert BODY_LIMIT_BYTES - 20 <= len(received.raw) <= BODY_LIMIT_BYTES  # cut, not gutted
    assert received.headers["Content-Length"] == str(len(received.raw))
    assert card.text is not None and card.text.endswith(MARKER_SHOWN)
    assert card.text.startswith(escape(message[:500]))
    assert card.facts == [("Agent", "agent\\_abc123"), ("Session", "s1")]


async def test_everything_long_at_once_still_fits(sender: Sender, teams: FakeTeams) -> None:
    data = {f"<key{i}>": "<&>" * 5_000 for i in range(12)}
    event = notification("agent.report", **data).event
    huge = Notification(event=event, rule="r", title="T" * 5_000, text="😀" * 20_000)

    await sender.send(huge)

    card = assert_valid(teams.delivered[0])
    assert card.title.endswith(MARKER_SHOWN) and len(card.title.encode()) <= TITLE_BYTES
    assert len(card.facts) == 10
    assert card.facts[-1] == ("…", "and 4 more")  # the facts left out are counted
    for title, value in card.facts[1:-1]:
        assert len(json.dumps(title, ensure_ascii=False).encode()) <= FACT_TITLE_BYTES
        assert len(json.dumps(value, ensure_ascii=False).encode()) <= FACT_VALUE_BYTES
        assert value.endswith(MARKER_SHOWN) and value.startswith("&lt;&amp;&gt;")
    assert card.text is not None and card.text.endswith(MARKER_SHOWN)
    assert len(card.text) > 1_000  # the text keeps the room the rest leaves


async def test_a_long_video_link_card_fits(sender: Sender, teams: FakeTeams) -> None:
    url = "https://videos.example.com/" + "v" * 1_900
    data = {"agent_id": AGENT, "job_id": "<" * 9_000, "model": "*" * 9_000, "video_url": url}
    notice = dataclasses.replace(notification_of("video.completed", data), text="x" * 40_000)

    await sender.send(notice)

    card = assert_valid(teams.delivered[0])
    assert card.actions == [{"type": "Action.OpenUrl", "title": "Watch the video", "url": url}]


# Answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retryable"), [(202, None), *STATUS_TABLE])
async def test_statuses_follow_the_shared_table(
    status: int, retryable: bool | None, sender: Sender, teams: FakeTeams
) -> None:
    teams.script(status)

    if retryable is None:
        assert await sender.send(chat()) == Sent()
    else:
        with pytest.raises(DeliveryError) as caught:
            await sender.send(chat())
        assert caught.value.retryable is retryable
        assert str(caught.value).startswith(f"Teams answered {status}")
    assert len(teams.requests) == 1  # a sender never retries itself


@pytest.mark.parametrize(
    ("answer", "message", "retryable", "retry_after_s"),
    [
        (Reply(400, '{"error":{"code":"InvalidRequestContent","message":"bad card"}}'),
         'Teams answered 400: {"error":{"code":"InvalidRequestContent","message":"bad card"}}',
         False, None),
        (Reply(429, "slow down", {"Retry-After": "7"}), "Teams answered 429: slow down", True, 7.0),
        (Reply(503, "", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
         "Teams answered 503", True, 0.0),
        (Reply(500, "line one\n\tline two\x1b[31m" + "x" * 1_000),
         "Teams answered 500: line one line two\ufffd[31m" + "x" * 178, True, None),
        (Reply(302, "", {"Location": "/elsewhere"}),
         "Teams answered 302: redirects are not followed; set webhook_url to where it points",
         False, None),
    ],
)  # fmt: skip
async def test_a_refusal_says_what_teams_answered(
    answer: Reply,
    message: str,
    retryable: bool,
    retry_after_s: float | None,
    sender: Sender,
    teams: FakeTeams,
) -> None:
    teams.script(answer)

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat())

    assert str(caught.value) == message
    assert (caught.value.retryable, caught.value.retry_after_s) == (retryable, retry_after_s)
    assert [r.path_qs for r in teams.requests] == [f"{WORKFLOW_PATH}?{QUERY}"]  # not followed


# Secrets and the protocol ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("echo", "detail"),
    [
        ("bad sig for {url} ({decoded})",
         "bad sig for <secret> (api-version=1&sp=<secret>&sv=1.0&sig=<secret>)"),
        # Cut to 200 characters only once redacted: no first half of the signature either.
        ("x" * 190 + "{sig}", "x" * 190 + "<secret>"),
        ("x" * 395 + "{sig}", "x" * 200),
    ],
)  # fmt: skip
async def test_an_answer_echoing_the_url_does_not_leak_its_signature(
    echo: str, detail: str, sender: Sender, teams: FakeTeams
) -> None:
    decoded = f"{WORKFLOW_PATH}?{QUERY}".replace("%2F", "/").split("?")[1]
    teams.script(Reply(401, echo.format(url=teams.url(), decoded=decoded, sig=SIGNATURE)))

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat())

    assert str(caught.value) == f"Teams answered 401: {detail}"
    assert SIGNATURE[:8] not in repr(caught.value)


async def test_a_network_failure_is_retryable_and_hides_the_url(
    http: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}{WORKFLOW_PATH}?{QUERY}"

    with pytest.raises(DeliveryError) as caught:
        await teams_sender(url, http).send(chat())

    assert caught.value.retryable is True
    assert str(caught.value).startswith("cannot connect to Teams")
    assert WORKFLOW_PATH not in str(caught.value) and SIGNATURE not in repr(caught.value)


async def test_preview_shows_exactly_what_is_sent_with_the_url_masked(
    sender: Sender, teams: FakeTeams
) -> None:
    preview = sender.preview(chat(INJECTION))
    await sender.send(chat(INJECTION))

    first, body = preview.split("\n", 1)
    assert first == f"POST http://127.0.0.1:{teams.port}/<secret>"
    assert json.loads(body) == teams.delivered[0].body
    assert preview.endswith("}\n") and SIGNATURE not in preview


async def test_the_sender_keeps_to_the_protocol(teams: FakeTeams) -> None:
    sender: Sender = teams_sender(teams.url(), None)

    assert (sender.name, sender.updates_parents, sender.wait_s()) == ("teams", False, 0.0)
    assert sender.limit is not None and sender.limit.rate_per_s is None  # 429s pause it
    assert sender.limit != teams_sender(teams.url() + "x", None).limit  # one per webhook
    assert SIGNATURE not in repr(vars(sender))
    await sender.update_parent("thread", 3, 0.0)  # nothing to update
    await sender.close()  # nothing of its own to close
    with pytest.raises(DeliveryError, match="no HTTP session") as caught:
        await sender.send(chat())
    assert caught.value.retryable is False
