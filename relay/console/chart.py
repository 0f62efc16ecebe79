"""A bar chart as server-rendered SVG: geometry computed here, drawn by a template.

No script and no inline style (the console's Content-Security-Policy allows neither):
bars are <rect> elements with a class, each with a <title> a screen reader and a hover
read; the chart as a whole is an image with a text alternative.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.activity.figures import Bar
from relay.console.present import iso

WIDTH = 720.0
HEIGHT = 180.0
_PLOT_TOP = 10.0
_PLOT_BOTTOM = 150.0  # below it, the time labels
_LEFT = 40.0  # left of it, the scale
_GAP = 0.15  # of a bar's slot, left empty between bars


@dataclass(frozen=True)
class BarShape:
    x: float
    y: float
    width: float
    height: float
    label: str  # its <title>
    start: str  # ISO 8601, for the JSON twin and <time>


@dataclass(frozen=True)
class Chart:
    bars: list[BarShape]
    top: int  # the scale's top value
    first_label: str
    last_label: str
    summary: str  # the text alternative
    width: float = WIDTH
    height: float = HEIGHT
    plot_top: float = _PLOT_TOP
    plot_bottom: float = _PLOT_BOTTOM
    left: float = _LEFT


def bar_chart(bars: list[Bar], unit: str) -> Chart:
    """Lay out conversations started per `unit` ('hour' or 'day')."""
    top = max([bar.conversations for bar in bars] + [1])
    slot = (WIDTH - _LEFT) / max(len(bars), 1)
    shapes = []
    for i, bar in enumerate(bars):
        height = (_PLOT_BOTTOM - _PLOT_TOP) * bar.conversations / top
        when = _when(bar.start, unit)
        noun = "conversation" if bar.conversations == 1 else "conversations"
        shapes.append(
            BarShape(
                x=round(_LEFT + i * slot + slot * _GAP / 2, 2),
                y=round(_PLOT_BOTTOM - height, 2),
                width=round(slot * (1 - _GAP), 2),
                height=round(height, 2),
                label=f"{when}: {bar.conversations} {noun} started",
                start=iso(bar.start),
            )
        )
    total = sum(bar.conversations for bar in bars)
    first = _when(bars[0].start, unit) if bars else ""
    last = _when(bars[-1].start, unit) if bars else ""
    summary = (
        f"Conversations started per {unit}, {first} to {last}: {total} in all, "
        f"at most {max([bar.conversations for bar in bars] + [0])} in one {unit}"
    )
    return Chart(shapes, top, first, last, summary)


def _when(start: float, unit: str) -> str:
    stamp = iso(start)  # 2026-12-07T14:00:00.000Z
    return stamp[:10] if unit == "day" else f"{stamp[:10]} {stamp[11:16]} UTC"
