"""What ``uqeval score`` and ``uqeval compare`` print: rich tables of a :class:`~uqeval.Scores`
and of a :class:`~uqeval.Comparison`, the lines that explain them, and the notes grouped.

Everything here is presentation: the numbers come from the results unchanged, rounded
only for the screen; ``scores.json`` and the CSV files keep them (and every note) in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from uqeval.comparison import RANK_SPLITS, split_order
from uqeval.conventions import Conventions
from uqeval.names import ALL_TEST, ID_DOMAIN, NO_AGGREGATION, POOLED_OOD, SAMPLE_AGGREGATION, SAMPLE_MEASURES
from uqeval.notes import FIELDS as NOTE_FIELDS
from uqeval.notes import Note, literal
from uqeval.precision import RANK_TOLERANCE
from uqeval.tasks import TASKS, task_description
from uqeval.text import labelled, printable, shortened

if TYPE_CHECKING:
    from rich.console import Console

    from uqeval.comparison import Comparison
    from uqeval.results import Scores

_MEASURE_NAMES = {"au": "AU", "eu": "EU", "tu": "TU", "pairwise_dice": "pairwise Dice", "cov": "CoV"}
#: Metrics shown in a table of their own after their task's, with whether lower is
#: better; the others (FPR95, ECE, …) are in scores.json and metrics.csv only.
SECOND_METRICS: dict[str, tuple[tuple[str, bool], ...]] = {
    "cal": (("pavpu", False),),
    "fd": (("augrc", True), ("eaugrc", True)),
}
#: Table titles of the metrics whose name is not just its upper case.
_METRIC_TITLES = {"pavpu": "PAvPU", "eaugrc": "E-AUGRC"}
#: Relative and absolute difference below which an ``ood`` value counts as a copy of the one OOD domain's.
_SAME_VALUE_TOLERANCE = 1e-12


def format_value(value: float | None, interval: float | None = math.nan, *, digits: int = 1) -> str:
    """A value for a table cell: ``"3.0 ± 0.8"``, or ``"3.0"`` when the interval is NaN,
    or ``"–"`` when the value is undefined.

    A value that rounds to zero at ``digits`` decimals prints as ``0.000``, never as
    ``-0.000``.

    >>> format_value(3.0, 0.81)
    '3.0 ± 0.8'
    >>> format_value(0.2134, digits=3)
    '0.213'
    >>> format_value(-0.0004, digits=3)
    '0.000'
    """
    if value is None or math.isnan(value):
        return "–"
    if interval is None or math.isnan(interval):
        return _fixed(value, digits)
    return f"{_fixed(value, digits)} ± {_fixed(interval, digits)}"


def format_interval(value: float | None, low: float | None, high: float | None, *, digits: int = 3) -> str:
    """A value with its bootstrap interval: ``"0.912 ± 0.031"`` (half the interval's
    width) when the value sits near its middle (neither side more than 1.5 times the
    other), else ``"0.998 [0.962, 1.000]"``; as :func:`format_value` without an interval.

    >>> format_interval(0.9, 0.85, 0.96)
    '0.900 ± 0.055'
    >>> format_interval(0.99, 0.9, 1.0)
    '0.990 [0.900, 1.000]'
    """
    if value is None or math.isnan(value) or low is None or high is None or math.isnan(low) or math.isnan(high):
        return format_value(value, digits=digits)
    below, above = value - low, high - value
    if min(below, above) * 1.5 >= max(below, above):
        return format_value(value, (high - low) / 2, digits=digits)
    return f"{_fixed(value, digits)} [{_fixed(low, digits)}, {_fixed(high, digits)}]"


def _interval_note(scores: Scores) -> list[str]:
    """The caption part that says what ± means, with a bootstrap."""
    if scores.bootstrap is None:
        return []
    return [f"±, [ ]: 95 % bootstrap interval ({scores.bootstrap.n} resamples, seed {scores.bootstrap.seed})"]


def _fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, without the sign of a negative zero."""
    text = f"{value:.{digits}f}"
    if text.startswith("-") and float(text) == 0.0:
        return text[1:]
    return text


