"""The webhook destination (SPEC 3, 4): signed requests to a real receiver that verifies
them with `standardwebhooks`, through relay's worker and store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from relay.config import ConfigError
from tests.conftest import RelayClientFactory
from tests.support.fake_receiver import RECEIVER_SECRET, Answer, FakeReceiver
from tests.support.relay import make_config, signed_headers
from tests.support.secrets import watch
from tests.test_cli import route_chat_push
from tests.test_delivery import Client, deliveries, post_event, wait_for_status

CRM_TOKEN = "crm-token-5f1e0c77d2"
API_KEY = "crm-api-key-90a7be31"
watch(RECEIVER_SECRET, CRM_TOKEN, API_KEY)

GRACE_S = 0.3  # with backoff capped at 50 ms, a wrongful retry would come well within this


def webhook_config(
    receiver: FakeReceiver, *, body: str | None = None, max_attempts: int = 8
) -> str:
    body_line = f"    body: '{body}'\n" if body is not None else ""
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  max_attempts: {max_attempts}
  backoff: {{ first: 10ms, max: 50ms }}
destinations:
  crm:
    type: webhook
    url: "{receiver.url()}"
    secret: "{RECEIVER_SECRET}"
    headers: {{ Authorization: "Bearer {CRM_TOKEN}", X-Api-Key: "{API_KEY}" }}
{body_line}rules:
  - name: everything
    send_to: [crm]
"""


async def start(
    relay_client: RelayClientFactory, receiver: FakeReceiver, **options: object
) -> Client:
    return await relay_client(webhook_config(receiver, **options))  # type: ignore[arg-type]


