"""The deliveries page's URL: its filters and its cursor, read strictly and written back.

Everything the page shows is in its query string (`?status=dead&destination=slack&
since=2025-01-31T14:00:00&before=1234`), so a reload, a bookmark or a link shows the same
deliveries. A value the console cannot read is an error naming its parameter, never
silently ignored: a filter that did nothing would show the wrong deliveries.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import get_args
from urllib.parse import urlencode

from relay.store.base import DeliveryFilter, DeliveryStatus

LIST_PATH = "/deliveries"
STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
MAX_ID = 2**63 - 1  # no store hands out a larger id
_MAX_LENGTH = {"destination": 200, "event_type": 200, "text": 500}
_TIME_EXAMPLE = "a time like 2025-01-31T14:30 (UTC) or Unix seconds"


class FilterError(ValueError):
    """A query parameter the console cannot read; the message names it."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


@dataclass(frozen=True)
class ListQuery:
    """What one deliveries page shows: the filter, and where the page starts."""

    where: DeliveryFilter = field(default_factory=DeliveryFilter)
    before_id: int | None = None  # the page holds ids below this one; None: the newest

    @property
    def filtered(self) -> bool:
        return self.where != DeliveryFilter()

    def params(self) -> dict[str, str]:
        """Return the query parameters that give this page, in a fixed order."""
        where = self.where
        values = {
            "status": where.status,
            "destination": where.destination,
            "event_type": where.event_type,
            "since": None if where.since is None else format_time(where.since),
            "until": None if where.until is None else format_time(where.until),
            "text": where.text,
            "before": None if self.before_id is None else str(self.before_id),
        }
        return {name: value for name, value in values.items() if value is not None}

    def url(self, path: str = LIST_PATH) -> str:
        params = self.params()
        return f"{path}?{urlencode(params)}" if params else path

    def older(self, before_id: int) -> ListQuery:
        """The same filter, from `before_id` down."""
        return replace(self, before_id=before_id)

    def newest(self) -> ListQuery:
        return replace(self, before_id=None)


def only(**where: str) -> ListQuery:
    """A page with just these filters (the links of the counts)."""
    return ListQuery(read_filter(where))


def read_query(query: Mapping[str, str]) -> ListQuery:
    """Read a deliveries page's query string; raise FilterError naming a bad parameter."""
    return ListQuery(read_filter(query), _cursor(query.get("before", "")))


def read_filter(query: Mapping[str, str]) -> DeliveryFilter:
    """Read the filter parameters (unknown parameters are left alone)."""
    for name, most in _MAX_LENGTH.items():
        if len(query.get(name, "")) > most:
            raise FilterError(name, f"at most {most} characters")
    since = read_time("since", query.get("since", ""))
    until = read_time("until", query.get("until", ""))
    if since is not None and until is not None and until <= since:
        raise FilterError("until", "must be later than since")
    return DeliveryFilter(
        status=_status(query.get("status", "")),
        destination=query.get("destination", "").strip() or None,
        event_type=query.get("event_type", "").strip() or None,
        since=since,
        until=until,
        text=query.get("text", "").strip() or None,
    )


def _status(value: str) -> DeliveryStatus | None:
    value = value.strip()
    if not value:
        return None
    for status in STATUSES:
        if value == status:
            return status
    raise FilterError("status", f"expected one of {', '.join(STATUSES)}, got {_shown(value)}")


def _cursor(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_ID:
        raise FilterError("before", f"expected a delivery id, got {_shown(value)}")
    return int(value)


def read_time(parameter: str, value: str) -> float | None:
    """Read a time: ISO 8601 (what a datetime-local field sends; UTC unless it says
    otherwise) or Unix seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _iso_time(parameter, value)
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # year 10000
        raise FilterError(parameter, f"expected {_TIME_EXAMPLE}, got {_shown(value)}")
    return seconds


def _iso_time(parameter: str, value: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(parameter, f"expected {_TIME_EXAMPLE}, got {_shown(value)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    """Write a time back as a datetime-local field shows it, in UTC, with its fraction of
    a second when it has one: read back, it selects the same deliveries."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    if not moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return fraction[:-3] if moment.microsecond % 1000 == 0 else fraction


def _shown(value: str) -> str:
    """A bad value as an error repeats it: quoted, and cut."""
    return repr(value if len(value) <= 60 else value[:60] + "…")
