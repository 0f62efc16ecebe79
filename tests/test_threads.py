"""Conversations (SPEC 4.1), first step: `thread: session` on email and the console.

Email goes through relay's real app and worker to a real aiosmtpd server: every email of a
conversation has the same subject and names the conversation's first email in
In-Reply-To and References, so mail clients show one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import ConfigError, load_text
from relay.senders import SenderContext, build_senders
from relay.senders.discord import DiscordSender
from tests.conftest import RelayClientFactory
from tests.support.fake_discord import discord_validator, wait_until
from tests.support.notifications import chat
from tests.support.relay import event_body, make_config, signed_headers
from tests.support.smtp import Handler, Mail, SmtpServer

SESSION_A = "8d947f06-2c36-4d98-aafe-b232da2433ff"
SESSION_B = "1f0e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpServer, Handler]]:
    handler = Handler()
    server = SmtpServer(handler).start()
    yield server, handler
    server.stop()


def config(port: int) -> str:
    return f"""
verify:
  secrets: ["${{SECRET}}"]
destinations:
  mail:
    type: email
    smtp: {{ host: 127.0.0.1, port: {port}, tls: none, timeout: 5s }}
    from: "relay <relay@example.com>"
    to: [support@example.com]
rules:
  - name: conversations
    send_to: [mail]
    thread: session
"""


async def wait_for_mails(handler: Handler, count: int) -> None:
    await wait_until(f"{count} emails", lambda: len(handler.mails) >= count, 10)


def by_session(mails: list[Mail]) -> dict[str, list[Mail]]:
    sessions: dict[str, list[Mail]] = {}
    for mail in mails:
        text = mail.message.get_body(("plain",))
        assert text is not None
        session = SESSION_A if SESSION_A in text.get_content() else SESSION_B
        sessions.setdefault(session, []).append(mail)
    return sessions


async def test_each_conversation_is_one_email_thread(
    relay_client: RelayClientFactory, smtp: tuple[SmtpServer, Handler]
) -> None:
    server, handler = smtp
    client = await relay_client(config(server.port))
    sent = 0
    for n in range(3):  # two conversations, interleaved
        for session in (SESSION_A, SESSION_B):
            body = event_body(message=f"message {n}", session=session)
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            assert response.status == 200
            sent += 1
            await wait_for_mails(handler, sent)  # in order: each the answer to the last

    threads = by_session(handler.mails)
    assert sorted(threads) == sorted([SESSION_A, SESSION_B])
    roots = set()
    for mails in threads.values():
        first, *later = (mail.message for mail in mails)
        root = first["Message-ID"]
        roots.add(root)
        assert first["In-Reply-To"] is None and first["References"] is None
        assert root.startswith("<relay.thread.") and root.endswith("@example.com>")
        for message in later:
            assert message["Subject"] == first["Subject"]  # one subject per conversation
            assert message["In-Reply-To"] == root
            assert message["References"] == root
        ids = [message["Message-ID"] for message in (first, *later)]
        assert len(set(ids)) == 3
    assert len(roots) == 2


async def test_every_reply_keeps_its_conversation_from_the_retention_purge(
    relay_client: RelayClientFactory, smtp: tuple[SmtpServer, Handler], tmp_path: Path
) -> None:
    """Email shows no count, but each reply is still recorded with its time, so a
    conversation that goes on is never purged as quiet (store.retention)."""
    server, handler = smtp
    client = await relay_client(config(server.port))
    db = tmp_path / "relay.db"
    recorded: list[tuple[int, float]] = []
    for n in range(1, 4):
        body = event_body(message=f"message {n}", session=SESSION_A)
        answer = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert answer.status == 200
        # The thread is kept, or the reply counted, once its email went out.
        await wait_until(f"message {n} recorded", lambda: thread_row(db)[0] == n, 5)  # noqa: B023
        recorded.append(thread_row(db))
        await asyncio.sleep(0.01)
    assert len(handler.mails) == 3
    assert recorded[0][1] < recorded[1][1] < recorded[2][1]  # each reply moved it on


async def test_a_conversation_whose_thread_was_forgotten_starts_a_new_one_by_a_new_id(
    relay_client: RelayClientFactory, smtp: tuple[SmtpServer, Handler], tmp_path: Path
) -> None:
    """After store.retention forgets a quiet conversation's thread, its next email is a
    first email again, with a Message-ID of its own: a mail client drops a message whose
    Message-ID it already has."""
    server, handler = smtp
    client = await relay_client(config(server.port))
    db = tmp_path / "relay.db"
    for n in range(1, 3):
        body = event_body(message=f"message {n}", session=SESSION_A)
        answer = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert answer.status == 200
        await wait_until(f"message {n} recorded", lambda: thread_row(db)[0] > 0, 5)
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("DELETE FROM threads")  # as the retention purge does, when quiet
    first, again = (mail.message for mail in handler.mails)
    assert again["In-Reply-To"] is None and again["References"] is None
    assert first["Message-ID"].startswith("<relay.thread.")
    assert again["Message-ID"].startswith("<relay.thread.")
    assert again["Message-ID"] != first["Message-ID"]


def thread_row(db: Path) -> tuple[int, float]:
    """(messages, last activity) of the one thread in the store; (0, 0) before it exists."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT messages, last_at FROM threads").fetchone()
    return (0, 0.0) if row is None else (int(row[0]), float(row[1]))


