"""What the console shows of a delivery: the same figures for a page and its JSON twin.

Nothing here reads the config's destinations: a delivery names its destination, and the
stored body is what bitHuman sent, so no webhook URL, token or password can reach a page.
The request kept with an event never held a credential's value (relay/request_record.py).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Literal

from relay.conversations.watch import is_signal_event_id
from relay.events import EventError, parse_event
from relay.store.base import Attempt, Delivery


def when(seconds: float) -> str:
    """A time as a page shows it: UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(seconds: float) -> str:
    """A time as <time datetime> and the JSON twin give it: ISO 8601, UTC, milliseconds."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pretty(body: bytes) -> str:
    """An event's body, pretty-printed when it is JSON, as stored otherwise; shown as text."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "replace")


def decoded(body: bytes) -> Any:
    """An event's body for the JSON twin: its JSON, or its text when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Row:
    """One delivery as a list shows it."""

    delivery: Delivery
    event_type: str
    agent: str
    session: str | None = None  # its conversation (data.session_id)

    @property
    def url(self) -> str:
        return f"/deliveries/{self.delivery.id}"

    def as_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "id": d.id,
            "url": self.url,
            "event_id": d.event_id,
            "event_type": self.event_type,
            "agent_id": self.agent,
            "destination": d.destination,
            "rule": d.rule,
            "template": d.template,
            "status": d.status,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "created_at": d.created_at,
            "created": iso(d.created_at),
            "next_attempt_at": d.next_attempt_at,
            "digest": d.digest,
        }


def row(delivery: Delivery) -> Row:
    """Read what a list shows of a delivery's event: its type and its agent."""
    try:
        event = parse_event(delivery.body, event_id=delivery.event_id, received_at=0.0)
    except EventError:  # stored bodies were accepted, so only an older relay's could fail
        return Row(delivery, "", "")
    return Row(delivery, event.event_type, event.agent_id, event.session)


RequestKept = Literal["received", "raised_by_relay", "not_recorded"]


@dataclass(frozen=True)
class RequestShown:
    """What a delivery's page says of the request that brought its event in."""

    kept: RequestKept
    peer: str | None
    headers: tuple[tuple[str, str], ...]  # (name, value): no value is a secret

    def as_json(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "peer": self.peer,
            "headers": [{"name": name, "value": value} for name, value in self.headers],
        }


def request_shown(delivery: Delivery) -> RequestShown:
    """The request of a delivery's event, as the store kept it at accept (the record never
    held a secret's value: relay/request_record.py), or why there is none."""
    kept = delivery.request
    if kept is not None:
        return RequestShown("received", kept.peer, kept.headers)
    if is_signal_event_id(delivery.event_id):  # ingest refuses these ids to senders
        return RequestShown("raised_by_relay", None, ())
    return RequestShown("not_recorded", None, ())


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": attempt.started_at,
        "started": iso(attempt.started_at),
        "outcome": attempt.outcome,
        "detail": attempt.detail,
        "duration_s": attempt.duration_s,
    }


def delivery_json(
    delivery: Delivery, attempts: list[Attempt], joined: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """One delivery for its page's JSON twin: its fields, its event, the request that
    brought the event in, and its attempts."""
    return {
        "delivery": row(delivery).as_json(),
        "event": decoded(delivery.body),
        "request": request_shown(delivery).as_json(),
        "digest_events": [
            {"event_id": event_id, "event": decoded(body)} for event_id, body in joined
        ],
        "attempts": [attempt_json(attempt) for attempt in attempts],
    }
