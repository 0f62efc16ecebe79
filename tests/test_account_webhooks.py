"""Account webhooks (SPEC 1.2): signed over timestamp and body, checked by verify.account
only, deduplicated by their delivery id.

Each test posts over HTTP to relay's real app on 127.0.0.1, with a real SQLite store. The
signatures are made with bitHuman's documented recipe (tests/support/bithuman.py), not with
relay's own signing code.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.app import STATE
from relay.verify import sign, sign_account
from tests.conftest import RelayClientFactory
from tests.support.bithuman import (
    ACCOUNT_DATA,
    ACCOUNT_SECRET,
    AGENT,
    DASHBOARD_HEADER_VALUE,
    account_body,
    account_headers,
    bithuman_signature,
    bithuman_verify,
)
from tests.support.relay import SECRET, Output
from tests.test_ingest import wait_for_blocks

NOW = 1780417371
# Session events need the dashboard's header and a signature; account webhooks carry
# neither, and are checked by verify.account alone.
CONFIG = """
verify:
  headers: { X-Webhook-Secret: "${DASHBOARD}" }
  secrets: ["${SECRET}"]
  account:
    secrets: ["whsec_retired_0123", "${ACCOUNT}"]
destinations:
  stdout: { type: console }
rules:
  - name: agents
    when: { event: [agent.ready, agent.failed, "video.*", ping] }
    send_to: [stdout]
