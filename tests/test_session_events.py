"""Session events as today's dashboard sends them (SPEC 1.1): unsigned, authenticated by the
header the user typed, answered 200; and the Test button's data-less body.

Each test posts over HTTP to relay's real app on 127.0.0.1, with a real SQLite store.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from relay.config.model import Config
from relay.serve import UNAUTHENTICATED_WARNING, warn_about
from tests.conftest import RelayClientFactory
from tests.support.bithuman import (
    CHAT_PUSH,
    DASHBOARD_HEADER_VALUE,
    ROOM_JOIN,
    SESSION_ID,
    TEST_BUTTON,
    dashboard_headers,
)
from tests.support.processes import RelayProcesses, run_cli
from tests.support.relay import SECRET, Output, make_config
from tests.test_ingest import wait_for_blocks

# How today's dashboard authenticates: Developer > Webhooks > custom header; no signature.
DASHBOARD = """
verify:
  headers:
    X-Webhook-Secret: "${DASHBOARD}"
destinations:
  stdout: { type: console }
rules:
  - name: everything
    send_to: [stdout]
"""
ENV = {"DASHBOARD": DASHBOARD_HEADER_VALUE}


@pytest.mark.parametrize(
    ("body", "title", "shown"),
    [
        (ROOM_JOIN, "A user joined room-A80HVD8577-qtrJ-cOFR", "3 participant(s) in the room"),
        (CHAT_PUSH, "New chat message from user", "Hello, I need help with my order"),
    ],
    ids=["room.join", "chat.push"],
)
async def test_unsigned_events_with_the_dashboard_header_are_accepted_with_200(
    relay_client: RelayClientFactory, output: Output, body: bytes, title: str, shown: str
) -> None:
    client = await relay_client(DASHBOARD, **ENV)
    response = await client.post("/webhook", data=body, headers=dashboard_headers())
    assert response.status == 200
    assert await response.json() == {
        "status": "accepted",
        "event_id": hashlib.sha256(body).hexdigest(),
        "deliveries": 1,
    }
    [block] = await wait_for_blocks(output, 1)
    assert block.startswith(f"== {title} ==\n{shown}\n")
    assert "  Agent: A80HVD8577\n" in block
    assert f"  Session: {SESSION_ID}\n" in block


async def test_a_resent_event_is_a_200_duplicate_and_is_sent_once(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(DASHBOARD, **ENV)
    first = await client.post("/webhook", data=CHAT_PUSH, headers=dashboard_headers())
    again = await client.post("/webhook", data=CHAT_PUSH, headers=dashboard_headers())
    assert (first.status, again.status) == (200, 200)
    event_id = hashlib.sha256(CHAT_PUSH).hexdigest()
    assert (await first.json())["status"] == "accepted"
    assert await again.json() == {"status": "duplicate", "event_id": event_id}
    await wait_for_blocks(output, 1)
    assert len(output.blocks()) == 1


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Content-Type": "application/json"}, "missing required header X-Webhook-Secret"),
        (
            {"Content-Type": "application/json", "X-Webhook-Secret": "guessed-value-123"},
            "invalid value for header X-Webhook-Secret",
        ),
        (
            {"Content-Type": "application/json", "X-Webhook-Secret": DASHBOARD_HEADER_VALUE[:-1]},
            "invalid value for header X-Webhook-Secret",
        ),
    ],
    ids=["missing", "wrong", "one character short"],
)
async def test_a_missing_or_wrong_header_is_401_and_no_value_is_echoed(
    relay_client: RelayClientFactory, output: Output, headers: dict[str, str], error: str
) -> None:
    client = await relay_client(DASHBOARD, **ENV)
    response = await client.post("/webhook", data=ROOM_JOIN, headers=headers)
    text = await response.text()
    assert response.status == 401
    assert await response.json() == {"error": error}
    assert DASHBOARD_HEADER_VALUE[:-1] not in text
    assert "guessed-value" not in text
    assert output.getvalue() == ""


async def test_the_test_button_body_is_accepted_and_delivered_as_a_test(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(DASHBOARD, clock=lambda: 1790607300.0, **ENV)
    headers = dashboard_headers(**{"X-Test-Webhook": "true"})
    response = await client.post("/webhook", data=TEST_BUTTON, headers=headers)
    assert response.status == 200
    assert await response.json() == {
        "status": "accepted",
        "event_id": hashlib.sha256(TEST_BUTTON).hexdigest(),
        "deliveries": 1,
    }
    [block] = await wait_for_blocks(output, 1)
    assert block == (
        "== Test event from bitHuman ==\n"
        "This is a test from bitHuman: it reached relay, and relay's rules sent it here"
        " (the dashboard's Test button).\n"
        "  Agent: test_agent_123\n"
        # No timestamp in the body: the receive time stands in.
        "  (test · rule everything · 2026-09-28 14:55:00 UTC)"
    )


async def test_a_rule_can_pick_out_the_test_button(
    relay_client: RelayClientFactory, output: Output
) -> None:
    config = DASHBOARD.replace(
        "  - name: everything\n", "  - name: tests\n    when: { event: test }\n"
    )
    client = await relay_client(config, **ENV)
    counts = []
    for body in (ROOM_JOIN, TEST_BUTTON):
        response = await client.post("/webhook", data=body, headers=dashboard_headers())
        assert response.status == 200
        counts.append((await response.json())["deliveries"])
    assert counts == [0, 1]
    [block] = await wait_for_blocks(output, 1)
    assert block.startswith("== Test event from bitHuman ==")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"event_type": "test", "agent_id": "test_agent_123", "data": "x"}',
            "field 'data' must be an object, got a string",
        ),
        (
            b'{"event_type": "test", "agent_id": "test_agent_123", "data": [1]}',
            "field 'data' must be an object, got an array",
        ),
        (b'{"event_type": "test"}', "missing required field 'agent_id'"),
        (
            b'{"id": "evt_1", "event": "agent.ready", "created": 1, "data": {}}',
            "missing required field 'agent_id' (this body looks like an account webhook:"
            " those carry an X-BitHuman-Timestamp header)",
        ),
    ],
    ids=["data a string", "data an array", "no agent_id", "account body, no timestamp header"],
)
async def test_a_body_of_the_wrong_shape_is_400_naming_the_field(
    relay_client: RelayClientFactory, body: bytes, error: str
) -> None:
    client = await relay_client(DASHBOARD, **ENV)
    response = await client.post("/webhook", data=body, headers=dashboard_headers())
    assert response.status == 400
    assert await response.json() == {"error": error}


def _config(verify: str, tmp_path: Path) -> Config:
    text = f"verify:\n{verify}\ndestinations:\n  stdout: {{ type: console }}\n"
    return make_config(text, tmp_path, ENV)


@pytest.mark.parametrize(
    ("verify", "warned"),
    [
        ('  headers: { X-Webhook-Secret: "${DASHBOARD}" }', False),
        ('  secrets: ["${SECRET}"]', False),
        ('  headers: { Authorization: "Bearer ${DASHBOARD}" }\n  secrets: ["${SECRET}"]', False),
        ("  secrets: []", True),
        ('  account: { secrets: ["whsec_x"] }', True),  # account only: sessions are open
    ],
    ids=["headers", "secrets", "both", "neither", "account only"],
)
def test_the_start_warning_appears_only_when_session_events_are_not_authenticated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, verify: str, warned: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="relay.serve")
    warn_about(_config(verify, tmp_path))
    assert (UNAUTHENTICATED_WARNING in caplog.messages) is warned


@pytest.mark.parametrize(("verify", "warned"), [("headers", False), ("neither", True)])
async def test_relay_serve_and_check_warn_only_when_unauthenticated(
    tmp_path: Path, processes: RelayProcesses, verify: str, warned: bool
) -> None:
    section = (
        '  headers: { X-Webhook-Secret: "dashboard-typed-value-5c1e9a" }'
        if verify == "headers"
        else "  secrets: []"
    )
    path = tmp_path / "relay.yaml"
    path.write_text(
        f"server: {{ port: 0 }}\nverify:\n{section}\n"
        f"store: {{ url: 'sqlite:{tmp_path / 'relay.db'}' }}\n"
        "destinations: { stdout: { type: console } }\n"
    )
    relay = await processes.start(path)
    assert ("NOT authenticated" in relay.log()) is warned
    status, out = await run_cli("check", "-c", str(path))
    assert status == 0
    assert ("warning: verify.headers and verify.secrets are both empty" in out) is warned
    assert SECRET not in out
    await relay.terminate()