async def test_the_event_arrives_as_received_signed_and_with_its_headers(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client = await start(relay_client, receiver)
    await post_event(client, message="I want a refund")

    [sent] = await wait_for_status(client, "sent")
    [request] = receiver.requests
    assert request.verified, request.verify_error
    assert request.headers["Authorization"] == f"Bearer {CRM_TOKEN}"
    assert request.headers["X-Api-Key"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.path == "/hooks/bithuman"
    # Byte for byte what bitHuman sent relay.
    payload = json.loads(request.body)
    assert payload["data"]["message"] == "I want a refund"
    assert sent.attempts == 1


async def test_a_5xx_then_a_200_is_one_delivery_with_one_webhook_id(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    receiver.script(Answer(503, "busy"), 200)
    client = await start(relay_client, receiver)
    await post_event(client)

    [sent] = await wait_for_status(client, "sent")
    failed, succeeded = receiver.requests
    assert (failed.status, succeeded.status) == (503, 200)
    assert failed.verified and succeeded.verified
    assert failed.headers["webhook-id"] == succeeded.headers["webhook-id"]
    assert failed.body == succeeded.body
    assert sent.attempts == 2
    assert [d.status for d in await deliveries(client)] == ["sent"]


async def test_a_429s_retry_after_is_honoured(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    retry_after_s = 1.0  # backoff alone would retry after 5 to 10 ms
    receiver.script(Answer(429, "slow down", {"Retry-After": "1"}), 200)
    client = await start(relay_client, receiver)
    await post_event(client)

    await wait_for_status(client, "sent", timeout_s=10.0)
    limited, success = receiver.requests
    assert (limited.status, success.status) == (429, 200)
    # The receiver stamps arrival with time.monotonic(), relay waits on time.time(): allow
    # a few milliseconds for the two clocks, far below the 1 s asked for.
    assert success.at - limited.at >= retry_after_s - 0.005
    assert limited.headers["webhook-id"] == success.headers["webhook-id"]


@pytest.mark.parametrize(
    ("status", "answer", "error"),
    [
        (
            400,
            '{"error": "unknown field agent"}',
            'webhook answered 400: {"error": "unknown field agent"}',
        ),
        (410, "gone", "webhook answered 410: gone"),
        (422, "x" * 500, "webhook answered 422: " + "x" * 200),
        (
            302,
            "",
            "webhook answered 302: redirects are not followed; set url to where it points",
        ),
    ],
)
async def test_a_refusal_dead_letters_at_once_with_the_status_and_the_answer(
    relay_client: RelayClientFactory,
    receiver: FakeReceiver,
    status: int,
    answer: str,
    error: str,
) -> None:
    headers = {"Location": receiver.url("/elsewhere")} if status == 302 else {}
    receiver.script(Answer(status, answer, headers))
    client = await start(relay_client, receiver)
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    assert dead.attempts == 1
    assert dead.last_error == error
    assert [r.path for r in receiver.requests] == ["/hooks/bithuman"]  # no redirect followed


async def test_an_answer_echoing_the_request_does_not_put_a_secret_in_the_record(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    receiver.script(Answer(401, f"bad token Bearer {CRM_TOKEN} for key {API_KEY}"))
    client = await start(relay_client, receiver)
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    assert dead.last_error == "webhook answered 401: bad token <secret> for key <secret>"


async def test_the_body_template_renders_json(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    body = (
        '{"agent": {{ agent_id | tojson }}, "text": {{ data.message | tojson }},'
        ' "session": {{ data.session_id | tojson }}}'
    )
    client = await start(relay_client, receiver, body=body)
    await post_event(client, message='He said "refund" \\ then\nleft </script>', session="s9")

    await wait_for_status(client, "sent")
    [request] = receiver.requests
    assert request.verified, request.verify_error
    assert json.loads(request.body) == {
        "agent": "agent_abc123",
        "text": 'He said "refund" \\ then\nleft </script>',
        "session": "s9",
    }


async def test_a_body_template_that_fails_on_an_event_dead_letters_it_with_the_reason(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    client = await start(relay_client, receiver, body='{"votes": {{ data.votes | tojson }}}')
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    assert dead.last_error == "body template failed: 'dict object' has no attribute 'votes'"
    assert receiver.requests == []


def test_a_body_template_that_cannot_render_json_is_an_error_at_load(tmp_path: Path) -> None:
    text = webhook_config(FakeReceiver(), body='{"text": "{{ data.message }}"}')

    with pytest.raises(ConfigError) as caught:
        make_config(text, tmp_path)

    assert [str(issue) for issue in caught.value.issues] == [
        "test.yaml:13: destinations.crm.body: for a sample chat.push: did not render valid"
        " JSON: Expecting ',' delimiter: line 1 column 28 (char 27) (write {{ value | tojson }}"
        " to put a value in JSON)"
    ]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            'secret: "not-a-whsec"',
            "destinations.crm.secret: expected whsec_ followed by the base64 of 24 to 64 random"
            " bytes (value not shown: it is a secret)",
        ),
        (
            'secret: "whsec_c2hvcnQ="',
            "destinations.crm.secret: expected whsec_ followed by the base64 of 24 to 64 random"
            " bytes (value not shown: it is a secret)",
        ),
        (
            'headers: { webhook-signature: "x" }',
            "destinations.crm.headers.webhook-signature: is set by relay itself (the signature"
            " and body)",
        ),
        (
            'headers: { "Bad Header": "x" }',
            "destinations.crm.headers.Bad Header: is not a valid HTTP header name",
        ),
        (
            'url: "ftp://crm.example.com/x"',
            "destinations.crm.url: expected an http(s) URL (value not shown: it is a secret)",
        ),
    ],
)
def test_config_errors_name_the_key_and_never_the_value(
    tmp_path: Path, entry: str, error: str
) -> None:
    key = entry.split(":")[0]
    lines = {
        "url": 'url: "https://crm.example.com/hook"',
        "secret": f'secret: "{RECEIVER_SECRET}"',
        "headers": "headers: {}",
    }
    lines[key] = entry
    body = "\n".join(f"    {line}" for line in lines.values())
    text = (
        f"destinations:\n  crm:\n    type: webhook\n{body}\nrules: [{{name: r, send_to: [crm]}}]\n"
    )

    with pytest.raises(ConfigError) as caught:
        make_config(text, tmp_path)

    assert [issue.message for issue in caught.value.issues] == [error.split(": ", 1)[1]]
    assert [issue.path for issue in caught.value.issues] == [error.split(": ", 1)[0]]
    assert "not-a-whsec" not in str(caught.value)
    assert "c2hvcnQ" not in str(caught.value)


async def test_no_header_value_or_secret_reaches_a_log_or_an_error(
    relay_client: RelayClientFactory, receiver: FakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script(Answer(500, "oops"), Answer(403, "no"))
    caplog.set_level(logging.DEBUG)
    client = await start(relay_client, receiver)
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    text = caplog.text + str(dead) + repr(dead)
    for secret in (RECEIVER_SECRET, CRM_TOKEN, API_KEY, receiver.url()):
        assert secret not in text


def test_route_shows_the_body_and_the_header_names_never_their_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = FakeReceiver()
    receiver.port = 9  # never contacted: route sends nothing
    body = '{"agent": {{ agent_id | tojson }}, "text": {{ data.message | tojson }}}'
    text = webhook_config(receiver, body=body).replace('secrets: ["${SECRET}"]', "")
    out = route_chat_push(tmp_path, capsys, text)

    assert out.endswith(
        "--- crm (rule everything) ---\n"
        "POST http://127.0.0.1:9/<secret>\n"
        "Content-Type: application/json\n"
        "webhook-id: msg_172858b07ce49eae975cc5d2a4381402\n"
        "webhook-timestamp: (the time of each attempt)\n"
        "webhook-signature: v1,… (signed with the destination's secret)\n"
        "Authorization: <secret>\n"
        "X-Api-Key: <secret>\n"
        "\n"
        '{"agent": "agent_abc123", "text": "Hello, I need help with my order"}\n'
    )
    for secret in (RECEIVER_SECRET, CRM_TOKEN, API_KEY, "/hooks/bithuman"):
        assert secret not in out


async def test_an_answer_echoing_parts_of_the_request_masks_each_part(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    receiver.script(
        Answer(401, f"invalid token {CRM_TOKEN}; key {API_KEY}; no hook at /hooks/bithuman/")
    )
    client = await start(relay_client, receiver)
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    assert dead.last_error == (
        "webhook answered 401: invalid token <secret>; key <secret>; no hook at <secret>/"
    )


async def test_a_retry_after_of_inf_does_not_stop_the_destination(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    receiver.script(Answer(503, "", {"Retry-After": "inf"}), 200)
    client = await start(relay_client, receiver)
    await post_event(client)

    [sent] = await wait_for_status(client, "sent")
    assert sent.attempts == 2  # the header was ignored: backoff's few milliseconds


async def test_a_digest_carries_each_event_byte_for_byte(
    relay_client: RelayClientFactory, receiver: FakeReceiver
) -> None:
    text = webhook_config(receiver).replace("send_to: [crm]", "send_to: [crm]\n    digest: 300ms")
    client = await relay_client(text)
    bodies = [
        b'{"agent_id":"a1","event_type":"chat.push","timestamp":1790607268.89570500000001,'
        b'"data":{"role":"user","message":"caf\\u00e9","session_id":"d1","n":1E2}}',
        b'{"agent_id":"a1", "event_type":"chat.push", "timestamp":1790607269,'
        b' "data":{"role":"assistant","message":"hi","session_id":"d1"}}',
    ]
    for body in bodies:
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert response.status == 200

    await wait_for_status(client, "sent", timeout_s=10.0)
    [request] = receiver.requests
    assert request.verified, request.verify_error
    assert request.body == (
        b'{"type":"digest","rule":"everything","session_id":"d1","events":['
        + b",".join(bodies)
        + b"]}"
    )


@pytest.mark.parametrize(
    "body",
    [
        # Written for the events its rule sends it, nothing for the others.
        '{% if event_type == "chat.push" %}{"m": {{ data.message | tojson }}}{% endif %}',
        '{"id": {{ id | tojson }}, "event": {{ event | tojson }}}',  # account fields only
        '{"n": {{ data.participant_count | tojson }}}',
    ],
)
def test_a_body_template_that_renders_json_passes_the_load_check(tmp_path: Path, body: str) -> None:
    make_config(webhook_config(FakeReceiver(), body=body.replace("'", "''")), tmp_path)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"room": "{{ data.room_name }}"}', "for a sample room.join: did not render valid JSON"),
        ('{"x": NaN}', "for a sample room.join: did not render valid JSON: NaN is not valid JSON"),
        (
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            None,  # fails on every event, so it is no verdict; relay check does not crash
        ),
    ],
)
def test_the_load_check_refuses_text_spliced_into_json(
    tmp_path: Path, body: str, error: str | None
) -> None:
    text = webhook_config(FakeReceiver(), body=body)
    if error is None:
        make_config(text, tmp_path)
        return
    with pytest.raises(ConfigError) as caught:
        make_config(text, tmp_path)
    [issue] = caught.value.issues
    assert issue.message.startswith(error), issue.message


def test_a_header_value_on_two_lines_is_a_config_error(tmp_path: Path) -> None:
    text = webhook_config(FakeReceiver()).replace(
        f'X-Api-Key: "{API_KEY}"', f'X-Api-Key: "{API_KEY}\\r\\nX-Evil: 1"'
    )

    with pytest.raises(ConfigError) as caught:
        make_config(text, tmp_path)

    assert [str(issue) for issue in caught.value.issues] == [
        "test.yaml:12: destinations.crm.headers.X-Api-Key: must be one line, without CR, LF or"
        " NUL (value not shown: it is a secret)"
    ]