# ------------------------------------------------------------------ the one OOD domain


def _same(a: float | None, b: float | None) -> bool:
    """Equal values, NaN (or None) equal to NaN."""
    undefined_a = a is None or math.isnan(a)
    undefined_b = b is None or math.isnan(b)
    if undefined_a or undefined_b:
        return undefined_a and undefined_b
    return math.isclose(a, b, rel_tol=_SAME_VALUE_TOLERANCE, abs_tol=_SAME_VALUE_TOLERANCE)


def _rows_repeat(rows: Iterable[Mapping[str, Any]], keys: Sequence[str], values: Sequence[str], domain: str) -> bool:
    """Whether every ``ood`` row has a ``domain`` row with the same ``keys`` and equal ``values``."""
    rows = list(rows)
    by_key = {tuple(row[key] for key in keys): row for row in rows if row["split"] == domain}
    for row in rows:
        if row["split"] != POOLED_OOD:
            continue
        twin = by_key.get(tuple(row[key] for key in keys))
        if twin is None or not all(_same(row[name], twin[name]) for name in values):
            return False
    return True


def single_ood_domain(scores: Scores) -> str | None:
    """The OOD domain that the ``ood`` split only repeats, or None.

    With one OOD domain, ``ood`` (OODD: the mean over the domains; AMB, CAL, FD: the OOD
    images pooled, or their domains' mean) holds the same images as that domain, so its
    rows equal the domain's. Returns the domain's name when there is exactly one and
    every ``ood`` result, Δ and collapse row equals the domain's; else None.
    """
    domains = [name for name in scores.n_images if name not in (ID_DOMAIN, POOLED_OOD, ALL_TEST)]
    if len(domains) != 1:
        return None
    domain = domains[0]
    repeated = (
        _rows_repeat(scores.results, ("task", "measure", "aggregation", "metric"), ("value",), domain)
        and _rows_repeat(scores.entanglement, ("task",), ("u_correct", "u_wrong", "delta"), domain)
        and _rows_repeat(scores.collapse, (), ("mean_au", "mean_eu", "eu_over_au"), domain)
    )
    return domain if repeated else None


def _merged_label(domain: str) -> str:
    """The label of a domain shown once for itself and the ``ood`` split."""
    return f"{shortened(domain)} = {POOLED_OOD}"


def _name(value: object) -> Text:
    """A name from a store or the command line (a split, model, image score) as a table
    cell: shown as written, never read as Rich markup, at most
    :data:`~uqeval.text.NAME_CHARACTERS` characters."""
    return Text(shortened(value))


def _shown_splits(splits: Iterable[str], single: str | None) -> list[tuple[str, Text]]:
    """``(split, label)`` of the splits a table shows, in table order, ``ood`` dropped when
    it repeats ``single``; each label as :class:`~rich.text.Text`."""
    shown = []
    for split in sorted(dict.fromkeys(splits), key=split_order):
        if single is not None and split == POOLED_OOD:
            continue
        shown.append((split, Text(_merged_label(split)) if split == single else _name(split)))
    return shown


# ------------------------------------------------------------------ tables of a run


def _splits(scores: Scores, task: str) -> list[str]:
    return [row["split"] for row in scores.results if row["task"] == task]


def aggregations_scored(scores: Scores, task: str | None = None) -> list[str]:
    """The aggregations (image scores) ``task`` was scored with, or every aggregated task
    when ``task`` is None; the conventions' one (that of Δ) first. ``["none"]`` for a
    task that does not aggregate, ``[]`` when no aggregated task was scored."""
    if task is not None and not task_description(task, scores.results).aggregated:
        return [NO_AGGREGATION]
    seen = list(
        dict.fromkeys(
            row["aggregation"]
            for row in scores.results
            if (row["task"] == task or (task is None and row["task"] in TASKS and TASKS[row["task"]].aggregated))
            and row["aggregation"] != SAMPLE_AGGREGATION
        )
    )
    primary = scores.conventions.aggregation
    return [primary, *(name for name in seen if name != primary)] if primary in seen else seen


