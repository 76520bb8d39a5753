"""The report folders: :class:`~uqeval.Scores` and :class:`~uqeval.Comparison` as files.

Every file is written atomically (a hidden temporary file in the same folder, then a
rename), so a reader never sees a partial file. In JSON, NaN is ``null``; in CSV an
empty field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uqeval.names import ID_DOMAIN, MEASURES, POOLED_OOD
from uqeval.report.files import ensure_writable, write_csv, write_json
from uqeval.report.scores_file import write_scores
from uqeval.results import ENTANGLEMENT_COLUMNS, METRIC_COLUMNS

if TYPE_CHECKING:
    from uqeval.comparison import Comparison
    from uqeval.results import Scores

#: Columns of a comparison's ``collapse.csv``.
COLLAPSE_COLUMNS = ("group", "split", "n", "eu_over_au", "eu_over_au_interval")


def save_report(scores: Scores, folder: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """Write the report of ``scores``: ``scores.json``, ``metrics.csv``,
    ``entanglement.csv``, ``images.csv``, ``fitted.json`` and, with ``plots``,
    ``roc.png``, ``reliability.png`` and ``maps.png``, each with an SVG copy beside it
    (``roc.svg``, …) for papers.

    ``metrics.csv`` holds the rows of :meth:`~uqeval.Scores.to_dataframe` and
    ``entanglement.csv`` those of :meth:`~uqeval.Scores.entanglement_dataframe`, with
    the same columns; an undefined value is an empty cell.

    The folder is created if needed. Returns the paths written.

    Raises
    ------
    UQEvalError
        When the folder cannot be created or written; the message names it.
    """
    folder = ensure_writable(folder)
    written = [
        write_scores(scores, folder),
        write_csv(folder / "metrics.csv", scores.results, METRIC_COLUMNS),
        write_csv(folder / "entanglement.csv", scores.entanglement, ENTANGLEMENT_COLUMNS),
    ]
    rows = scores.image_rows()
    columns = list(rows[0]) if rows else ["image", "domain", "role"]
    written.append(write_csv(folder / "images.csv", rows, columns))
    written.append(write_json(folder / "fitted.json", scores.fitted.to_dict()))
    if plots:
        written.extend(_save_plots(scores, folder))
    return written


def _save_plots(scores: Scores, folder: Path) -> list[Path]:
    from uqeval.report import plots

    written = []
    aggregation = scores.conventions.aggregation
    curves = scores.roc_curves()
    if curves and any(row["task"] == "oodd" for row in scores.results):
        aurocs = {
            domain: {measure: scores.value("oodd", domain, measure, "auroc", aggregation) for measure in MEASURES}
            for domain in curves
        }
        figure = plots.roc_figure(curves, aurocs, aggregation=aggregation)
        written.extend(plots.save_figure_files(figure, folder / "roc.png"))
    reliabilities = {
        key: value
        for key, value in scores.reliability.items()
        if key[0] in (ID_DOMAIN, POOLED_OOD) or len(scores.reliability) <= 9
    }
    if reliabilities:
        written.extend(plots.save_figure_files(plots.reliability_figure(reliabilities), folder / "reliability.png"))
    if scores.examples:
        examples = plots.map_examples(scores.examples)
        background = int(scores.attrs.get("background", 0))
        class_names = scores.attrs.get("class_names")
        figure = plots.maps_figure(examples, background=background, class_names=class_names)
        written.extend(plots.save_figure_files(figure, folder / "maps.png"))
    return written


def save_comparison(comparison: Comparison, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``comparison.json``, ``ranks.csv``, ``points.csv``, ``collapse.csv``,
    ``entanglement.png`` and (with collapse rows) ``collapse.png`` into ``folder``; each
    figure also as SVG (``entanglement.svg``, ``collapse.svg``).

    Returns
    -------
    dict
        File name → path written.

    Raises
    ------
    UQEvalError
        When the folder cannot be created or written; the message names it.
    """
    from uqeval.report.compare_plots import collapse_figure, entanglement_figure
    from uqeval.report.plots import save_figure_files

    folder = ensure_writable(folder)

    def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return list(dict.fromkeys(key for row in rows for key in row))

    written = {
        "comparison.json": write_json(folder / "comparison.json", comparison.to_dict()),
        "ranks.csv": write_csv(folder / "ranks.csv", comparison.ranks, columns(comparison.ranks)),
        "points.csv": write_csv(folder / "points.csv", comparison.points, columns(comparison.points)),
        "collapse.csv": write_csv(folder / "collapse.csv", comparison.collapse, COLLAPSE_COLUMNS),
    }
    figures = {"entanglement.png": entanglement_figure(comparison)}
    if comparison.collapse:
        figures["collapse.png"] = collapse_figure(comparison)
    for name, figure in figures.items():
        written.update({path.name: path for path in save_figure_files(figure, folder / name)})
    return written
