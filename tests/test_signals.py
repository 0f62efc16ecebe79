"""Conversation signals (SPEC 4.4) through relay's real app, store and worker.

relay's clock is injected: a test posts events at chosen moments, moves the clock on and
asks the raiser to look, so "not before the deadline" is exact and nothing sleeps. The
signals go to a real webhook receiver on 127.0.0.1 (which verifies every request) and to
a fake Slack Web API.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from relay.app import STATE, reload
from relay.conversations.raiser import SignalRaiser
from tests.conftest import RelayClientFactory
from tests.senders.test_postgres import rows
from tests.support.fake_discord import wait_until
from tests.support.fake_receiver import RECEIVER_SECRET, FakeReceiver
from tests.support.fake_slack import BOT_TOKEN, FakeSlack
from tests.support.relay import signed_headers
from tests.test_delivery import Client

SESSION = "8d947f06-2c36-4d98-aafe-b232da2433ff"
AGENT = "A80HVD8577"


class Clock:
    """relay's clock, moved on by the test."""

    def __init__(self) -> None:
        self.start = self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def at(self, offset_s: float) -> None:
        self.now = self.start + offset_s


async def start(relay_client: RelayClientFactory, text: str, **env: str) -> tuple[Client, Clock]:
    """Start relay on a config text with a clock of the test's."""
    clock = Clock()
    return await relay_client(text, clock=clock, **env), clock


def crm_config(receiver: FakeReceiver, *, conversations: str | None, rules: str = "") -> str:
    section = "" if conversations is None else f"conversations:\n{conversations}\n"
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  backoff: {{ first: 10ms, max: 50ms }}
destinations:
  crm:
    type: webhook
    url: "{receiver.url()}"
    secret: "{RECEIVER_SECRET}"