def task_table(
    scores: Scores, task: str, metric: str | None = None, *, lower_is_better: bool | None = None
) -> Table | None:
    """The task's metric per measure (rows) and split (columns), the correct measure marked.

    A task scored with several image scores (``--aggregation border,mean``) gets one
    block of rows per aggregation, the conventions' one (that of Δ) first. With one OOD
    domain, the ``ood`` split, a copy of it, is shown once under the domain's name
    (``blur = ood``). A row per measure scored (those a maps store gives); None when
    the task was not scored. ``metric`` (with ``lower_is_better``) shows another of the
    task's metrics (:data:`SECOND_METRICS`); None when it has no row. The sample scores
    (pairwise Dice, CoV), when the task has their rows, follow in a block of their own.
    """
    definition = task_description(task, scores.results)
    shown_metric = definition.metric if metric is None else metric
    lower = definition.lower_is_better if lower_is_better is None else lower_is_better
    single = single_ood_domain(scores)
    splits = _shown_splits(_splits(scores, task), single)
    if not splits or not any(row["task"] == task and row["metric"] == shown_metric for row in scores.results):
        return None
    aggregations = aggregations_scored(scores, task)
    sampled = _sample_measures(scores, task, shown_metric)
    notes = []
    if definition.aggregated:
        if len(aggregations) == 1:
            notes.append(f"image score: {aggregations[0]}")
        else:
            notes.append(f"image scores: {aggregations[0]} (used for Δ), {', '.join(aggregations[1:])}")
    if sampled:
        names = " and ".join(_MEASURE_NAMES[measure] for measure in sampled)
        notes.append(f"{names}: image scores of the {SAMPLE_AGGREGATION} themselves, not in Δ")
    if lower:
        notes.append("lower is better")
    elif metric is not None and task in TASKS:
        notes.append("higher is better")
    if definition.correct is not None:
        notes.append("✓ the measure that should win")
    notes += _interval_note(scores)
    metric_title = _METRIC_TITLES.get(shown_metric, shown_metric.upper())
    table = Table(
        title=f"{definition.title[0].upper()}{definition.title[1:]}: {metric_title}",
        caption="; ".join(notes) or None,
        title_justify="left",
        caption_justify="left",
    )
    blocks = len(aggregations) > 1
    if blocks:
        table.add_column("image score")
    table.add_column("measure")
    for _, label in splits:
        table.add_column(label, justify="right")
    measures = scores.measures
    if task not in TASKS:  # a plugin's task: the measures of its rows (``mean``, …)
        measures = list(dict.fromkeys(row["measure"] for row in scores.results if row["task"] == task))
    for aggregation in aggregations:
        for position, measure in enumerate(measures):
            label = _MEASURE_NAMES.get(measure, measure) + (" ✓" if measure == definition.correct else "")
            cells = [_cell(scores, task, split, measure, shown_metric, aggregation) for split, _ in splits]
            first = [_name(aggregation) if position == 0 else ""] if blocks else []
            last = position == len(measures) - 1
            table.add_row(*first, label, *cells, end_section=last and (blocks or bool(sampled)))
    # The sample scores after a line: in a block of their own, or (one aggregation) as more rows.
    for position, measure in enumerate(sampled):
        cells = [_cell(scores, task, split, measure, shown_metric, SAMPLE_AGGREGATION) for split, _ in splits]
        first = [SAMPLE_AGGREGATION if position == 0 else ""] if blocks else []
        table.add_row(*first, _MEASURE_NAMES[measure], *cells)
    return table


#: The ``pq`` metrics shown, by row: (metric, label).
_PQ_ROWS = (("brier", "Brier"), ("nll", "NLL"), ("ece", "ECE"))


