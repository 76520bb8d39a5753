"""Rich tables for the terminal: of a :class:`~uqeval.Scores` and of a :class:`~uqeval.Comparison`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table

from uqeval.comparison import RANK_SPLITS, split_order
from uqeval.names import MEASURES, NO_AGGREGATION
from uqeval.precision import RANK_TOLERANCE
from uqeval.tasks import TASKS

if TYPE_CHECKING:
    from uqeval.comparison import Comparison
    from uqeval.results import Scores

_MEASURE_NAMES = {"au": "AU", "eu": "EU", "tu": "TU"}


def format_value(value: float | None, interval: float | None = math.nan, *, digits: int = 1) -> str:
    """A value for a table cell: ``"3.0 ± 0.8"``, or ``"3.0"`` when the interval is NaN,
    or ``"–"`` when the value is undefined.

    >>> format_value(3.0, 0.81)
    '3.0 ± 0.8'
    >>> format_value(0.2134, digits=3)
    '0.213'
    """
    if value is None or math.isnan(value):
        return "–"
    if interval is None or math.isnan(interval):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {interval:.{digits}f}"


def _splits(scores: Scores, task: str) -> list[str]:
    seen = dict.fromkeys(row["split"] for row in scores.results if row["task"] == task)
    return sorted(seen, key=split_order)


def task_table(scores: Scores, task: str) -> Table | None:
    """Metric per measure (rows) and split (columns) of one task, the correct measure marked."""
    definition = TASKS[task]
    splits = _splits(scores, task)
    if not splits:
        return None
    aggregation = scores.conventions.aggregation if TASKS[task].aggregated else NO_AGGREGATION
    notes = []
    if definition.aggregated:
        notes.append(f"image score: {aggregation}")
    if definition.lower_is_better:
        notes.append("lower is better")
    notes.append("✓ the measure that should win")
    table = Table(
        title=f"{definition.title[0].upper()}{definition.title[1:]}: {definition.metric.upper()}",
        caption="; ".join(notes),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("measure")
    for split in splits:
        table.add_column(split, justify="right")
    for measure in MEASURES:
        label = _MEASURE_NAMES[measure] + (" ✓" if measure == definition.correct else "")
        cells = []
        for split in splits:
            try:
                cells.append(format_value(scores.value(task, split, measure, definition.metric, aggregation), digits=3))
            except KeyError:
                cells.append("")
        table.add_row(label, *cells)
    return table


def entanglement_table(scores: Scores) -> Table | None:
    """Δ per task and split: 1 means the correct measure is far better, −1 the wrong one."""
    if not scores.entanglement:
        return None
    table = Table(
        title="Entanglement Δ",
        caption="1: the correct measure far better; 0: no better than the best wrong one; < 0: worse",
        title_justify="left",
        caption_justify="left",
    )
    for name in ("task", "split", "correct", "wrong", "U correct", "U wrong", "Δ"):
        table.add_column(name, justify="right" if name.startswith(("U", "Δ")) else "left")
    for row in scores.entanglement:
        wrong = _MEASURE_NAMES[row["wrong"]]
        table.add_row(
            row["task"],
            row["split"],
            _MEASURE_NAMES[row["correct"]],
            wrong,
            format_value(row["u_correct"], digits=3),
            format_value(row["u_wrong"], digits=3),
            format_value(row["delta"], digits=2),
        )
    return table


def collapse_table(scores: Scores) -> Table:
    """Mean AU, mean EU and EU / AU per split (epistemic collapse when EU / AU ≪ 1)."""
    table = Table(title="Epistemic collapse (nats per pixel)", title_justify="left")
    for name in ("split", "images", "mean AU", "mean EU", "EU / AU"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for row in scores.collapse:
        n_images = scores.n_images.get(row["split"])
        if n_images is None:
            n_images = sum(count for split, count in scores.n_images.items() if split != "id")
        table.add_row(
            row["split"],
            str(n_images),
            format_value(row["mean_au"], digits=4),
            format_value(row["mean_eu"], digits=4),
            format_value(row["eu_over_au"], digits=3),
        )
    return table


def score_tables(scores: Scores) -> list[Table]:
    """Every table of ``uqeval score``, in the order printed."""
    tables = [task_table(scores, task) for task in TASKS]
    tables += [entanglement_table(scores), collapse_table(scores)]
    return [table for table in tables if table is not None]


def comparison_tables(comparison: Comparison) -> list[Table]:
    """Rich tables of a comparison: ranks, Δ per task and split, and the collapse ratio.

    Parameters
    ----------
    comparison : Comparison

    Returns
    -------
    list of rich.table.Table
        The ranking (group, seeds, performance and entanglement ranks as mean ± 95 %
        Student-t half-width over seeds), best performance first; the ranks per task;
        the values ranked, the correct measure's metric and Δ of each group on each
        ranked task and split (mean ± half-width); and,
        when the runs have collapse rows, EU/AU per group and split. No ``±`` where a
        group has one seed; ``–`` where a value is undefined.
    """
    tables = []
    ranking = Table(
        title="Average rank",
        caption="1 = best; mean ± 95 % Student-t interval over seeds",
        title_justify="left",
        caption_justify="left",
    )
    ranking.add_column("model", no_wrap=True)
    ranking.add_column("seeds", justify="right")
    ranking.add_column("performance", justify="right")
    ranking.add_column("entanglement (Δ)", justify="right")
    per_task = Table(
        title="Rank per task",
        caption="perf.: the correct measure's metric; Δ: entanglement",
        title_justify="left",
        caption_justify="left",
    )
    per_task.add_column("model", no_wrap=True)
    for task in comparison.tasks:
        per_task.add_column(f"{task.upper()} perf.", justify="right")
        per_task.add_column(f"{task.upper()} Δ", justify="right")
    for row in comparison.ranks:
        ranking.add_row(
            row["group"],
            str(row["n_seeds"]),
            format_value(row["performance_rank"], row["performance_interval"]),
            format_value(row["entanglement_rank"], row["entanglement_interval"]),
        )
        cells = [row["group"]]
        for task in comparison.tasks:
            cells.append(format_value(row[f"performance_rank_{task}"], row[f"performance_interval_{task}"]))
            cells.append(format_value(row[f"entanglement_rank_{task}"], row[f"entanglement_interval_{task}"]))
        per_task.add_row(*cells)
    tables += [ranking, per_task]

    panels = [(task, split) for task in comparison.tasks for split in RANK_SPLITS[task]]
    panels = [panel for panel in panels if any((p["task"], p["split"]) == panel for p in comparison.points)]
    if panels:
        # The values behind the ranks: the correct measure's metric (performance) and Δ.
        tolerances = ", ".join(
            f"{TASKS[task].metric.upper()} {RANK_TOLERANCE[TASKS[task].metric]:g}"
            for task in dict.fromkeys(task for task, _ in panels)
        )
        points = {(p["group"], p["task"], p["split"]): p for p in comparison.points}
        for key, title, caption in (
            (
                "u_correct",
                "Performance: the correct measure's metric",
                f"values ranked for performance; tied within {tolerances}",
            ),
            (
                "delta",
                "Entanglement Δ (higher = less entangled)",
                "values ranked for entanglement; tied within how far the metric tolerance moves Δ",
            ),
        ):
            values = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
            values.add_column("model", no_wrap=True)
            for task, split in panels:
                metric = f" {TASKS[task].metric.upper()}" if key == "u_correct" else ""
                values.add_column(f"{task.upper()} {split}{metric}", justify="right")
            for group in comparison.groups:
                cells = [group]
                for task, split in panels:
                    point = points.get((group, task, split))
                    cells.append("–" if point is None else format_value(point[key], point[f"{key}_interval"], digits=3))
                values.add_row(*cells)
            tables.append(values)

    if comparison.collapse:
        splits = sorted({row["split"] for row in comparison.collapse}, key=split_order)
        collapse = Table(title="Epistemic collapse: mean EU / mean AU", title_justify="left")
        collapse.add_column("model", no_wrap=True)
        for split in splits:
            collapse.add_column(split, justify="right")
        ratios = {(row["group"], row["split"]): row for row in comparison.collapse}
        for group in comparison.groups:
            cells = [group]
            for split in splits:
                row = ratios.get((group, split))
                cells.append(
                    "–" if row is None else format_value(row["eu_over_au"], row["eu_over_au_interval"], digits=3)
                )
            collapse.add_row(*cells)
        tables.append(collapse)
    return tables
