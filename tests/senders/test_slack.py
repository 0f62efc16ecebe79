"""Slack: Block Kit layouts, escaping, limits and failures, against a fake Slack on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from slack_sdk.models.blocks import Block

from relay.formatting import TRUNCATION_MARKER
from relay.notification import Notification
from relay.senders import DeliveryError, Sender, SenderContext, build_senders
from relay.senders.base import Sent
from relay.senders.slack import SECTION_LIMIT, transcript_sections
from tests.support.fake_slack import (
    BOT_TOKEN,
    WEBHOOK_SECRET,
    FakeSlack,
    Received,
    Reply,
    api_error,
    rate_limited,
)
from tests.support.notifications import chat, notification
from tests.support.relay import make_config

INJECTION = "<!channel> <!here> <@U123> <https://x|y> & done"
RAW_CONTROLS = ["<!channel>", "<!here>", "<@U123>", "<https://x|y>"]


class Session:
    """A real ClientSession that notes every URL it requests (to prove it is the one used)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._started)
        self.session = aiohttp.ClientSession(trace_configs=[trace])

    async def _started(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        self.urls.append(str(params.url))


@pytest.fixture
async def traced() -> AsyncIterator[Session]:
    traced = Session()
    async with traced.session:
        yield traced


def senders(slack: FakeSlack, http: aiohttp.ClientSession, tmp_path: Path) -> dict[str, Sender]:
    """Return a webhook sender ("hook") and a bot-token sender ("bot") aimed at the fake."""
    config = make_config(
        f"""
        destinations:
          hook: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}
          bot: {{ type: slack, token: "${{TOKEN}}", channel: "#alerts", api_url: "{slack.api_url}" }}
        """,  # noqa: E501
        tmp_path,
        {"TOKEN": BOT_TOKEN},
    )
    return build_senders(config.destinations, SenderContext(http=http))


def blocks_of(received: Received) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = received.body["blocks"]
    return blocks


def assert_valid_blocks(blocks: list[dict[str, Any]]) -> None:
    """Check every block with slack-sdk's own model validation."""
    assert 0 < len(blocks) <= 50
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()


def texts(blocks: list[dict[str, Any]], block_type: str) -> list[str]:
    found: list[str] = []
    for block in blocks:
        if block["type"] != block_type:
            continue
        if "text" in block:
            found.append(block["text"]["text"])
        found.extend(f["text"] for f in block.get("fields", []))
        found.extend(e["text"] for e in block.get("elements", []))
    return found


@pytest.mark.parametrize(
    ("kind", "data", "header", "section"),
    [
        (
            "room.join",
            {"room_name": "customer-support", "participant_count": 3, "session_id": "s1"},
            "A user joined customer-support",
            "3 participant(s) in the room",
        ),
        ("chat.push", {"role": "user", "message": "I need help"}, "New chat message from user",
         "I need help"),
        ("agent.error", {"reason": "boom", "code": 7}, "bitHuman event agent.error", None),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["hook", "bot"])
async def test_default_layouts_are_valid_block_kit_with_a_text_fallback(
    mode: str,
    kind: str,
    data: dict[str, Any],
    header: str,
    section: str | None,
    slack: FakeSlack,
    traced: Session,
    tmp_path: Path,
) -> None:
    sender = senders(slack, traced.session, tmp_path)[mode]

    assert await sender.send(notification(kind, **data)) == Sent()

    [received] = slack.delivered
    assert received.kind == ("webhook" if mode == "hook" else "api")
    blocks = blocks_of(received)
    assert_valid_blocks(blocks)
    assert texts(blocks, "header") == [header]
    assert received.body["text"].startswith(header)
    sections = texts(blocks, "section")
    assert "*Agent*\nagent_abc123" in sections
    if section is not None:
        assert section in sections
        assert section in received.body["text"]
    if kind == "agent.error":
        assert "*reason*\nboom" in sections
    assert any(kind in t for t in texts(blocks, "context"))
    assert traced.urls == [
        slack.webhook_url() if mode == "hook" else slack.api_url + "chat.postMessage"
    ]


async def test_bot_sender_posts_with_bearer_token_and_channel(
    slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    await senders(slack, traced.session, tmp_path)["bot"].send(chat("hi"))

    [received] = slack.delivered
    assert received.path == "/api/chat.postMessage"
    assert received.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    assert received.body["channel"] == "#alerts"


@pytest.mark.parametrize("mode", ["hook", "bot"])
async def test_mentions_and_links_in_a_message_arrive_as_text(
    mode: str, slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    await senders(slack, traced.session, tmp_path)[mode].send(chat(INJECTION))

    [received] = slack.delivered
    raw = received.raw.decode()
    assert "&lt;!channel&gt;" in raw
    assert "&lt;@U123&gt;" in raw
    assert "&amp; done" in raw
    for control in RAW_CONTROLS:
        assert control not in raw
    assert_valid_blocks(blocks_of(received))


@pytest.mark.parametrize("mode", ["hook", "bot"])
async def test_untrusted_room_and_role_in_the_header_arrive_as_text(
    mode: str, slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    sender = senders(slack, traced.session, tmp_path)[mode]
    await sender.send(notification("room.join", room_name="<!channel>", session_id="s1"))
    await sender.send(notification("chat.push", role="<!here>", message="x", session_id="s1"))

    for received in slack.delivered:
        raw = received.raw.decode()
        for control in RAW_CONTROLS:
            assert control not in raw, texts(blocks_of(received), "header")


@pytest.mark.parametrize("mode", ["hook", "bot"])
async def test_long_content_is_truncated_within_block_kit_limits(
    mode: str, slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    long_title = Notification(event=chat("x").event, rule="r", title="T" * 400, text="y" * 10_000)
    sender = senders(slack, traced.session, tmp_path)[mode]
    await sender.send(chat("a" * 10_000))
    await sender.send(long_title)

    for received in slack.delivered:
        blocks = blocks_of(received)
        assert_valid_blocks(blocks)
        [header] = texts(blocks, "header")
        assert len(header) <= 150
        for text in texts(blocks, "section"):
            assert len(text) <= 3000
        assert any(t.endswith(TRUNCATION_MARKER) for t in texts(blocks, "section"))
    headers = [texts(blocks_of(r), "header")[0] for r in slack.delivered]
    assert headers[1] == "T" * (150 - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER


async def test_escaping_cannot_push_a_section_over_its_limit(
    slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    # Each "<" becomes four characters: the limit applies to what Slack receives.
    await senders(slack, traced.session, tmp_path)["hook"].send(chat("<" * 2_999))

    [received] = slack.delivered
    blocks = blocks_of(received)
    assert_valid_blocks(blocks)
    assert all(len(t) <= 3000 for t in texts(blocks, "section"))
    assert "<" not in json.dumps(blocks)


# Failures, SPEC section 5 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after_s", "detail"),
    [
        (400, False, None, "invalid_payload"),
        (404, False, None, "channel_not_found"),
        (410, False, None, "channel_is_archived"),
        (rate_limited("7"), True, 7.0, "429"),
        (500, True, None, "rollup_error"),
        (503, True, None, "503"),
    ],
)
async def test_webhook_failures(
    answer: int | Reply,
    retryable: bool,
    retry_after_s: float | None,
    detail: str,
    slack: FakeSlack,
    traced: Session,
    tmp_path: Path,
) -> None:
    slack.script(answer)

    with pytest.raises(DeliveryError) as caught:
        await senders(slack, traced.session, tmp_path)["hook"].send(chat("hi"))

    assert (caught.value.retryable, caught.value.retry_after_s) == (retryable, retry_after_s)
    assert detail in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after_s", "detail"),
    [
        (api_error("channel_not_found"), False, None, "channel_not_found"),
        (api_error("invalid_auth"), False, None, "invalid_auth"),
        (api_error("not_in_channel"), False, None, "not_in_channel"),
        (Reply(200, {"ok": False, "error": "ratelimited"}, {"Retry-After": "4"}), True, 4.0,
         "ratelimited"),
        (api_error("internal_error"), True, None, "internal_error"),
        # chat.postMessage's own names for "too many messages", and a workspace migrating.
        (api_error("rate_limited"), True, None, "rate_limited"),
        (api_error("message_limit_exceeded"), True, None, "message_limit_exceeded"),
        (api_error("team_added_to_org"), True, None, "team_added_to_org"),
        (rate_limited("3"), True, 3.0, "429"),
        (500, True, None, "500"),
    ],
)  # fmt: skip
async def test_web_api_failures(
    answer: int | Reply,
    retryable: bool,
    retry_after_s: float | None,
    detail: str,
    slack: FakeSlack,
    traced: Session,
    tmp_path: Path,
) -> None:
    slack.script(answer)

    with pytest.raises(DeliveryError) as caught:
        await senders(slack, traced.session, tmp_path)["bot"].send(chat("hi"))

    assert (caught.value.retryable, caught.value.retry_after_s) == (retryable, retry_after_s)
    assert detail in str(caught.value)
    assert BOT_TOKEN not in str(caught.value)


async def test_web_api_rejects_a_wrong_token_and_an_unknown_channel(
    slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    config = make_config(
        f"""
        destinations:
          wrong: {{ type: slack, token: "xoxb-wrong-token", channel: "#alerts", api_url: "{slack.api_url}" }}
          lost: {{ type: slack, token: "{BOT_TOKEN}", channel: "#nowhere", api_url: "{slack.api_url}" }}
        """,  # noqa: E501
        tmp_path,
    )
    built = build_senders(config.destinations, SenderContext(http=traced.session))
    errors: list[DeliveryError] = []
    for name in ("wrong", "lost"):
        with pytest.raises(DeliveryError) as caught:
            await built[name].send(chat("hi"))
        errors.append(caught.value)

    assert [str(e) for e in errors] == [
        "Slack API error: invalid_auth",
        "Slack API error: channel_not_found",
    ]
    assert not any(e.retryable for e in errors)


@pytest.mark.parametrize("mode", ["hook", "bot"])
async def test_scripted_503_429_200_is_three_single_attempts(
    mode: str, slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    slack.script(503, rate_limited("1"), 200)
    sender = senders(slack, traced.session, tmp_path)[mode]
    outcomes: list[tuple[bool, float | None] | Sent] = []
    for _ in range(3):
        try:
            outcomes.append(await sender.send(chat("hi")))
        except DeliveryError as error:
            outcomes.append((error.retryable, error.retry_after_s))

    assert outcomes == [(True, None), (True, 1.0), Sent()]
    assert [r.status for r in slack.requests] == [503, 429, 200]
    assert len(slack.delivered) == 1


@pytest.mark.parametrize(
    ("lines", "max_sections"),
    [
        (["", "", "w" * 2_999], 45),  # empty lines still take their newline
        (["", "", *["w" * 999] * 9], 45),
        (["", "", "w" * 2_999, "x"], 1),
        (["v" * 10_000], 45),
        (["u" * 3_000] * 3, 45),
        (["t" * 300] * 40, 2),
    ],
)
def test_transcript_sections_stay_within_slacks_section_limit(
    lines: list[str], max_sections: int
) -> None:
    sections = transcript_sections(lines, max_sections)

    assert 0 < len(sections) <= max_sections
    assert all(len(section) <= SECTION_LIMIT for section in sections)


@pytest.mark.parametrize(
    ("echo", "detail"),
    [
        ("no hook at {path}", "no hook at <secret>"),
        ("\x1b[2Jbad hook:\n  {url}", "\ufffd[2Jbad hook: <secret>"),
        ("{pad}token {token}", "token <secret>"),
    ],
)
async def test_a_webhook_answer_echoing_its_url_does_not_leak_the_token(
    echo: str, detail: str, slack: FakeSlack, traced: Session, tmp_path: Path
) -> None:
    url = slack.webhook_url()
    path = url.partition(f"127.0.0.1:{slack.port}")[2]
    slack.script(Reply(404, echo.format(url=url, path=path, token=WEBHOOK_SECRET, pad=" " * 190)))

    with pytest.raises(DeliveryError) as caught:
        await senders(slack, traced.session, tmp_path)["hook"].send(chat("hi"))

    assert str(caught.value) == f"Slack answered 404: {detail}"
    assert WEBHOOK_SECRET not in repr(caught.value)
