"""A page or its JSON twin: one URL, the Accept header chooses (SPEC 8)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import aiohttp_jinja2
from aiohttp import hdrs, web

from relay.console.keys import CSRF, STATE


def wants_json(request: web.Request) -> bool:
    """Return whether the client asked for JSON rather than a page (a browser always
    lists text/html; a script asking for JSON need not)."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    return "application/json" in accept and "text/html" not in accept


def page(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """Render a page; every page gets the CSRF token its forms carry."""
    console = request.app[STATE].config.console
    token = request.app[CSRF].token(console.username) if console is not None else ""
    response = aiohttp_jinja2.render_template(
        template, request, {**context, "csrf_token": token}, status=status
    )
    response.headers[hdrs.VARY] = hdrs.ACCEPT
    return response


def data(payload: Mapping[str, Any], *, status: int = 200) -> web.Response:
    """Answer a page's JSON twin."""
    response = web.json_response(payload, status=status)
    response.headers[hdrs.VARY] = hdrs.ACCEPT
    return response


def error(request: web.Request, status: int, message: str) -> web.Response:
    """Answer an error as a page, or as `{"error": …}` to a script."""
    if wants_json(request):
        return data({"error": message}, status=status)
    title = f"{status} {HTTPStatus(status).phrase}"
    return page(request, "error.html", {"title": title, "message": message}, status=status)
