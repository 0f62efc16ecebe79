"""Discord: embeds, schema, limits, rate limits and failures, against the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.formatting import TRUNCATION_MARKER
from relay.notification import Notification
from relay.senders import DeliveryError, Sender, SenderContext, build_senders
from relay.senders.base import Sent
from tests.support.fake_discord import (
    FakeDiscord,
    Received,
    Reply,
    discord_validator,
    rate_limited,
    unknown_webhook,
)
from tests.support.notifications import chat, notification
from tests.support.relay import make_config

INJECTION = "<!channel> @everyone <@U123> [x](http://evil) **bold**"


def test_the_schema_check_catches_a_bad_url_and_timestamp() -> None:
    """The formats are checked: without them a broken embed link would pass."""
    bad = {"embeds": [{"url": "not a url", "timestamp": "yesterday"}]}
    errors = sorted(e.message for e in discord_validator().iter_errors(bad))
    assert errors == ["'not a url' is not a 'uri'", "'yesterday' is not a 'date-time'"]


def assert_valid(received: Received) -> dict[str, Any]:
    """Check one request against Discord's schema and limits; return its only embed."""
    errors = [e.message for e in discord_validator().iter_errors(received.body)]
    assert not errors, errors
    assert received.query == {"wait": "true"}
    assert received.body["allowed_mentions"] == {"parse": []}
    assert len(received.body.get("content", "")) <= 2000
    [embed] = received.body["embeds"]
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert embed_total(embed) <= 6000
    return dict(embed)


def embed_total(embed: dict[str, Any]) -> int:
    """Count what Discord counts towards an embed's 6000 characters."""
    fields = sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    footer = len(embed.get("footer", {}).get("text", ""))
    author = len(embed.get("author", {}).get("name", ""))
    return (
        len(embed.get("title", "")) + len(embed.get("description", "")) + fields + footer + author
    )


@pytest.fixture
async def sender(discord: FakeDiscord, tmp_path: Path) -> AsyncIterator[Sender]:
    config = make_config(
        f'destinations:\n  community: {{ type: discord, webhook_url: "{discord.url()}" }}\n',
        tmp_path,
    )
    async with aiohttp.ClientSession() as http:
        yield build_senders(config.destinations, SenderContext(http=http))["community"]


@pytest.mark.parametrize(
    ("kind", "data", "title", "description", "color"),
    [
        ("room.join", {"room_name": "lobby", "participant_count": 2}, "A user joined lobby",
         "2 participant\\(s\\) in the room", 0x2ECC71),
        ("chat.push", {"role": "user", "message": "hi there"}, "New chat message from user",
         "hi there", 0x3498DB),
        ("agent.error", {"reason": "boom"}, "bitHuman event agent.error", None, 0x95A5A6),
    ],
)  # fmt: skip
async def test_default_embeds_per_event_type(
    kind: str,
    data: dict[str, Any],
    title: str,
    description: str | None,
    color: int,
    sender: Sender,
    discord: FakeDiscord,
) -> None:
    assert await sender.send(notification(kind, **data)) == Sent()

    [received] = discord.delivered
    embed = assert_valid(received)
    assert embed["title"] == title
    assert embed.get("description") == description
    assert embed["color"] == color
    assert {"name": "Agent", "value": "agent\\_abc123", "inline": True} in embed["fields"]
    assert embed["timestamp"] == "2023-11-14T22:13:20Z"
    if kind == "agent.error":
        assert {"name": "reason", "value": "boom", "inline": True} in embed["fields"]


async def test_mentions_and_markdown_arrive_as_typed(sender: Sender, discord: FakeDiscord) -> None:
    await sender.send(chat(INJECTION))

    [received] = discord.delivered
    embed = assert_valid(received)
    description = embed["description"]
    assert "@everyone" not in description  # a zero-width space follows every @
    assert "](" not in description and "**" not in description
    visible = description.replace("\\", "").replace("\u200b", "")
    assert visible == INJECTION


