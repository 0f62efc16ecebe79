"""Email: the message, header safety and SMTP replies, against a real aiosmtpd server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from relay.notification import Notification
from relay.senders import DeliveryError, Sender, SenderContext, build_senders
from relay.senders.base import Sent
from tests.support.notifications import chat, notification
from tests.support.relay import make_config
from tests.support.smtp import (
    PASSWORD,
    USERNAME,
    Handler,
    Mail,
    SmtpServer,
    free_port,
    self_signed_cert,
    server_tls_context,
)

TO = ("ops@example.com", "gone@example.com")


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def smtp(handler: Handler) -> Iterator[SmtpServer]:
    server = SmtpServer(handler).start()
    yield server
    server.stop()


def email_sender(tmp_path: Path, port: int, smtp_extra: str = "tls: none") -> Sender:
    config = make_config(
        f"""
        destinations:
          mail:
            type: email
            smtp: {{ host: 127.0.0.1, port: {port}, {smtp_extra}, timeout: 5s }}
            from: "relay <relay@example.com>"
            to: [{", ".join(TO)}]
        """,
        tmp_path,
        {"SMTP_PASSWORD": PASSWORD},
    )
    return build_senders(config.destinations, SenderContext())["mail"]


def parts(mail: Mail) -> tuple[str, str]:
    """Return the text and HTML parts of a multipart/alternative message."""
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = message.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    return str(text_part.get_content()), str(html_part.get_content())


async def test_message_is_multipart_with_escaped_html_date_and_message_id(
    smtp: SmtpServer, handler: Handler, tmp_path: Path
) -> None:
    result = await email_sender(tmp_path, smtp.port).send(chat("<b>hi</b> & <script>x</script>"))

    assert result == Sent()
    [mail] = handler.mails
    assert mail.rcpt_tos == TO
    assert mail.mail_from == "relay@example.com"
    message = mail.message
    assert message["Subject"] == "New chat message from user"
    assert message["Date"] is not None and message["Message-ID"].endswith("@example.com>")
    text, html = parts(mail)
    assert "<b>hi</b> & <script>x</script>" in text
    assert "&lt;b&gt;hi&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "agent_abc123" in text and "agent_abc123" in html


async def test_every_attempt_of_one_email_names_the_same_message(
    smtp: SmtpServer, handler: Handler, tmp_path: Path
) -> None:
    """A retry after a lost answer names the message the server may have, which mail
    systems keep once; another event's email is another message."""
    sender = email_sender(tmp_path, smtp.port)
    for event_id in ("e1", "e1", "e2"):
        test_event = notification("test")
        await sender.send(replace(test_event, event=replace(test_event.event, event_id=event_id)))
    first, retry, other = (mail.message["Message-ID"] for mail in handler.mails)
    assert first == retry != other
    assert first.startswith("<relay.") and first.endswith("@example.com>")


@pytest.mark.parametrize(
    "notice",
    [
        Notification(event=chat("x").event, rule="r", title="Alert\r\nBcc: evil@x", text="t"),
        Notification(event=chat("x").event, rule="r", title="A\nBcc: evil@x\r\n\r\nbody"),
        notification(role="user\r\nBcc: evil@x", message="\r\nBcc: evil@x", session_id="s\r\n"),
    ],
    ids=["template-title", "bare-lf-and-blank-line", "event-content"],
)
async def test_no_header_injection_from_event_content(
    notice: Notification, smtp: SmtpServer, handler: Handler, tmp_path: Path
) -> None:
    await email_sender(tmp_path, smtp.port).send(notice)

    [mail] = handler.mails
    message = mail.message
    assert message["Bcc"] is None
    assert mail.rcpt_tos == TO
    subject = str(message["Subject"])
    assert "\r" not in subject and "\n" not in subject
    assert "Bcc: evil@x" in subject or "Bcc" not in subject
    assert sorted(message.keys()) == sorted(
        ["Subject", "From", "To", "Date", "Message-ID", "Content-Type", "MIME-Version"]
    )


async def test_a_refused_recipient_is_a_note_and_the_other_gets_the_mail(
    smtp: SmtpServer, handler: Handler, tmp_path: Path
) -> None:
    handler.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"

    note = (await email_sender(tmp_path, smtp.port).send(chat("hi"))).note

    assert note is not None
    assert "gone@example.com" in note and "550" in note
    assert "ops@example.com" not in note
    [mail] = handler.mails
    assert mail.rcpt_tos == ("ops@example.com",)


@pytest.mark.parametrize(
    ("rcpt_reply", "data_reply", "retryable", "code"),
    [
        ("451 4.3.0 try later", None, True, "451"),
        ("550 5.1.1 no such user", None, False, "550"),
        (None, "451 4.3.0 try later", True, "451"),
        (None, "554 5.7.1 rejected as spam", False, "554"),
    ],
)
async def test_smtp_4xx_is_retryable_and_5xx_permanent(
    rcpt_reply: str | None,
    data_reply: str | None,
    retryable: bool,
    code: str,
    smtp: SmtpServer,
    handler: Handler,
    tmp_path: Path,
) -> None:
    if rcpt_reply is not None:
        handler.rcpt_replies.update(dict.fromkeys(TO, rcpt_reply))
    if data_reply is not None:
        handler.data_replies.append(data_reply)

    with pytest.raises(DeliveryError) as caught:
        await email_sender(tmp_path, smtp.port).send(chat("hi"))

    assert caught.value.retryable is retryable
    assert code in str(caught.value)
    assert handler.mails == []


async def test_an_smtp_server_that_is_down_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_sender(tmp_path, free_port()).send(chat("hi"))

    assert caught.value.retryable is True


# STARTTLS: needs a certificate. The `cryptography` package is not installed, so the
# openssl tool makes one; the client trusts it through SSL_CERT_FILE, as an operator would.


@pytest.fixture
def tls_smtp(
    handler: Handler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SmtpServer]:
    made = self_signed_cert(tmp_path)
    if made is None:
        pytest.skip("no openssl tool to make a certificate")
    cert, key = made
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = SmtpServer(handler, server_tls_context(cert, key)).start()
    yield server
    server.stop()


STARTTLS_LOGIN = f'tls: starttls, username: {USERNAME}, password: "${{SMTP_PASSWORD}}"'


async def test_starttls_with_login(tls_smtp: SmtpServer, handler: Handler, tmp_path: Path) -> None:
    result = await email_sender(tmp_path, tls_smtp.port, STARTTLS_LOGIN).send(chat("secure"))

    assert result == Sent()
    [mail] = handler.mails
    assert "secure" in parts(mail)[0]


async def test_a_wrong_smtp_password_is_permanent_and_not_shown(
    tls_smtp: SmtpServer, handler: Handler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = STARTTLS_LOGIN.replace("${SMTP_PASSWORD}", "wrong-pass-s3cret")
    sender = email_sender(tmp_path, tls_smtp.port, wrong)

    with pytest.raises(DeliveryError) as caught:
        await sender.send(chat("hi"))

    assert caught.value.retryable is False
    assert "535" in str(caught.value)
    assert "wrong-pass-s3cret" not in str(caught.value) + repr(caught.value)
    assert handler.mails == []


async def test_starttls_refuses_an_untrusted_certificate_as_retryable(
    tls_smtp: SmtpServer, handler: Handler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")

    with pytest.raises(DeliveryError) as caught:
        await email_sender(tmp_path, tls_smtp.port, STARTTLS_LOGIN).send(chat("hi"))

    assert caught.value.retryable is True
    assert PASSWORD not in str(caught.value)
    assert handler.mails == []
