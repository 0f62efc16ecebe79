"""Destinations, registered in one explicit table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relay.config.model import Destination
from relay.notification import Notification
from relay.senders.base import DeliveryError, Sender, SenderContext
from relay.senders.console import ConsoleSender
from relay.senders.discord import DiscordSender

SenderFactory = Callable[[Any, SenderContext], Sender]

SENDERS: dict[str, SenderFactory] = {
    "console": ConsoleSender,
    "discord": DiscordSender,
}


def build_senders(
    destinations: Mapping[str, Destination], context: SenderContext
) -> dict[str, Sender]:
    """Return a sender for each configured destination."""
    senders: dict[str, Sender] = {}
    for name, destination in destinations.items():
        factory = SENDERS.get(destination.type)
        if factory is None:
            senders[name] = UnavailableSender(name, destination.type)
        else:
            senders[name] = factory(destination, context)
    return senders


class UnavailableSender:
    """Stands in for a destination type this build cannot send to yet."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind

    def preview(self, notification: Notification) -> str:
        return f"({self._kind} destinations are not supported by this version of relay)\n"

    def wait_s(self) -> float:
        return 0.0

    async def send(self, notification: Notification) -> None:
        raise DeliveryError(
            f"{self._kind} destinations are not supported by this version of relay",
            retryable=False,
        )


__all__ = ["SENDERS", "DeliveryError", "Notification", "Sender", "SenderContext", "build_senders"]
