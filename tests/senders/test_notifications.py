"""Across destinations: templates, hostile input, `relay route` previews and secrets."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.config.model import Config
from relay.events import body_event_id, parse_event
from relay.formatting import TRUNCATION_MARKER
from relay.notification import Notification, build_notification
from relay.route_preview import explain_route
from relay.senders import DeliveryError, Sender, SenderContext, build_senders
from tests.senders.conftest import Fakes
from tests.senders.test_discord import assert_valid
from tests.senders.test_email import parts
from tests.senders.test_slack import RAW_CONTROLS, assert_valid_blocks, blocks_of, texts
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_slack import BOT_TOKEN, WEBHOOK_SECRET, FakeSlack
from tests.support.relay import event_body, make_config
from tests.support.smtp import PASSWORD, Handler, free_port

DISCORD_TOKEN = "discordTokenSecret42"
SECRETS = (WEBHOOK_SECRET, BOT_TOKEN, DISCORD_TOKEN, PASSWORD)
ENV = {"HOOK": WEBHOOK_SECRET, "BOT": BOT_TOKEN, "DISCORD": DISCORD_TOKEN, "PASS": PASSWORD}


def config_for(slack_port: int, discord_port: int, smtp_port: int, tmp_path: Path) -> Config:
    """Every kind of destination, one rule with a template and one without."""
    return make_config(
        f"""
        destinations:
          hook: {{ type: slack, webhook_url: "http://127.0.0.1:{slack_port}/services/T0001/B0001/${{HOOK}}" }}
          bot: {{ type: slack, token: "${{BOT}}", channel: "#support", api_url: "http://127.0.0.1:{slack_port}/api" }}
          community: {{ type: discord, webhook_url: "http://127.0.0.1:{discord_port}/api/webhooks/1/${{DISCORD}}" }}
          mail:
            type: email
            smtp: {{ host: 127.0.0.1, port: {smtp_port}, tls: none, timeout: 5s }}
            from: "relay <relay@example.com>"
            to: [ops@example.com]
        rules:
          - name: refunds
            when: {{ message: {{ contains: refund }} }}
            send_to: [hook, bot, community, mail]
            template: refund
            stop: true
          - name: everything
            send_to: [hook, bot, community, mail]
        templates:
          refund:
            title: "Refund request from {{{{ agent_id }}}}"
            text: "{{{{ data.message }}}} (session {{{{ data.session_id }}}})"
        """,  # noqa: E501
        tmp_path,
        ENV,
    )


def chat_body(message: str) -> bytes:
    return event_body(data={"role": "user", "message": message, "session_id": "s1"})


def notification_for(config: Config, body: bytes) -> Notification:
    """Build the notification the worker would build for this body (first matching rule)."""
    event = parse_event(body, event_id=body_event_id(body), received_at=0.0)
    rule = "refunds" if "refund" in (event.message or "") else "everything"
    template = config.templates["refund"] if rule == "refunds" else None
    return build_notification(event, rule, template)


async def send_to_all(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path, notice: Notification
) -> dict[str, Sender]:
    config = config_for(fakes.slack.port, fakes.discord.port, fakes.smtp.port, tmp_path)
    senders = build_senders(config.destinations, SenderContext(http=http))
    for sender in senders.values():
        await sender.send(notice)
    return senders


async def test_a_template_overrides_title_and_text_everywhere(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = config_for(fakes.slack.port, fakes.discord.port, fakes.smtp.port, tmp_path)
    notice = notification_for(config, chat_body("I want a refund"))
    assert notice.rule == "refunds"

    await send_to_all(fakes, http, tmp_path, notice)

    for received in fakes.slack.delivered:
        blocks = blocks_of(received)
        assert texts(blocks, "header") == ["Refund request from agent_abc123"]
        assert "I want a refund (session s1)" in texts(blocks, "section")
    assert len(fakes.slack.delivered) == 2
    [discord] = fakes.discord.delivered
    embed = assert_valid(discord)
    assert embed["title"] == "Refund request from agent\\_abc123"
    assert embed["description"] == "I want a refund \\(session s1\\)"
    [mail] = fakes.handler.mails
    assert mail.message["Subject"] == "Refund request from agent_abc123"
    assert "I want a refund (session s1)" in parts(mail)[0]


LONG = "x" * 9_990 + "END"
INJECTION = "<!channel> @everyone <@U123> [x](http://evil) **bold** <https://x|y>"
CRLF = "hi\r\nBcc: evil@x\r\n\r\nmore"
UNICODE = "Grüße 👋 日本語"


@pytest.mark.parametrize("template", [False, True], ids=["default", "template"])
@pytest.mark.parametrize("message", [LONG, INJECTION, CRLF, UNICODE],
                         ids=["10k", "injection", "crlf", "unicode"])  # fmt: skip
async def test_hostile_input_arrives_readable_within_limits_and_harmless(
    message: str, template: bool, fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = config_for(fakes.slack.port, fakes.discord.port, fakes.smtp.port, tmp_path)
    notice = notification_for(config, chat_body(message + (" refund" if template else "")))

    await send_to_all(fakes, http, tmp_path, notice)

    check_slack(fakes.slack, message)
    check_discord(fakes.discord, message)
    check_email(fakes.handler, message)


def check_slack(slack: FakeSlack, message: str) -> None:
    assert len(slack.delivered) == 2
    for received in slack.delivered:
        blocks = blocks_of(received)
        assert_valid_blocks(blocks)
        raw = received.raw.decode()
        for control in RAW_CONTROLS:
            assert control not in raw
        text = next(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
        if message == LONG:
            assert len(text) <= 3000 and text.endswith(TRUNCATION_MARKER)
        elif message == INJECTION:
            assert "&lt;!channel&gt; @everyone &lt;@U123&gt;" in text
        else:
            assert message in text


def check_discord(discord: FakeDiscord, message: str) -> None:
    [received] = discord.delivered
    embed = assert_valid(received)
    description = embed["description"]
    assert "@everyone" not in json.dumps(received.body, ensure_ascii=False)
    if message == LONG:
        assert description.endswith(TRUNCATION_MARKER)
    elif message == INJECTION:
        assert "**" not in description and "](" not in description
    visible = description.replace("\\", "").replace("\u200b", "").replace("\r\n", "\n")
    if message != LONG:
        assert message.replace("\r\n", "\n") in visible


def check_email(handler: Handler, message: str) -> None:
    [mail] = handler.mails
    parsed = mail.message
    assert parsed["Bcc"] is None
    assert mail.rcpt_tos == ("ops@example.com",)
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])
    text, html = parts(mail)
    normalized = message.replace("\r\n", "\n")
    assert normalized in text.replace("\r\n", "\n")
    assert "<!channel>" not in html and "<@U123>" not in html
    if message == UNICODE:
        assert UNICODE in html


async def test_route_preview_is_exactly_what_slack_and_discord_receive(
    fakes: Fakes, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = config_for(fakes.slack.port, fakes.discord.port, fakes.smtp.port, tmp_path)
    body = chat_body("please refund <!here> Grüße 👋")
    out = io.StringIO()
    assert explain_route(config, body, source="event.json", out=out) == 0
    previews = preview_bodies(out.getvalue())

    await send_to_all(fakes, http, tmp_path, notification_for(config, body))

    hook, bot = sorted(fakes.slack.delivered, key=lambda r: r.kind == "api")
    assert previews["hook"] == hook.body
    assert previews["bot"] == bot.body
    assert previews["community"] == fakes.discord.delivered[0].body
    assert set(previews) == {"hook", "bot", "community", "mail"}


def preview_bodies(output: str) -> dict[str, Any]:
    """Return each destination's previewed JSON body (the raw text for email)."""
    sections = re.split(r"^--- (\S+) \(rule [^\n]*\) ---\n", output, flags=re.MULTILINE)
    bodies: dict[str, Any] = {}
    for name, text in zip(sections[1::2], sections[2::2], strict=True):
        _, _, payload = text.partition("\n")
        bodies[name] = payload if name == "mail" else json.loads(payload)
    return bodies


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def test_configs_and_senders_never_show_a_secret(tmp_path: Path) -> None:
    config = config_for(1, 2, 3, tmp_path)
    context = SenderContext()
    senders = build_senders(config.destinations, context)
    notice = notification_for(config, chat_body("hello"))

    assert_no_secret(repr(config))
    assert_no_secret(str(config.destinations))
    for sender in senders.values():
        assert_no_secret(repr(sender))
        assert_no_secret(sender.preview(notice))
    assert "<secret>" in senders["hook"].preview(notice).splitlines()[0]
    assert "<secret>" in senders["community"].preview(notice).splitlines()[0]
    assert_no_secret(repr(context))  # its pacers are keyed by webhook URL and token


@pytest.fixture
def smtp_login_config(tmp_path: Path) -> Iterator[Config]:
    yield make_config(
        f"""
        destinations:
          mail:
            type: email
            smtp: {{ host: 127.0.0.1, port: {free_port()}, username: relay, password: "${{PASS}}" }}
            from: relay@example.com
            to: [ops@example.com]
        """,
        tmp_path,
        ENV,
    )


async def test_failures_never_show_a_secret(
    http: aiohttp.ClientSession, tmp_path: Path, smtp_login_config: Config
) -> None:
    closed = free_port()
    config = config_for(closed, closed, closed, tmp_path)
    senders = build_senders(config.destinations, SenderContext(http=http))
    senders.update(build_senders(smtp_login_config.destinations, SenderContext()))
    notice = notification_for(config, chat_body("hello"))

    errors: list[DeliveryError] = []
    for sender in senders.values():
        with pytest.raises(DeliveryError) as caught:
            await sender.send(notice)
        errors.append(caught.value)

    assert len(errors) == 4
    for error in errors:
        assert error.retryable is True
        assert_no_secret(str(error))
        assert_no_secret(repr(error))
