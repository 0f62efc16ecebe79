"""What every console answer carries, and what every POST must show.

- Every answer, static files and errors included: no caching, a Content-Security-Policy
  that allows only the console's own files (so no inline script or style), no MIME
  sniffing, no Referer to other sites, no framing.
- Every request that is not GET or HEAD: a same-origin request (its Origin, or without
  one its Referer, names the host it was sent to) carrying the CSRF token (csrf.py);
  else 403, before any handler runs, so nothing changes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from relay.console import answers
from relay.console.csrf import FIELD
from relay.console.keys import CSRF, STATE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    hdrs.CACHE_CONTROL: "no-store",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
}
_SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Give an answer the console's headers (an on_response_prepare signal: it sees every
    answer, those of static files, of errors and of the auth middleware included)."""
    response.headers.update(HEADERS)


def same_origin(request: web.Request) -> bool:
    """Return whether the request comes from a page of the console itself.

    The browser sets Origin (or Referer) to the page that made the request and Host to
    where it goes; a page of another site cannot make them agree. Only the host and port
    are compared: a TLS-terminating proxy in front changes the scheme the console sees,
    and one port serves one scheme.
    """
    claimed = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    if not claimed or claimed == "null":
        return False
    try:
        parts = urllib.parse.urlsplit(claimed)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == request.host.lower()


@web.middleware
async def guard_posts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse, with 403, a request that changes something without both proofs."""
    if request.method in _SAFE_METHODS or request.match_info.http_exception is not None:
        return await handler(request)  # changes nothing: a read, or a 404 or 405
    if not same_origin(request):
        return answers.error(request, 403, "this request did not come from a page of the console")
    form = await request.post()
    presented = form.get(FIELD)
    console = request.app[STATE].config.console
    if (
        console is None
        or not isinstance(presented, str)
        or not request.app[CSRF].valid(console.username, presented)
    ):
        return answers.error(
            request, 403, "the form's CSRF token is missing or out of date: reload the page"
        )
    return await handler(request)
