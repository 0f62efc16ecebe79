"""CSRF tokens for the console's forms.

The console has no sessions: the browser sends the Basic credentials with every request,
including requests another site makes it send. So a POST must also carry something that
only a page of the console could have given it. That is an HMAC, under a key made at
random when the process starts, of the console's username: a page of the console puts it
in a hidden field; another site cannot read it (the browser's same-origin policy, and the
pages are `no-store`) nor work it out (it would need the key). It changes with every
start and with the username, which ends the validity of pages rendered before. Behind a
load balancer that spreads one browser's requests over several processes, a form may be
posted to a process that did not render it and is refused (the console listens on each
process's own address, so this needs going out of one's way).

A same-origin check (security.py) comes on top, as SPEC 8 asks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

FIELD = "csrf_token"  # the hidden form field that carries the token


class CsrfTokens:
    """Makes and checks the tokens of one process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def __repr__(self) -> str:
        return "CsrfTokens(<key>)"

    def token(self, username: str) -> str:
        """Return the token a form posted by `username` must carry."""
        message = b"relay console csrf\0" + username.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def valid(self, username: str, presented: str) -> bool:
        """Return whether `presented` is `username`'s token (in constant time)."""
        return hmac.compare_digest(self.token(username).encode(), presented.encode())
