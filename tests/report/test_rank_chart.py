"""The ranks chart of a comparison's page: best at the top left, bars only with an interval."""

from __future__ import annotations

import math

from uqeval.report.rank_chart import marker_path, rank_chart
from uqeval.report.style import category_styles


def row(group: str, performance: float, entanglement: float, interval: float = math.nan) -> dict:
    return {
        "group": group,
        "performance_rank": performance,
        "performance_interval": interval,
        "entanglement_rank": entanglement,
        "entanglement_interval": interval,
    }


def test_the_best_model_is_top_left_and_keeps_its_figure_colour():
    chart = rank_chart([row("good", 1.0, 1.0), row("bad", 3.0, 3.0), row("middling", 2.0, 2.5, 0.4)])
    good, bad, middling = chart.points
    assert good.x < middling.x < bad.x and good.y < middling.y < bad.y
    assert chart.left < good.x and bad.x < chart.right and chart.top < good.y and bad.y < chart.bottom
    styles = category_styles(["good", "bad", "middling"])
    assert [point.colour for point in chart.points] == [styles[name].colour for name in ("good", "bad", "middling")]
    assert good.x_bar is None and good.y_bar is None  # one seed: no interval
    low, high = middling.x_bar
    assert low < middling.x < high and math.isclose(middling.x - low, high - middling.x, abs_tol=0.2)
    assert [label for _, label in chart.x_ticks] == ["1", "2", "3"]


def test_no_chart_without_ranks_and_long_names_are_cut():
    assert rank_chart([row("a", math.nan, 1.0)]) is None
    chart = rank_chart([row("x" * 100, 1.0, 2.0), row("b", 2.0, 1.0)])
    assert len(chart.points[0].label) == 22


def test_markers_are_closed_paths_around_the_point():
    for marker in ("o", "s", "^", "v", "D", "P", "X"):
        path = marker_path(marker, 100.0, 50.0)
        assert path.startswith("M ") and path.endswith(" Z")
        numbers = [float(token) for token in path.replace("M", " ").replace("L", " ").replace("Z", " ").split()[:2]]
        assert abs(numbers[0] - 100.0) <= 6 and abs(numbers[1] - 50.0) <= 6
