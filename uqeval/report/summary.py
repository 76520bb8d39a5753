"""What a :class:`~uqeval.Scores` or a read ``scores.json`` shows of itself: a few lines of
text (``repr``) or, in a notebook, a small HTML table (``_repr_html_``).

Both say what was scored and the headline Δ per task, bounded whatever the store: long
paths and names are cut, long lists end in ``… +N more``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from uqeval.metrics.predictive import PQ_MEASURE
from uqeval.names import (
    ALL_TEST,
    ID_DOMAIN,
    MEASURES,
    NO_AGGREGATION,
    POOLED_OOD,
    SAMPLE_AGGREGATION,
    SAMPLE_MEASURES,
)
from uqeval.tasks import TASKS
from uqeval.text import printable

if TYPE_CHECKING:
    from uqeval.report.scores_file import SavedScores
    from uqeval.results import Scores

#: The pooled splits whose Δ the summary shows: ID, all OOD images, all test images.
HEADLINE_SPLITS = (ID_DOMAIN, POOLED_OOD, ALL_TEST)

#: Bounds that keep a summary short whatever the store: characters of a path (its end
#: is kept), of any other value, and of a name in a list; names listed; task rows of Δ.
_PATH_CHARS, _VALUE_CHARS, _NAME_CHARS = 100, 40, 24
_LISTED, _TASK_ROWS = 6, 8
_DELTA_LEGEND = "1: the correct measure far better; 0: no better than the best wrong one; < 0: worse"
#: The summary's line when there is no Δ to show: no split to show it on, or (a maps
#: store of some measures) no task with every measure its Δ compares.
_NO_DELTA = "Δ: none (no task was scored on ID, pooled OOD or all test images with every measure it compares)"


def _shorten(value: Any, limit: int, *, keep_end: bool = False) -> str:
    text = printable(" ".join(str(value).split()))  # one line, control characters escaped
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep_end else text[: limit - 1] + "…"


def _listing(items: Sequence[Any], separator: str = ", ", limit: int = _NAME_CHARS) -> str:
    shown = [_shorten(item, limit) for item in items[:_LISTED]]
    if len(items) > _LISTED:
        shown.append(f"… +{len(items) - _LISTED} more")
    return separator.join(shown) if shown else "none"


def _format_delta(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or math.isnan(value):
        return "–"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text  # a negative value that rounds to 0 is shown as 0


@dataclass(frozen=True)
class Summary:
    """What ``repr`` and ``_repr_html_`` of a result show, bounded whatever the store."""

    kind: str
    places: list[tuple[str, Any]]
    model: Mapping[str, Any]
    n_images: Mapping[str, Any]
    measures: list[str]
    aggregations: list[str]
    delta_aggregation: str | None
    tasks: list[str]
    entanglement: Sequence[Mapping[str, Any]]
    n_notes: int
    notes_at: str
    more: str

    def fields(self) -> list[tuple[str, str]]:
        """(label, value) lines: where, model, images, measures, aggregations, tasks."""
        lines = [(label, _shorten(place, _PATH_CHARS, keep_end=True)) for label, place in self.places if place]
        identity = [
            f"{name} {_shorten(self.model[name], _VALUE_CHARS)}"
            for name in ("model", "dataset", "au_method", "eu_method", "seed")
            if self.model.get(name) is not None
        ]
        lines.append(("model", " · ".join(identity) if identity else "not named by the store"))
        counts = [f"{_shorten(domain, _NAME_CHARS)} {_shorten(count, 12)}" for domain, count in self.n_images.items()]
        lines.append(("test images", _listing(counts, " · ", limit=_NAME_CHARS + 13) if counts else "unknown"))
        lines.append(("measures", _listing(self.measures)))
        aggregations = [f"{name} (Δ)" if name == self.delta_aggregation else name for name in self.aggregations]
        lines.append(("aggregations", _listing(aggregations)))
        lines.append(("tasks", _listing(self.tasks)))
        return lines

    def delta_table(self) -> tuple[list[str], list[tuple[str, list[str]]], str]:
        """Columns (the headline splits present), rows ``(task, cells)`` and a line on the Δ rows left out."""
        by_task: dict[str, dict[str, str]] = {}
        for row in self.entanglement:
            task, split = str(row.get("task")), str(row.get("split"))
            if split in HEADLINE_SPLITS:
                by_task.setdefault(task, {})[split] = _format_delta(row.get("delta"))
        columns = [split for split in HEADLINE_SPLITS if any(split in cells for cells in by_task.values())]
        order = [task for task in TASKS if task in by_task] + [task for task in by_task if task not in TASKS]
        # "–" where a task has no Δ on a split (OODD on id), as where Δ is undefined
        rows = [(task, [by_task[task].get(split, "–") for split in columns]) for task in order[:_TASK_ROWS]]
        left_out = len(self.entanglement) - sum(len(by_task[task]) for task in order[:_TASK_ROWS])
        if not left_out:
            return columns, rows, ""
        which = "single OOD domains" if len(order) <= _TASK_ROWS else "single OOD domains and further tasks"
        return columns, rows, f"{left_out} more Δ row(s), of {which}, in .entanglement_dataframe()"

    def _footer(self, left_out: str) -> list[str]:
        lines = [left_out] if left_out else []
        if self.n_notes:
            lines.append(f"{self.n_notes} note(s) in {self.notes_at}: what was skipped or fell back")
        lines.append(f"more: {self.more}")
        return lines

    def text(self) -> str:
        """The summary as a few lines of plain text."""
        lines = [f"<{self.kind}>"]
        lines += [f"  {label:<13} {value}" for label, value in self.fields()]
        columns, rows, left_out = self.delta_table()
        if rows:
            width = max(_NAME_CHARS // 2, *(len(_shorten(task, _NAME_CHARS)) for task, _ in rows))
            lines.append(f"  Δ per task ({_DELTA_LEGEND})")
            lines.append(("    " + " " * width + "".join(f"{split:>8}" for split in columns)).rstrip())
            for task, cells in rows:
                cells_text = "".join(f"{cell:>8}" for cell in cells)
                lines.append(f"    {_shorten(task, _NAME_CHARS):<{width}}{cells_text}".rstrip())
        else:
            lines.append(f"  {_NO_DELTA}")
        lines += [f"  {line}" for line in self._footer(left_out)]
        return "\n".join(lines)

    def html(self) -> str:
        """The summary as a compact HTML table (every value escaped)."""
        escape = html.escape
        left = ' style="text-align:left"'
        parts = [f'<div class="uqeval-summary"><p><strong>{escape(self.kind)}</strong></p><table>']
        parts += [
            f"<tr><th{left}>{escape(label)}</th><td{left}>{escape(value)}</td></tr>" for label, value in self.fields()
        ]
        parts.append("</table>")
        columns, rows, left_out = self.delta_table()
        if rows:
            parts.append(
                f"<table><caption{left}>Δ per task ({escape(_DELTA_LEGEND)})</caption><thead><tr><th>task</th>"
            )
            parts += [f"<th>{escape(split)}</th>" for split in columns]
            parts.append("</tr></thead><tbody>")
            for task, cells in rows:
                parts.append(f"<tr><th{left}>{escape(_shorten(task, _NAME_CHARS))}</th>")
                parts += [f'<td style="text-align:right">{escape(cell)}</td>' for cell in cells]
                parts.append("</tr>")
            parts.append("</tbody></table>")
        else:
            parts.append(f"<p>{escape(_NO_DELTA)}</p>")
        parts += [f"<p><small>{escape(line)}</small></p>" for line in self._footer(left_out)]
        parts.append("</div>")
        return "".join(parts)


def scores_summary(scores: Scores) -> Summary:
    """The summary of a :class:`~uqeval.Scores`."""
    aggregations = [scores.conventions.aggregation]
    aggregations += sorted(
        {row["aggregation"] for row in scores.results} - {NO_AGGREGATION, SAMPLE_AGGREGATION, *aggregations}
    )
    measures = {row["measure"] for row in scores.results}
    tasks = dict.fromkeys(row["task"] for row in scores.results)
    return Summary(
        kind="uqeval.Scores",
        places=[("store", scores.store if scores.store is not None else "arrays in memory")],
        model=scores.model,
        n_images=scores.n_images,
        measures=[measure for measure in MEASURES if measure in measures],
        aggregations=aggregations,
        delta_aggregation=scores.conventions.aggregation,
        tasks=list(tasks),
        entanglement=scores.entanglement,
        n_notes=len(scores.notes),
        notes_at=".notes",
        more=(
            ".to_dataframe() results · .entanglement_dataframe() Δ · .images_dataframe() per image · "
            ".collapse · .notes · uqeval.save_report(scores, folder)"
        ),
    )


def saved_summary(saved: SavedScores) -> Summary:
    """The summary of a read ``scores.json`` (:class:`~uqeval.report.scores_file.SavedScores`)."""
    results = saved.data.get("results")
    rows = [row for row in results if isinstance(row, Mapping)] if isinstance(results, list) else []
    conventions = saved.data.get("conventions")
    delta_aggregation = conventions.get("aggregation") if isinstance(conventions, Mapping) else None
    aggregations = dict.fromkeys([str(delta_aggregation)] if delta_aggregation is not None else [])
    aggregations.update(
        dict.fromkeys(sorted({str(row.get("aggregation")) for row in rows} - {NO_AGGREGATION, SAMPLE_AGGREGATION}))
    )
    measures = {str(row.get("measure")) for row in rows}
    n_images = saved.data.get("n_images")
    notes = saved.data.get("notes")
    return Summary(
        kind="uqeval.SavedScores",
        places=[("file", saved.source), ("store", saved.data.get("store"))],
        model=saved.model,
        n_images=n_images if isinstance(n_images, Mapping) else {},
        # The sample scores (pairwise_dice, cov) are not measures of the decomposition, as in Scores' summary.
        measures=[measure for measure in MEASURES if measure in measures]
        + sorted(measures - {*MEASURES, *SAMPLE_MEASURES, PQ_MEASURE}),
        aggregations=list(aggregations),
        delta_aggregation=None if delta_aggregation is None else str(delta_aggregation),
        tasks=list(dict.fromkeys(str(row.get("task")) for row in [*rows, *saved.entanglement])),
        entanglement=saved.entanglement,
        n_notes=len(notes) if isinstance(notes, list) else 0,
        notes_at=".data['notes']",
        more=".entanglement_dataframe() Δ · .collapse · .provenance · .data (the whole file)",
    )
