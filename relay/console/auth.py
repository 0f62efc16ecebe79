"""HTTP Basic auth on every console route: pages, static files and JSON alike."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import hdrs, web

from relay.config.model import ConsoleConfig
from relay.console.keys import STATE
from relay.console.security import Handler

CHALLENGE = 'Basic realm="relay console", charset="UTF-8"'


def credentials_match(authorization: str, console: ConsoleConfig) -> bool:
    """Return whether an Authorization header carries the console's username and password."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    username, colon, password = decoded.partition(b":")
    if not colon:
        return False
    # Both compared, always, in constant time: which of the two was wrong takes no
    # longer to find out than whether both were.
    username_ok = hmac.compare_digest(username, console.username.encode())
    password_ok = hmac.compare_digest(password, console.password.reveal().encode())
    return username_ok and password_ok


@web.middleware
async def require_login(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 401 unless the request carries the console's credentials.

    The credentials are read from the running config, so a reload that changes the
    password applies at once; a reload that removes `console` locks everyone out until
    the restart that stops the listener.
    """
    console = request.app[STATE].config.console
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    if console is None or not credentials_match(authorization, console):
        return web.Response(
            status=401,
            text="401: the relay console needs its username and password\n",
            headers={hdrs.WWW_AUTHENTICATE: CHALLENGE},
        )
    return await handler(request)