def predictive_table(scores: Scores) -> Table | None:
    """The ``pq`` task: Brier, NLL and ECE of the mean prediction (rows) per split
    (columns), before and after temperature scaling; None when it was not scored."""
    if not any(row["task"] == "pq" for row in scores.results):
        return None
    single = single_ood_domain(scores)
    splits = _shown_splits(_splits(scores, "pq"), single)
    notes = ["lower is better", "over (rater, pixel) pairs"]
    try:
        temperature = scores.value("pq", ID_DOMAIN, "mean", "temperature")
    except KeyError:
        temperature = None
    sections = [("", "")]
    if temperature is not None:
        sections.append(("_ts", f"T = {format_value(temperature, digits=3)}"))
        notes.append(f"T: temperature scaling fitted on the ID calibration pixels, T = {temperature:.4g}")
    table = Table(
        title="Predictive quality of the mean prediction",
        caption="; ".join(notes),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("scaling")
    table.add_column("metric")
    for _, label in splits:
        table.add_column(label, justify="right")
    for number, (suffix, label) in enumerate(sections):
        for position, (metric, title) in enumerate(_PQ_ROWS):
            cells = []
            for split, _ in splits:
                try:
                    value = scores.value("pq", split, "mean", metric + suffix)
                except KeyError:
                    cells.append("")
                else:
                    cells.append(format_value(value, digits=4))
            first = (label or "none") if position == 0 else ""
            table.add_row(first, title, *cells, end_section=position == len(_PQ_ROWS) - 1 and number == 0)
    return table


def _sample_measures(scores: Scores, task: str, metric: str) -> list[str]:
    """The sample scores (:data:`~uqeval.names.SAMPLE_MEASURES`) with a row of ``task``'s ``metric``."""
    present = {
        row["measure"]
        for row in scores.results
        if row["task"] == task and row["aggregation"] == SAMPLE_AGGREGATION and row["metric"] == metric
    }
    return [measure for measure in SAMPLE_MEASURES if measure in present]


def _cell(scores: Scores, task: str, split: str, measure: str, metric: str, aggregation: str) -> str:
    """One value of a task's table, with its bootstrap interval when the run has one; "" without a row."""
    try:
        value = scores.value(task, split, measure, metric, aggregation)
    except KeyError:
        return ""
    low, high = scores.interval(task, split, measure, metric, aggregation)
    return format_interval(value, low, high, digits=3)


def entanglement_table(scores: Scores) -> Table | None:
    """Δ per task and split: 1 means the correct measure is far better, −1 the wrong one."""
    if not scores.entanglement:
        return None
    single = single_ood_domain(scores)
    caption = "1: the correct measure far better; 0: no better than the best wrong one; < 0: worse"
    aggregated = [
        task
        for task in dict.fromkeys(row["task"] for row in scores.entanglement)
        if task_description(task, scores.results).aggregated
    ]
    if aggregated:
        caption += f"; {' and '.join(aggregated)} with image score {scores.conventions.aggregation}"
    caption = "; ".join([caption, *_interval_note(scores)])
    table = Table(title="Entanglement Δ", caption=caption, title_justify="left", caption_justify="left")
    for name in ("task", "split", "correct", "wrong", "U correct", "U wrong", "Δ"):
        table.add_column(name, justify="right" if name.startswith(("U", "Δ")) else "left")
    for row in scores.entanglement:
        if single is not None and row["split"] == POOLED_OOD:
            continue
        # Several measures ("au/eu") when each OOD domain's best wrong one counts (cal_ood_delta).
        wrong = "/".join(_MEASURE_NAMES[measure] for measure in row["wrong"].split("/"))
        table.add_row(
            _name(row["task"]),
            Text(_merged_label(row["split"])) if row["split"] == single else _name(row["split"]),
            _MEASURE_NAMES[row["correct"]],
            wrong,
            format_value(row["u_correct"], digits=3),
            format_value(row["u_wrong"], digits=3),
            format_interval(row["delta"], row.get("ci_low"), row.get("ci_high"), digits=2),
        )
    return table


def collapse_table(scores: Scores) -> Table | None:
    """Mean AU, mean EU and EU / AU per split (epistemic collapse when EU / AU ≪ 1); None
    without collapse rows (a maps store without AU or EU)."""
    if not scores.collapse:
        return None
    single = single_ood_domain(scores)
    table = Table(title="Epistemic collapse (nats per pixel)", title_justify="left")
    for name in ("split", "images", "mean AU", "mean EU", "EU / AU"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for row in scores.collapse:
        if single is not None and row["split"] == POOLED_OOD:
            continue
        n_images = scores.n_images.get(row["split"])
        if n_images is None:
            n_images = sum(count for split, count in scores.n_images.items() if split != ID_DOMAIN)
        table.add_row(
            Text(_merged_label(row["split"])) if row["split"] == single else _name(row["split"]),
            str(n_images),
            format_value(row["mean_au"], digits=4),
            format_value(row["mean_eu"], digits=4),
            format_value(row["eu_over_au"], digits=3),
        )
    return table


def score_tables(scores: Scores) -> list[Table]:
    """Every table of ``uqeval score``, in the order printed."""
    tables = []
    for task in TASKS:
        if not TASKS[task].has_delta:
            continue
        tables.append(task_table(scores, task))
        for metric, lower in SECOND_METRICS.get(task, ()):
            tables.append(task_table(scores, task, metric, lower_is_better=lower))
    tables.append(predictive_table(scores))
    # A plugin's task: one table per metric, in the order of its rows.
    for task in plugin_tasks(scores.results):
        metrics = dict.fromkeys(row["metric"] for row in scores.results if row["task"] == task)
        tables += [task_table(scores, task, metric) for metric in metrics]
    tables += [entanglement_table(scores), collapse_table(scores)]
    return [table for table in tables if table is not None]


def plugin_tasks(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """The tasks of ``results`` that are neither built in nor segmentation quality, in row order."""
    return [task for task in dict.fromkeys(row["task"] for row in results) if task not in (*TASKS, "segmentation")]


def changed_conventions(conventions: Conventions, baseline: Conventions | None = None) -> dict[str, Any]:
    """The conventions that differ from ``baseline`` (default: :class:`Conventions`'s
    defaults), field → value, in field order; the aggregation left out (the tables
    name it)."""
    baseline = baseline if baseline is not None else Conventions()
    ours, theirs = conventions.to_dict(), baseline.to_dict()
    return {name: value for name, value in ours.items() if name != "aggregation" and value != theirs[name]}


def score_remarks(scores: Scores, *, preset: str | None = None) -> list[str]:
    """The lines printed after the tables of ``uqeval score``, before the notes.

    - the conventions that differ from the defaults (``conventions (paper preset):
      ncc_constant=zero, …``), when any do or a preset other than ``default`` was asked for;
    - with several image scores, where each one's numbers are in the report folder;
    - per slice, that each z-slice was an image; the voxel ``spacing`` when the store gives it;
    - with one OOD domain, that the ``ood`` split is shown under its name.
    """
    remarks = []
    changed = changed_conventions(scores.conventions)
    if changed or preset not in (None, "default"):
        settings = ", ".join(f"{name}={value}" for name, value in changed.items()) or "the defaults"
        remarks.append(f"conventions{f' ({preset} preset)' if preset else ''}: {settings}")
    aggregations = aggregations_scored(scores)
    if len(aggregations) > 1:
        columns = f"{aggregations[0]}_au … {aggregations[-1]}_tu"
        remarks.append(
            f"image scores {', '.join(aggregations)}: all in metrics.csv and scores.json (field aggregation), "
            f"per image in images.csv (columns {columns}); Δ and roc.png use {aggregations[0]}"
        )
    if scores.slice_z is not None:
        remarks.append("scored per z-slice: every slice of a volume is an image (images.csv has the volume's id and z)")
    spacing = scores.attrs.get("spacing")
    if isinstance(spacing, list | tuple) and spacing:
        dims = "(z, y, x)" if len(spacing) == 3 else "(y, x)"
        remarks.append(f"spacing {dims}: {' × '.join(f'{value:g}' for value in spacing)} mm")
    single = single_ood_domain(scores)
    if single is not None:
        remarks.append(
            f"{single} is the only OOD domain, so the {POOLED_OOD} split repeats it: shown once as "
            f"{_merged_label(single)!r} (scores.json and metrics.csv have both)"
        )
    return remarks


# ------------------------------------------------------------------ tables of a comparison


#: The split whose Δ :func:`delta_summary` gives per task: the pooled OOD images for OOD
#: detection, the in-distribution images for ambiguity and calibration, every test image
#: for failure detection.
SUMMARY_SPLITS = {"oodd": POOLED_OOD, "amb": ID_DOMAIN, "cal": ID_DOMAIN, "fd": ALL_TEST}


def delta_summary(entanglement: Iterable[Mapping[str, Any]]) -> str:
    """Δ of each task on its :data:`SUMMARY_SPLITS` split, in one line:
    ``"OODD 0.85 (ood) · AMB 1.03 (id) · …"``; ``–`` where Δ is undefined.

    >>> rows = [{"task": "oodd", "split": "ood", "delta": 0.851}, {"task": "fd", "split": "all", "delta": -0.001}]
    >>> delta_summary(rows)
    'OODD 0.85 (ood) · FD 0.00 (all)'
    """
    deltas = {(row["task"], row["split"]): row["delta"] for row in entanglement}
    parts = [
        f"{task.upper()} {format_value(deltas[task, split], digits=2)} ({split})"
        for task, split in SUMMARY_SPLITS.items()
        if (task, split) in deltas
    ]
    return " · ".join(parts)


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
        when the runs have collapse rows, EU/AU per group and split (with one OOD
        domain whose ``ood`` column would repeat it, one column ``blur = ood``). No
        ``±`` where a group has one seed; ``–`` where a value is undefined.
    """
    tables = []
    several_seeds = any(row["n_seeds"] > 1 for row in comparison.ranks)
    ranking = Table(
        title="Average rank",
        # An interval only where a group has several seeds: with one, the rank is the run's own.
        caption="1 = best; mean ± 95 % Student-t interval over seeds" if several_seeds else "1 = best; one seed each",
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
            _name(row["group"]),
            str(row["n_seeds"]),
            format_value(row["performance_rank"], row["performance_interval"]),
            format_value(row["entanglement_rank"], row["entanglement_interval"]),
        )
        cells: list[str | Text] = [_name(row["group"])]
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
                cells: list[str | Text] = [_name(group)]
                for task, split in panels:
                    point = points.get((group, task, split))
                    cells.append("–" if point is None else format_value(point[key], point[f"{key}_interval"], digits=3))
                values.add_row(*cells)
            tables.append(values)

    if comparison.collapse:
        rows = comparison.collapse
        domains = {row["split"] for row in rows} - {ID_DOMAIN, POOLED_OOD, ALL_TEST}
        single = next(iter(domains)) if len(domains) == 1 else None
        if single is not None and not _rows_repeat(rows, ("group",), ("eu_over_au", "eu_over_au_interval"), single):
            single = None
        collapse = Table(title="Epistemic collapse: mean EU / mean AU", title_justify="left")
        collapse.add_column("model", no_wrap=True)
        splits = _shown_splits((row["split"] for row in rows), single)
        for _, label in splits:
            collapse.add_column(label, justify="right")
        ratios = {(row["group"], row["split"]): row for row in rows}
        for group in comparison.groups:
            cells: list[str | Text] = [_name(group)]
            for split, _ in splits:
                row = ratios.get((group, split))
                cells.append(
                    "–" if row is None else format_value(row["eu_over_au"], row["eu_over_au_interval"], digits=3)
                )
            collapse.add_row(*cells)
        tables.append(collapse)
    stability = rank_stability_table(comparison)
    if stability is not None:
        tables.append(stability)
    return tables


def rank_stability_table(comparison: Comparison) -> Table | None:
    """Per seed and run, the mean rank over bootstrap resamples, its 95 % percentile
    interval and how often the run ranks first; None without resamples."""
    if not comparison.bootstrap_ranks:
        return None
    several = len({row["seed"] for row in comparison.bootstrap_ranks}) > 1
    n = max(row["n_resamples"] for row in comparison.bootstrap_ranks)
    table = Table(
        title="Rank stability over bootstrap resamples",
        caption=f"mean rank [95 % interval] over {n} resamples; first: share of resamples ranked 1",
        title_justify="left",
        caption_justify="left",
    )
    if several:
        table.add_column("seed")
    table.add_column("model", no_wrap=True)
    for name in ("performance", "first", "entanglement", "first"):
        table.add_column(name, justify="right")
    for row in comparison.bootstrap_ranks:
        cells: list[str | Text] = [str(row["seed"])] if several else []
        cells.append(_name(row["group"]))
        for kind in ("performance", "entanglement"):
            mean, low, high = (row[f"{kind}_rank_{name}"] for name in ("mean", "low", "high"))
            text = "–" if math.isnan(mean) else f"{mean:.2f} [{low:g}, {high:g}]"
            first = row[f"{kind}_first"]
            cells += [text, "–" if math.isnan(first) else f"{100 * first:.0f} %"]
        table.add_row(*cells)
    return table


# ------------------------------------------------------------------ notes and printing


def grouped_notes(notes: Iterable[Note | str], *, max_values: int = 8) -> list[str]:
    """Notes that say the same thing printed once, with a count.

    Notes of one ``kind`` and one ``text`` (:class:`~uqeval.notes.Note`) that differ
    only in their fields (task, split, measure, count) become one line whose differing
    fields list their values in braces, in the order first seen, and ``(×n)`` the
    number of notes; others are kept as they are. The order is that of each group's
    first note. At most ``max_values`` values are listed per field, then ``…``. A plain
    string is a note of its own kind, grouped only with equal strings.

    >>> constant = "{task}: {count} {split} image(s) have a constant rater-variance or {MEASURE} map and were left out"
    >>> grouped_notes([
    ...     Note("constant-maps", constant, task="amb", split="noise", measure="au", count=2),
    ...     Note("constant-maps", constant, task="amb", split="noise", measure="eu", count=2),
    ...     Note("constant-maps", constant, task="amb", split="blur", measure="tu", count=1),
    ...     "no calibration images: Platt scaling is fitted on the ID test images",
    ... ])  # doctest: +NORMALIZE_WHITESPACE
    ['amb: {2, 1} {noise, blur} image(s) have a constant rater-variance or {AU, EU, TU} map and were left out (×3)',
     'no calibration images: Platt scaling is fitted on the ID test images']
    """
    groups: dict[tuple[str, str], list[Note]] = {}
    for note in notes:
        if not isinstance(note, Note):
            note = Note("text", literal(str(note)))
        groups.setdefault((note.kind, note.text), []).append(note)
    return [_group_line(members, max_values) for members in groups.values()]


def _group_line(members: Sequence[Note], max_values: int) -> str:
    """One line for notes of one kind and text: each field's values, in braces where they differ."""
    if len(members) == 1:
        return str(members[0])
    shown = [member.field_words() for member in members]
    words = {}
    for name in NOTE_FIELDS:
        values = list(dict.fromkeys(fields[name] for fields in shown if name in fields))
        if len(values) == 1:
            words[name] = values[0]
        elif values:
            words[name] = "{" + ", ".join(values[:max_values] + (["…"] if len(values) > max_values else [])) + "}"
    return f"{members[0].fill(words)} (×{len(members)})"


def print_tables(console: Console, tables: Iterable[Table]) -> None:
    """Print each table between its title and its caption, both wrapped at the console's
    width (rich wraps a table's own title and caption at the table's width)."""
    for table in tables:
        title, caption = table.title, table.caption
        table.title = table.caption = None
        try:
            if title:
                console.print(Text(printable(title), style="table.title"))
            console.print(table)
            if caption:
                console.print(Text(printable(caption), style="table.caption"))
        finally:
            table.title, table.caption = title, caption


def print_report(
    console: Console, tables: Iterable[Table], remarks: Iterable[str], notes: Iterable[Note | str], where: str
) -> None:
    """The terminal report: the tables with their captions, the remarks, the notes grouped
    (:func:`grouped_notes`), then ``where`` (rich markup) the files are."""
    print_tables(console, tables)
    for remark in remarks:
        console.print(printable(remark), highlight=False, markup=False)
    for note in grouped_notes(notes):
        console.print(labelled("note:", "yellow", note), highlight=False)
    console.print(where)
