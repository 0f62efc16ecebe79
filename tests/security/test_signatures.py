"""SPEC sections 1-3: signatures compared in constant time, one answer for every kind of
bad signature, and X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import hmac
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import ClientResponse
from multidict import CIMultiDict

import relay.verify
from relay.secrets import Secret
from relay.verify import sign, signature_matches
from tests.conftest import RelayClientFactory
from tests.support.relay import BASIC, SECRET, event_body, signed_headers

OTHER_SECRETS = ["rotated-secret-1", "rotated-secret-2"]


class CountingHmac:
    """Stands in for the `hmac` module inside relay.verify; counts compare_digest calls."""

    def __init__(self) -> None:
        self.compared: list[tuple[bytes, bytes]] = []
        self.digest = hmac.digest

    def compare_digest(self, a: bytes, b: bytes) -> bool:
        assert isinstance(a, bytes) and isinstance(b, bytes)
        self.compared.append((a, b))
        return hmac.compare_digest(a, b)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingHmac:
    counter = CountingHmac()
    monkeypatch.setattr(
        relay.verify,
        "hmac",
        types.SimpleNamespace(digest=counter.digest, compare_digest=counter.compare_digest),
    )
    return counter


# --- constant time -------------------------------------------------------------------------


@pytest.mark.parametrize("matching", [0, 1, 2, None])
def test_every_secret_is_compared_with_compare_digest(
    counting: CountingHmac, matching: int | None
) -> None:
    secrets = [Secret(s) for s in [SECRET, *OTHER_SECRETS]]
    body = event_body()
    presented = sign(body, secrets[matching].reveal()) if matching is not None else sign(body, "x")
    assert signature_matches(body, presented, secrets) is (matching is not None)
    # No early exit: which secret matched (if any) does not change the work done.
    assert len(counting.compared) == len(secrets)
    assert all(b == presented.encode() for _, b in counting.compared)


async def test_the_webhook_compares_every_secret_even_when_the_first_matches(
    relay_client: RelayClientFactory, counting: CountingHmac
) -> None:
    config = BASIC.replace('["${SECRET}"]', '["${SECRET}", "${S2}", "${S3}"]')
    client = await relay_client(config, S2=OTHER_SECRETS[0], S3=OTHER_SECRETS[1])
    body = event_body(message="first secret")
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    assert len(counting.compared) == 3


def test_no_equality_operator_on_signatures() -> None:
    """`==` on the digest would leak the matching prefix length through timing."""
    source = Path(relay.verify.__file__).read_text(encoding="utf-8")
    function = source[source.index("def signature_matches") : source.index("def header_problem")]
    assert "compare_digest" in function
    assert "==" not in function and "!=" not in function and ".startswith(" not in function


# --- one answer for every bad signature ----------------------------------------------------


def bad_signatures(body: bytes) -> dict[str, tuple[bytes, str]]:
    """Name -> (body sent, signature header) for every way to get the signature wrong."""
    good = sign(body, SECRET)
    other = event_body(message="another body")
    tampered = body.replace(b"hello", b"hellO")
    assert tampered != body
    return {
        "wrong secret": (body, sign(body, "not-the-secret")),
        "tampered body": (tampered, good),
        "signature of another body": (body, sign(other, SECRET)),
        "truncated signature": (body, good[:-1]),
        "truncated to the prefix": (body, "sha256="),
        "empty": (body, ""),
        "sha1 prefix": (body, "sha1=" + good.removeprefix("sha256=")),
        "no prefix": (body, good.removeprefix("sha256=")),
        "uppercase hex": (body, "sha256=" + good.removeprefix("sha256=").upper()),
        "doubled": (body, good + good),
        "extra char": (body, good + "0"),
        "non-ascii": (body, good[:-1] + "é"),
        "inner space": (body, good.replace("=", "= ", 1)),
    }


async def answer_of(response: ClientResponse) -> tuple[int, str | None, bytes]:
    return response.status, response.headers.get("Content-Type"), await response.read()


async def test_every_bad_signature_gets_the_same_answer(relay_client: RelayClientFactory) -> None:
    client = await relay_client(BASIC)
    body = event_body()
    answers = {}
    for name, (sent, signature) in bad_signatures(body).items():
        headers = {"Content-Type": "application/json", "X-bitHuman-Signature": signature}
        answers[name] = await answer_of(await client.post("/webhook", data=sent, headers=headers))
    expected = (401, "application/json; charset=utf-8", b'{"error": "invalid signature"}')
    assert answers == dict.fromkeys(answers, expected)
    # And the good one still passes, so the refusals above were about the signature.
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200


@pytest.mark.parametrize(
    "transform",
    [
        lambda name, value: (name.lower(), value),
        lambda name, value: (name.upper(), value),
        lambda name, value: (name, f"  {value}\t"),
        lambda name, value: (name.swapcase(), f" {value} "),
    ],
    ids=["lowercase name", "uppercase name", "whitespace around value", "both"],
)
async def test_header_name_case_and_surrounding_whitespace_do_not_matter(
    relay_client: RelayClientFactory, transform: Callable[[str, str], tuple[str, str]]
) -> None:
    client = await relay_client(BASIC)
    body = event_body(message=f"case-{id(transform)}")
    name, value = transform("X-bitHuman-Signature", sign(body, SECRET))
    response = await client.post(
        "/webhook", data=body, headers={"Content-Type": "application/json", name: value}
    )
    assert response.status == 200, await response.text()


async def test_missing_signature_names_the_header_and_echoes_nothing(
    relay_client: RelayClientFactory,
) -> None:
    client = await relay_client(BASIC)
    body = event_body()
    headers = {"Content-Type": "application/json"}
    response = await client.post("/webhook", data=body, headers=headers)
    assert response.status == 401
    assert await response.read() == b'{"error": "missing X-bitHuman-Signature header"}'


# --- X-Forwarded-For ----------------------------------------------------------------------


async def post_with_forwarded(
    relay_client: RelayClientFactory, verify_extra: str, forwarded: list[str]
) -> ClientResponse:
    client = await relay_client(BASIC.replace("verify:\n", f"verify:\n{verify_extra}"))
    body = event_body(message="forwarded")
    headers = CIMultiDict(signed_headers(body))
    for value in forwarded:
        headers.add("X-Forwarded-For", value)
    return await client.post("/webhook", data=body, headers=headers)


ALLOW_V4 = "  allow_ips: [203.0.113.0/24]\n"
ALLOW_V6 = '  allow_ips: ["2001:db8::/32"]\n'
TRUST_LOCAL = "  trusted_proxies: [127.0.0.0/8]\n"


def xff_id(value: object) -> str:
    """Name a case: who is trusted, and the X-Forwarded-For lines sent."""
    if isinstance(value, list):
        return " | ".join(value)
    assert isinstance(value, str)
    return ("v6" if "2001" in value else "v4") + ("-trusted" if "trusted" in value else "")


@pytest.mark.parametrize(
    ("verify_extra", "forwarded"),
    [
        # The test client (127.0.0.1) is no trusted proxy: nothing it forwards is believed.
        (ALLOW_V4, ["203.0.113.5", "203.0.113.6"]),
        (ALLOW_V4, ["203.0.113.5, 203.0.113.6"]),
        (ALLOW_V4, ["garbage, 203.0.113.5"]),
        (ALLOW_V4, ["203.0.113.5:443"]),
        (ALLOW_V4, ["for=203.0.113.5"]),
        (ALLOW_V4, [" , ,203.0.113.5"]),
        (ALLOW_V6, ["2001:db8::1"]),
        (ALLOW_V6, ["[2001:db8::1]:443"]),
        (ALLOW_V6, ["203.0.113.5, 2001:db8::1"]),
        # A trusted proxy, but the hop it vouches for is garbage: stop there, at the proxy.
        (ALLOW_V4 + TRUST_LOCAL, ["203.0.113.5, garbage"]),
        (ALLOW_V4 + TRUST_LOCAL, ["203.0.113.5, "]),
        (ALLOW_V4 + TRUST_LOCAL, ["203.0.113.5, 2001:db8::1"]),
        (ALLOW_V6 + TRUST_LOCAL, ["2001:db8::1, ::ffff:198.51.100.1"]),
        # Several header lines are one list (RFC 9110 5.3), in order: a proxy such as
        # HAProxy adds its own line after the client's. The client is the last line's
        # rightmost entry, not whatever the client wrote in the first line.
        (ALLOW_V4 + TRUST_LOCAL, ["203.0.113.5", "198.51.100.1"]),
        (ALLOW_V6 + TRUST_LOCAL, ["2001:db8::1", "2001:db9::1"]),
    ],
    ids=xff_id,
)
async def test_spoofed_forwarded_for_is_refused(
    relay_client: RelayClientFactory, verify_extra: str, forwarded: list[str]
) -> None:
    response = await post_with_forwarded(relay_client, verify_extra, forwarded)
    assert response.status == 403, (forwarded, await response.text())
    answer = await response.json()
    assert answer["error"].endswith("is not allowed")


@pytest.mark.parametrize(
    ("verify_extra", "forwarded"),
    [
        (ALLOW_V6 + TRUST_LOCAL, ["2001:db8::1"]),
        (ALLOW_V6 + TRUST_LOCAL, ["[2001:db8::1]:443"]),
        (ALLOW_V4 + TRUST_LOCAL, ["198.51.100.1", "203.0.113.5"]),
        (ALLOW_V4 + TRUST_LOCAL, ["203.0.113.5", "127.0.0.2"]),
    ],
    ids=xff_id,
)
async def test_forwarded_for_from_a_trusted_proxy_is_believed(
    relay_client: RelayClientFactory, verify_extra: str, forwarded: list[str]
) -> None:
    """The positive controls: the refusals above are about the addresses, not the syntax."""
    response = await post_with_forwarded(relay_client, verify_extra, forwarded)
    assert response.status == 200, (forwarded, await response.text())
