"""The webhook destination: the event to any HTTP endpoint, signed the Standard Webhooks way."""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Mapping

from multidict import CIMultiDict
from standardwebhooks.webhooks import Webhook

from relay import __version__
from relay.config.model import WebhookDestination
from relay.limits import Limit
from relay.notification import Notification
from relay.secrets import Secret, mask_url, url_secrets, value_secrets
from relay.senders.base import DeliveryError, SenderContext, Sent
from relay.senders.console import printable
from relay.senders.http import post_once
from relay.templates import TemplateFailed, render_json

SERVICE = "webhook"
USER_AGENT = f"relay/{__version__}"


class WebhookSender:
    """POSTs each notification's event to one endpoint; the worker retries."""

    updates_parents = False

    def __init__(self, config: WebhookDestination, context: SenderContext) -> None:
        self.name = config.name
        self._url = config.url
        self._signing = config.secret
        self._headers: Mapping[str, Secret] = config.headers
        self._template = config.body
        self._http = context.http
        # Not paced; a 429 pauses this endpoint for every destination and process sending there.
        self.limit: Limit | None = Limit.of(f"webhook:{config.url.reveal()}")

    def message_id(self, notification: Notification) -> str:
        """The webhook-id: the same on every attempt of one delivery (an event to this
        destination), so the receiver can drop a repeat, and different for any other."""
        key = f"{self.name}\n{notification.event.event_id}".encode("utf-8", "replace")
        return "msg_" + hashlib.sha256(key).hexdigest()[:32]

    def body(self, notification: Notification) -> bytes:
        """The request body: the event as received, the `body` template's JSON, or for a
        digest every event of it in order; raise DeliveryError when the template fails."""
        event = notification.event
        if notification.transcript:
            # Each event byte for byte as received, as a single event would go out.
            head = {"type": "digest", "rule": notification.rule, "session_id": event.session}
            events = b",".join(e.raw or _json(e.payload) for e in notification.transcript)
            return _json(head)[:-1] + b',"events":[' + events + b"]}"
        if self._template is None:
            return event.raw or _json(event.payload)
        try:
            return render_json(self._template, event.context())
        except TemplateFailed as exc:
            raise DeliveryError(f"body template {exc}", retryable=False) from None

    def headers(self, notification: Notification, body: bytes, now: float) -> CIMultiDict[str]:
        """The request headers: relay's User-Agent unless one is configured, the configured
        ones, then the body's and the signature's, which always win."""
        message_id = self.message_id(notification)
        headers = CIMultiDict({"User-Agent": USER_AGENT})
        headers.update({name: value.reveal() for name, value in self._headers.items()})
        headers.update(
            {
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now)),
            }
        )
        if self._signing is not None:
            when = datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC)
            signer = Webhook(self._signing.reveal())  # made here: the key stays a Secret
            headers["webhook-signature"] = signer.sign(message_id, when, body)
        return headers

    def preview(self, notification: Notification) -> str:
        lines = [f"POST {mask_url(self._url.reveal())}"]
        try:
            body = self.body(notification)
        except DeliveryError as exc:
            return "\n".join([*lines, f"not sent: {exc} (the delivery is dead-lettered)"]) + "\n"
        lines += [
            "Content-Type: application/json",
            f"webhook-id: {self.message_id(notification)}",
            "webhook-timestamp: (the time of each attempt)",
        ]
        if self._signing is not None:
            lines.append("webhook-signature: v1,… (signed with the destination's secret)")
        lines += [f"{name}: <secret>" for name in self._headers]
        return "\n".join([*lines, "", printable(body.decode("utf-8", "replace"))]) + "\n"

    async def close(self) -> None:
        """Nothing of its own to let go of: the HTTP session is the app's."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0

    async def send(self, notification: Notification) -> Sent:
        body = self.body(notification)
        # Fresh on every attempt: a receiver refuses an old timestamp as a replay.
        headers = self.headers(notification, body, time.time())
        await post_once(
            self._http,
            self._url.reveal(),
            body,
            headers,
            service=SERVICE,
            secrets=self._request_secrets,
            redirect_key="url",
        )
        return Sent()

    def _request_secrets(self) -> list[str]:
        """What of a request an answer may echo back and the attempt record must not keep."""
        secrets = url_secrets(self._url.reveal())
        for value in (self._signing, *self._headers.values()):
            if value is not None:
                secrets += value_secrets(value.reveal())
        return secrets


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
