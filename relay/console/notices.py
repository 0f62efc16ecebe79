"""What a POST did, shown on the page it redirects to.

A POST answers 303 to a page (so a reload does not post again), and that page says what
was done. The message is kept here, under a random key the redirect's URL carries
(`?notice=…`), rather than in the URL itself: a link from elsewhere cannot make the
console show a text of its choosing. Only the latest few are kept, in this process (the
page is read from the listener that took the POST); a key not found shows nothing.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

PARAMETER = "notice"
KEPT = 64


class Notices:
    """The latest messages of this console, by key."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, str] = OrderedDict()

    def add(self, message: str) -> str:
        """Keep a message; return its key."""
        key = secrets.token_urlsafe(12)
        self._kept[key] = message
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return key

    def get(self, key: str) -> str | None:
        return self._kept.get(key)


def with_notice(url: str, key: str) -> str:
    """A page's URL with a notice's key added to its query."""
    return f"{url}{'&' if '?' in url else '?'}{PARAMETER}={key}"
