"""Figures of ``uqeval compare``: the correct-vs-wrong scatter (the study's Fig. 7) and EU/AU bars.

Every function builds its own :class:`matplotlib.figure.Figure` on an Agg canvas and
never touches ``pyplot``. Each group (model) keeps one colour in every panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uqeval.tasks import TASKS

if TYPE_CHECKING:
    from uqeval.comparison import Comparison

#: ``gid`` of the dashed Δ = 0 line (``U_c = U_w``) in each panel of :func:`entanglement_figure`.
DELTA_ZERO_GID = "delta-zero"

_PANEL_INCHES = 3.4
#: The values a metric can take; wide error bars do not stretch the axes past them.
_METRIC_RANGE = {"auroc": (0.0, 1.0), "ncc": (-1.0, 1.0), "ace": (0.0, 1.0)}
_DELTA_ZERO_STYLE = {"color": "0.5", "linestyle": "--", "linewidth": 1.0}


def panels(comparison: Comparison) -> list[tuple[str, str]]:
    """The ``(task, split)`` panels of :func:`entanglement_figure`, in order.

    OODD ``ood``, AMB ``id``, AMB ``ood``, CAL ``id``, CAL ``ood`` — those with at
    least one point.
    """
    from uqeval.comparison import RANK_SPLITS

    present = {(point["task"], point["split"]) for point in comparison.points}
    return [(task, split) for task, splits in RANK_SPLITS.items() for split in splits if (task, split) in present]


def axis_labels(task: str) -> tuple[str, str]:
    """``(x, y)`` axis labels of a task's panel: the wrong and the correct measure and metric.

    >>> axis_labels("oodd")
    ('AU AUROC (wrong)', 'EU AUROC (correct)')
    >>> axis_labels("cal")
    ('min(AU, EU) ACE (wrong)', 'TU ACE (correct)')
    """
    spec = TASKS[task]
    metric = spec.metric.upper()
    if len(spec.wrong) == 1:
        wrong = spec.wrong[0].upper()
    else:
        best = "min" if spec.lower_is_better else "max"
        wrong = f"{best}({', '.join(measure.upper() for measure in spec.wrong)})"
    return f"{wrong} {metric} (wrong)", f"{spec.correct.upper()} {metric} (correct)"


def entanglement_figure(comparison: Comparison) -> Figure:
    """Correct against wrong measure per task and split, one point per model (the study's Fig. 7).

    Parameters
    ----------
    comparison : Comparison
        From :func:`uqeval.comparison.compare`.

    Returns
    -------
    Figure
        One panel per task and split present (OODD ``ood``, AMB ``id`` and ``ood``, CAL
        ``id`` and ``ood``), in a row: x = ``U_wrong``, y = ``U_correct``, each group's
        mean over seeds with 95 % Student-t error bars when it has several seeds and a
        label. Both axes share one range, and the dashed line ``y = x`` (Δ = 0, gid
        :data:`DELTA_ZERO_GID`) splits it: points above it are disentangled for AUROC
        and NCC, points below it for ACE, where lower is better (noted in the panel).
        Undefined points are left out and counted in the panel.
    """
    chosen = panels(comparison)
    colours = _group_colours(comparison.groups)
    if not chosen:
        figure = _new_figure(_PANEL_INCHES * 1.5, _PANEL_INCHES)
        figure.text(0.5, 0.5, "no entanglement rows to plot", ha="center", va="center")
        return figure
    figure = _new_figure(_PANEL_INCHES * len(chosen), _PANEL_INCHES + 0.5)
    axes = figure.subplots(1, len(chosen), squeeze=False).flat
    for ax, (task, split) in zip(axes, chosen, strict=True):
        points = [point for point in comparison.points if (point["task"], point["split"]) == (task, split)]
        shown = [p for p in points if math.isfinite(p["u_correct"]) and math.isfinite(p["u_wrong"])]
        for point in shown:
            x, y = point["u_wrong"], point["u_correct"]
            ax.errorbar(
                x,
                y,
                xerr=_error(point["u_wrong_interval"]),
                yerr=_error(point["u_correct_interval"]),
                fmt="o",
                markersize=5,
                capsize=2,
                elinewidth=1.0,
                color=colours[point["group"]],
            )
            ax.annotate(
                point["group"], (x, y), xytext=(4, 3), textcoords="offset points", fontsize="x-small", clip_on=True
            )
        low, high = _limits(shown, TASKS[task].metric)
        ax.plot([low, high], [low, high], **_DELTA_ZERO_STYLE, gid=DELTA_ZERO_GID, label="Δ = 0")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_box_aspect(1)
        xlabel, ylabel = axis_labels(task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task.upper()} · {split}")
        notes = []
        if TASKS[task].lower_is_better:
            notes.append("lower is better: Δ > 0 below the line")
        else:
            notes.append("Δ > 0 above the line")
        if len(shown) < len(points):
            notes.append(f"{len(points) - len(shown)} undefined, not shown")
        _note(ax, "\n".join(notes), lower_is_better=TASKS[task].lower_is_better)
    figure.suptitle("Correct vs wrong uncertainty measure (error bars: 95 % t-interval over seeds)")
    return figure


def collapse_figure(comparison: Comparison) -> Figure:
    """Epistemic collapse: mean EU / mean AU per model (bars) and split (colours).

    Parameters
    ----------
    comparison : Comparison

    Returns
    -------
    Figure
        One group of bars per model, in rank order, one bar per split (``id`` first,
        ``ood`` last) with 95 % Student-t error bars over seeds where there are
        several, and a dashed line at EU/AU = 1.
    """
    from uqeval.comparison import split_order

    rows = comparison.collapse
    groups = [group for group in comparison.groups if any(row["group"] == group for row in rows)]
    groups += sorted({row["group"] for row in rows} - set(groups))
    figure = _new_figure(max(4.5, 0.9 * len(groups) + 2.0), _PANEL_INCHES)
    if not rows:
        figure.text(0.5, 0.5, "no collapse rows to plot", ha="center", va="center")
        return figure
    splits = sorted({row["split"] for row in rows}, key=split_order)
    ax = figure.subplots()
    width = 0.8 / len(splits)
    colours = colormaps["tab10"].colors
    by_key = {(row["group"], row["split"]): row for row in rows}
    for index, split in enumerate(splits):
        xs, heights, errors = [], [], []
        for position, group in enumerate(groups):
            row = by_key.get((group, split))
            if row is None or not math.isfinite(row["eu_over_au"]):
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(row["eu_over_au"])
            errors.append(row["eu_over_au_interval"] if math.isfinite(row["eu_over_au_interval"]) else 0.0)
        ax.bar(
            xs,
            heights,
            width=width,
            yerr=errors if any(errors) else None,
            capsize=2,
            label=split,
            color=colours[index % 10],
        )
    ax.axhline(1.0, **_DELTA_ZERO_STYLE, label="EU = AU")
    ax.set_xticks(
        range(len(groups)), groups, rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center"
    )
    ax.set_ylabel("mean EU / mean AU")
    ax.set_ylim(bottom=0)
    ax.set_title("Epistemic collapse (far below 1: TU ≈ AU)")
    ax.legend(fontsize="small")
    return figure


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _group_colours(groups: Sequence[str]) -> dict[str, tuple[float, ...]]:
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"].colors
    return {group: palette[index % len(palette)] for index, group in enumerate(sorted(groups))}


def _error(interval: float) -> float | None:
    return interval if math.isfinite(interval) else None


def _limits(points: Sequence[dict], metric: str) -> tuple[float, float]:
    """One range for both axes holding every point with its error bars, padded by 8 %.

    Error bars are cut at the metric's possible values (AUROC and ACE in [0, 1], NCC in
    [-1, 1]); the points themselves are always inside.
    """
    values = []
    for point in points:
        for key in ("u_wrong", "u_correct"):
            half = point[f"{key}_interval"] if math.isfinite(point[f"{key}_interval"]) else 0.0
            values += [point[key] - half, point[key] + half]
    if not values:
        return 0.0, 1.0
    low, high = float(np.min(values)), float(np.max(values))
    if metric in _METRIC_RANGE:
        bottom, top = _METRIC_RANGE[metric]
        centres = [point[key] for point in points for key in ("u_wrong", "u_correct")]
        low, high = min(max(low, bottom), *centres), max(min(high, top), *centres)
    pad = 0.08 * (high - low) if high > low else max(0.05, 0.05 * abs(high))
    return low - pad, high + pad


def _note(ax: Axes, text: str, *, lower_is_better: bool) -> None:
    # Put the note in the corner away from the line's disentangled side.
    if lower_is_better:
        ax.text(0.03, 0.97, text, transform=ax.transAxes, ha="left", va="top", fontsize="x-small", color="0.3")
    else:
        ax.text(0.97, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="0.3")
