"""The report folders: :class:`~uqeval.Scores` and :class:`~uqeval.Comparison` as files.

A report folder is replaced whole (:mod:`uqeval.report.folder`): its files are written
into a hidden sibling that is renamed into place when all of them are written, so a
reader sees the old report or the new one, never a mix, and a folder that is not a
report written by uqeval is never replaced. In JSON, NaN is ``null``; in CSV an empty
field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uqeval.names import ID_DOMAIN, POOLED_OOD
from uqeval.report.bootstrap_file import write_bootstrap
from uqeval.report.figure_workers import FigureJob, FigureWorkers, draw_figures
from uqeval.report.files import write_bytes, write_csv, write_json
from uqeval.report.folder import replaced_whole
from uqeval.report.scores_file import write_scores

if TYPE_CHECKING:
    from uqeval.comparison import Comparison
    from uqeval.results import Scores

#: Columns of a comparison's ``collapse.csv``.
COLLAPSE_COLUMNS = ("group", "split", "n", "eu_over_au", "eu_over_au_interval")


def save_report(
    scores: Scores,
    folder: str | os.PathLike[str],
    *,
    plots: bool = True,
    figure_workers: FigureWorkers | None = None,
) -> list[Path]:
    """Write the report of ``scores``: ``scores.json``, ``metrics.csv``,
    ``entanglement.csv``, ``images.csv``, ``fitted.json``, with ``plots`` ``roc.png``,
    ``reliability.png`` and ``maps.png``, each with an SVG copy beside it (``roc.svg``,
    …) for papers, and ``report.html``, one self-contained page of it all
    (:func:`uqeval.report.html_report.score_page`; without ``plots``, without figures).

    ``metrics.csv`` holds the rows of :meth:`~uqeval.Scores.to_dataframe` and
    ``entanglement.csv`` those of :meth:`~uqeval.Scores.entanglement_dataframe`, with
    the same columns; an undefined value is an empty cell. Scored with a bootstrap,
    both have the columns ``ci_low`` and ``ci_high`` too, and ``bootstrap.npz`` holds
    the resampled values (:mod:`uqeval.report.bootstrap_file`).

    The folder is created if needed, and replaced whole: an existing one only when it
    is a score report written by uqeval, or empty (:func:`uqeval.check_replaceable`);
    its old files, figures included, do not stay beside the new ones. Returns the paths
    written.

    ``figure_workers`` (:class:`~uqeval.report.figure_workers.FigureWorkers`), when
    given, draw the figures side by side; the files are the same.

    Raises
    ------
    UQEvalError
        When the folder is not one uqeval may replace, or cannot be created or written
        (e.g. the disk is full); the message names it and the old report is left as it was.
    """
    folder = Path(folder)
    with replaced_whole(folder, "scores") as staging:
        written = [
            write_scores(scores, staging),
            write_csv(staging / "metrics.csv", scores.results, scores.metric_columns),
            write_csv(staging / "entanglement.csv", scores.entanglement, scores.entanglement_columns),
        ]
        if scores.bootstrap is not None:
            written.append(write_bootstrap(scores.bootstrap, staging))
        rows = scores.image_rows()
        columns = list(rows[0]) if rows else ["image", "domain", "role"]
        written.append(write_csv(staging / "images.csv", rows, columns))
        written.append(write_json(staging / "fitted.json", scores.fitted.to_dict()))
        if plots:
            written.extend(_write_figures(draw_figures(score_figures(scores), workers=figure_workers), staging))
        written.append(_save_page(scores, staging, written, plots=plots))
    return [folder / path.name for path in written]


def score_figures(scores: Scores) -> list[FigureJob]:
    """The figures of a score report, the largest first: ``maps``, ``reliability``, ``roc``.

    ROC curves of each OOD domain and the pooled ``ood`` split when OOD detection was
    scored; reliability diagrams of ``id`` and the pooled ``ood`` (of every split when
    there are at most nine diagrams), each panel with its ACEs; example maps when the
    run kept some.
    """
    jobs = []
    if scores.examples:
        options = {"background": int(scores.attrs.get("background", 0)), "class_names": scores.attrs.get("class_names")}
        jobs.append(FigureJob("maps", "plots:example_maps_figure", (list(scores.examples),), options))
    reliabilities = {
        key: value
        for key, value in scores.reliability.items()
        if key[0] in (ID_DOMAIN, POOLED_OOD) or len(scores.reliability) <= 9
    }
    if reliabilities:
        aces = {key: _value(scores, "cal", *key, "ace") for key in reliabilities}
        jobs.append(FigureJob("reliability", "plots:reliability_figure", (reliabilities,), {"aces": aces}))
    aggregation = scores.conventions.aggregation
    curves = scores.roc_curves(pooled=True)
    if curves and any(row["task"] == "oodd" for row in scores.results):
        aurocs = {
            domain: {
                measure: _value(scores, "oodd", domain, measure, "auroc", aggregation) for measure in curves[domain]
            }
            for domain in curves
        }
        jobs.append(FigureJob("roc", "plots:roc_figure", (curves, aurocs), {"aggregation": aggregation}))
    return jobs


def _value(scores: Scores, task: str, split: str, measure: str, metric: str, aggregation: str | None = None) -> float:
    """:meth:`~uqeval.Scores.value`, NaN where there is no such result."""
    try:
        return scores.value(task, split, measure, metric, aggregation)
    except KeyError:
        return float("nan")


def _write_figures(files: Mapping[str, Mapping[str, bytes]], folder: Path) -> list[Path]:
    """Write each figure's files (stem → format → bytes) into ``folder``, in page order (``roc`` first)."""
    order = ("roc", "reliability", "maps")
    stems = sorted(files, key=lambda stem: order.index(stem) if stem in order else len(order))
    return [write_bytes(folder / f"{stem}.{suffix}", data) for stem in stems for suffix, data in files[stem].items()]


