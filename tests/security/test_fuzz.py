"""SPEC sections 1-2 under hostile input: every malformed request gets a 4xx within a
bounded time, never a 5xx, a crash or a hang, and a valid event is accepted afterwards.

The whole app runs in-process on a real SQLite file (the relay_client fixture). Fuzzed
bodies are signed with the secret, so they reach the parser, not just the signature check;
each test also checks the unsigned ones are refused at the door.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RelayClientFactory
from tests.security.conftest import REQUEST_TIMEOUT_S, closed_by_peer, read_answer
from tests.support.fake_discord import wait_until
from tests.support.relay import SECRET, Output, event_body, signed_headers

READ_TIMEOUT_S = 1.0
LINGERING_S = 10.0  # aiohttp's lingering_time, which relay serve keeps
MAX_BODY_BYTES = 64 * 1024
CONFIG = f"""
server:
  read_timeout: 1s
  max_body_bytes: {MAX_BODY_BYTES}
verify:
  secrets: ["${{SECRET}}"]
destinations:
  stdout: {{ type: console }}
rules:
  - name: everything
    send_to: [stdout]
"""
CHECKED_FIELDS = ("agent_id", "event_type", "data")  # data may be absent, never of another type
FUZZ = settings(
    max_examples=150,
    deadline=None,
    # One app serves every example of a test: that is the point (state carries over).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Client = TestClient[web.Request, web.Application]


# --- helpers -------------------------------------------------------------------------------


def is_valid_event(body: bytes) -> bool:
    """Tell, independently of relay, whether a body is an event SPEC section 1 accepts."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(payload, dict):
        return False
    agent_id, event_type = payload.get("agent_id"), payload.get("event_type")
    if not isinstance(agent_id, str) or not isinstance(event_type, str) or not event_type.strip():
        return False
    if not isinstance(payload.get("data"), dict | None):  # absent or null: no data
        return False
    timestamp = payload.get("timestamp")
    if timestamp is None:
        return True
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return False
    try:
        return math.isfinite(float(timestamp))
    except OverflowError:  # an integer no float can hold is no Unix time
        return False


