"""Request verification: signatures, required headers, client addresses. Pure functions."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence

from relay.config.model import IPNetwork
from relay.secrets import Secret

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNATURE_PREFIX = "sha256="
# Account webhooks (SPEC 1.2) carry these; the signature header's name is the session
# events' default one in another spelling (header names are case-insensitive).
ACCOUNT_TIMESTAMP_HEADER = "X-BitHuman-Timestamp"
ACCOUNT_SIGNATURE_HEADER = "X-BitHuman-Signature"
ACCOUNT_DELIVERY_HEADER = "X-BitHuman-Delivery"


def sign(body: bytes, secret: str) -> str:
    """Return the `sha256=<hex>` signature bitHuman sends for a body."""
    # hmac.digest is OpenSSL's one-shot HMAC: the same bytes as hmac.new(...).hexdigest(),
    # without building an HMAC object on every request.
    return SIGNATURE_PREFIX + hmac.digest(secret.encode("utf-8"), body, "sha256").hex()


def account_signed_content(timestamp: str, body: bytes) -> bytes:
    """Return what an account webhook's signature covers: `<timestamp>.` + the raw body."""
    return timestamp.encode("ascii") + b"." + body


def sign_account(body: bytes, secret: str, timestamp: str) -> str:
    """Return the `sha256=<hex>` signature of an account webhook sent at `timestamp`."""
    return sign(account_signed_content(timestamp, body), secret)


def signature_matches(body: bytes, presented: str, secrets: Sequence[Secret]) -> bool:
    """Return whether the presented signature was made with any of the secrets.

    Every secret is tried, so the time taken does not tell which one (if any) matched.
    """
    presented_bytes = presented.strip().encode("utf-8", "replace")
    matched = False
    for secret in secrets:
        expected = sign(body, secret.reveal()).encode("ascii")
        matched |= hmac.compare_digest(expected, presented_bytes)
    return matched


def header_problem(presented: Mapping[str, str], required: Mapping[str, Secret]) -> str | None:
    """Return why the required headers do not hold (never echoing a value), or None."""
    for name, expected in required.items():
        value = presented.get(name)
        if value is None:
            return f"missing required header {name}"
        if not hmac.compare_digest(
            value.encode("utf-8", "replace"), expected.reveal().encode("utf-8")
        ):
            return f"invalid value for header {name}"
    return None


def parse_address(text: str) -> IPAddress | None:
    """Parse an address as it appears in a peer name or X-Forwarded-For entry."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack proxy or listener writes an IPv4 client as ::ffff:a.b.c.d: the same
    # address, which allow_ips and trusted_proxies list as IPv4.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address if mapped is None else mapped


def in_networks(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """Return whether an address lies in any of the networks."""
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """Return the client's address: the peer, or when the peer is a trusted proxy, the
    rightmost X-Forwarded-For entry that is not itself a trusted proxy.

    Entries left of an untrusted one could have been written by anybody, so they are
    never believed.
    """
    peer_address = parse_address(peer) if peer else None
    if peer_address is None or not forwarded_for:
        return peer_address
    if not in_networks(peer_address, trusted_proxies):
        return peer_address
    client = peer_address
    for entry in reversed(forwarded_for.split(",")):
        address = parse_address(entry)
        if address is None:
            return client  # a malformed hop: stop at the last address we could trust
        client = address
        if not in_networks(address, trusted_proxies):
            break
    return client