"""
ENV = {"DASHBOARD": DASHBOARD_HEADER_VALUE, "ACCOUNT": ACCOUNT_SECRET}
READY = account_body("agent.ready", ACCOUNT_DATA["agent.ready"], created=NOW)


async def start(
    relay_client: RelayClientFactory, config: str = CONFIG, now: float = NOW
) -> TestClient[web.Request, web.Application]:
    """Start relay with its clock at `now`."""
    return await relay_client(config, clock=lambda: now, **ENV)


def test_relay_signs_as_bithumans_documented_verify_function_expects() -> None:
    stamp = str(NOW)
    signature = sign_account(READY, ACCOUNT_SECRET, stamp)
    assert bithuman_verify(ACCOUNT_SECRET, stamp, READY, signature)
    assert signature == bithuman_signature(ACCOUNT_SECRET, stamp, READY)
    assert not bithuman_verify(ACCOUNT_SECRET, str(NOW + 1), READY, signature)


async def test_a_documented_agent_ready_is_accepted_routed_and_delivered(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await start(relay_client)
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW)
    )
    assert response.status == 200
    assert await response.json() == {
        "status": "accepted",
        "event_id": "evt_a1b2c3",
        "deliveries": 1,
    }
    [block] = await wait_for_blocks(output, 1)
    assert block.startswith(f"== Agent {AGENT} is ready ==\nThe agent finished generating.\n")
    assert "(agent.ready · rule agents · 2026-06-02 16:22:51 UTC)" in block


async def test_a_retry_with_the_same_delivery_id_is_a_200_duplicate_sent_once(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await start(relay_client)
    first = await client.post("/webhook", data=READY, headers=account_headers(READY, timestamp=NOW))
    # bitHuman's second attempt, 2 s later: same delivery id, signed again.
    retry = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW + 2)
    )
    assert (first.status, retry.status) == (200, 200)
    assert await retry.json() == {"status": "duplicate", "event_id": "evt_a1b2c3"}
    await wait_for_blocks(output, 1)
    assert len(output.blocks()) == 1


async def test_without_a_delivery_header_the_body_id_names_the_event(
    relay_client: RelayClientFactory,
) -> None:
    client = await start(relay_client)
    body = account_body("agent.ready", ACCOUNT_DATA["agent.ready"], event_id="evt_9z", created=NOW)
    headers = account_headers(body, timestamp=NOW, delivery=None)
    response = await client.post("/webhook", data=body, headers=headers)
    assert (await response.json())["event_id"] == "evt_9z"


@pytest.mark.parametrize(
    "body_id", ["\\ud800", "evt\\u0000x", "", "x" * 257], ids=["surrogate", "nul", "empty", "long"]
)
async def test_a_body_id_that_cannot_name_an_event_is_400_and_nothing_is_stored(
    relay_client: RelayClientFactory, body_id: str
) -> None:
    client = await start(relay_client)
    body = b'{"id": "%s", "event": "agent.ready", "created": %d, "data": {"agent_id": "A1"}}' % (
        body_id.encode(),
        NOW,
    )
    headers = account_headers(body, timestamp=NOW, delivery=None)
    response = await client.post("/webhook", data=body, headers=headers)
    assert response.status == 400
    assert await response.json() == {"error": "field 'id' must be 1 to 256 printable characters"}
    assert await client.app[STATE].store.list_deliveries() == []


def _signed_with(secret: str) -> dict[str, str]:
    return account_headers(READY, timestamp=NOW, secret=secret)


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (_signed_with("whsec_someone_elses_secret"), "invalid signature"),
        (_signed_with(SECRET), "invalid signature"),  # the session secret
        (_signed_with(DASHBOARD_HEADER_VALUE), "invalid signature"),
        # A signature over the body alone, as session events are signed.
        (
            account_headers(READY, timestamp=NOW, signature=sign(READY, ACCOUNT_SECRET)),
            "invalid signature",
        ),
        # Signed at NOW, sent with another timestamp still inside the window.
        (
            account_headers(
                READY,
                timestamp=NOW - 60,
                signature=bithuman_signature(ACCOUNT_SECRET, str(NOW), READY),
            ),
            "invalid signature",
        ),
        (
            {k: v for k, v in _signed_with(ACCOUNT_SECRET).items() if k != "X-BitHuman-Signature"},
            "missing X-BitHuman-Signature header",
        ),
    ],
    ids=[
        "wrong secret",
        "session secret",
        "dashboard header value",
        "body-only signature",
        "tampered timestamp",
        "no signature",
    ],
)
async def test_a_bad_signature_is_401(
    relay_client: RelayClientFactory, output: Output, headers: dict[str, str], error: str
) -> None:
    client = await start(relay_client)
    response = await client.post("/webhook", data=READY, headers=headers)
    text = await response.text()
    assert response.status == 401
    assert await response.json() == {"error": error}
    assert ACCOUNT_SECRET not in text
    assert output.getvalue() == ""


async def test_a_tampered_body_is_401(relay_client: RelayClientFactory) -> None:
    client = await start(relay_client)
    tampered = READY.replace(AGENT.encode(), b"A00000000X")
    headers = account_headers(READY, timestamp=NOW)
    response = await client.post("/webhook", data=tampered, headers=headers)
    assert response.status == 401


@pytest.mark.parametrize(
    ("age_s", "status"), [(-600, 400), (-301, 400), (-299, 200), (299, 200), (301, 400)]
)
async def test_the_replay_window_is_five_minutes_by_default(
    relay_client: RelayClientFactory, age_s: int, status: int
) -> None:
    client = await start(relay_client)
    stamp = NOW + age_s
    body = account_body("agent.ready", ACCOUNT_DATA["agent.ready"], created=stamp)
    response = await client.post(
        "/webhook", data=body, headers=account_headers(body, timestamp=stamp)
    )
    assert response.status == status
    if status == 400:
        assert await response.json() == {
            "error": f"X-BitHuman-Timestamp {stamp} is more than 300s from now ({NOW})"
        }


async def test_a_ten_minute_old_webhook_is_refused_even_when_signed(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await start(relay_client)
    old = NOW - 600
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=old)
    )
    assert response.status == 400
    assert await response.json() == {
        "error": f"X-BitHuman-Timestamp {old} is more than 300s from now ({NOW})"
    }
    assert output.getvalue() == ""


async def test_verify_account_max_age_sets_the_window(relay_client: RelayClientFactory) -> None:
    config = CONFIG.replace("  account:\n", "  account:\n    max_age: 15m\n")
    client = await start(relay_client, config)
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW - 600)
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"id":"evt_1","event":"agent.ready","data":{}}', "missing required field 'created'"),
        (b'{"event":"agent.ready","created":1,"data":{}}', "missing required field 'id'"),
        (b'{"id":"evt_1","event":"agent.ready","created":1}', "missing required field 'data'"),
        (
            b'{"id":"evt_1","event":"agent.ready","created":"now","data":{}}',
            "field 'created' must be a number, got a string",
        ),
        (
            b'{"id":"evt_1","event":"agent.ready","created":1,"data":"A80HVD8577"}',
            "field 'data' must be an object, got a string",
        ),
        (b'{"id":"evt_1","event":"","created":1,"data":{}}', "field 'event' must not be empty"),
        (
            b'{"agent_id":"A80HVD8577","event_type":"room.join","data":{}}',
            "field 'event_type' does not belong in an account webhook"
            " (its fields are id, event, created and data)",
        ),
        (
            b'{"agent_id":"A80HVD8577","data":{}}',
            "missing required field 'id' (this body looks like a session event,"
            " sent without X-BitHuman-Timestamp)",
        ),
        (b'{"id":"evt_1","created":1,"data":{}}', "missing required field 'event'"),
        (b"[1]", "body must be a JSON object, got an array"),
    ],
    ids=[
        "no created",
        "no id",
        "no data",
        "created a string",
        "data a string",
        "empty event",
        "a session body",
        "neither shape",
        "no event",
        "an array",
    ],
)
async def test_a_signed_body_of_the_wrong_shape_is_400_naming_the_field(
    relay_client: RelayClientFactory, body: bytes, error: str
) -> None:
    client = await start(relay_client)
    response = await client.post(
        "/webhook", data=body, headers=account_headers(body, timestamp=NOW)
    )
    assert response.status == 400
    assert await response.json() == {"error": error}


@pytest.mark.parametrize("stamp", ["soon", "1780417371.5", "-1", "", "1" * 13])
async def test_a_timestamp_header_that_is_not_unix_seconds_is_400(
    relay_client: RelayClientFactory, stamp: str
) -> None:
    client = await start(relay_client)
    headers = account_headers(READY, timestamp=NOW)
    headers["X-BitHuman-Timestamp"] = stamp
    headers["X-BitHuman-Signature"] = bithuman_signature(ACCOUNT_SECRET, stamp, READY)
    response = await client.post("/webhook", data=READY, headers=headers)
    assert response.status == 400
    assert await response.json() == {"error": "header X-BitHuman-Timestamp must be Unix seconds"}


async def test_without_account_secrets_account_webhooks_get_401_saying_so(
    relay_client: RelayClientFactory,
) -> None:
    config = CONFIG.replace('  account:\n    secrets: ["whsec_retired_0123", "${ACCOUNT}"]\n', "")
    client = await start(relay_client, config)
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW)
    )
    assert response.status == 401
    assert await response.json() == {
        "error": "account webhooks need verify.account.secrets (the whsec_ secret bitHuman "
        "returned when the webhook was registered)"
    }


async def test_session_checks_do_not_apply_but_allow_ips_does(
    relay_client: RelayClientFactory,
) -> None:
    # No X-Webhook-Secret and no X-bitHuman-Signature body signature: still accepted.
    client = await start(relay_client)
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW)
    )
    assert response.status == 200
    closed = CONFIG.replace("verify:\n", "verify:\n  allow_ips: [203.0.113.0/24]\n")
    client = await start(relay_client, closed)
    response = await client.post(
        "/webhook", data=READY, headers=account_headers(READY, timestamp=NOW)
    )
    assert response.status == 403


async def test_a_session_event_still_needs_the_session_checks(
    relay_client: RelayClientFactory,
) -> None:
    """An account secret is no key to the session family."""
    client = await start(relay_client)
    body = b'{"event_type": "test", "agent_id": "test_agent_123"}'
    headers = {
        "Content-Type": "application/json",
        "X-bitHuman-Signature": sign(body, ACCOUNT_SECRET),
    }
    response = await client.post("/webhook", data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "missing required header X-Webhook-Secret"}
