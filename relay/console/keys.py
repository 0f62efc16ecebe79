"""The console application's typed state."""

from __future__ import annotations

from aiohttp import web

from relay.console.csrf import CsrfTokens
from relay.console.notices import Notices
from relay.console.streams import Streams
from relay.state import RelayState

STATE = web.AppKey("console_relay_state", RelayState)  # shared with the webhook app
CSRF = web.AppKey("console_csrf", CsrfTokens)
NOTICES = web.AppKey("console_notices", Notices)
STREAMS = web.AppKey("console_streams", Streams)
# relay's own webhook URL, for the Test button; None: worked out from the config.
WEBHOOK_URL: web.AppKey[str | None] = web.AppKey("console_webhook_url")
