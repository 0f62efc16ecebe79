"""The console application's typed state."""

from __future__ import annotations

from aiohttp import web

from relay.console.csrf import CsrfTokens
from relay.state import RelayState

STATE = web.AppKey("console_relay_state", RelayState)  # shared with the webhook app
CSRF = web.AppKey("console_csrf", CsrfTokens)
