"""One status table for every HTTP destination, run against real local fakes (SPEC section 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from relay.secrets import url_secrets, value_secrets
from relay.senders import DeliveryError, Sender, SenderContext, build_senders
from relay.senders.base import Sent
from relay.senders.http import (
    DETAIL_LIMIT,
    MAX_RETRY_AFTER_S,
    answer_detail,
    is_retryable_status,
    parse_retry_after,
)
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_receiver import RECEIVER_SECRET, FakeReceiver
from tests.support.fake_slack import BOT_TOKEN, WEBHOOK_SECRET, FakeSlack
from tests.support.fake_teams import FakeTeams
from tests.support.notifications import chat
from tests.support.relay import make_config
from tests.support.smtp import free_port

DISCORD_TOKEN = "discordTokenSecret42"
TEAMS_SIG = "teamsWorkflowSig7720"
HTTP_KINDS = ["slack-webhook", "slack-api", "discord", "webhook", "teams"]

# status -> retryable (None: a success). The one table every HTTP sender must follow.
STATUS_TABLE: list[tuple[int, bool | None]] = [
    (200, None),
    (301, False),  # redirects are not followed: the URL is wrong, and stays wrong
    (400, False),
    (401, False),
    (403, False),
    (404, False),
    (408, True),
    (410, False),
    (429, True),
    (500, True),
    (502, True),
    (503, True),
    (504, True),
]


@pytest.fixture
async def teams() -> AsyncIterator[FakeTeams]:
    fake = await FakeTeams().start()
    yield fake
    await fake.close()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(s, r) for s, r in STATUS_TABLE if r is not None]
    + [(410, False), (422, False), (425, True), (504, True), (599, True)],
)
def test_is_retryable_status(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
HTTP_DATE_TS = 1445412480.0


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        ("2", None, 2.0),
        ("0.25", None, 0.25),
        (" 7 ", None, 7.0),
        ("0", None, 0.0),
        ("-3", None, 0.0),
        (None, None, None),
        ("", None, None),
        ("   ", None, None),
        ("soon", None, None),
        (HTTP_DATE, HTTP_DATE_TS - 30.0, 30.0),
        (HTTP_DATE, HTTP_DATE_TS + 30.0, 0.0),
        # What float() would take but is no Retry-After, and a wait too long to honour.
        ("inf", None, None),
        ("nan", None, None),
        ("1e309", None, None),
        ("1_0", None, None),
        ("\u0663", None, None),  # an Arabic-Indic digit
        ("99999999", None, MAX_RETRY_AFTER_S),
    ],
)
def test_parse_retry_after(value: str | None, now: float | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=now) == expected


@dataclass(frozen=True)
class Ports:
    """Where each fake listens."""

    slack: int
    discord: int
    receiver: int
    teams: int


def destination_yaml(kind: str, ports: Ports) -> str:
    base = f"http://127.0.0.1:{ports.slack}"
    return {
        "slack-webhook": f'{{ type: slack, webhook_url: "{base}/services/T0001/B0001/'
        f'{WEBHOOK_SECRET}" }}',
        "slack-api": f'{{ type: slack, token: "{BOT_TOKEN}", channel: "#alerts", '
        f'api_url: "{base}/api/" }}',
        "discord": f'{{ type: discord, webhook_url: "http://127.0.0.1:{ports.discord}'
        f'/api/webhooks/1/{DISCORD_TOKEN}" }}',
        "webhook": f'{{ type: webhook, url: "http://127.0.0.1:{ports.receiver}/hook",'
        f' secret: "{RECEIVER_SECRET}" }}',
        "teams": f'{{ type: teams, webhook_url: "http://127.0.0.1:{ports.teams}/workflows/1'
        f'?sig={TEAMS_SIG}" }}',
    }[kind]


def build_sender(kind: str, ports: Ports, http: aiohttp.ClientSession, tmp_path: Path) -> Sender:
    yaml_text = f"destinations:\n  dest: {destination_yaml(kind, ports)}\n"
    config = make_config(yaml_text, tmp_path)
    return build_senders(config.destinations, SenderContext(http=http))["dest"]


def assert_no_secret(text: str) -> None:
    for secret in (WEBHOOK_SECRET, BOT_TOKEN, DISCORD_TOKEN, RECEIVER_SECRET, TEAMS_SIG):
        assert secret not in text, text


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(("status", "retryable"), STATUS_TABLE)
async def test_every_http_sender_classifies_statuses_alike(
    kind: str,
    status: int,
    retryable: bool | None,
    slack: FakeSlack,
    discord: FakeDiscord,
    receiver: FakeReceiver,
    teams: FakeTeams,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    ports = Ports(slack.port, discord.port, receiver.port, teams.port)
    sender = build_sender(kind, ports, http, tmp_path)
    fakes: dict[str, FakeSlack | FakeDiscord | FakeReceiver | FakeTeams] = {
        "discord": discord,
        "webhook": receiver,
        "teams": teams,
    }
    fakes.get(kind, slack).script(status)

    def requests() -> int:
        return sum(len(fake.requests) for fake in (slack, discord, receiver, teams))

    if retryable is None:
        assert await sender.send(chat()) == Sent()
        assert sum(len(fake.delivered) for fake in (slack, discord, receiver, teams)) == 1
        return
    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat())
    assert caught.value.retryable is retryable, str(caught.value)
    assert str(status) in str(caught.value)
    assert_no_secret(str(caught.value))
    assert requests() == 1  # a sender never retries itself


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_network_error_is_retryable_and_hides_the_token(
    kind: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    closed = free_port()
    sender = build_sender(kind, Ports(closed, closed, closed, closed), http, tmp_path)

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat())

    assert caught.value.retryable is True
    assert "connect" in str(caught.value)
    assert_no_secret(str(caught.value))
    assert_no_secret(repr(caught.value))


# An answer's detail -------------------------------------------------------------------------

ECHOED_URL = "https://crm.example.com/hooks/inbound?token=SuperSekritToken1234567890"
ECHOED_TOKEN = "SuperSekritToken1234567890"
# Where the detail used to be cut before it was masked: the token straddles the cut.
_OLD_CUT = DETAIL_LIMIT * 2 + len(ECHOED_URL)


def assert_no_piece_of(secret: str, text: str) -> None:
    """Neither the secret nor any 6-character piece of it is in the text."""
    pieces = [secret[start : start + 6] for start in range(len(secret) - 5)]
    assert [piece for piece in pieces if piece in text] == [], text


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        # An HTML error page, indented, that echoes the request's token.
        (
            "<html>\n" + " " * 420 + f"<p>bad token {ECHOED_TOKEN} for /hooks/inbound</p>",
            "<html> <p>bad token <secret> for <secret></p>",
        ),
        (
            "<html>\n" + " " * (_OLD_CUT - 30) + f"<p>bad token {ECHOED_TOKEN}</p>",
            "<html> <p>bad token <secret></p>",
        ),
        (
            "<html>\n" + "\t\n" * 3000 + f"<p>bad token {ECHOED_TOKEN}</p>",
            "<html> <p>bad token <secret></p>",
        ),
        # Each masked echo of the URL is shorter than the URL: the text after it moves up.
        (
            " ".join([ECHOED_URL] * 6 + ["y" * 30, ECHOED_TOKEN]),
            " ".join(["<secret>"] * 6 + ["y" * 30, "<secret>"]),
        ),
    ],
)
def test_an_answer_detail_masks_a_secret_behind_any_whitespace(answer: str, detail: str) -> None:
    shown = answer_detail(answer, url_secrets(ECHOED_URL))

    assert shown == detail
    assert_no_piece_of(ECHOED_TOKEN, shown)


def test_an_answer_detail_masks_a_secret_holding_whitespace() -> None:
    secret = "Bearer  \tSekritHeaderValue99"
    shown = answer_detail(f"refused:\n  {secret}\x1b[0m", [secret])

    assert shown == "refused: <secret>\ufffd[0m"


@pytest.mark.parametrize(
    "echo",
    [
        '{"got": "Bearer AbC\\/dEf+GhI\\/jKl=="}',  # PHP's json_encode escapes /
        '{"got": "Bearer AbC/dEf+GhI/jKl=="}',
        "<p>got Bearer AbC/dEf+GhI/jKl==</p>",
        "<p>got &quot;AbC/dEf+GhI/jKl==&quot;</p>",
        "/log?auth=Bearer%20AbC%2FdEf%2BGhI%2FjKl%3D%3D",
        "/log?auth=Bearer+AbC%2FdEf%2BGhI%2FjKl%3D%3D",
    ],
)
def test_an_answer_detail_masks_a_secret_escaped_as_answers_echo_it(echo: str) -> None:
    shown = answer_detail(echo, value_secrets("Bearer AbC/dEf+GhI/jKl=="))
    assert "<secret>" in shown, shown
    assert_no_piece_of("AbC/dEf+GhI/jKl==", shown.replace("\\/", "/"))


def test_an_answer_detail_is_one_line_of_at_most_the_limit() -> None:
    shown = answer_detail("x" * 150 + "\n\n" + "y" * 150, [])

    assert shown == "x" * 150 + " " + "y" * (DETAIL_LIMIT - 151)