rules:
{rules or "  - name: everything" + chr(10) + "    send_to: [crm]"}
{section}"""


SIGNALS_ONLY = """  - name: signals
    when: { event: [conversation.unanswered, conversation.ended] }
    send_to: [crm]"""


def body(
    kind: str, *, role: str = "user", message: str = "", timestamp: float = 0.0, **data: Any
) -> bytes:
    fields: dict[str, Any] = {"session_id": SESSION, "room_name": "support-room", **data}
    if kind == "chat.push":
        fields.update(role=role, message=message)
    payload = {"agent_id": AGENT, "event_type": kind, "data": fields, "timestamp": timestamp}
    return json.dumps(payload).encode()


async def post(client: Client, raw: bytes) -> None:
    response = await client.post("/webhook", data=raw, headers=signed_headers(raw))
    assert response.status == 200, await response.text()


def raiser(client: Client) -> SignalRaiser:
    found = client.app[STATE].raiser
    assert found is not None
    return found


def received(receiver: FakeReceiver) -> list[dict[str, Any]]:
    assert all(r.verified for r in receiver.requests)
    return [json.loads(r.body) for r in receiver.delivered]


async def test_unanswered_is_raised_after_the_window_not_before_and_once_per_stretch(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(
        relay_client,
        crm_config(receiver, conversations="  unanswered_after: 2m", rules=SIGNALS_ONLY),
    )
    t0 = clock.start
    await post(client, body("room.join", timestamp=t0))
    await post(client, body("chat.push", message="Hello, I need help with my order", timestamp=t0))
    clock.at(60)
    await post(client, body("chat.push", message="Anyone there?", timestamp=t0 + 60))
    clock.at(119.9)
    assert await raiser(client).raise_due() == 0
    clock.at(120)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(1)
    [signal] = received(receiver)
    assert signal["event_type"] == "conversation.unanswered"
    assert signal["agent_id"] == AGENT
    assert signal["data"] == {
        "session_id": SESSION,
        "room_name": "support-room",
        "message": "Hello, I need help with my order",
        "asked_at": t0,
        "waited_s": 120.0,
    }
    # A third visitor message in the same stretch raises nothing more.
    clock.at(130)
    await post(client, body("chat.push", message="Hello???", timestamp=t0 + 130))
    clock.at(400)
    assert await raiser(client).raise_due() == 0

    # An answer ends the stretch; the next visitor message starts one that raises again.
    await post(client, body("chat.push", role="assistant", message="Sorry!", timestamp=t0 + 400))
    await post(client, body("chat.push", message="Where is it?", timestamp=t0 + 401))
    clock.at(519)
    assert await raiser(client).raise_due() == 0
    clock.at(521)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(2)
    assert [s["data"]["message"] for s in received(receiver)] == [
        "Hello, I need help with my order",
        "Where is it?",
    ]
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 2
    metrics = await (await client.get("/metrics")).text()
    assert (
        'relay_events_total{event_type="conversation.unanswered",outcome="raised"} 2.0' in metrics
    )


async def test_an_answer_in_time_raises_nothing(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(
        relay_client,
        crm_config(receiver, conversations="  unanswered_after: 2m", rules=SIGNALS_ONLY),
    )
    t0 = clock.start
    await post(client, body("chat.push", message="Hi", timestamp=t0))
    clock.at(119)
    await post(client, body("chat.push", role="assistant", message="Hello!", timestamp=t0 + 119))
    clock.at(300)
    assert await raiser(client).raise_due() == 0
    assert receiver.requests == []


async def test_ended_is_raised_once_with_the_conversations_figures(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(
        relay_client,
        crm_config(receiver, conversations="  ended_after: 10m", rules=SIGNALS_ONLY),
    )
    t0 = clock.start
    # The events' own timestamps (figures) are not relay's clock (deadlines): bitHuman's
    # are an hour behind here, and the conversation lasts 4 minutes by them.
    ts = t0 - 3600
    conversation = [
        body("room.join", timestamp=ts),
        body("chat.push", message="Hi", timestamp=ts + 10),
        body("chat.push", role="assistant", message="Hello!", timestamp=ts + 14),
        body("chat.push", message="My order?", timestamp=ts + 60),
        body("chat.push", role="assistant", message="On its way", timestamp=ts + 70),
        body("chat.push", message="Thanks", timestamp=ts + 200),
        body("chat.push", role="assistant", message="Bye", timestamp=ts + 210),
        body("chat.push", message="One more thing", timestamp=ts + 240),
    ]
    for n, raw in enumerate(conversation):
        clock.at(n)
        await post(client, raw)
    # unanswered_after keeps its default (2m): the last message's stretch raised its own.
    clock.at(7 + 599)
    assert await raiser(client).raise_due() == 1
    clock.at(7 + 600)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(2)
    unanswered, ended = received(receiver)
    assert unanswered["event_type"] == "conversation.unanswered"
    assert ended["event_type"] == "conversation.ended"
    assert ended["data"] == {
        "session_id": SESSION,
        "room_name": "support-room",
        "started_at": ts,
        "last_event_at": ts + 240,
        "duration_s": 240.0,
        "visitor_messages": 4,
        "agent_messages": 3,
        "first_answer_s": 4.0,
        "unanswered": True,
    }
    assert ended["timestamp"] == pytest.approx(t0 + 607, abs=0.001)
    clock.at(5000)
    assert await raiser(client).raise_due() == 0

    # It carries on: it ends again later, with figures from its start.
    clock.at(6000)
    await post(client, body("chat.push", role="assistant", message="Sure?", timestamp=ts + 3000))
    clock.at(6600)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(3)
    again = received(receiver)[2]
    assert again["event_type"] == "conversation.ended"
    assert again["data"]["duration_s"] == 3000.0
    assert again["data"]["agent_messages"] == 4 and again["data"]["unanswered"] is False
    assert again["data"]["first_answer_s"] == 4.0


async def test_without_conversations_no_signal_is_ever_raised(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(relay_client, crm_config(receiver, conversations=None))
    t0 = clock.start
    posted = [
        body("room.join", timestamp=t0),
        body("chat.push", message="Hello?", timestamp=t0 + 1),
    ]
    for raw in posted:
        await post(client, raw)
    clock.at(86400)
    assert await raiser(client).raise_due() == 0
    await receiver.wait_for_requests(2)
    # The catch-all rule saw what was posted, byte for byte, and nothing else.
    assert [r.body for r in receiver.requests] == posted
    assert await client.app[STATE].store.watch(SESSION) is None


async def test_a_signal_is_not_itself_watched(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(
        relay_client,
        crm_config(receiver, conversations="  unanswered_after: 1m\n  ended_after: 1m"),
    )
    t0 = clock.start
    await post(client, body("chat.push", message="Hi", timestamp=t0))
    clock.at(60)
    assert await raiser(client).raise_due() == 2
    watch = await client.app[STATE].store.watch(SESSION)
    assert watch is not None and watch.last_received_at == t0 and watch.visitor_messages == 1
    # A signal posted from outside is not watched either.
    forged = body("conversation.ended", timestamp=t0 + 61)
    await post(client, forged)
    assert await client.app[STATE].store.watch(SESSION) == watch
    clock.at(10_000)
    assert await raiser(client).raise_due() == 0
    await receiver.wait_for_requests(4)


def slack_config(slack: FakeSlack) -> str:
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  backoff: {{ first: 10ms, max: 50ms }}
destinations:
  support:
    type: slack
    token: "{BOT_TOKEN}"
    channel: "#support"
    api_url: "{slack.api_url}"
    max_per_second: 1000
rules:
  - name: no-answer
    when: {{ event: conversation.unanswered }}
    send_to: [support]
    thread: session
    broadcast: true
    stop: true
  - name: conversations
    when: {{ event: [room.join, chat.push] }}
    send_to: [support]
    thread: session
conversations:
  unanswered_after: 2m
"""


