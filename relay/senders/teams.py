"""The Teams destination: an Adaptive Card posted to a Teams Workflows webhook."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yarl

from relay.config.model import TeamsDestination
from relay.formatting import Summary, fit_lines, summarize, truncate, uri_of
from relay.limits import Limit
from relay.notification import Notification
from relay.secrets import mask_url, url_secrets
from relay.senders.base import SenderContext, Sent
from relay.senders.console import printable
from relay.senders.http import post_once

SERVICE = "Teams"
HEADERS = {"Content-Type": "application/json; charset=utf-8"}

# Teams documents "The message size limit is 28 KB. When the size exceeds 28 KB, you receive
# an error" (Microsoft Learn, "Create an Incoming Webhook"; about 28 KB for the Workflows
# action that posts the card). The Workflows trigger answers 202 before the flow posts, so a
# card Teams refuses fails unseen in the flow's run history: keep the whole body, in UTF-8
# bytes as sent, well under it.
BODY_LIMIT_BYTES = 24_000
# Caps, as JSON-encoded UTF-8 bytes, on all but the text, which gets the rest: even with
# everything else at its cap (ten facts, a 2,000-character link) 6 KB is left for it.
TITLE_BYTES = 1_000
FOOTER_BYTES = 500
FACT_TITLE_BYTES = 100
FACT_VALUE_BYTES = 1_000
MAX_FACTS = 10

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

# TextBlocks and facts render a Markdown subset (**bold**, _italic_, [links](url), lists);
# Teams also reads HTML-like tags (<at>name</at> mentions) and {{DATE(…)}} functions.
_MARKDOWN = re.compile(r"([\\*_`~\[\]])")
_LINE_START = re.compile(r"^([ \t]*\d*)([-+#=.)])", re.MULTILINE)  # "- x", "# x", "1. x", "==="
_TAGS = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_BRACES = re.compile(r"\{(?=\{)")


def escape(text: str) -> str:
    """Make untrusted text show as typed in a card: no markup, mentions or links."""
    text = printable(text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _MARKDOWN.sub(r"\\\1", text)
    text = _LINE_START.sub(r"\1\\\2", text)
    # Entities, not backslashes: Teams shows &lt;at&gt; as <at>, and a tag needs a real "<".
    text = text.translate(_TAGS)
    text = _BRACES.sub("{\u200b", text)  # a zero-width space: no {{DATE()}} function
    # Markdown joins lines that one newline separates; two keep each line its own.
    return text.replace("\n", "\n\n")


def build_card_message(summary: Summary) -> dict[str, Any]:
    """Return the Workflows request body for a summary: one Adaptive Card, within the limit."""
    title = _fit_text(summary.title, TITLE_BYTES)
    text_block: dict[str, Any] = {"type": "TextBlock", "text": "", "wrap": True}
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "bolder", "size": "medium", "wrap": True},
        text_block,
    ]
    facts = [
        {"title": _fit_text(name, FACT_TITLE_BYTES), "value": _fit_text(value, FACT_VALUE_BYTES)}
        for name, value in summary.fields[:MAX_FACTS]
    ]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    footer = _fit_text(summary.footer, FOOTER_BYTES)
    body.append(
        {"type": "TextBlock", "text": footer, "size": "small", "isSubtle": True, "wrap": True}
    )
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": body,
    }
    link = uri_of(summary.link.url) if summary.link is not None else None
    if summary.link is not None and link is not None:  # relay's label; an http(s) URL
        card["actions"] = [{"type": "Action.OpenUrl", "title": summary.link.label, "url": link}]
    message = {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }
    # The text gets every byte the rest left: the body so far holds it as "".
    room = BODY_LIMIT_BYTES - len(_encode(message)) + len('""')
    text_block["text"] = _fit_summary_text(summary, room)
    if not text_block["text"]:
        body.remove(text_block)
    return message


def _fit_summary_text(summary: Summary, max_bytes: int) -> str:
    """The text, or a digest's lines (whole ones, then "… and N more"), within max_bytes."""
    if summary.lines:
        lines = summary.lines
        return _fit(lambda n: escape(fit_lines(lines, n)), len("\n".join(lines)), max_bytes)
    return _fit_text(summary.text, max_bytes)


def _fit_text(text: str, max_bytes: int) -> str:
    """The escaped text, cut with a visible marker so its JSON string fits in max_bytes."""
    return _fit(lambda n: escape(truncate(text, n)), len(text), max_bytes)


def _fit(render: Callable[[int], str], longest: int, max_bytes: int) -> str:
    """Return render(n) for the largest n up to `longest` whose JSON string fits max_bytes.

    Escaping grows text unevenly (`<` is 4 bytes, an emoji 4, a quote 2 in JSON), so the cut
    is found by measuring, not by counting characters; render(0) is empty and always fits.
    """
    whole = render(longest)
    if _json_size(whole) <= max_bytes:
        return whole
    low, high = 0, min(longest, max_bytes)  # a character takes at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if _json_size(render(middle)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return render(low)


def _json_size(text: str) -> int:
    return len(_encode(text))


def _encode(value: object) -> bytes:
    """Serialize as sent: compact UTF-8, so an emoji is 4 bytes rather than a 12-byte escape."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class TeamsSender:
    """Posts one Adaptive Card per notification to a Teams Workflows webhook."""

    updates_parents = False

    def __init__(self, config: TeamsDestination, context: SenderContext) -> None:
        self.name = config.name
        self._url = config.webhook_url
        self._http = context.http
        # Not paced; a 429 pauses this webhook for every destination and process posting there.
        self.limit: Limit | None = Limit.of(f"teams:{config.webhook_url.reveal()}")

    def body(self, notification: Notification) -> bytes:
        """The request body: the Workflows message carrying the notification's card."""
        return _encode(build_card_message(summarize(notification)))

    def preview(self, notification: Notification) -> str:
        message = build_card_message(summarize(notification))
        body = json.dumps(message, indent=2, ensure_ascii=False)
        return f"POST {mask_url(self._url.reveal())}\n{body}\n"

    async def close(self) -> None:
        """Nothing of its own to let go of: the HTTP session is the app's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0  # the trigger sends no pacing headers; a 429 pauses through `limit`

    async def send(self, notification: Notification) -> Sent:
        # As configured, byte for byte: aiohttp would otherwise decode the signed query
        # (sp=%2Ftriggers%2F…) before sending it. The trigger answers 202 Accepted (empty)
        # once it has queued the flow run.
        url = self._url.reveal()
        await post_once(
            self._http,
            yarl.URL(url, encoded=True),
            self.body(notification),
            HEADERS,
            service=SERVICE,
            secrets=lambda: url_secrets(url),  # the URL's sig= is the credential
            redirect_key="webhook_url",
        )
        return Sent()
