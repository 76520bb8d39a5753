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
from uqeval.results import METRIC_COLUMNS

if TYPE_CHECKING:
    from uqeval.comparison import Comparison
    from uqeval.results import Scores

#: Columns of a comparison's ``collapse.csv``.
COLLAPSE_COLUMNS = ("group", "split", "n", "eu_over_au", "eu_over_au_interval")


def save_report(scores: Scores, folder: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """Write the report of ``scores``: ``scores.json``, ``metrics.csv``, ``images.csv``,
    ``fitted.json`` and, with ``plots``, ``roc.png``, ``reliability.png`` and ``maps.png``.

    The folder is created if needed. Returns the paths written.

    Raises
    ------
    UQEvalError
        When the folder cannot be created or written; the message names it.
    """
    folder = ensure_writable(folder)
    written = [
        write_json(folder / "scores.json", scores.to_dict()),
        write_csv(folder / "metrics.csv", scores.results, METRIC_COLUMNS),
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
        written.append(plots.save_figure(figure, folder / "roc.png"))
    reliabilities = {
        key: value
        for key, value in scores.reliability.items()
        if key[0] in (ID_DOMAIN, POOLED_OOD) or len(scores.reliability) <= 9
    }
    if reliabilities:
        written.append(plots.save_figure(plots.reliability_figure(reliabilities), folder / "reliability.png"))
    if scores.examples:
        examples = [
            plots.MapExample(
                image_id=example.image_id,
                domain=example.domain,
                mean=example.mean,
                au=example.au,
                eu=example.eu,
                tu=example.tu,
            )
            for example in scores.examples
        ]
        background = int(scores.attrs.get("background", 0))
        figure = plots.maps_figure(examples, background=background)
        written.append(plots.save_figure(figure, folder / "maps.png"))
    return written


def save_comparison(comparison: Comparison, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``comparison.json``, ``ranks.csv``, ``points.csv``, ``collapse.csv``,
    ``entanglement.png`` and (with collapse rows) ``collapse.png`` into ``folder``.

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
    from uqeval.report.plots import save_figure

    folder = ensure_writable(folder)

    def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return list(dict.fromkeys(key for row in rows for key in row))

    written = {
        "comparison.json": write_json(folder / "comparison.json", comparison.to_dict()),
        "ranks.csv": write_csv(folder / "ranks.csv", comparison.ranks, columns(comparison.ranks)),
        "points.csv": write_csv(folder / "points.csv", comparison.points, columns(comparison.points)),
        "collapse.csv": write_csv(folder / "collapse.csv", comparison.collapse, COLLAPSE_COLUMNS),
        "entanglement.png": save_figure(entanglement_figure(comparison), folder / "entanglement.png"),
    }
    if comparison.collapse:
        written["collapse.png"] = save_figure(collapse_figure(comparison), folder / "collapse.png")
    return written
