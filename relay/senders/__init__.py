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
from relay.senders.email import EmailSender
from relay.senders.slack import build_slack_sender
from relay.senders.teams import TeamsSender
from relay.senders.webhook import WebhookSender

SenderFactory = Callable[[Any, SenderContext], Sender]


def _postgres_sender(config: Any, context: SenderContext) -> Sender:
    # psycopg takes about 0.1 s to import: only a config with a database pays for it.
    from relay.senders.postgres import PostgresSender

    return PostgresSender(config, context)


SENDERS: dict[str, SenderFactory] = {
    "console": ConsoleSender,
    "discord": DiscordSender,
    "email": EmailSender,
    "postgres": _postgres_sender,
    "slack": build_slack_sender,
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