async def test_the_unanswered_alert_is_a_reply_in_the_conversations_thread_shown_in_the_channel(
    relay_client: RelayClientFactory, slack: FakeSlack
) -> None:
    client, clock = await start(relay_client, slack_config(slack))
    t0 = clock.start
    await post(client, body("room.join", timestamp=t0))
    await post(client, body("chat.push", message="Hello, I need help with my order", timestamp=t0))
    parent, first = await slack.wait_for_delivered(2)
    clock.at(120)
    assert await raiser(client).raise_due() == 1
    *_, alert = await slack.wait_for_delivered(3)

    assert "thread_ts" not in parent.body
    assert first.body["thread_ts"] == parent.answer["ts"]
    assert alert.body["thread_ts"] == parent.answer["ts"]
    assert alert.body["reply_broadcast"] is True
    assert alert.body["text"].startswith(f"No answer for 2m from agent {AGENT}")
    assert "Hello, I need help with my order" in json.dumps(alert.body["blocks"])


CONVERSATIONS_TABLE = """
CREATE TABLE conversations (
    event_id text PRIMARY KEY, agent_id text, session_id text, started_at double precision,
    duration_s double precision, visitor_messages integer, agent_messages integer,
    first_answer_s double precision, unanswered boolean
)"""


async def test_every_ended_conversation_is_one_row_in_postgresql_as_the_readme_shows(
    relay_client: RelayClientFactory, pg_db: str
) -> None:
    rows(pg_db, CONVERSATIONS_TABLE)
    client, clock = await start(
        relay_client,
        """
verify:
  secrets: ["${SECRET}"]
destinations:
  conversations-db:
    type: postgres
    dsn: "${PG_DSN}"
    table: conversations
    columns:
      event_id: event_id
      agent_id: agent_id
      session_id: data.session_id
      started_at: data.started_at
      duration_s: data.duration_s
      visitor_messages: data.visitor_messages
      agent_messages: data.agent_messages
      first_answer_s: data.first_answer_s
      unanswered: data.unanswered
rules:
  - name: conversation-log
    when: { event: conversation.ended }
    send_to: [ conversations-db ]
conversations:
""",
        PG_DSN=pg_db,
    )
    t0 = clock.start
    await post(client, body("chat.push", message="Hi", timestamp=t0))
    await post(client, body("chat.push", role="assistant", message="Hello", timestamp=t0 + 4))
    clock.at(600)
    assert await raiser(client).raise_due() == 1
    await wait_until(
        lambda: "one row",
        lambda: rows(pg_db, "SELECT count(*) FROM conversations")[0][0] == 1,
        10,
    )
    [row] = rows(
        pg_db,
        "SELECT agent_id, session_id, started_at, duration_s, visitor_messages,"
        " agent_messages, first_answer_s, unanswered FROM conversations",
    )
    assert row == (AGENT, SESSION, t0, 4.0, 1, 1, 4.0, False)


async def test_a_lone_surrogate_in_a_session_id_is_watched_not_refused(
    relay_client: RelayClientFactory, receiver: FakeReceiver, store_section: str
) -> None:
    client, clock = await start(
        relay_client,
        crm_config(receiver, conversations="  unanswered_after: 1m", rules=SIGNALS_ONLY)
        + store_section,
    )
    t0 = clock.start
    # JSON's escape for a lone surrogate, which Python's json reads as one.
    raw = body("chat.push", message="hi MARK", timestamp=t0).replace(SESSION.encode(), b"s-MARK")
    raw = raw.replace(b"MARK", b"\\ud800")
    await post(client, raw)
    clock.at(60)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(1)
    [signal] = received(receiver)
    assert signal["data"]["session_id"] == "s-\ufffd"
    assert signal["data"]["message"] == "hi \ufffd"


async def test_answers_given_while_watching_was_off_raise_no_stale_alert(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    watching = crm_config(receiver, conversations="  unanswered_after: 2m", rules=SIGNALS_ONLY)
    client, clock = await start(relay_client, watching)
    t0 = clock.start
    await post(client, body("chat.push", message="Hello?", timestamp=t0))
    config = client.app[STATE].config
    reload(client.app, dataclasses.replace(config, conversations=None))
    clock.at(60)
    await post(client, body("chat.push", role="assistant", message="Hi!", timestamp=t0 + 60))
    clock.at(86400)
    reload(client.app, config)
    assert await raiser(client).raise_due() == 0
    # Watched afresh from its next event.
    await post(client, body("chat.push", message="Still there?", timestamp=t0 + 86400))
    clock.at(86400 + 120)
    assert await raiser(client).raise_due() == 1
    await receiver.wait_for_requests(1)
    assert [s["data"]["message"] for s in received(receiver)] == ["Still there?"]


async def test_the_signals_event_ids_are_reserved(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client, clock = await start(relay_client, crm_config(receiver, conversations=""))
    raw = body("chat.push", message="hi", timestamp=clock.start)
    taken = "conversation.unanswered:0123456789abcdef01234567:1"
    headers = {**signed_headers(raw), "X-bitHuman-Event-Id": taken}
    response = await client.post("/webhook", data=raw, headers=headers)
    assert response.status == 400
    assert await response.json() == {
        "error": f"event id '{taken}' is reserved for relay's conversation signals"
    }
    assert await client.app[STATE].store.watch(SESSION) is None