class Poster:
    """Posts bodies to one running relay; remembers accepted bodies (a repeat is a duplicate)."""

    def __init__(self, client: Client, output: Output) -> None:
        self.client = client
        self.output = output
        self.accepted: set[bytes] = set()

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST a body (signed unless headers are given), bounded in time."""
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            response = await self.client.post(
                "/webhook", data=body, headers=signed_headers(body) if headers is None else headers
            )
            text = await response.text()
        assert response.status < 500, (response.status, text, body[:200])
        answer = json.loads(text)
        assert isinstance(answer, dict), text
        return response.status, answer

    async def check(self, body: bytes) -> int:
        """POST a body signed and unsigned; assert relay answers as SPEC section 2 says."""
        status, answer = await self.post(body, {"Content-Type": "application/json"})
        assert status == 401, (status, answer, body[:200])
        status, answer = await self.post(body)
        if is_valid_event(body):
            expected = "duplicate" if body in self.accepted else "accepted"
            assert (status, answer.get("status")) == (200, expected), (answer, body[:200])
            self.accepted.add(body)
        else:
            assert 400 <= status < 500, (status, answer, body[:200])
            assert isinstance(answer.get("error"), str) and answer["error"], answer
        return status

    async def assert_still_serving(self) -> None:
        """A fresh valid event is accepted and delivered."""
        marker = f"alive-{uuid.uuid4().hex}"
        body = event_body(message=marker)
        status, answer = await self.post(body)
        assert status == 200, answer
        await wait_until(
            f"the console to print {marker}", lambda: marker in self.output.getvalue(), 5.0
        )
        health = await self.client.get("/healthz")
        assert health.status == 200


@pytest.fixture
async def poster(relay_client: RelayClientFactory, output: Output) -> Poster:
    return Poster(await relay_client(CONFIG), output)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
valid_payloads = st.fixed_dictionaries(
    {
        "agent_id": st.text(max_size=30),
        "event_type": st.text(min_size=1, max_size=30).filter(lambda s: bool(s.strip())),
        "data": st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    },
    optional={
        "timestamp": st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(10**15), 10**15)
        | st.none()
    },
)
extra_fields = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in {*CHECKED_FIELDS, "timestamp"}),
    json_values,
    max_size=5,
)


def encode(payload: object, ascii_only: bool) -> bytes:
    return json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8")


# --- bodies --------------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=2000))
async def test_random_bytes_get_4xx(poster: Poster, body: bytes) -> None:
    await poster.check(body)


async def test_random_bytes_leave_relay_serving(poster: Poster) -> None:
    for body in [b"", b"\x00" * 100, bytes(range(256)), b"{", b"null", b"[]", b"{}"]:
        assert 400 <= await poster.check(body) < 500
    await poster.assert_still_serving()


async def test_valid_event_truncated_at_every_position_gets_400(poster: Poster) -> None:
    payload = {
        "agent_id": "agent_ünï😀",
        "event_type": "chat.push",
        "data": {"role": "user", "message": "héllo 👋🏽 世界", "session_id": "s1", "n": [1, 2.5]},
        "timestamp": 1705312285.0,
    }
    body = encode(payload, ascii_only=False)
    for end in range(len(body)):
        status = await poster.check(body[:end])
        assert status == 400, (end, body[:end])
    assert await poster.check(body) == 200
    await poster.assert_still_serving()


@FUZZ
@given(payload=valid_payloads, ascii_only=st.booleans(), cut=st.integers(0, 10_000))
async def test_generated_events_truncated_get_400(
    poster: Poster, payload: dict[str, Any], ascii_only: bool, cut: int
) -> None:
    body = encode(payload, ascii_only)
    await poster.check(body[: cut % len(body)])


def deep(depth: int) -> Iterator[tuple[str, bytes]]:
    yield "open arrays", b"[" * depth
    yield "open objects", b'{"a":' * depth
    yield "closed arrays", b"[" * depth + b"]" * depth
    yield "closed objects", b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"]" * depth
    yield "in data", b'{"agent_id": "a", "event_type": "x", "data": {"a": ' + inner + b"}}"


@pytest.mark.parametrize(("name", "body"), list(deep(10_000)), ids=[n for n, _ in deep(1)])
async def test_deeply_nested_json_gets_400(poster: Poster, name: str, body: bytes) -> None:
    status, answer = await poster.post(body)
    assert status == 400, answer
    assert answer["error"].startswith("body is not valid JSON"), answer
    await poster.assert_still_serving()


async def test_moderately_nested_data_is_accepted_and_delivered(poster: Poster) -> None:
    """Nesting Python's parser handles must not trip routing, storing or formatting."""
    nested = "[" * 400 + "]" * 400
    body = (
        '{"agent_id": "a", "event_type": "chat.push", "data": {"message": "deepnest",'
        f' "session_id": "s", "role": "user", "deep": {nested}}}}}'
    ).encode()
    status, answer = await poster.post(body)
    assert status == 200, answer
    await wait_until(
        "the deep event's notification", lambda: "deepnest" in poster.output.getvalue(), 5.0
    )
    await poster.assert_still_serving()


NUMBERS = [
    # (where the number goes, its JSON text, expected status)
    ("timestamp", "1e400", 400),
    ("timestamp", "-1e400", 400),
    ("timestamp", "1" + "0" * 400, 400),  # an int no float can hold
    ("timestamp", "1" + "0" * 5000, 400),  # past Python's int-string conversion limit
    ("timestamp", "NaN", 400),
    ("timestamp", "Infinity", 400),
    ("timestamp", "-Infinity", 400),
    ("timestamp", "1e-400", 200),  # underflows to 0.0: a (strange) valid time
    ("data", "1e400", 200),  # valid JSON; its value is only data
    ("data", "1" + "0" * 400, 200),
    ("data", "1" + "0" * 5000, 400),
    ("data", "NaN", 400),  # not JSON (RFC 8259): SPEC section 2 says 400
    ("data", "-Infinity", 400),
]


