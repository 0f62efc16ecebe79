"""The Slack destination: Block Kit through slack-sdk, by incoming webhook or bot token."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from relay.config.model import SlackDestination
from relay.formatting import Link, Summary, fit_lines, summarize, truncate
from relay.limits import Limit
from relay.notification import Notification
from relay.secrets import mask_url, url_secrets
from relay.senders.base import DeliveryError, SenderContext, Sent
from relay.senders.http import answer_detail, connection_error, parse_retry_after, status_error

# Slack's Block Kit limits.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000

# Slack asks for about one message a second per webhook or channel (max_per_second, 1 by
# default); a small burst lets a short flurry through at once.
PACE_BURST = 3

# A reply's parent was deleted: the conversation goes on under a new parent.
PARENT_GONE = frozenset({"thread_not_found", "message_not_found"})
CONTINUES = "Continues a conversation whose earlier thread is gone."

# Web API errors that a later try can fix; every other `ok: false` error is permanent
# (invalid_auth, channel_not_found, not_in_channel, invalid_blocks, …).
RETRYABLE_API_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",  # chat.postMessage's own spelling: too many messages
        "message_limit_exceeded",
        "team_added_to_org",  # a workspace being migrated: for a while
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)

# slack-sdk logs request URLs (which hold the webhook token) at debug level.
_SDK_LOG = logging.getLogger("relay.slack_sdk")
_SDK_LOG.setLevel(logging.WARNING)


def escape(text: str) -> str:
    """Escape Slack's control characters so `<!channel>` or `<@U1>` arrive as text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link_markup(link: Link) -> str:
    """Return a Slack link; the URL is escaped too, and `|` would end it, so it is encoded."""
    return f"<{escape(link.url).replace('|', '%7C')}|{escape(link.label)}>"


def _link_text(link: Link) -> MarkdownTextObject:
    """A link's section text. Escaping can make a long URL longer than a section holds
    (each & is 5 characters): it is then shown as text, cut, not as a link."""
    markup = link_markup(link)
    if len(markup) <= SECTION_LIMIT:
        return MarkdownTextObject(text=markup)
    shown = truncate(escape(f"{link.label}: {link.url}"), SECTION_LIMIT)
    return MarkdownTextObject(text=shown, verbatim=True)


