"""The Discord destination: an embed posted to a webhook with plain aiohttp."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

import aiohttp

from relay.config.model import DiscordDestination
from relay.formatting import Summary, fit_lines, summarize, truncate, uri_of
from relay.limits import Limit
from relay.notification import Notification
from relay.secrets import mask_url, url_secrets
from relay.senders.base import DeliveryError, SenderContext, Sent
from relay.senders.console import printable
from relay.senders.http import (
    answer_detail,
    capped_delay,
    connection_error,
    parse_retry_after,
    status_error,
)

# Discord's published limits for one message.
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
MAX_FIELDS = 25
MIN_FIELD_VALUE = 20  # below this, a cut field says nothing: leave it out

# Error codes that will never succeed on a retry: Unknown Webhook, Invalid Form Body.
PERMANENT_CODES = frozenset({10015, 50035})
# Unknown Channel: in a forum, the conversation's post (a thread) was deleted.
UNKNOWN_CHANNEL = 10003
CONTINUES = "Continues a conversation whose earlier post is gone."

COLORS = {"room.join": 0x2ECC71, "chat.push": 0x3498DB}
DEFAULT_COLOR = 0x95A5A6

_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#<:-])")


def escape(text: str) -> str:
    """Make untrusted text render as typed: no markdown, links, mentions or pings."""
    escaped = _MARKDOWN.sub(r"\\\1", text)
    # A zero-width space after @ keeps @everyone and @here from even looking like pings;
    # allowed_mentions is what guarantees no ping.
    return escaped.replace("@", "@\u200b")


def build_payload(summary: Summary, kind: str, timestamp: float) -> dict[str, Any]:
    """Return the Execute Webhook body for a summary, within Discord's limits."""
    title = truncate(escape(summary.title), TITLE_LIMIT)
    footer = truncate(summary.footer, FOOTER_LIMIT)
    # The 6000-character total is shared: the message first, then fields while room is left.
    budget = EMBED_TOTAL_LIMIT - len(title) - len(footer)
    room = min(DESCRIPTION_LIMIT, budget)
    description = (
        fit_lines([escape(line) for line in summary.lines], room)
        if summary.lines
        else truncate(escape(summary.text), room)
    )
    budget -= len(description)
    embed: dict[str, Any] = {
        "title": title,
        "color": COLORS.get(kind, DEFAULT_COLOR),
        "fields": _fields(summary, budget),
        "footer": {"text": footer},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)),
    }
    if description:
        embed["description"] = description
    url = uri_of(summary.link.url) if summary.link is not None else None
    if url is not None:  # the title links to it; the schema takes a strict URI only
        embed["url"] = url
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


THREAD_NAME_LIMIT = 100


def thread_name(notification: Notification, summary: Summary) -> str:
    """Name a forum post: after its conversation, else its title; one line, no controls."""
    event = notification.event
    if notification.conversation is not None:
        name = f"Conversation {notification.conversation} · {event.agent_id or 'bitHuman'}"
    else:
        name = summary.title
    return truncate(" ".join(printable(name).split()), THREAD_NAME_LIMIT) or "bitHuman"


def _fields(summary: Summary, budget: int) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    for name, value in summary.fields[:MAX_FIELDS]:
        # Discord trims a field's name and value, and refuses one left empty (50035).
        shown_name = truncate(escape(name), FIELD_NAME_LIMIT).strip() or "\u200b"
        room = min(FIELD_VALUE_LIMIT, budget - len(shown_name))
        if room < MIN_FIELD_VALUE:
            break
        shown_value = truncate(escape(value), room).strip() or "\u200b"
        budget -= len(shown_name) + len(shown_value)
        fields.append({"name": shown_name, "value": shown_value, "inline": True})
    return fields


