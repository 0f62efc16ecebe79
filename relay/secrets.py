"""A wrapper that keeps secret values out of logs, errors and reprs."""

from __future__ import annotations

import re
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


# The token part of a webhook URL is everything after the host and the first path
# segments that identify the service (Slack: /services/T/B/<token>, Discord:
# /api/webhooks/<id>/<token>); masking all but the host keeps a URL recognisable.
_URL_PATH = re.compile(r"^(?P<origin>[a-z][a-z0-9+.-]*://[^/]+)(?P<path>/.*)?$", re.IGNORECASE)


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
    """Return a URL with everything after its host masked, for logs and listings."""
    match = _URL_PATH.match(url)
    if match is None:
        return _MASK
    return match.group("origin") + ("/" + _MASK if match.group("path") else "")
