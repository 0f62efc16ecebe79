"""A wrapper that keeps secret values out of logs, errors and reprs."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Final

_MASK: Final = "<secret>"


class Secret:
    """Hold a secret string; its str() and repr() never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one place that must use it."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def without_password(url: str) -> str:
    """Return a store URL as it may be shown: scheme, host, port and path, no credentials."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return _MASK
    if not parts.netloc:
        return url  # sqlite:PATH holds no credentials
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def mask_url(url: str) -> str:
    """Return a URL with everything but its scheme and host masked, for logs and listings.

    The token of a webhook URL may sit in its path (Slack: /services/T/B/<token>, Discord:
    /api/webhooks/<id>/<token>), its query (Teams: sig=…) or its userinfo; the host alone
    keeps a URL recognisable.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return _MASK
    if not parts.scheme or not parts.hostname:
        return _MASK
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{parts.hostname}{port}" + (f"/{_MASK}" if hidden else "")


def url_secrets(url: str) -> list[str]:
    """Return the pieces of a URL that may be its credential, as they might be echoed
    back: the URL, its path and long path segments, its query values (as sent and
    decoded), its userinfo (and as Basic auth); for masking answers before they are kept."""
    pieces = {url}
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- a bad port raises here, like an unparsable URL
    except ValueError:
        return [url]
    if parts.path not in ("", "/"):
        pieces.add(parts.path)
        pieces.update(segment for segment in parts.path.split("/") if len(segment) >= _MIN_PIECE)
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2]
        pieces.update({value, urllib.parse.unquote_plus(value)})
    if parts.password:
        credentials = f"{parts.username or ''}:{parts.password}"
        pieces.update({parts.password, urllib.parse.unquote(parts.password), credentials})
        pieces.add(base64.b64encode(urllib.parse.unquote(credentials).encode()).decode())
    return sorted((p for p in pieces if len(p) >= _MIN_PIECE), key=len, reverse=True)


def value_secrets(value: str) -> list[str]:
    """Return a header value and its long parts (`Bearer <token>`: the token alone too,
    not the scheme's name)."""
    parts = {part for part in value.split() if len(part) > len("Bearer")}
    return sorted({value, *parts}, key=len, reverse=True)


# Shorter pieces are too common to mask (a path segment "hooks", a query value "1").
_MIN_PIECE = 6
