"""Destinations, registered in one explicit table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relay.config.model import Destination
from relay.notification import Notification
from relay.senders.base import DeliveryError, Sender, SenderContext
from relay.senders.console import ConsoleSender
from relay.senders.discord import DiscordSender
from relay.senders.email import EmailSender
from relay.senders.slack import build_slack_sender
from relay.senders.webhook import WebhookSender

SenderFactory = Callable[[Any, SenderContext], Sender]

SENDERS: dict[str, SenderFactory] = {
    "console": ConsoleSender,
    "discord": DiscordSender,
    "email": EmailSender,
    "slack": build_slack_sender,
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


__all__ = ["SENDERS", "DeliveryError", "Notification", "Sender", "SenderContext", "build_senders"]
