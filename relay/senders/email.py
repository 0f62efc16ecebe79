"""The email destination: a multipart/alternative message through aiosmtplib."""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import html
import json
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from relay.config.model import EmailDestination
from relay.formatting import Summary, summarize, truncate
from relay.limits import Limit
from relay.notification import Notification
from relay.senders.base import DeliveryError, SenderContext, Sent
from relay.senders.console import printable

SUBJECT_LIMIT = 200


def header_safe(text: str) -> str:
    """Return text fit for a header: no CR, LF or other control characters can remain."""
    return " ".join(printable(text).split())


def _html(summary: Summary) -> str:
    """Return the HTML part; every piece of event content is escaped."""
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in summary.fields
    )
    text = html.escape(summary.text).replace("\n", "<br>\n")
    link = summary.link
    anchor = (
        f"<p><a href='{html.escape(link.url, quote=True)}'>{html.escape(link.label)}</a></p>"
        if link
        else ""
    )
    return (
        "<!DOCTYPE html><html><body>"
        f"<h2>{html.escape(summary.title)}</h2>"
        f"<p>{text}</p>"
        f"{anchor}"
        f"<table>{rows}</table>"
        f"<p style='color:#888'>{html.escape(summary.footer)}</p>"
        "</body></html>\n"
    )


def _text(summary: Summary) -> str:
    lines = [summary.title, "", summary.text, ""] if summary.text else [summary.title, ""]
    lines += [f"{name}: {value}" for name, value in summary.fields]
    if summary.link is not None:
        lines.append(f"{summary.link.label}: {summary.link.url}")
    lines += ["", summary.footer]
    return "\n".join(lines) + "\n"


def _domain(config: EmailDestination) -> str:
    return email.utils.parseaddr(config.from_addr)[1].rpartition("@")[2] or "relay.local"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:32]


def thread_root(config: EmailDestination, conversation: str, event_id: str) -> str:
    """Return the Message-ID of a conversation's first email, the one for event
    `event_id`: a retry of it names the same message. A conversation that starts a new
    thread (its old one forgotten after store.retention) starts from another event, so
    its new first email is never taken for the old one, which mail clients would drop."""
    return f"<relay.thread.{_digest(config.name, conversation, event_id)}@{_domain(config)}>"


@dataclass(frozen=True)
class EmailThread:
    """What the store keeps of an email conversation: its first message and subject."""

    root: str
    subject: str

    def dump(self) -> str:
        return json.dumps({"root": self.root, "subject": self.subject})

    @classmethod
    def load(cls, value: str) -> EmailThread:
        data = json.loads(value)
        return cls(str(data["root"]), str(data["subject"]))


def _threading(config: EmailDestination, notification: Notification, title: str) -> dict[str, str]:
    """Return Message-ID and Subject, and for a conversation's later emails In-Reply-To and
    References naming its first, so mail clients show one thread."""
    conversation = notification.conversation
    event_id = notification.event.event_id
    # The same for every attempt of one delivery: a retry after an answer that was lost
    # (a timeout after DATA) names the message the server may already have, which mail
    # systems then keep once.
    message_id = f"<relay.{_digest(config.name, event_id)}@{_domain(config)}>"
    if conversation is None:
        return {"Subject": title, "Message-ID": message_id}
    if notification.thread is None:  # the conversation's first email
        return {"Subject": title, "Message-ID": thread_root(config, conversation, event_id)}
    thread = EmailThread.load(notification.thread)
    return {
        "Subject": thread.subject,  # one subject per conversation
        "Message-ID": message_id,
        "In-Reply-To": thread.root,
        "References": thread.root,
    }


def build_message(config: EmailDestination, notification: Notification) -> EmailMessage:
    """Return the email for a notification, with Date, Message-ID and threading set."""
    summary = summarize(notification)
    message = EmailMessage(policy=email.policy.SMTP)
    title = truncate(header_safe(summary.title), SUBJECT_LIMIT)
    message["From"] = config.from_addr
    message["To"] = ", ".join(config.to)
    message["Date"] = email.utils.formatdate(usegmt=True)
    for name, value in _threading(config, notification, title).items():
        message[name] = value
    message.set_content(_text(summary))
    message.add_alternative(_html(summary), subtype="html")
    return message


def _refused(recipients: dict[str, aiosmtplib.SMTPResponse]) -> str:
    return ", ".join(
        f"{address} ({reply.code} {reply.message})" for address, reply in recipients.items()
    )


def _smtp_error(exc: aiosmtplib.SMTPException) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = ", ".join(f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients)
        # A 4xx for anyone means a later try may reach them; only all-5xx is final.
        retryable = any(400 <= code < 500 for code in codes)
        return DeliveryError(f"SMTP refused every recipient: {detail}", retryable=retryable)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        retryable = 400 <= exc.code < 500
        return DeliveryError(f"SMTP answered {exc.code} {exc.message}", retryable=retryable)
    # Connection refused, dropped, timed out, TLS failure: worth another try.
    return DeliveryError(f"SMTP failed: {type(exc).__name__}: {exc}", retryable=True)


class EmailSender:
    """Sends through one SMTP server; 4xx retries, 5xx is permanent."""

    updates_parents = False

    def __init__(self, config: EmailDestination, context: SenderContext) -> None:
        self.name = config.name
        self.limit: Limit | None = None
        self._config = config

    def preview(self, notification: Notification) -> str:
        smtp = self._config.smtp
        message = build_message(self._config, notification)
        return f"SMTP {smtp.host}:{smtp.port} ({smtp.tls})\n{message.as_string()}"

    async def close(self) -> None:
        """Nothing to let go of: each send opens and closes its own SMTP connection."""

    async def update_parent(self, thread: str, messages: int, last_activity: float) -> None:
        """This destination has no parent message to keep current."""

    def wait_s(self) -> float:
        return 0.0

    async def send(self, notification: Notification) -> Sent:
        smtp = self._config.smtp
        message = build_message(self._config, notification)
        thread = None
        if notification.conversation is not None and notification.thread is None:
            thread = EmailThread(str(message["Message-ID"]), str(message["Subject"])).dump()
        try:
            refused, _ = await aiosmtplib.send(
                message,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password.reveal() if smtp.password else None,
                use_tls=smtp.tls == "tls",
                start_tls=smtp.tls == "starttls",
                timeout=smtp.timeout_s,
            )
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(exc) from None
        except OSError as exc:
            raise DeliveryError(f"SMTP failed: {exc.strerror or exc}", retryable=True) from None
        if refused:
            # The others got it: a retry would mail them twice, so record what was refused.
            return Sent(note=f"refused by SMTP: {_refused(refused)}", thread=thread)
        return Sent(thread=thread)