@pytest.mark.parametrize(
    ("where", "number", "status"),
    NUMBERS,
    ids=[f"{where}={number[:10]}({len(number)})" for where, number, _ in NUMBERS],
)
async def test_huge_and_special_numbers(
    poster: Poster, where: str, number: str, status: int
) -> None:
    if where == "timestamp":
        text = f'{{"agent_id": "a", "event_type": "x", "data": {{}}, "timestamp": {number}}}'
    else:
        text = f'{{"agent_id": "a", "event_type": "x", "data": {{"n": {number}}}}}'
    got, answer = await asyncio.wait_for(poster.post(text.encode()), REQUEST_TIMEOUT_S)
    assert got == status, answer
    await poster.assert_still_serving()


@FUZZ
@given(junk=st.binary(min_size=1, max_size=40), ascii_prefix=st.text(max_size=10))
async def test_non_utf8_inside_strings_gets_400(
    poster: Poster, junk: bytes, ascii_prefix: str
) -> None:
    try:
        junk.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        junk += b"\xff"
    body = event_body(message=ascii_prefix).replace(b'"message": "', b'"message": "' + junk, 1)
    status, answer = await poster.post(body)
    assert status == 400, answer
    assert answer["error"].startswith("body is not valid UTF-8"), answer


JSON_OF_EVERY_TYPE: list[object] = [
    *(None, True, False, 0, -1.5, "", " ", "text"),
    *([], ["x"], {}, {"k": "v"}),
]


@pytest.mark.parametrize("field", [*CHECKED_FIELDS, "timestamp"])
async def test_every_field_with_every_json_type(poster: Poster, field: str) -> None:
    for value in JSON_OF_EVERY_TYPE:
        payload = json.loads(event_body(message=f"{field}-{value!r}"))
        payload[field] = value  # event_body() would drop a None: this sends a real null
        body = json.dumps(payload).encode()
        status = await poster.check(body)
        if field == "timestamp":
            ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        elif field == "data":
            ok = value is None or isinstance(value, dict)
        elif field == "event_type":
            ok = isinstance(value, str) and bool(value.strip())
        else:
            ok = isinstance(value, str)
        assert (status == 200) == ok, (field, value, status)
        if not ok:
            assert status == 400
    await poster.assert_still_serving()


@FUZZ
@given(
    field=st.sampled_from([*CHECKED_FIELDS, "timestamp"]),
    value=json_values,
    ascii_only=st.booleans(),
)
async def test_generated_wrong_types(
    poster: Poster, field: str, value: object, ascii_only: bool
) -> None:
    payload = json.loads(event_body(message=f"wrong-{uuid.uuid4().hex}"))
    payload[field] = value
    await poster.check(encode(payload, ascii_only))


@FUZZ
@given(payload=valid_payloads, extra=extra_fields, ascii_only=st.booleans())
async def test_unicode_events_with_unknown_fields_are_accepted(
    poster: Poster, payload: dict[str, Any], extra: dict[str, Any], ascii_only: bool
) -> None:
    body = encode({**extra, **payload}, ascii_only)
    assert is_valid_event(body)
    assert await poster.check(body) == 200


async def test_unicode_event_with_unknown_fields_is_delivered(poster: Poster) -> None:
    body = encode(
        {
            "agent_id": "ägent 🤖",
            "event_type": "room_join",
            "data": {"room_name": "salle 🎉 \u202e\u0000", "lone": "\ud800", "future": {"x": [1]}},
            "future_field": {"nested": ["😀"]},
            "version": 2,
        },
        ascii_only=True,  # the lone surrogate can only travel escaped
    )
    assert await poster.check(body) == 200
    await wait_until("the room.join notification", lambda: "salle" in poster.output.getvalue(), 5.0)
    await poster.assert_still_serving()


async def test_lone_surrogates_in_the_stored_keys_are_accepted_and_delivered(
    poster: Poster,
) -> None:
    """The session id and agent id are keys the store keeps as text, where no UTF-8 column
    takes a lone surrogate: they are kept with U+FFFD in its place, not refused."""
    body = encode(
        {
            "agent_id": "agent \udc00",
            "event_type": "chat.push",
            "data": {"session_id": "s\ud83d", "role": "user", "message": "lone keys"},
        },
        ascii_only=True,
    )
    assert await poster.check(body) == 200
    await wait_until("the notification", lambda: "lone keys" in poster.output.getvalue(), 5.0)
    assert "agent \ufffd" in poster.output.getvalue()
    await poster.assert_still_serving()