def build_blocks(summary: Summary) -> list[Block]:
    """Return the Block Kit layout of a summary, within Slack's limits."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=truncate(escape(summary.title), HEADER_LIMIT) or " "))
    ]
    fields = [
        MarkdownTextObject(
            text=truncate(f"*{escape(name)}*\n{escape(value)}", FIELD_LIMIT), verbatim=True
        )
        for name, value in summary.fields[:MAX_FIELDS]
    ]
    after: list[Block] = []
    if fields:
        after.append(SectionBlock(fields=fields))
    if summary.link is not None:
        after.append(SectionBlock(text=_link_text(summary.link)))
    after.append(DividerBlock())
    footer = truncate(escape(summary.footer), SECTION_LIMIT)
    after.append(ContextBlock(elements=[MarkdownTextObject(text=footer, verbatim=True)]))
    if summary.lines:  # a digest's transcript: as many sections as the blocks left allow
        texts = transcript_sections(
            [escape(line) for line in summary.lines], MAX_BLOCKS - len(blocks) - len(after)
        )
    else:
        texts = [truncate(escape(summary.text), SECTION_LIMIT)] if summary.text else []
    blocks += [SectionBlock(text=MarkdownTextObject(text=t, verbatim=True)) for t in texts]
    return blocks + after


def transcript_sections(lines: Sequence[str], max_sections: int) -> list[str]:
    """Pack whole lines, in order, into section texts of at most SECTION_LIMIT characters
    each, at most `max_sections` of them; the last ends "… and N more" when lines are left."""
    sections: list[str] = []
    current: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        line = truncate(line, SECTION_LIMIT)
        if current and size + 1 + len(line) > SECTION_LIMIT:
            if len(sections) == max_sections - 1:  # the last section: cut visibly
                return [*sections, fit_lines([*current, *lines[index:]], SECTION_LIMIT)]
            sections.append("\n".join(current))
            current, size = [], 0
        size += len(line) + (1 if current else 0)  # the newline before it, if any
        current.append(line)
    return [*sections, "\n".join(current)] if current else sections


def build_message(notification: Notification) -> dict[str, Any]:
    """Return the JSON body Slack receives: blocks plus a `text` fallback for notifications."""
    summary = summarize(notification)
    fallback = escape(summary.title) + (f": {escape(summary.text)}" if summary.text else "")
    return {
        "text": truncate(fallback, FALLBACK_LIMIT),
        "blocks": [block.to_dict() for block in build_blocks(summary)],
    }


class SlackWebhookSender:
    """Posts to a Slack incoming webhook, which answers 200 `ok` and nothing else on success."""

    updates_parents = False  # a webhook cannot learn a message's ts

    def __init__(self, config: SlackDestination, context: SenderContext) -> None:
        assert config.webhook_url is not None
        self.name = config.name
        self._url = config.webhook_url.reveal()
        self.limit: Limit | None = Limit.of(
            f"slack-webhook:{self._url}", config.max_per_second, PACE_BURST
        )
        self._client = AsyncWebhookClient(
            self._url, session=context.http, retry_handlers=[], logger=_SDK_LOG
        )

    def preview(self, notification: Notification) -> str:
        body = json.dumps(build_message(notification), indent=2, ensure_ascii=False)
        return f"POST {mask_url(self._url)}\n{body}\n"

    def wait_s(self) -> float:
        return 0.0  # paced by self.limit

    async def close(self) -> None:
        """Nothing of its own to let go of: the HTTP session is the app's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """A webhook posts no parent message to keep current."""

    async def send(self, notification: Notification) -> Sent:
        message = build_message(notification)
        try:
            response = await self._client.send(text=message["text"], blocks=message["blocks"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error("Slack", exc) from None
        if response.status_code == 200:
            return Sent()
        # slack-sdk hands over aiohttp's case-insensitive headers as they came.
        retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        # The answer may echo the request's path, which holds the webhook's token.
        detail = answer_detail(response.body, url_secrets(self._url))
        raise status_error("Slack", response.status_code, detail, retry_after_s)


class SlackApiSender:
    """Posts with a bot token through chat.postMessage; threads conversations."""

    updates_parents = True

    def __init__(self, config: SlackDestination, context: SenderContext) -> None:
        assert config.token is not None and config.channel is not None
        self.name = config.name
        self._channel = config.channel
        self._api_url = config.api_url
        token = config.token.reveal()
        self.limit: Limit | None = Limit.of(
            f"slack-api:{config.api_url}:{token}:{config.channel}",
            config.max_per_second,
            PACE_BURST,
        )
        self._client = AsyncWebClient(
            token=token,
            base_url=config.api_url,
            session=context.http,
            retry_handlers=[],
            logger=_SDK_LOG,
        )

    def preview(self, notification: Notification) -> str:
        body = {"channel": self._channel, **build_message(notification)}
        text = json.dumps(body, indent=2, ensure_ascii=False)
        return f"POST {self._api_url}chat.postMessage (bot token)\n{text}\n"

    def wait_s(self) -> float:
        return 0.0  # paced by self.limit

    async def send(self, notification: Notification) -> Sent:
        message = build_message(notification)
        text, blocks = message["text"], message["blocks"]
        if notification.thread is None:
            parent = await self._post_parent(text, blocks)
            # Kept only for a conversation: its first message is what later ones reply to.
            return Sent(thread=parent.dump() if notification.conversation else None)
        thread = SlackThread.load(notification.thread)
        try:
            await self._client.chat_postMessage(
                channel=thread.channel,
                thread_ts=thread.ts,
                reply_broadcast=notification.broadcast,
                text=text,
                blocks=blocks,
            )
        except SlackApiError as exc:
            if _error_code(exc) not in PARENT_GONE:
                raise _api_error(exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error("Slack", exc) from None
        else:
            return Sent()
        # The parent was deleted: this message becomes the conversation's new parent.
        parent = await self._post_parent(text, _with_context(blocks, CONTINUES))
        return Sent(thread=parent.dump(), replaces_thread=True)

    async def _post_parent(self, text: str, blocks: list[dict[str, Any]]) -> SlackThread:
        """Post a channel message; return it as a conversation's parent would be kept."""
        try:
            response = await self._client.chat_postMessage(
                channel=self._channel, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error("Slack", exc) from None
        # Slack answers with the channel's ID, which chat.update needs (a #name will not do).
        return SlackThread(str(response["channel"]), str(response["ts"]), text, blocks)

    async def close(self) -> None:
        """Nothing of its own to let go of: the HTTP session is the app's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """Add the conversation's message count and last activity under its parent."""
        parent = SlackThread.load(thread)
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last_activity))
        note = f"{messages} messages in this conversation · last activity {when}"
        try:
            await self._client.chat_update(
                channel=parent.channel,
                ts=parent.ts,
                text=parent.text,
                blocks=_with_context(parent.blocks, note),
            )
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error("Slack", exc) from None


@dataclass(frozen=True)
class SlackThread:
    """What the store keeps of a Slack conversation: its parent message, as posted, so
    that chat.update can show it again with the conversation's count under it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]

    def dump(self) -> str:
        return json.dumps(
            {"channel": self.channel, "ts": self.ts, "text": self.text, "blocks": self.blocks}
        )

    @classmethod
    def load(cls, value: str) -> SlackThread:
        data = json.loads(value)
        return cls(str(data["channel"]), str(data["ts"]), str(data["text"]), list(data["blocks"]))


def _with_context(blocks: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Return the blocks with a context line under them, within Slack's block limit."""
    line = ContextBlock(elements=[MarkdownTextObject(text=text, verbatim=True)])
    return [*blocks[: MAX_BLOCKS - 1], line.to_dict()]


def _error_code(exc: SlackApiError) -> str:
    data = exc.response.data
    return str(data.get("error", "unknown_error")) if isinstance(data, dict) else "unknown_error"


def _api_error(exc: SlackApiError) -> DeliveryError:
    response = exc.response
    status = response.status_code
    code = _error_code(exc)
    retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
    if status == 200:  # Slack answers 200 with ok: false for most errors
        retryable = code in RETRYABLE_API_ERRORS
        return DeliveryError(
            f"Slack API error: {code}", retryable=retryable, retry_after_s=retry_after_s
        )
    return status_error("Slack API", status, code, retry_after_s)


def build_slack_sender(
    config: SlackDestination, context: SenderContext
) -> SlackWebhookSender | SlackApiSender:
    """Return the sender for how this Slack destination connects."""
    if config.webhook_url is not None:
        return SlackWebhookSender(config, context)
    return SlackApiSender(config, context)
