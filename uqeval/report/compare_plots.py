"""Figures of ``uqeval compare``: the correct-vs-wrong scatter (the study's Fig. 7) and EU/AU bars.

Every function builds its own :class:`matplotlib.figure.Figure` on an Agg canvas and
never touches ``pyplot``. Each group (model) keeps one colour and marker in every panel,
each split one colour and hatch (:mod:`uqeval.report.style`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox, ScaledTranslation

from uqeval.report.style import CHANCE_STYLE, category_styles, figure_legend, new_figure, split_styles
from uqeval.tasks import TASKS
from uqeval.text import figure_text

if TYPE_CHECKING:
    from uqeval.comparison import Comparison

#: ``gid`` of the dashed Δ = 0 line (``U_c = U_w``) in each panel of :func:`entanglement_figure`.
DELTA_ZERO_GID = "delta-zero"
#: ``gid`` of the shaded Δ > 0 half of each panel of :func:`entanglement_figure`.
DELTA_POSITIVE_GID = "delta-positive"
#: Models are labelled by name up to this many; more are numbered by rank (names in the legend).
MAX_NAMED_GROUPS = 5
#: Longest name written beside a point; a longer one switches every label to numbers.
MAX_LABEL_CHARACTERS = 14

_PANEL_INCHES = 2.3
#: The values a metric can take; wide error bars do not stretch the axes past them.
_METRIC_RANGE = {"auroc": (0.0, 1.0), "ncc": (-1.0, 1.0), "ace": (0.0, 1.0)}
_DELTA_ZERO_STYLE = {**CHANCE_STYLE, "linestyle": "--"}
_DELTA_POSITIVE_COLOUR = "0.93"
_MARKER_SIZE = 5.5
#: Points closer than this fraction of a panel's range are drawn side by side, with one label.
_COINCIDENT = 0.02
#: Bars lower than this fraction of the axis get their value written above them.
_TINY_BAR = 0.03


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


def group_labels(groups: Sequence[str]) -> dict[str, str]:
    """The label written beside each group's points: its name, or its rank number.

    Names when there are at most :data:`MAX_NAMED_GROUPS` groups, none longer than
    :data:`MAX_LABEL_CHARACTERS`; otherwise ``"1"``, ``"2"``, … in the order given
    (best rank first), and the legend pairs each number with its name. A name is
    written as text (:func:`uqeval.text.figure_text`: ``$`` is no mathtext).

    >>> group_labels(["A", "B"])
    {'A': 'A', 'B': 'B'}
    >>> group_labels(["a-rather-long-model-name", "B"])
    {'a-rather-long-model-name': '1', 'B': '2'}
    """
    named = not _numbered(groups)
    return {group: figure_text(group) if named else str(index + 1) for index, group in enumerate(groups)}


def _numbered(groups: Sequence[str]) -> bool:
    """Whether :func:`group_labels` numbers the groups rather than naming them."""
    return len(groups) > MAX_NAMED_GROUPS or any(len(group) > MAX_LABEL_CHARACTERS for group in groups)


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
        ``id`` and ``ood``; three to a row): x = ``U_wrong``, y = ``U_correct``, each
        group's mean over its seeds, with 95 % Student-t error bars where it has
        several. Both axes share one range, and the dashed line ``y = x`` (Δ = 0, gid
        :data:`DELTA_ZERO_GID`) splits it; the half where Δ > 0 (the correct measure
        ahead: above the line for AUROC and NCC, below it for ACE, where lower is
        better) is shaded (gid :data:`DELTA_POSITIVE_GID`).

        Each group has its own colour and marker and a label beside its points
        (:func:`group_labels`), placed clear of the other labels and points and inside
        the panel. Points of several groups at one place are drawn side by side with
        one label naming them all. Undefined points are left out and counted above the
        panel. One legend, under the panels, names the groups.
    """
    chosen = panels(comparison)
    if not chosen:
        figure = new_figure(_PANEL_INCHES * 1.5, _PANEL_INCHES)
        figure.text(0.5, 0.5, "no entanglement rows to plot", ha="center", va="center")
        return figure
    groups = list(comparison.groups)
    groups += sorted({point["group"] for point in comparison.points} - set(groups))
    styles = category_styles(groups)
    labels = group_labels(groups)
    numbered = _numbered(groups)

    n_columns = 3 if len(chosen) > 4 else 2 if len(chosen) == 4 else len(chosen)
    n_rows = math.ceil(len(chosen) / n_columns)
    n_legend_rows = math.ceil((len(groups) + 2) / 3)
    figure = new_figure(_PANEL_INCHES * n_columns + 0.5, (_PANEL_INCHES + 0.6) * n_rows + 0.45 + 0.17 * n_legend_rows)
    # Twice as many grid columns as panels, each panel two wide: a short last row is centred.
    grid = figure.add_gridspec(n_rows, 2 * n_columns)
    axes = []
    for index in range(len(chosen)):
        row, column = divmod(index, n_columns)
        in_row = min(n_columns, len(chosen) - row * n_columns)
        start = 2 * column + (n_columns - in_row)
        axes.append(figure.add_subplot(grid[row, start : start + 2]))

    placements: list[tuple[Axes, list[_Cluster]]] = []
    several_seeds, single_seed = False, False
    for ax, (task, split) in zip(axes, chosen, strict=True):
        points = [point for point in comparison.points if (point["task"], point["split"]) == (task, split)]
        shown = [p for p in points if math.isfinite(p["u_correct"]) and math.isfinite(p["u_wrong"])]
        several_seeds |= any(point.get("n", 1) > 1 for point in shown)
        single_seed |= any(point.get("n", 1) <= 1 for point in shown)
        spec = TASKS[task]
        low, high = _limits(shown, spec.metric)
        _shade_delta_positive(ax, low, high, lower_is_better=spec.lower_is_better)
        ax.plot([low, high], [low, high], **_DELTA_ZERO_STYLE, gid=DELTA_ZERO_GID, label="Δ = 0")
        clusters = _clusters(shown, tolerance=_COINCIDENT * (high - low))
        for cluster in clusters:
            for offset, point in zip(cluster.offsets, cluster.points, strict=True):
                style = styles[point["group"]]
                container = ax.errorbar(
                    point["u_wrong"],
                    point["u_correct"],
                    xerr=_error(point["u_wrong_interval"]),
                    yerr=_error(point["u_correct_interval"]),
                    fmt=style.marker,
                    markersize=_MARKER_SIZE,
                    markeredgecolor="white",
                    markeredgewidth=0.5,
                    capsize=2,
                    elinewidth=0.9,
                    color=style.colour,
                    zorder=3,
                )
                if offset:  # side by side with the other groups at this place
                    shift = ax.transData + ScaledTranslation(offset / 72, 0, figure.dpi_scale_trans)
                    for artist in container.get_children():
                        artist.set_transform(shift)
            cluster.label = ax.annotate(
                ", ".join(labels[point["group"]] for point in cluster.points),
                cluster.centre,
                xytext=(0, 0),
                textcoords="offset points",
                fontsize="x-small",
                annotation_clip=False,
                zorder=4,
            )
            # Placed inside its panel afterwards (_place_labels): where it starts must not
            # make the layout shrink the panels to fit it.
            cluster.label.set_in_layout(False)
        placements.append((ax, clusters))
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_box_aspect(1)
        xlabel, ylabel = axis_labels(task)
        ax.set_xlabel(xlabel, fontsize="small")
        ax.set_ylabel(ylabel, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.set_title(f"{task.upper()} · {split}", fontsize="medium", pad=14)
        notes = [f"{spec.metric.upper()}: lower is better"] if spec.lower_is_better else []
        if len(shown) < len(points):
            notes.append(f"{len(points) - len(shown)} undefined, not shown")
        if notes:  # between the title and the frame, where no point can be
            ax.text(
                0.5,
                1.02,
                " · ".join(notes),
                transform=ax.transAxes,
                ha="center",
                va="bottom",
                fontsize="x-small",
                color="0.3",
            )

    handles = [
        Line2D(
            [],
            [],
            marker=styles[group].marker,
            color=styles[group].colour,
            markeredgecolor="white",
            linestyle="none",
            markersize=_MARKER_SIZE,
            label=f"{labels[group]}  {figure_text(group)}" if numbered else labels[group],
        )
        for group in groups
    ]
    handles += [
        Line2D([], [], **_DELTA_ZERO_STYLE, label="Δ = 0 (U_correct = U_wrong)"),
        Patch(facecolor=_DELTA_POSITIVE_COLOUR, edgecolor="0.75", label="Δ > 0: correct measure ahead"),
    ]
    figure_legend(figure, handles, most_columns=3, fontsize="x-small", frameon=False, columnspacing=1.5)
    title = "Correct vs wrong uncertainty measure, one point per model"
    if several_seeds:
        title += (
            "\n(mean over seeds ± 95 % t-interval)"
            if not single_seed
            else "\n(error bars: 95 % t-interval over seeds, for models with several)"
        )
    figure.suptitle(title, fontsize="medium")
    _place_labels(figure, placements)
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
        ``ood`` last; each split its colour and hatch) with 95 % Student-t error bars
        over seeds where there are several, and a dashed line at EU/AU = 1. A bar too
        short to see (under 3 % of the axis) has its value written above it, so a
        collapsed model reads ``0.006`` rather than showing nothing.
    """
    from uqeval.comparison import split_order

    rows = comparison.collapse
    groups = [group for group in comparison.groups if any(row["group"] == group for row in rows)]
    groups += sorted({row["group"] for row in rows} - set(groups))
    if not rows:
        figure = new_figure(4.5, _PANEL_INCHES)
        figure.text(0.5, 0.5, "no collapse rows to plot", ha="center", va="center")
        return figure
    splits = sorted({row["split"] for row in rows}, key=split_order)
    styles = split_styles(splits)
    figure = new_figure(max(4.5, (0.15 + 0.1 * len(splits)) * len(groups) + 2.2), _PANEL_INCHES + 0.6)
    ax = figure.subplots()
    width = 0.8 / len(splits)
    by_key = {(row["group"], row["split"]): row for row in rows}
    drawn = []
    for index, split in enumerate(splits):
        xs, heights, errors = [], [], []
        for position, group in enumerate(groups):
            row = by_key.get((group, split))
            if row is None or not math.isfinite(row["eu_over_au"]):
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(row["eu_over_au"])
            errors.append(row["eu_over_au_interval"] if math.isfinite(row["eu_over_au_interval"]) else 0.0)
        style = styles[split]
        ax.bar(
            xs,
            heights,
            width=width,
            yerr=errors if any(errors) else None,
            capsize=2,
            error_kw={"elinewidth": 0.9, "ecolor": "0.25"},
            label=figure_text(split),
            color=style.colour,
            hatch=style.hatch,
            edgecolor="white",
            linewidth=0.0,
        )
        drawn.extend(zip(xs, heights, errors, strict=True))
    ax.axhline(1.0, **_DELTA_ZERO_STYLE, label="EU = AU")
    ax.set_ylim(bottom=0, top=max([1.1] + [(height + error) * 1.1 for _, height, error in drawn]))
    top = ax.get_ylim()[1]
    for x, height, error in drawn:
        if height < _TINY_BAR * top:
            ax.annotate(
                _short(height),
                (x, height + error),  # above the error bar
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=6,
                color="0.2",
            )
    rotate = len(groups) > 3 or max(len(group) for group in groups) > 12
    ax.set_xticks(
        range(len(groups)),
        [figure_text(group) for group in groups],
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize="x-small" if rotate else "small",
    )
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("mean EU / mean AU", fontsize="small")
    ax.tick_params(axis="y", labelsize="x-small")
    ax.set_title("Epistemic collapse (far below 1: TU ≈ AU)", fontsize="medium")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", frameon=False)  # off the bars
    return figure


# --------------------------------------------------------------------------- labels


@dataclass
class _Cluster:
    """Points of one panel at one place (within the panel's tolerance), drawn side by side."""

    points: list[dict]
    offsets: list[float]  # horizontal shift of each marker, in points
    centre: tuple[float, float]
    label: Annotation | None = None


def _clusters(points: Sequence[dict], *, tolerance: float) -> list[_Cluster]:
    """Group points closer than ``tolerance`` on both axes (chained), in the order given."""
    clusters: list[list[dict]] = []
    for point in points:
        near = [
            cluster
            for cluster in clusters
            if any(
                abs(point["u_wrong"] - other["u_wrong"]) <= tolerance
                and abs(point["u_correct"] - other["u_correct"]) <= tolerance
                for other in cluster
            )
        ]
        merged = [point]
        for cluster in near:
            clusters.remove(cluster)
            merged = cluster + merged
        clusters.append(merged)
    result = []
    for members in clusters:
        spacing = _MARKER_SIZE
        offsets = [spacing * (index - (len(members) - 1) / 2) for index in range(len(members))]
        centre = (
            float(np.mean([point["u_wrong"] for point in members])),
            float(np.mean([point["u_correct"] for point in members])),
        )
        if len(members) == 1:
            offsets = [0.0]
        result.append(_Cluster(members, offsets, centre))
    return result


#: Pixels kept free around a label, from other labels and the panel's frame.
_LABEL_MARGIN = 1.5
#: Gaps (points) between a point's marker and its label tried, nearest first; beyond the first, a leader line.
_RING_GAPS = (2.0, 9.0, 18.0, 30.0, 45.0)
#: Directions tried around a point, in order of preference: right, then the corners, then the rest.
_DIRECTIONS = ((1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1), (-1, 0), (0, 1), (0, -1))


def _place_labels(figure: Figure, placements: Sequence[tuple[Axes, Sequence[_Cluster]]]) -> None:
    """Move each label to the nearby spot that overlaps the fewest labels and markers and stays in its panel.

    Greedy: labels are placed one after another, each at the best of eight directions
    at three distances (a thin leader line joins a label to its point beyond the
    nearest ring). The figure is drawn first so that every panel has its final size,
    and its layout is then frozen so that saving does not move the panels under the labels.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    pixels_per_point = figure.dpi / 72
    for ax, clusters in placements:
        frame = ax.get_window_extent(renderer).padded(-_LABEL_MARGIN)
        markers = []
        for cluster in clusters:
            x, y = ax.transData.transform(cluster.centre)
            half = (_MARKER_SIZE / 2 + 0.5) * pixels_per_point
            spread = (max(cluster.offsets) - min(cluster.offsets)) / 2 * pixels_per_point
            markers.append(Bbox.from_extents(x - half - spread, y - half, x + half + spread, y + half))
        lines = _line_boxes(ax, clusters, renderer)
        placed: list[Bbox] = []
        # The most crowded points choose first; the free ones find room anywhere.
        centres = np.array([ax.transData.transform(cluster.centre) for cluster in clusters]).reshape(-1, 2)
        distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        crowd = (distances < 25 * pixels_per_point).sum(axis=1)
        for index in np.argsort(-crowd, kind="stable"):
            cluster, marker = clusters[index], markers[index]
            label = cluster.label
            extent = label.get_window_extent(renderer)
            width, height = extent.width, extent.height
            x, y = ax.transData.transform(cluster.centre)
            best = None
            for ring, gap in enumerate(_RING_GAPS):
                for preference, (dx, dy) in enumerate(_DIRECTIONS):
                    reach_x = (marker.width / 2) / pixels_per_point + gap
                    reach_y = (marker.height / 2) / pixels_per_point + gap
                    offset = (dx * reach_x, dy * reach_y)
                    left = x + offset[0] * pixels_per_point - (0 if dx > 0 else width if dx < 0 else width / 2)
                    bottom = y + offset[1] * pixels_per_point - (0 if dy > 0 else height if dy < 0 else height / 2)
                    box = Bbox.from_bounds(left, bottom, width, height)
                    area = width * height
                    outside = area - _overlap(box, frame)
                    crowding = sum(_overlap(box.padded(_LABEL_MARGIN), other) for other in placed)
                    covering = sum(_overlap(box, other) for other in markers)
                    crossing = sum(_overlap(box, line) for line in lines)
                    # A label nearer another point than its own would name the wrong one.
                    own = _distance(box, (x, y))
                    misleading = any(_distance(box, other) < own for j, other in enumerate(centres) if j != index)
                    cost = (40 * outside + 30 * crowding + 3 * covering + crossing) / area
                    cost += 1.0 * misleading + 0.5 * ring + 0.01 * preference
                    if best is None or cost < best[0]:
                        best = (cost, offset, dx, dy, ring, box)
            _, offset, dx, dy, ring, box = best
            label.xyann = offset
            if ring > 0:  # far from its point: redraw the label with a leader line
                label.remove()
                label = cluster.label = ax.annotate(
                    label.get_text(),
                    cluster.centre,
                    xytext=offset,
                    textcoords="offset points",
                    fontsize="x-small",
                    annotation_clip=False,
                    zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "0.45", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3},
                )
            label.set_horizontalalignment("left" if dx > 0 else "right" if dx < 0 else "center")
            label.set_verticalalignment("bottom" if dy > 0 else "top" if dy < 0 else "center")
            placed.append(box)
    figure.set_layout_engine("none")


def _line_boxes(ax: Axes, clusters: Sequence[_Cluster], renderer: object) -> list[Bbox]:
    """Thin boxes along the error bars and the Δ = 0 line of a panel, in display pixels.

    Their overlap with a label box is roughly the length of line the label covers.
    """
    boxes = []
    thickness = 1.0
    for cluster in clusters:
        for point in cluster.points:
            x, y = point["u_wrong"], point["u_correct"]
            for key, horizontal in (("u_wrong_interval", True), ("u_correct_interval", False)):
                half = point[key]
                if not math.isfinite(half):
                    continue
                start = (x - half, y) if horizontal else (x, y - half)
                end = (x + half, y) if horizontal else (x, y + half)
                (x0, y0), (x1, y1) = ax.transData.transform([start, end])
                boxes.append(
                    Bbox.from_extents(
                        min(x0, x1) - thickness,
                        min(y0, y1) - thickness,
                        max(x0, x1) + thickness,
                        max(y0, y1) + thickness,
                    )
                )
    low, high = ax.get_xlim()
    for t in np.linspace(0, 1, 60):  # the diagonal, as a chain of small squares
        value = low + t * (high - low)
        x, y = ax.transData.transform((value, value))
        boxes.append(Bbox.from_extents(x - 1.5, y - 1.5, x + 1.5, y + 1.5))
    return boxes


def _distance(box: Bbox, point: Sequence[float]) -> float:
    """Distance in pixels from ``point`` to the nearest point of ``box`` (0 inside it)."""
    dx = max(box.x0 - point[0], 0.0, point[0] - box.x1)
    dy = max(box.y0 - point[1], 0.0, point[1] - box.y1)
    return math.hypot(dx, dy)


def _overlap(first: Bbox, second: Bbox) -> float:
    width = min(first.x1, second.x1) - max(first.x0, second.x0)
    height = min(first.y1, second.y1) - max(first.y0, second.y0)
    return max(width, 0.0) * max(height, 0.0)


# --------------------------------------------------------------------------- helpers


def _shade_delta_positive(ax: Axes, low: float, high: float, *, lower_is_better: bool) -> None:
    corner = (high, low) if lower_is_better else (low, high)
    ax.fill(
        [low, corner[0], high],
        [low, corner[1], high],
        color=_DELTA_POSITIVE_COLOUR,
        zorder=0,
        linewidth=0,
        gid=DELTA_POSITIVE_GID,
    )


def _error(interval: float) -> float | None:
    return interval if math.isfinite(interval) else None


def _short(value: float) -> str:
    """A bar's value in two significant digits: ``0.0061``, ``0.04``, ``0``."""
    return "0" if value == 0 else f"{value:.2g}"


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
