"""Digests (SPEC 4.2): one notification per conversation and window, a transcript in order.

Through relay's real app and worker (SQLite) to the console and a fake Discord; the restart
test runs `relay serve` as a real process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from relay.config import ConfigError, load_text
from tests.conftest import RelayClientFactory
from tests.senders.test_slack import assert_valid_blocks, texts
from tests.support.fake_discord import FakeDiscord, assert_valid_payloads, wait_until
from tests.support.fake_slack import FakeSlack
from tests.support.processes import RelayProcesses, write_discord_config
from tests.support.relay import Output
from tests.support.smtp import Handler, SmtpServer
from tests.test_slack_threads import post, post_to

SESSION = "8d947f06-2c36-4d98-aafe-b232da2433ff"
WINDOW_S = 3.0


def config(discord: FakeDiscord) -> str:
    return f"""
verify:
  secrets: ["${{SECRET}}"]
destinations:
  stdout: {{ type: console }}
  community: {{ type: discord, webhook_url: "{discord.url()}" }}
rules:
  - name: transcripts
    when: {{ event: chat.push }}
    send_to: [stdout, community]
    digest: {WINDOW_S:g}s
"""


async def test_five_messages_in_a_second_make_one_transcript_per_destination(
    relay_client: RelayClientFactory, discord: FakeDiscord, output: Output, store_section: str
) -> None:
    client = await relay_client(config(discord) + store_section)
    started = time.monotonic()
    for n in range(5):
        await post(client, SESSION, f"message {n}")
        await asyncio.sleep(0.2)
    await discord.wait_for_delivered(1, timeout_s=10)
    await wait_until("the console's digest", lambda: len(output.blocks()) == 1, 5)
    await asyncio.sleep(0.5)  # a second notification would come within this

    [sent] = discord.delivered
    assert sent.at - started >= WINDOW_S - 0.05, "sent before the window closed"
    assert assert_valid_payloads(discord) == 1
    assert sent.body["embeds"][0]["title"] == "Conversation with agent\\_abc123\\: 5 events"
    lines = sent.description().split("\n")
    assert [line.rpartition(" ")[2] for line in lines] == ["0", "1", "2", "3", "4"]
    [printed] = output.blocks()
    assert printed.startswith("== Conversation with agent_abc123: 5 events ==\n")
    assert [line.split(": ")[-1] for line in printed.splitlines()[1:6]] == [
        f"message {n}" for n in range(5)
    ]


async def test_a_long_transcript_is_cut_visibly(
    relay_client: RelayClientFactory, discord: FakeDiscord
) -> None:
    client = await relay_client(config(discord).replace("digest: 3s", "digest: 1s"))
    for n in range(40):
        await post(client, SESSION, f"{n:02d} " + "x" * 300)
    [sent] = await discord.wait_for_delivered(1, timeout_s=10)
    description = sent.description()
    assert assert_valid_payloads(discord) == 1
    assert len(description) <= 4096
    assert description.endswith(" more") and "… and " in description.splitlines()[-1]


async def test_a_sigterm_restart_while_a_digest_is_open_neither_loses_nor_doubles_it(
    tmp_path: Path, processes: RelayProcesses, discord: FakeDiscord
) -> None:
    path = write_discord_config(tmp_path, discord)
    text = path.read_text().replace(
        "    send_to: [community]",
        "    send_to: [community]\n    digest: 6s",  # outlasts a restart
    )
    path.write_text(text)
    relay = await processes.start(path)
    async with aiohttp.ClientSession() as http:
        for n in range(3):
            await post_to(http, relay.webhook_url, SESSION, f"before {n}")
        assert await relay.terminate() == 0  # the window is still open
        relay = await processes.start(path)
        await post_to(http, relay.webhook_url, SESSION, "after restart")
    await discord.wait_for_delivered(1, timeout_s=10)
    await asyncio.sleep(1.0)
    [sent] = discord.delivered
    assert sent.description().count("before") == 3
    assert "after restart" in sent.description()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "10 minutes",
            "rules[0].digest: expected a duration like 500ms, 30s, 5m or 24h, got '10 minutes'",
        ),
        ("0s", "rules[0].digest: a digest window must be longer than 0 and at most 24h, got 0s"),
        (
            "2d",
            "rules[0].digest: a digest window must be longer than 0 and at most 24h, got 172800s",
        ),
    ],
)
def test_a_bad_digest_window_is_a_config_error(value: str, error: str) -> None:
    text = (
        "destinations: { c: { type: console } }\n"
        f"rules:\n  - {{ name: r, send_to: [c], digest: {value} }}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_text(text, "test.yaml", {})
    assert str(caught.value) == f"test.yaml:3: {error}"


def digest_config(destinations: str, send_to: str, extra: str = "") -> str:
    return f"""
