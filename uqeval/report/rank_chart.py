"""The ranking of a comparison as a small vector chart for ``report.html``: average
performance rank (x) against average entanglement rank (y), one point per model.

The chart is laid out here, in SVG user units, and drawn by the page's template as
inline SVG (its texts escaped like every other string of the page): no matplotlib, so it
costs nothing next to the figures. Each model keeps the colour and marker of the
comparison's figures (:func:`~uqeval.report.style.category_styles`). Rank 1 (best) is
at the left and at the top, so the best model on both counts sits in the top-left
corner. Where a model has several seeds, bars span its rank ± the 95 % Student-t
half-width of :attr:`~uqeval.Comparison.ranks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uqeval.report.style import category_styles
from uqeval.text import shortened

#: The chart's size in SVG user units (CSS pixels at 100 %).
WIDTH, HEIGHT = 560, 400
#: Room for the axes' labels: left, right, top, bottom.
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 150, 16, 48
#: Characters of a model's name written beside its point.
_LABEL_CHARACTERS = 22


#: Marker outlines as (x, y) offsets in units of the marker's radius, for the markers of
#: :func:`~uqeval.report.style.category_styles` ("o" is drawn as a circle).
_MARKER_OUTLINES = {
    "s": ((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "^": ((0.0, -1.1), (1.0, 0.7), (-1.0, 0.7)),
    "v": ((0.0, 1.1), (1.0, -0.7), (-1.0, -0.7)),
    "D": ((0.0, -1.15), (1.0, 0.0), (0.0, 1.15), (-1.0, 0.0)),
    "P": tuple(
        (x * 0.35, y * 0.35)
        for x, y in (
            (-1, -3),
            (1, -3),
            (1, -1),
            (3, -1),
            (3, 1),
            (1, 1),
            (1, 3),
            (-1, 3),
            (-1, 1),
            (-3, 1),
            (-3, -1),
            (-1, -1),
        )
    ),
    "X": tuple(
        (x * 0.33, y * 0.33)
        for x, y in (
            (-3, -2),
            (-2, -3),
            (0, -1),
            (2, -3),
            (3, -2),
            (1, 0),
            (3, 2),
            (2, 3),
            (0, 1),
            (-2, 3),
            (-3, 2),
            (-1, 0),
        )
    ),
}
_MARKER_RADIUS = 5.0


def marker_path(marker: str, x: float, y: float, radius: float = _MARKER_RADIUS) -> str:
    """SVG path data of ``marker`` (a matplotlib marker name) centred on ``(x, y)``; a circle for any other."""
    outline = _MARKER_OUTLINES.get(marker)
    if outline is None:
        arc = f"a {radius} {radius} 0 1 0"
        return f"M {x - radius:.1f} {y:.1f} {arc} {2 * radius} 0 {arc} {-2 * radius} 0 Z"
    corners = " L ".join(f"{x + dx * radius:.1f} {y + dy * radius:.1f}" for dx, dy in outline)
    return f"M {corners} Z"


@dataclass(frozen=True)
class RankPoint:
    """One model: its place, colour, marker (SVG path data), label and the ends of its
    interval bars (None without)."""

    x: float
    y: float
    colour: str
    marker: str
    label: str
    x_bar: tuple[float, float] | None
    y_bar: tuple[float, float] | None


@dataclass(frozen=True)
class RankChart:
    """What the template draws: the plot area, tick positions and labels, and the points."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    points: list[RankPoint]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def rank_chart(ranks: Sequence[Mapping[str, Any]]) -> RankChart | None:
    """The chart of a comparison's :attr:`~uqeval.Comparison.ranks` rows, or None when no
    row has both ranks.

    Both axes run from rank 1 to the number of models (at least 2), padded by half a rank.
    """
    rows = [row for row in ranks if _finite(row["performance_rank"]) and _finite(row["entanglement_rank"])]
    if not rows:
        return None
    most = max(2, len(ranks))
    low, high = 0.5, most + 0.5
    left, right, top, bottom = _LEFT, WIDTH - _RIGHT, _TOP, HEIGHT - _BOTTOM

    def x_of(rank: float) -> float:
        return round(left + (min(max(rank, low), high) - low) / (high - low) * (right - left), 1)

    def y_of(rank: float) -> float:
        return round(top + (min(max(rank, low), high) - low) / (high - low) * (bottom - top), 1)

    def bar(rank: float, interval: Any, place: Any) -> tuple[float, float] | None:
        if not _finite(interval) or interval <= 0:
            return None
        return (place(rank - interval), place(rank + interval))

    styles = category_styles(str(row["group"]) for row in ranks)
    points = []
    for row in rows:
        x, y = x_of(row["performance_rank"]), y_of(row["entanglement_rank"])
        style = styles[str(row["group"])]
        points.append(
            RankPoint(
                x,
                y,
                style.colour,
                marker_path(style.marker, x, y),
                shortened(row["group"], _LABEL_CHARACTERS),
                bar(row["performance_rank"], row.get("performance_interval"), x_of),
                bar(row["entanglement_rank"], row.get("entanglement_interval"), y_of),
            )
        )
    step = max(1, math.ceil(most / 10))
    ticks = range(1, most + 1, step)
    return RankChart(
        WIDTH,
        HEIGHT,
        left,
        top,
        right,
        bottom,
        [(x_of(rank), str(rank)) for rank in ticks],
        [(y_of(rank), str(rank)) for rank in ticks],
        points,
    )
