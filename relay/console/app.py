"""The console's aiohttp application: its routes, guards and templates."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.console import (
    activity_page,
    bulk,
    conversation_page,
    conversations_page,
    live,
    rules_page,
    sample,
    views,
)
from relay.console.answers import error
from relay.console.auth import require_login
from relay.console.conversations_listing import CONVERSATIONS_PATH
from relay.console.csrf import CsrfTokens
from relay.console.filters import FilterError
from relay.console.keys import CSRF, NOTICES, STATE, STREAMS, WEBHOOK_URL
from relay.console.notices import Notices
from relay.console.present import iso, when
from relay.console.security import Handler, add_headers, guard_posts
from relay.console.streams import LiveSettings, Streams
from relay.state import RelayState
from relay.store import StoreUnavailable

STATIC = Path(__file__).parent / "static"
# A console POST is a small form: nothing else needs reading.
MAX_BODY_BYTES = 64 * 1024


def create_console_app(
    state: RelayState,
    *,
    csrf: CsrfTokens | None = None,
    webhook_url: str | None = None,
    live_settings: LiveSettings | None = None,
) -> web.Application:
    """Build the console for a running relay: the same store, config and metrics, served
    by a listener of its own (serve.py), never on the webhook port.

    `webhook_url` is where the Test button posts: relay's own listener, as reached from
    here (sample.local_webhook_url gives it for the port bound); without it, the config's
    server section says, which cannot when its port is 0.
    """
    app = web.Application(
        middlewares=[require_login, _errors, guard_posts], client_max_size=MAX_BODY_BYTES
    )
    app[STATE] = state
    app[CSRF] = csrf or CsrfTokens()
    app[NOTICES] = Notices()
    app[WEBHOOK_URL] = webhook_url
    app[STREAMS] = streams = Streams(live_settings or LiveSettings())
    app.on_shutdown.append(streams.close_all)
    templates = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("relay.console", "templates"),
        autoescape=True,  # event content is text, never markup (SPEC 8)
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
    )
    templates.globals.update(when=when, iso=iso)
    app.on_response_prepare.append(add_headers)
    app.router.add_get("/", views.home, name="home")
    app.router.add_get("/deliveries", views.deliveries, name="deliveries")
    # Before /deliveries/{id}, which would take these names for ids.
    app.router.add_get(bulk.CONFIRM_PATH, bulk.confirm, name="replay_all_confirm")
    app.router.add_post(bulk.CONFIRM_PATH, bulk.replay_all, name="replay_all")
    # No HEAD: it would hold a stream open to send nothing.
    app.router.add_get(live.LIVE_PATH, live.live, name="live", allow_head=False)
    app.router.add_post(sample.TEST_PATH, sample.send_test, name="send_test")
    app.router.add_get(r"/deliveries/{id}", views.delivery, name="delivery")
    app.router.add_post(r"/deliveries/{id}/replay", views.replay, name="replay")
    app.router.add_get(activity_page.ACTIVITY_PATH, activity_page.activity, name="activity")
    app.router.add_get(
        conversation_page.CONVERSATION_PATH, conversation_page.conversation, name="conversation"
    )
    app.router.add_get(
        conversation_page.LIVE_PATH,
        conversation_page.conversation_live,
        name="conversation_live",
        allow_head=False,
    )
    app.router.add_get(CONVERSATIONS_PATH, conversations_page.conversations, name="conversations")
    app.router.add_get(rules_page.RULES_PATH, rules_page.rules, name="rules")
    app.router.add_static("/static/", STATIC, name="static")
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer an unknown page, a query the console cannot read, and a store that does not
    answer, as the console's errors."""
    try:
        return await handler(request)
    except FilterError as exc:
        return error(request, 400, str(exc))
    except web.HTTPNotFound:
        return error(request, 404, f"no page at {request.path[:200]}")
    except StoreUnavailable as exc:
        return error(request, 503, f"store unavailable: {exc}")
