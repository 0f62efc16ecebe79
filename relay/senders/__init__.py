"""Destinations, registered in one explicit table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from relay.config.model import Destination
from relay.notification import Notification
from relay.senders.base import DeliveryError, Sender, SenderContext
from relay.senders.console import ConsoleSender
from relay.senders.discord import DiscordSender
from relay.senders.teams import TeamsSender
from relay.senders.webhook import WebhookSender

SenderFactory = Callable[[Any, SenderContext], Sender]


# The senders whose libraries are large are imported when a config first uses them: each
# relay process holds only what its destinations need (bench/memory.py: slack_sdk and
# aiosmtplib together are about 3 MB of an idle process's 50-odd).
def _postgres_sender(config: Any, context: SenderContext) -> Sender:
    # psycopg also takes about 0.1 s to import.
    from relay.senders.postgres import PostgresSender

    return PostgresSender(config, context)


def _slack_sender(config: Any, context: SenderContext) -> Sender:
    from relay.senders.slack import build_slack_sender

    return build_slack_sender(config, context)


def _email_sender(config: Any, context: SenderContext) -> Sender:
    from relay.senders.email import EmailSender

    return EmailSender(config, context)


SENDERS: dict[str, SenderFactory] = {
    "console": ConsoleSender,
    "discord": DiscordSender,
    "email": _email_sender,
    "postgres": _postgres_sender,
    "slack": _slack_sender,
    "teams": TeamsSender,
    "webhook": WebhookSender,
}


def build_senders(
    destinations: Mapping[str, Destination], context: SenderContext
) -> dict[str, Sender]:
    """Return a sender for each configured destination."""
    return {
        name: SENDERS[destination.type](destination, context)
        for name, destination in destinations.items()
    }


async def close_senders(senders: Iterable[Sender]) -> None:
    """Close senders one by one; one that fails to close keeps no other open."""
    for sender in senders:
        try:
            await sender.close()
        except Exception:  # closing is best effort: the process may be stopping
            logging.getLogger("relay.senders").exception("could not close %s", sender.name)


__all__ = [
    "SENDERS",
    "DeliveryError",
    "Notification",
    "Sender",
    "SenderContext",
    "build_senders",
    "close_senders",
]