@pytest.mark.parametrize(
    "notice",
    [
        chat("a" * 10_000),
        chat("*" * 5_000),  # every character escapes to two
        Notification(event=chat("x").event, rule="r", title="T" * 400, text="y" * 10_000),
    ],
    ids=["long", "escaped-long", "long-title"],
)
async def test_long_content_is_truncated_within_discord_limits(
    notice: Notification, sender: Sender, discord: FakeDiscord
) -> None:
    await sender.send(notice)

    [received] = discord.delivered
    embed = assert_valid(received)
    assert embed["description"].endswith(TRUNCATION_MARKER)
    if notice.title is not None:
        assert embed["title"] == "T" * (256 - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER


async def test_an_event_with_many_long_fields_stays_within_6000_in_total(
    sender: Sender, discord: FakeDiscord
) -> None:
    data = {f"key{i}": "v" * 2_000 for i in range(12)}
    data["note"] = "n" * 3_000

    await sender.send(notification("agent.report", **data))

    [received] = discord.requests
    embed = assert_valid(received)
    assert "description" not in embed or TRUNCATION_MARKER in embed["description"]


async def test_empty_bucket_headers_make_the_sender_wait(
    sender: Sender, discord: FakeDiscord
) -> None:
    discord.script(Reply(200, {"id": "1"}, {"X-RateLimit-Remaining": "1",
                                            "X-RateLimit-Reset-After": "5"}))  # fmt: skip
    await sender.send(chat("one"))
    assert sender.wait_s() == 0.0

    discord.script(Reply(200, {"id": "2"}, {"X-RateLimit-Remaining": "0",
                                            "X-RateLimit-Reset-After": "2.5"}))  # fmt: skip
    await sender.send(chat("two"))
    assert 0.0 < sender.wait_s() <= 2.5


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after_s", "detail"),
    [
        (rate_limited(0.25, header_s="3"), True, 0.25, "429"),
        (Reply(429, {"message": "slow down"}, {"Retry-After": "2"}), True, 2.0, "slow down"),
        (unknown_webhook(), False, None, "Unknown Webhook (code 10015)"),
        (Reply(400, {"message": "Invalid Form Body", "code": 50035}), False, None, "50035"),
        (Reply(500, {"message": "oops", "code": 10015}), False, None, "10015"),
        (Reply(502, {"message": "bad gateway"}), True, None, "502"),
        # A body's retry_after out of all reason is held within an hour, or left for the
        # header: it must not pause the webhook, for every process, for ever.
        (rate_limited(1e9, header_s="3"), True, 3600.0, "429"),
        (rate_limited(float("inf"), header_s="3"), True, 3600.0, "429"),
        (rate_limited(float("nan"), header_s="3"), True, 3.0, "429"),
        (rate_limited(-30, header_s="3"), True, 3.0, "429"),
    ],
)
async def test_discord_failures(
    answer: Reply,
    retryable: bool,
    retry_after_s: float | None,
    detail: str,
    sender: Sender,
    discord: FakeDiscord,
) -> None:
    discord.script(answer)

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat("hi"))

    assert (caught.value.retryable, caught.value.retry_after_s) == (retryable, retry_after_s)
    assert detail in str(caught.value)
    assert "tok" not in str(caught.value)


DISCORD_TOKEN = "D1scordT0kenSekrit"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"message": "Invalid Webhook Token for /api/webhooks/1/{token}", "code": 50027},
            "Invalid Webhook Token for <secret> (code 50027)",
        ),
        (
            {"message": "\x1b[31mbad\n\ntoken {token}\x1b[0m", "code": 50027},
            "\ufffd[31mbad token <secret>\ufffd[0m (code 50027)",
        ),
        ({"message": "bad token", "code": "{token}"}, "bad token (code <secret>)"),
    ],
)
async def test_an_answer_echoing_the_webhook_url_does_not_leak_its_token(
    body: dict[str, Any],
    detail: str,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    url = discord.url(token=DISCORD_TOKEN)
    config = make_config(
        f'destinations:\n  community: {{ type: discord, webhook_url: "{url}" }}\n', tmp_path
    )
    sender = build_senders(config.destinations, SenderContext(http=http))["community"]
    echo = {
        key: value.format(token=DISCORD_TOKEN) if isinstance(value, str) else value
        for key, value in body.items()
    }
    discord.script(Reply(401, echo))

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat("hi"))

    assert str(caught.value) == f"Discord answered 401: {detail}"
    assert DISCORD_TOKEN not in repr(caught.value)