def _svgs(paths: Sequence[Path]) -> dict[str, bytes]:
    """Figure stem → the bytes of its SVG file, for the page (figures are drawn once, read back)."""
    return {path.stem: path.read_bytes() for path in paths if path.suffix == ".svg"}


def _save_page(scores: Scores, folder: Path, written: Sequence[Path], *, plots: bool) -> Path:
    from uqeval.report.html_report import REPORT_PAGE, score_page

    files = [path.name for path in written]
    page = score_page(scores, svgs=_svgs(written), files=files, plots=plots)
    return write_bytes(folder / REPORT_PAGE, page.encode("utf-8"))


def save_comparison(comparison: Comparison, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``comparison.json``, ``ranks.csv``, ``points.csv``, ``collapse.csv``,
    ``entanglement.png`` and (with collapse rows) ``collapse.png`` into ``folder``; each
    figure also as SVG (``entanglement.svg``, ``collapse.svg``); and ``report.html``, one
    self-contained page of it all that links to each run's own ``report.html`` where the
    run folder holds one (:func:`uqeval.report.html_report.comparison_page`). When the
    runs have bootstrap resamples, ``bootstrap_ranks.csv`` holds the rank stability
    (:attr:`~uqeval.Comparison.bootstrap_ranks`).

    The folder is replaced whole, as by :func:`save_report` (an existing one only when
    it is a comparison written by uqeval, or empty).

    Returns
    -------
    dict
        File name → path written.

    Raises
    ------
    UQEvalError
        When the folder is not one uqeval may replace, or cannot be created or written
        (e.g. the disk is full); the message names it and the old comparison is left as it was.
    """
    from uqeval.report.html_report import REPORT_PAGE, comparison_page, run_links

    folder = Path(folder)

    def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return list(dict.fromkeys(key for row in rows for key in row))

    with replaced_whole(folder, "comparison") as staging:
        written = [
            write_json(staging / "comparison.json", comparison.to_dict()),
            write_csv(staging / "ranks.csv", comparison.ranks, columns(comparison.ranks)),
            write_csv(staging / "points.csv", comparison.points, columns(comparison.points)),
            write_csv(staging / "collapse.csv", comparison.collapse, COLLAPSE_COLUMNS),
        ]
        if comparison.bootstrap_ranks:
            ranks = comparison.bootstrap_ranks
            written.append(write_csv(staging / "bootstrap_ranks.csv", ranks, columns(ranks)))
        jobs = [FigureJob("entanglement", "compare_plots:entanglement_figure", (comparison,))]
        if comparison.collapse:
            jobs.append(FigureJob("collapse", "compare_plots:collapse_figure", (comparison,)))
        written.extend(_write_figures(draw_figures(jobs), staging))
        page = comparison_page(comparison, svgs=_svgs(written), links=run_links(comparison, folder))
        written.append(write_bytes(staging / REPORT_PAGE, page.encode("utf-8")))
    return {path.name: folder / path.name for path in written}
