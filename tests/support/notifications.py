"""Notifications built straight from a payload, for the sender tests."""

from __future__ import annotations

from typing import Any

from relay.events import event_from_payload
from relay.notification import Notification


def notification(kind: str = "chat.push", rule: str = "r", **data: Any) -> Notification:
    """Return the notification of one event of `kind` with `data`, for rule `rule`."""
    payload = {"agent_id": "agent_abc123", "event_type": kind, "data": data, "timestamp": 1.7e9}
    return Notification(
        event=event_from_payload(payload, event_id="e1", received_at=0.0), rule=rule
    )


def chat(message: str = "hello") -> Notification:
    """Return the notification of a user's chat message."""
    return notification(role="user", message=message, session_id="s1")
