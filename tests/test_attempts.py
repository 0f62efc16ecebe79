"""Every attempt on record (SPEC 5), through the worker, on both stores; and
`relay deliveries --id N`, which prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.app import STATE
from tests.conftest import RelayClientFactory
from tests.senders import test_email
from tests.support.fake_receiver import Answer, FakeReceiver
from tests.support.processes import run_cli
from tests.support.secrets import watch
from tests.support.smtp import Handler, SmtpServer
from tests.test_delivery import post_event, wait_for_status

URL_TOKEN = "hookTok3n-6ab1f0"
QUERY_TOKEN = "qTok3n-90d2e4"
watch(URL_TOKEN, QUERY_TOKEN)

# The email tests' STARTTLS server with a login, as a fixture of this module too.
starttls_server = test_email.tls_smtp


@pytest.fixture
def handler() -> Handler:
    return Handler()


def webhook_config(receiver: FakeReceiver, store_section: str) -> str:
    url = receiver.url(f"/hooks/{URL_TOKEN}/in?token={QUERY_TOKEN}")
    return f"""
verify:
  secrets: ["${{SECRET}}"]
delivery:
  backoff: {{ first: 10ms, max: 20ms }}
destinations:
  crm: {{ type: webhook, url: "{url}" }}
rules:
  - name: everything
    send_to: [crm]
{store_section}"""


async def test_three_failures_and_a_success_are_four_attempts_and_no_secret(
    relay_client: RelayClientFactory,
    receiver: FakeReceiver,
    store_section: str,
    tmp_path: Path,
) -> None:
    url = receiver.url(f"/hooks/{URL_TOKEN}/in?token={QUERY_TOKEN}")
    receiver.script(
        Answer(503, f"busy, try {url} later"),
        Answer(500, f"no hook /hooks/{URL_TOKEN}/in"),
        Answer(429, f"slow down, token={QUERY_TOKEN}", {"Retry-After": "0"}),
        200,
    )
    text = webhook_config(receiver, store_section)
    client = await relay_client(text)
    await post_event(client)

    [sent] = await wait_for_status(client, "sent")
    attempts = await client.app[STATE].store.attempts(sent.id)
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, "retried"),
        (2, "retried"),
        (3, "retried"),
        (4, "sent"),
    ]
    assert [a.detail for a in attempts] == [
        "webhook answered 503: busy, try <secret> later",
        "webhook answered 500: no hook <secret>",
        "webhook answered 429: slow down, token=<secret>",
        None,
    ]
    assert all(a.duration_s >= 0 for a in attempts)
    assert [a.started_at for a in attempts] == sorted(a.started_at for a in attempts)

    config = tmp_path / "cli.yaml"
    config.write_text(
        text.replace('secrets: ["${SECRET}"]', "") + _store_of(tmp_path, store_section),
        encoding="utf-8",
    )
    status, out = await run_cli("deliveries", "--id", str(sent.id), "-c", str(config))
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == f"delivery {sent.id}: sent, to crm by rule everything"
    assert "attempts: 4" in lines
    shown = [line.split() for line in lines if line.startswith("  #")]
    assert [(row[0], row[4]) for row in shown] == [
        ("#1", "retried"),
        ("#2", "retried"),
        ("#3", "retried"),
        ("#4", "sent"),
    ]
    assert lines[-4].endswith("webhook answered 503: busy, try <secret> later")
    for token in (URL_TOKEN, QUERY_TOKEN):
        assert token not in out


def _store_of(tmp_path: Path, store_section: str) -> str:
    """The SQLite store relay_client gave the test (a Redis one is in the config already),
    for a command run beside it."""
    return "" if store_section else f"\nstore:\n  url: sqlite:{tmp_path / 'relay.db'}\n"


async def test_a_refused_smtp_login_is_an_attempt_without_the_password(
    relay_client: RelayClientFactory,
    starttls_server: SmtpServer,
    handler: Handler,
) -> None:
    password = "wrong-pass-s3cret-77"
    watch(password)
    login = test_email.STARTTLS_LOGIN.replace("${SMTP_PASSWORD}", password)
    client = await relay_client(
        f"""
verify:
  secrets: ["${{SECRET}}"]
destinations:
  mail:
    type: email
    smtp: {{ host: 127.0.0.1, port: {starttls_server.port}, {login}, timeout: 5s }}
    from: "relay <relay@example.com>"
    to: [ops@example.com]
rules:
  - name: everything
    send_to: [mail]
"""
    )
    await post_event(client)

    [dead] = await wait_for_status(client, "dead")
    [attempt] = await client.app[STATE].store.attempts(dead.id)
    assert attempt.outcome == "dead"
    assert attempt.detail is not None and "535" in attempt.detail
    assert password not in attempt.detail
    assert handler.mails == []


@pytest.mark.parametrize("delivery_id", ["0", "-1", "99999999999999999999"])
async def test_deliveries_id_of_no_delivery_says_so_and_exits_1(
    tmp_path: Path, delivery_id: str
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(f"store: {{ url: 'sqlite:{tmp_path / 'relay.db'}' }}\n", encoding="utf-8")

    status, out = await run_cli("deliveries", "--id", delivery_id, "-c", str(config))

    assert status == 1
    assert out.startswith(f"no delivery {delivery_id}")
    assert "Traceback" not in out