# --- compression ---------------------------------------------------------------------------


@pytest.mark.parametrize("decompressed_bytes", [MAX_BODY_BYTES + 10_000, 20_000_000])
async def test_gzip_body_over_the_limit_once_decompressed_is_413(
    poster: Poster, decompressed_bytes: int
) -> None:
    """max_body_bytes bounds the body relay handles, not the bytes on the wire."""
    body = event_body(message="bomb")
    body += b" " * (decompressed_bytes - len(body))  # still a valid event: JSON allows the padding
    compressed = gzip.compress(body)
    assert len(compressed) < MAX_BODY_BYTES
    headers = signed_headers(body) | {"Content-Encoding": "gzip"}
    status, answer = await poster.post(compressed, headers)
    assert status == 413, answer
    await poster.assert_still_serving()


# --- headers and slow bodies, over raw TCP ------------------------------------------------


def request_head(client: Client, body: bytes, extra: str = "", length: int | None = None) -> bytes:
    port = client.server.port
    return (
        "POST /webhook HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-bitHuman-Signature: {signed_headers(body)['X-bitHuman-Signature']}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        f"{extra}\r\n"
    ).encode("latin-1")


async def connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = client.server.port
    assert port is not None
    return await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    "extra",
    [
        "X-Big: " + "a" * 100_000 + "\r\n",
        "".join(f"X-Many-{i}: v\r\n" for i in range(200)),
        "X-bitHuman-Event-Id: " + "e" * 100_000 + "\r\n",
    ],
    ids=["100KB header value", "200 headers", "100KB event id"],
)
async def test_oversized_headers_get_4xx(poster: Poster, extra: str) -> None:
    body = event_body(message="oversized")
    reader, writer = await connect(poster.client)
    started = time.monotonic()
    try:
        writer.write(request_head(poster.client, body, extra) + body)
        await writer.drain()
        answer = await read_answer(reader, started)
    finally:
        writer.close()
    assert 400 <= answer.status < 500, answer
    await poster.assert_still_serving()
    assert "oversized" not in poster.output.getvalue()


async def test_stalled_body_gets_408_and_the_connection_closes(poster: Poster) -> None:
    body = event_body(message="stalled")
    assert len(body) > 100
    reader, writer = await connect(poster.client)
    started = time.monotonic()
    try:
        writer.write(request_head(poster.client, body, length=500) + body[:100])
        await writer.drain()
        answer = await read_answer(reader, started)
        assert answer.status == 408, answer
        assert answer.json() == {"error": f"body not received within {READ_TIMEOUT_S:g}s"}
        assert READ_TIMEOUT_S * 0.9 <= answer.elapsed_s < READ_TIMEOUT_S + 2, answer
        # The connection is not kept for the rest of the body: aiohttp reads (and drops)
        # what still comes for at most its lingering time, then closes it.
        assert await closed_by_peer(reader, LINGERING_S + 2), answer.headers
    finally:
        writer.close()
    await poster.assert_still_serving()


async def test_trickled_body_gets_408(poster: Poster) -> None:
    body = event_body(message="trickled")
    reader, writer = await connect(poster.client)
    started = time.monotonic()
    writer.write(request_head(poster.client, body))
    await writer.drain()

    async def trickle() -> None:
        for byte in body:  # one byte every 0.2 s: the whole body would take far longer than 1 s
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    try:
        answer = await read_answer(reader, started)
    finally:
        sender.cancel()
        writer.close()
    assert answer.status == 408, answer
    assert answer.elapsed_s < READ_TIMEOUT_S + 2, answer
    await poster.assert_still_serving()
    assert "trickled" not in poster.output.getvalue()


async def test_secret_never_echoed(poster: Poster) -> None:
    body = SECRET.encode()
    status, answer = await poster.post(body)
    assert status == 400
    assert SECRET not in json.dumps(answer)
