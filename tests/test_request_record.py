"""What relay keeps of a webhook's request (relay/request_record.py): the headers that
matter, each bounded, and never a credential's value."""

from __future__ import annotations

from multidict import CIMultiDict

from relay.config.model import AccountVerifyConfig, VerifyConfig
from relay.request_record import (
    HOLDS_A_SECRET,
    MAX_VALUE_CHARS,
    SECRET_NOT_SHOWN,
    SECRET_VERIFIED,
    SIGNATURE_NOT_CHECKED,
    SIGNATURE_VERIFIED,
    RequestRecord,
    record_request,
)
from relay.secrets import Secret
from relay.verify import sign
from tests.support.bithuman import ACCOUNT_SECRET
from tests.support.secrets import watch

HEADER_SECRET = "dashb0ard-Hdr-Secret-3e8a"
SIGNING_SECRET = "rec0rd-Signing-Secret-77f1"
BEARER = "Bearer rec0rd-Bearer-Tok3n-19c4"
watch(HEADER_SECRET, SIGNING_SECRET, BEARER)

VERIFY = VerifyConfig(
    secrets=(Secret(SIGNING_SECRET),),
    headers={"X-Webhook-Secret": Secret(HEADER_SECRET)},
    account=AccountVerifyConfig(secrets=(Secret(ACCOUNT_SECRET),)),
)
SIGNATURE = sign(b"{}", SIGNING_SECRET)


def session_headers(**extra: str) -> CIMultiDict[str]:
    """What a session event arrives with: the dashboard's header, signed, and a few more."""
    return CIMultiDict(
        {
            "Host": "relay.example.com",
            "Content-Type": "application/json",
            "Content-Length": "2",
            "User-Agent": "bitHuman-Webhooks/1.0",
            "X-bitHuman-Event-Id": "evt-1",
            "X-bitHuman-Signature": SIGNATURE,
            "x-webhook-secret": HEADER_SECRET,  # any spelling: header names are case-blind
            "Authorization": BEARER,
            "X-API-Key": "not-a-header-relay-keeps",
            "Cookie": "session=abc",
            "X-Forwarded-For": "203.0.113.7",
            **extra,
        }
    )


def test_a_session_event_keeps_what_matters_in_order_and_no_credential() -> None:
    kept = record_request(session_headers(), "10.0.0.2", VERIFY, account=False)
    assert kept == RequestRecord(
        "10.0.0.2",
        (
            ("Content-Type", "application/json"),
            ("Content-Length", "2"),
            ("User-Agent", "bitHuman-Webhooks/1.0"),
            ("X-bitHuman-Event-Id", "evt-1"),
            ("X-bitHuman-Signature", SIGNATURE_VERIFIED),
            ("X-Webhook-Secret", SECRET_VERIFIED),
            ("Authorization", SECRET_NOT_SHOWN),
            ("X-Forwarded-For", "203.0.113.7"),
        ),
    )
    stored = kept.to_json()
    for secret in (HEADER_SECRET, SIGNING_SECRET, BEARER, SIGNATURE, "abc", "not-a-header"):
        assert secret not in stored
    assert RequestRecord.from_json(stored) == kept


def test_a_signature_relay_did_not_check_says_so() -> None:
    unsigned = VerifyConfig(headers={"X-Webhook-Secret": Secret(HEADER_SECRET)})
    headers = session_headers(**{"webhook-signature": "v1,abc="})
    kept = dict(record_request(headers, None, unsigned, account=False).headers)
    assert kept["X-bitHuman-Signature"] == SIGNATURE_NOT_CHECKED  # no verify.secrets
    assert kept["webhook-signature"] == SIGNATURE_NOT_CHECKED  # relay never checks it


def test_an_account_webhook_keeps_its_own_headers() -> None:
    headers = CIMultiDict(
        {
            "Content-Type": "application/json",
            "X-BitHuman-Event": "agent.ready",
            "X-BitHuman-Delivery": "evt_a1b2c3",
            "X-BitHuman-Timestamp": "1780417371",
            "X-BitHuman-Signature": "sha256=00ff",
            "X-Webhook-Secret": "sent-along-but-never-checked",
        }
    )
    kept = record_request(headers, "10.0.0.2", VERIFY, account=True)
    assert kept.headers == (
        ("Content-Type", "application/json"),
        ("X-BitHuman-Event", "agent.ready"),
        ("X-BitHuman-Delivery", "evt_a1b2c3"),
        ("X-BitHuman-Timestamp", "1780417371"),
        ("X-BitHuman-Signature", SIGNATURE_VERIFIED),
        # verify.headers do not apply to account webhooks: not checked, and still not kept.
        ("X-Webhook-Secret", SECRET_NOT_SHOWN),
    )


def test_a_required_header_is_a_credential_whatever_its_name() -> None:
    verify = VerifyConfig(headers={"user-agent": Secret(HEADER_SECRET)})
    headers = CIMultiDict({"User-Agent": HEADER_SECRET})
    kept = record_request(headers, None, verify, account=False)
    assert kept.headers == (("User-Agent", SECRET_VERIFIED),)


def test_a_value_holding_a_configured_secret_is_not_kept() -> None:
    headers = session_headers(**{"User-Agent": f"curl/8 {SIGNING_SECRET}"})
    kept = dict(record_request(headers, None, VERIFY, account=False).headers)
    assert kept["User-Agent"] == HOLDS_A_SECRET


def test_a_hostile_sender_cannot_make_relay_keep_much() -> None:
    headers = session_headers(**{"User-Agent": "A" * 100_000})
    for n in range(500):
        headers.add(f"X-Junk-{n}", "J" * 1000)
        headers.add("X-Forwarded-For", f"198.51.100.{n % 256}")
    kept = record_request(headers, "10.0.0.2" * 1000, VERIFY, account=False)
    values = dict(kept.headers)
    assert values["User-Agent"] == "A" * (MAX_VALUE_CHARS - 1) + "…"
    assert len(values["X-Forwarded-For"]) == MAX_VALUE_CHARS
    assert kept.peer is not None and len(kept.peer) == MAX_VALUE_CHARS
    assert [name for name, _ in kept.headers] == [
        "Content-Type",
        "Content-Length",
        "User-Agent",
        "X-bitHuman-Event-Id",
        "X-bitHuman-Signature",
        "X-Webhook-Secret",
        "Authorization",
        "X-Forwarded-For",
    ]
    assert len(kept.to_json()) < 2000


def test_bytes_that_are_not_text_are_kept_as_replacement_characters() -> None:
    # aiohttp decodes a header's bytes that are not UTF-8 into lone surrogates.
    agent = b"bot\xff\x01/1".decode("utf-8", "surrogateescape")
    kept = record_request(CIMultiDict({"User-Agent": agent}), None, VERIFY, account=False)
    assert kept.headers == (("User-Agent", "bot\ufffd\ufffd/1"),)
    kept.to_json().encode("utf-8")  # both stores can keep it


def test_no_record_reads_back_as_none() -> None:
    assert RequestRecord.from_json(None) is None
    assert RequestRecord.from_json("") is None
    assert RequestRecord.from_json(b'{"peer":null,"headers":[]}') == RequestRecord(None, ())