async def test_a_hostile_session_id_never_reaches_a_header(
    relay_client: RelayClientFactory, smtp: tuple[SmtpServer, Handler]
) -> None:
    server, handler = smtp
    client = await relay_client(config(server.port))
    for session in ("x" * 10_000, "evil\r\nBcc: victim@example.com\r\n", "\x00\x1b[31m"):
        for n in range(2):
            body = event_body(message=f"hello {n}", session=session)
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            assert response.status == 200
    await wait_for_mails(handler, 6)
    await asyncio.sleep(0.2)
    for mail in handler.mails:
        message = mail.message
        assert message["Bcc"] is None and mail.rcpt_tos == ("support@example.com",)
        for name in ("Subject", "Message-ID", "In-Reply-To", "References"):
            value = str(message[name] or "")
            assert len(value) < 300 and "\n" not in value and "\x1b" not in value, (name, value)


@pytest.mark.parametrize(
    ("destination", "error"),
    [
        (
            '{ type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/x" }',
            'test.yaml:7: rules[0].thread: destination "target" is a Slack incoming webhook,'
            " which cannot learn a message's ts to reply to: threads need a bot token"
            " (token and channel)",
        ),
        (
            '{ type: discord, webhook_url: "https://discord.com/api/webhooks/1/x" }',
            'test.yaml:7: rules[0].thread: destination "target" is not a forum channel:'
            " a Discord webhook threads only in a forum (set forum: true on a forum channel's"
            " webhook)",
        ),
    ],
    ids=["slack webhook", "discord"],
)
def test_thread_on_a_destination_that_cannot_thread_is_a_config_error(
    destination: str, error: str
) -> None:
    text = f"""destinations:
  target: {destination}
rules:
  - name: r
    send_to: [target]
    when: {{ event: chat.push }}
    thread: session
"""
    with pytest.raises(ConfigError) as caught:
        load_text(text, "test.yaml", {})
    assert str(caught.value) == error


def rule_error(rule_keys: str) -> str:
    """Load a config whose one rule has these keys; return the error it must give."""
    text = f"destinations: {{ c: {{ type: console }} }}\nrules:\n  - {{ name: r, {rule_keys} }}\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text, "test.yaml", {})
    return str(caught.value)


def test_thread_takes_only_session() -> None:
    error = rule_error("send_to: [c], thread: room")
    assert error.startswith("test.yaml:3: rules[0].thread: ")
    assert "session" in error


def test_broadcast_without_thread_is_a_config_error() -> None:
    assert rule_error("send_to: [c], broadcast: true") == (
        "test.yaml:3: rules[0].broadcast: broadcast shows a thread's reply in the channel:"
        " it needs thread: session"
    )


def forum_sender(tmp_path: Path) -> DiscordSender:
    """A Discord destination on a forum channel's webhook, never sent to here."""
    config = make_config(
        'destinations:\n  forum: { type: discord, webhook_url: "https://discord.com/api/webhooks/1/t",'
        " forum: true }\n",
        tmp_path,
    )
    sender = build_senders(config.destinations, SenderContext())["forum"]
    assert isinstance(sender, DiscordSender)
    return sender


@pytest.mark.parametrize(
    "session",
    ["x" * 10_000, "evil\r\n@everyone\x1b[31m\x00 name", "  "],
    ids=["10 KB", "controls", "blank"],
)
def test_a_hostile_session_id_never_breaks_a_forum_post_name(session: str, tmp_path: Path) -> None:
    sender = forum_sender(tmp_path)
    notice = dataclasses.replace(chat("hello"), conversation=session)
    payload = sender.payload(notice)
    name = payload["thread_name"]
    assert 0 < len(name) <= 100 and name.isprintable() and "\n" not in name
    assert not list(discord_validator().iter_errors(payload))


def test_a_forum_post_outside_a_conversation_is_named_after_its_title(tmp_path: Path) -> None:
    sender = forum_sender(tmp_path)
    payload = sender.payload(chat("hello"))
    assert payload["thread_name"] == "New chat message from user"
    assert sender.params(chat("hello")) == {"wait": "true"}
