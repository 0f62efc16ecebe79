"""Every row of SPEC section 2 for POST /webhook, against a real app and SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from relay.app import STATE
from relay.verify import sign
from tests.conftest import RelayClientFactory
from tests.support.relay import (
    BASIC,
    CHAT_PUSH,
    ROOM_JOIN,
    SECRET,
    Output,
    event_body,
    signed_headers,
)


async def wait_for_blocks(output: Output, count: int, timeout_s: float = 5.0) -> list[str]:
    """Wait until the console destination has printed `count` notifications."""
    async with asyncio.timeout(timeout_s):
        while len(output.blocks()) < count:
            await asyncio.sleep(0.01)
    return output.blocks()


@pytest.mark.parametrize(
    ("body", "title"),
    [
        (ROOM_JOIN, "A user joined customer-support"),
        (CHAT_PUSH, "New chat message from user"),
    ],
)
async def test_seed_payloads_are_accepted_and_delivered(
    relay_client: RelayClientFactory, output: Output, body: bytes, title: str
) -> None:
    client = await relay_client(BASIC)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    answer = await response.json()
    assert answer == {
        "status": "accepted",
        "event_id": hashlib.sha256(body).hexdigest(),
        "deliveries": 1,
    }
    blocks = await wait_for_blocks(output, 1)
    assert blocks[0].startswith(f"== {title} ==")
    assert "session_xyz789" in blocks[0]


async def test_duplicate_body_is_answered_200_and_sent_once(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(BASIC)
    first = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN))
    second = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN))
    assert first.status == 200
    assert second.status == 200
    event_id = (await first.json())["event_id"]
    assert await second.json() == {"status": "duplicate", "event_id": event_id}
    await wait_for_blocks(output, 1)
    await asyncio.sleep(0.2)
    assert len(output.blocks()) == 1


async def test_event_id_header_names_the_event_and_dedupes(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(BASIC)
    one, other = event_body(message="a"), event_body(message="b")
    first = await client.post(
        "/webhook", data=one, headers=signed_headers(one, **{"X-bitHuman-Event-Id": "evt_1"})
    )
    again = await client.post(
        "/webhook", data=other, headers=signed_headers(other, **{"webhook-id": "evt_1"})
    )
    assert (await first.json())["event_id"] == "evt_1"
    assert again.status == 200
    assert (await again.json())["status"] == "duplicate"


async def test_wrong_signature_is_401(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    headers = signed_headers(ROOM_JOIN, secret="not-the-secret")
    response = await client.post("/webhook", data=ROOM_JOIN, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid signature"}


async def test_signature_of_another_body_is_401(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    response = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(CHAT_PUSH))
    assert response.status == 401
    assert await response.json() == {"error": "invalid signature"}


async def test_missing_signature_is_401(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    response = await client.post(
        "/webhook", data=ROOM_JOIN, headers={"Content-Type": "application/json"}
    )
    assert response.status == 401
    assert await response.json() == {"error": "missing X-bitHuman-Signature header"}


async def test_any_of_several_secrets_may_sign(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC.replace('["${SECRET}"]', '["old-secret", "${SECRET}"]'))
    for secret, body in (("old-secret", ROOM_JOIN), (SECRET, CHAT_PUSH)):
        response = await client.post("/webhook", data=body, headers=signed_headers(body, secret))
        assert response.status == 200, secret


async def test_empty_secret_list_skips_signature_check(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC.replace('["${SECRET}"]', "[]"))
    response = await client.post(
        "/webhook", data=ROOM_JOIN, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        ({"Authorization": "Bearer t0ken", "X-API-Key": "key-123"}, 200, None),
        ({"X-API-Key": "key-123"}, 401, "missing required header Authorization"),
        (
            {"Authorization": "Bearer wrong", "X-API-Key": "key-123"},
            401,
            "invalid value for header Authorization",
        ),
        (
            {"Authorization": "Bearer t0ken", "X-API-Key": "nope"},
            401,
            "invalid value for header X-API-Key",
        ),
    ],
)
async def test_required_headers(
    relay_client: RelayClientFactory, extra: dict[str, str], status: int, error: str | None
) -> None:
    config = BASIC.replace(
        "verify:\n",
        'verify:\n  headers:\n    Authorization: "Bearer ${TOKEN}"\n    X-API-Key: key-123\n',
    )
    client = await relay_client(config, TOKEN="t0ken")
    response = await client.post(
        "/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN, **extra)
    )
    assert response.status == status
    if error is not None:
        answer = await response.json()
        assert answer == {"error": error}
        assert "t0ken" not in json.dumps(answer)


@pytest.mark.parametrize(
    ("verify_extra", "forwarded", "status"),
    [
        ("allow_ips: [127.0.0.1/32]", None, 200),
        ("allow_ips: [10.0.0.0/8]", None, 403),
        # The test client connects from 127.0.0.1, which is not a trusted proxy here, so its
        # X-Forwarded-For is ignored: a spoofed allowed address does not get in.
        ("allow_ips: [203.0.113.0/24]", "203.0.113.5", 403),
        ("allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8]", "203.0.113.5", 200),
        # The client is the rightmost address that is not a trusted proxy.
        (
            "allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]",
            "198.51.100.1, 203.0.113.5, 10.1.2.3",
            200,
        ),
        (
            "allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8]",
            "203.0.113.5, 198.51.100.1",
            403,
        ),
        # A dual-stack proxy writes an IPv4 client as IPv4-mapped IPv6: the same address.
        (
            "allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8]",
            "::ffff:203.0.113.5",
            200,
        ),
        (
            "allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]",
            "[::ffff:203.0.113.5]:41000, ::ffff:10.1.2.3",
            200,
        ),
        (
            "allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.0/8]",
            "::ffff:198.51.100.1",
            403,
        ),
    ],
)
async def test_allow_ips_and_trusted_proxies(
    relay_client: RelayClientFactory, verify_extra: str, forwarded: str | None, status: int
) -> None:
    client = await relay_client(BASIC.replace("verify:\n", f"verify:\n  {verify_extra}\n"))
    headers = signed_headers(ROOM_JOIN)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = await client.post("/webhook", data=ROOM_JOIN, headers=headers)
    assert response.status == status
    if status == 403:
        assert "is not allowed" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"agent_id": "a", ',
            "body is not valid JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 19",
        ),
        (b"[1, 2]", "body must be a JSON object, got an array"),
        (b'"text"', "body must be a JSON object, got a string"),
        (b"\xff\xfe{}", "body is not valid UTF-8 (byte 0)"),
        (b"\xef\xbb\xbf{}", "body is not valid JSON: it starts with a byte order mark"),
        (b'{"a": NaN}', "body is not valid JSON: NaN is not a JSON value"),
        (event_body(agent_id=None), "missing required field 'agent_id'"),
        (event_body(event_type=None), "missing required field 'event_type'"),
        (event_body(agent_id=42), "field 'agent_id' must be a string, got a number"),
        (event_body(event_type=["room.join"]), "field 'event_type' must be a string, got an array"),
        (event_body(data="hello"), "field 'data' must be an object, got a string"),
        (event_body(timestamp="yesterday"), "field 'timestamp' must be a number, got a string"),
        (event_body(timestamp=True), "field 'timestamp' must be a number, got a boolean"),
    ],
)
async def test_bad_bodies_are_400_naming_the_problem(
    relay_client: RelayClientFactory, body: bytes, error: str
) -> None:
    client = await relay_client(BASIC)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 400
    assert await response.json() == {"error": error}


async def test_missing_timestamp_uses_receive_time(
    relay_client: RelayClientFactory, output: Output
) -> None:
    client = await relay_client(BASIC, clock=lambda: 1705312285.0)
    body = event_body(timestamp=None)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    blocks = await wait_for_blocks(output, 1)
    assert "2024-01-15 09:51:25 UTC" in blocks[0]


@pytest.mark.parametrize(("offset_s", "status"), [(-301, 400), (-299, 200), (299, 200), (301, 400)])
async def test_max_age(relay_client: RelayClientFactory, offset_s: float, status: int) -> None:
    now = 1705312285.0
    config = BASIC.replace("verify:\n", "verify:\n  max_age: 5m\n")
    client = await relay_client(config, clock=lambda: now)
    body = event_body(timestamp=now + offset_s)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == status
    if status == 400:
        error = (await response.json())["error"]
        assert error == f"timestamp {now + offset_s:.0f} is more than 300s from now ({now:.0f})"


async def test_body_over_limit_is_413(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC + "server:\n  max_body_bytes: 100\n")
    body = event_body(message="x" * 200)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 413
    assert await response.json() == {"error": "body is larger than 100 bytes"}


async def test_chunked_body_over_limit_is_413(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC + "server:\n  max_body_bytes: 100\n")
    body = event_body(message="x" * 200)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:50]
        yield body[50:]

    response = await client.post("/webhook", data=chunks(), headers=signed_headers(body))
    assert response.status == 413


async def test_wrong_content_type_is_415(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    headers = signed_headers(ROOM_JOIN) | {"Content-Type": "text/plain"}
    response = await client.post("/webhook", data=ROOM_JOIN, headers=headers)
    assert response.status == 415
    assert await response.json() == {
        "error": "Content-Type must be application/json, got text/plain"
    }


async def test_store_unavailable_is_503_and_nothing_is_claimed(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(BASIC)
    await client.app[STATE].store.close()
    response = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN))
    assert response.status == 503
    assert await response.json() == {"error": "store unavailable, retry later"}


async def test_while_draining_readyz_is_503_and_events_are_still_accepted(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(BASIC)
    client.app[STATE].draining = True
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert await ready.json() == {"status": "shutting down"}
    response = await client.post("/webhook", data=ROOM_JOIN, headers=signed_headers(ROOM_JOIN))
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "accepted"
    # Stored with its delivery (which a lane, not stopped yet while draining, may already
    # have sent: an idle lane claims at once).
    [stored] = await client.app[STATE].store.list_deliveries()
    assert (stored.event_id, stored.destination) == (answer["event_id"], "stdout")


async def test_no_matching_rule_is_accepted_with_zero_deliveries(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(
        BASIC.replace("    send_to", "    when: { event: room.join }\n    send_to")
    )
    response = await client.post("/webhook", data=CHAT_PUSH, headers=signed_headers(CHAT_PUSH))
    assert response.status == 200
    assert (await response.json())["deliveries"] == 0


@pytest.mark.parametrize(
    ("payload_type", "rule_type"),
    [
        ("room.join", "room.join"),
        ("room_join", "room.join"),
        ("room.join", "room_join"),
        ("room_join", "room_join"),
        ("chat_push", "chat.push"),
        ("agent.custom_thing", "agent_custom.thing"),
    ],
)
async def test_both_event_type_spellings_match(
    relay_client: RelayClientFactory, output: Output, payload_type: str, rule_type: str
) -> None:
    config = BASIC.replace("    send_to", f"    when: {{ event: {rule_type} }}\n    send_to")
    client = await relay_client(config)
    body = event_body(payload_type)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    assert (await response.json())["deliveries"] == 1


async def test_health_endpoints(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await client.app[STATE].store.close()
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


def test_signature_reproduces_githubs_published_vector() -> None:
    signature = sign(b"Hello, World!", "It's a Secret to Everybody")
    assert signature == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
