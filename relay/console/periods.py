"""The periods the Activity and Rules pages show (SPEC 8.1): `?period=24h|7d|30d`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from relay.activity.tally import HOUR_S
from relay.console.filters import FilterError
from relay.console.keys import STATE
from relay.durations import format_duration

PERIODS = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
DEFAULT_PERIOD = "24h"


@dataclass(frozen=True)
class Period:
    """The last `seconds` before `now`, counted in whole hours: the counters' own."""

    name: str
    seconds: float
    now: float
    history_s: float  # console.history: how far back the figures go

    @property
    def since_hour(self) -> int:
        """The first hour counted: the one `seconds` ago, whole (so 24h reads 25 hours
        of counters, the current one only begun)."""
        return int((self.now - self.seconds) // HOUR_S)

    @property
    def offered(self) -> list[str]:
        """The periods a page offers: those the kept figures cover."""
        return [name for name, seconds in PERIODS.items() if seconds <= self.history_s]


def requested_period(request: web.Request) -> Period:
    """The period a page's URL asks for (the console's error handler answers a FilterError
    with 400, naming the parameter)."""
    state = request.app[STATE]
    console = state.config.console
    assert console is not None  # the console runs only when configured
    return read_period(request.query, console.history_s, state.clock())


def read_period(query: Mapping[str, str], history_s: float, now: float) -> Period:
    """Read `?period=` (24h when absent, or all that is kept when console.history is
    shorter); one longer than console.history is an error naming it: figures older than
    the history are gone."""
    if "period" not in query and PERIODS[DEFAULT_PERIOD] > history_s:
        return Period(format_duration(history_s), history_s, now, history_s)  # all kept
    name = query.get("period", DEFAULT_PERIOD)
    seconds = PERIODS.get(name)
    if seconds is None:
        raise FilterError("period", f"must be one of {', '.join(PERIODS)}, got {name[:40]!r}")
    if seconds > history_s:
        kept = format_duration(history_s)
        raise FilterError("period", f"{name} is longer than console.history ({kept})")
    return Period(name, seconds, now, history_s)
