"""What relay keeps of the request that brought an event in (SPEC 8: a delivery's page shows
"the headers that mattered, secrets never shown").

A fixed list of headers, each value cut to MAX_VALUE_CHARS, so a hostile sender cannot
make the store keep more than a few kilobytes an event; a credential is kept by name only,
and a signature by whether relay checked it. Pure functions: no aiohttp inside.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from relay.config.model import VerifyConfig
from relay.verify import ACCOUNT_DELIVERY_HEADER, ACCOUNT_SIGNATURE_HEADER, ACCOUNT_TIMESTAMP_HEADER

MAX_VALUE_CHARS = 200
CUT = "…"
# Made once: json.dumps with separators makes a new encoder at every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

# What stands in for a value that is not kept. In parentheses: a sender's value never
# starts that way in practice, and a reader sees these are relay's words.
SECRET_VERIFIED = "(verified, not shown)"
SECRET_NOT_SHOWN = "(not shown)"
SIGNATURE_VERIFIED = "(present, verified)"
SIGNATURE_NOT_CHECKED = "(present, not checked)"
HOLDS_A_SECRET = "(not shown: holds a configured secret)"

# Shown as sent (cut): what the request was, which event it carried, who sent it, and
# through what. The peer address is kept beside them.
_SHOWN_FIRST = ("Content-Type", "Content-Length", "Content-Encoding", "User-Agent")
_EVENT_HEADERS = (
    "X-bitHuman-Event-Id",
    "webhook-id",
    "webhook-timestamp",
    "X-BitHuman-Event",
    ACCOUNT_DELIVERY_HEADER,
    ACCOUNT_TIMESTAMP_HEADER,
    "X-Test-Webhook",
)
_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")
STANDARD_SIGNATURE_HEADER = "webhook-signature"  # Standard Webhooks: relay does not check it
# Credentials a sender may add although relay checks none of them: kept by name only, like
# the required headers (verify.headers). No other name above holds a credential.
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")

Kind = Literal["shown", "signature", "credential"]


class Headers(Protocol):
    """What is read of a request's headers: aiohttp's CIMultiDictProxy is one."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


@dataclass(frozen=True)
class RequestRecord:
    """The request that brought an event in, as the store keeps it."""

    peer: str | None  # the address the request came from (a proxy's, behind one)
    headers: tuple[tuple[str, str], ...]  # (name, value), in a fixed order

    def to_json(self) -> str:
        """The record as the stores keep it: compact JSON."""
        return _ENCODER.encode({"peer": self.peer, "headers": self.headers})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> RequestRecord | None:
        """Read a kept record; None when there is none (an event stored without one)."""
        if not text:
            return None
        document = json.loads(text)
        peer = document["peer"]
        return cls(
            None if peer is None else str(peer),
            tuple((str(name), str(value)) for name, value in document["headers"]),
        )


def record_request(
    headers: Headers, peer: str | None, verify: VerifyConfig, *, account: bool
) -> RequestRecord:
    """Return what is kept of a verified request: its peer and the headers that matter.

    `account`: the request is an account webhook (SPEC 1.2), checked by verify.account
    only; else a session event, checked by verify.headers and verify.secrets.
    """
    plan = _plan(verify, account)
    kept: list[tuple[str, str]] = []
    for name, kind, checked in plan.headers:
        values = headers.getall(name, [])
        if values:
            kept.append((name, _shown(", ".join(values), kind, checked, plan.secrets)))
    return RequestRecord(None if peer is None else _bounded(peer), tuple(kept))


@dataclass(frozen=True)
class _Plan:
    """What record_request looks for, worked out once for a config and a family."""

    headers: tuple[tuple[str, Kind, bool], ...]  # (name, kind, whether relay checked it)
    secrets: tuple[str, ...]  # every configured secret value (see _shown)


# The plan of the running config, by family (account webhook or not). A reload swaps the
# config whole, so its identity says when to work the plan out again: not per request.
_plans: dict[bool, tuple[VerifyConfig, _Plan]] = {}


def _plan(verify: VerifyConfig, account: bool) -> _Plan:
    cached = _plans.get(account)
    if cached is not None and cached[0] is verify:
        return cached[1]
    required = {name.casefold() for name in verify.headers}
    credentials = required | {name.casefold() for name in _CREDENTIAL_HEADERS}
    planned: list[tuple[str, Kind, bool]] = []
    seen: set[str] = set()
    for name, kind, checked in _candidates(verify, account):
        folded = name.casefold()
        if folded in seen:  # a name met before, maybe in another spelling
            continue
        seen.add(folded)
        if folded in credentials:  # whatever else the name is, its value is a credential
            kind, checked = "credential", folded in required and not account
        planned.append((name, kind, checked))
    plan = _Plan(tuple(planned), _configured_secrets(verify))
    _plans[account] = (verify, plan)
    return plan


def _candidates(verify: VerifyConfig, account: bool) -> Iterable[tuple[str, Kind, bool]]:
    """The headers kept, in the order shown, a name maybe more than once (the first
    counts): (name, kind, whether relay checked it)."""
    for name in _SHOWN_FIRST + _EVENT_HEADERS:
        yield name, "shown", False
    # A verified signature first: its name may also be one of the others.
    if account:
        yield ACCOUNT_SIGNATURE_HEADER, "signature", True
    yield verify.signature_header, "signature", not account and bool(verify.secrets)
    yield ACCOUNT_SIGNATURE_HEADER, "signature", False
    yield STANDARD_SIGNATURE_HEADER, "signature", False
    for name in (*verify.headers, *_CREDENTIAL_HEADERS):
        yield name, "credential", False  # _plan tells which relay checked
    for name in _PROXY_HEADERS:
        yield name, "shown", False


def _shown(value: str, kind: Kind, checked: bool, secrets: tuple[str, ...]) -> str:
    """What is kept of one header's value."""
    if kind == "credential":
        return SECRET_VERIFIED if checked else SECRET_NOT_SHOWN
    if kind == "signature":
        return SIGNATURE_VERIFIED if checked else SIGNATURE_NOT_CHECKED
    if any(secret in value for secret in secrets):
        return HOLDS_A_SECRET  # a sender that put a credential where a reader would see it
    return _bounded(value)


def _bounded(value: str) -> str:
    """A value as kept: printable, at most MAX_VALUE_CHARS characters (cut visibly).

    aiohttp decodes header bytes that are not UTF-8 into lone surrogates, which neither
    store can encode: they go, with control characters, as U+FFFD.
    """
    if len(value) > MAX_VALUE_CHARS:
        value = value[: MAX_VALUE_CHARS - len(CUT)] + CUT
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else "\ufffd" for c in value)


def _configured_secrets(verify: VerifyConfig) -> tuple[str, ...]:
    """Every secret value a request could carry: the required headers' and the signing
    secrets (a sender could send one by mistake in a header shown as sent)."""
    values: Iterable[str] = (
        *(secret.reveal() for secret in verify.headers.values()),
        *(secret.reveal() for secret in verify.secrets),
        *(secret.reveal() for secret in verify.account.secrets),
    )
    return tuple(value for value in values if value)
