"""The one duration parser: `500ms`, `30s`, `5m`, `24h`, `7d`, or a bare number of seconds."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Return a duration in seconds, or raise ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 500ms, 30s, 5m or 24h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is not None:
            number = float(match.group("number"))
            return number * _UNIT_SECONDS[match.group("unit") or "s"]
    raise ValueError(f"expected a duration like 500ms, 30s, 5m or 24h, got {value!r}")


def format_duration(seconds: float) -> str:
    """Return a short human form of a duration, for listings (`3s`, `4m`, `2h`, `5d`)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