class DiscordSender:
    """Posts to one Discord webhook, following its rate-limit headers."""

    updates_parents = False

    def __init__(self, config: DiscordDestination, context: SenderContext) -> None:
        self.name = config.name
        self._url = config.webhook_url
        self._forum = config.forum
        self._http = context.http
        self._ready_at = 0.0
        # Discord's headers pace each process; a 429 pauses the webhook for all of them.
        self.limit: Limit | None = Limit.of(f"discord:{config.webhook_url.reveal()}")

    def payload(self, notification: Notification) -> dict[str, Any]:
        """The Execute Webhook body; in a forum channel, a new post names its thread."""
        event = notification.event
        summary = summarize(notification)
        payload = build_payload(summary, event.kind, event.timestamp)
        if self._forum and notification.thread is None:
            payload["thread_name"] = thread_name(notification, summary)
        return payload

    def params(self, notification: Notification) -> dict[str, str]:
        """The query: wait for the message (its channel_id is a new post's thread), and
        the conversation's thread when it has one."""
        if self._forum and notification.thread is not None:
            return {"wait": "true", "thread_id": notification.thread}
        return {"wait": "true"}

    def preview(self, notification: Notification) -> str:
        target = mask_url(self._url.reveal())
        query = "&".join(f"{k}={v}" for k, v in self.params(notification).items())
        body = json.dumps(self.payload(notification), indent=2, ensure_ascii=False)
        return f"POST {target}?{query}\n{body}\n"

    async def close(self) -> None:
        """Nothing of its own to let go of: the HTTP session is the app's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return max(self._ready_at - time.monotonic(), 0.0)

    async def send(self, notification: Notification) -> Sent:
        try:
            message = await self._execute(self.params(notification), self.payload(notification))
        except DeliveryError as exc:
            if notification.thread is None or exc.code != UNKNOWN_CHANNEL:
                raise
        else:
            return self._sent(notification, message)
        # The conversation's post was deleted: this message starts its new one, saying so.
        fresh = dataclasses.replace(notification, thread=None)
        payload = self.payload(fresh) | {"content": CONTINUES}
        message = await self._execute(self.params(fresh), payload)
        sent = self._sent(fresh, message)
        return dataclasses.replace(sent, replaces_thread=sent.thread is not None)

    async def _execute(self, params: dict[str, str], payload: dict[str, Any]) -> Any:
        """POST to the webhook; return the message Discord answers (None if unreadable)."""
        if self._http is None:
            raise DeliveryError("no HTTP session", retryable=False)
        try:
            async with self._http.post(self._url.reveal(), params=params, json=payload) as response:
                self._follow_bucket(response.headers)
                if 200 <= response.status < 300:
                    try:
                        return await response.json(content_type=None)
                    except ValueError:
                        return None  # sent all the same
                text = await response.text()
                raise self._error(response.status, text, response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error("Discord", exc) from None

    def _sent(self, notification: Notification, message: Any) -> Sent:
        """A conversation's first post in a forum started its thread: keep its id."""
        if not self._forum or notification.conversation is None or notification.thread:
            return Sent()
        try:
            return Sent(thread=str(message["channel_id"]))
        except (KeyError, TypeError):
            return Sent()  # sent all the same; the next one starts a post of its own

    def _follow_bucket(self, headers: Any) -> None:
        # When the bucket is empty, wait until it resets before the next send.
        if headers.get("X-RateLimit-Remaining") == "0":
            reset_after = parse_retry_after(headers.get("X-RateLimit-Reset-After"))
            if reset_after is not None:
                self._ready_at = time.monotonic() + reset_after

    def _error(self, status: int, text: str, headers: Any) -> DeliveryError:
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = body.get("code")
        # Either may echo the request's URL, which holds the webhook's token.
        secrets = url_secrets(self._url.reveal())
        message = answer_detail(str(body.get("message", "")), secrets)
        retry_after_s = parse_retry_after(headers.get("Retry-After"))
        body_retry = body.get("retry_after")
        if isinstance(body_retry, int | float) and not isinstance(body_retry, bool):
            # The body's float is more precise than the header, when it is a sane number.
            retry_after_s = capped_delay(float(body_retry)) or retry_after_s
        shown_code = answer_detail(str(code), secrets)
        detail = f"{message} (code {shown_code})" if code is not None else message
        error = status_error("Discord", status, detail, retry_after_s)
        if isinstance(code, int) and not isinstance(code, bool):
            error.code = code
        if code in PERMANENT_CODES:
            error.retryable = False
        return error
