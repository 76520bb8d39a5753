"""Rich tables of a :class:`~uqeval.results.Scores` for the terminal."""

from __future__ import annotations

import math

from rich.table import Table

from uqeval.results import Scores
from uqeval.statistics import MEASURES
from uqeval.tasks import NO_AGGREGATION, POOLED_OOD, TASKS

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
    ordered = sorted(seen, key=lambda split: (split != "id", split == POOLED_OOD, split))
    return ordered


def task_table(scores: Scores, task: str) -> Table | None:
    """Metric per measure (rows) and split (columns) of one task, the correct measure marked."""
    definition = TASKS[task]
    splits = _splits(scores, task)
    if not splits:
        return None
    aggregation = scores.evaluation.conventions.aggregation if task == "oodd" else NO_AGGREGATION
    notes = []
    if task == "oodd":
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