verify:
  secrets: ["${{SECRET}}"]
destinations:
{destinations}rules:
  - name: transcripts
    when: {{ event: chat.push }}
    send_to: [{send_to}]
    digest: 1s
{extra}"""


def long_messages() -> list[str]:
    return [f"{n:02d} " + "y" * 297 for n in range(40)]  # 300 characters each


async def test_a_slack_digest_of_forty_long_messages_arrives_whole(
    relay_client: RelayClientFactory, slack: FakeSlack
) -> None:
    destination = f'  ops: {{ type: slack, webhook_url: "{slack.webhook_url()}" }}\n'
    client = await relay_client(digest_config(destination, "ops"))
    for message in long_messages():
        await post(client, SESSION, message)

    [sent] = await slack.wait_for_delivered(1, timeout_s=10)
    blocks = sent.body["blocks"]
    assert_valid_blocks(blocks)
    transcript = "\n".join(texts(blocks, "section")).splitlines()
    assert [line.split(": ", 1)[1] for line in transcript if "user: " in line] == long_messages()
    assert "… and" not in "\n".join(texts(blocks, "section"))


async def test_a_digest_takes_its_rules_template_for_its_title_and_each_line(
    relay_client: RelayClientFactory, discord: FakeDiscord, output: Output
) -> None:
    destinations = (
        "  stdout: { type: console }\n"
        f'  community: {{ type: discord, webhook_url: "{discord.url()}" }}\n'
    )
    template = """    template: transcript
templates:
  transcript:
    title: "Chat with {{ agent_id }}"
    text: "[{{ data.role }}] {{ data.message }}"
"""
    client = await relay_client(digest_config(destinations, "stdout, community", template))
    for n in range(3):
        await post(client, SESSION, f"message {n}")

    [sent] = await discord.wait_for_delivered(1, timeout_s=10)
    assert assert_valid_payloads(discord) == 1
    embed = sent.body["embeds"][0]
    assert embed["title"] == "Chat with agent\\_abc123"
    assert sent.description().split("\n") == [f"\\[user\\] message {n}" for n in range(3)]
    await wait_until("the console's digest", lambda: len(output.blocks()) == 1, 5)
    [printed] = output.blocks()
    assert printed.splitlines()[:4] == [
        "== Chat with agent_abc123 ==",
        "[user] message 0",
        "[user] message 1",
        "[user] message 2",
    ]


async def test_an_email_digest_of_forty_long_messages_arrives_whole(
    relay_client: RelayClientFactory,
) -> None:
    handler = Handler()
    server = SmtpServer(handler).start()
    try:
        destination = (
            "  mail:\n    type: email\n"
            f"    smtp: {{ host: 127.0.0.1, port: {server.port}, tls: none }}\n"
            '    from: "relay <relay@example.com>"\n    to: [ops@example.com]\n'
        )
        client = await relay_client(digest_config(destination, "mail"))
        for message in long_messages():
            await post(client, SESSION, message)
        await wait_until("the digest's email", lambda: len(handler.mails) == 1, 10)
    finally:
        server.stop()

    text = handler.mails[0].message.get_body(("plain",))
    assert text is not None
    said = [line.split(": ", 1)[1] for line in text.get_content().splitlines() if "user: " in line]
    assert said == long_messages()
