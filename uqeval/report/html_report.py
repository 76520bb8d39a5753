"""``report.html``: a run or a comparison as one self-contained page.

The page holds every table the terminal prints (:mod:`uqeval.report.html_tables`), the
figures the report folder already holds (their SVG files, embedded as ``data:`` URIs:
nothing is drawn twice), the notes grouped, and the provenance. It loads nothing from
outside: styles and the small script that sorts and filters the tables are inline, and
its Content-Security-Policy allows no other script (the script is allowed by its
SHA-256), no fetch and no image but a ``data:`` one. Every string from a store or the
command line is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uqeval.comparison import split_order
from uqeval.names import ID_DOMAIN, POOLED_OOD
from uqeval.precision import precision_record
from uqeval.report.html_tables import plain_table
from uqeval.report.rank_chart import rank_chart
from uqeval.report.readings import FAR_BETTER, NO_BETTER, delta_reading, headline_rows
from uqeval.report.style import MEASURE_COLOURS, MEASURE_LABELS
from uqeval.report.tables import (
    changed_conventions,
    comparison_tables,
    format_value,
    grouped_notes,
    score_remarks,
    score_tables,
    single_ood_domain,
)
from uqeval.tasks import TASKS
from uqeval.text import printable, shortened

if TYPE_CHECKING:
    import jinja2

    from uqeval.comparison import Comparison
    from uqeval.results import Scores


__all__ = [
    "COMPARISON_FIGURES",
    "REPORT_PAGE",
    "SCORE_FIGURES",
    "PageFigure",
    "comparison_page",
    "run_links",
    "score_page",
    "svg_figures",
]

#: The page's file name, beside the report's other files.
REPORT_PAGE = "report.html"

#: The figures of a score report and of a comparison, in page order: file stem → caption.
SCORE_FIGURES = {
    "roc": "ROC curves of OOD detection: ID test images are the negatives, OOD images the positives, "
    "each image ranked by its image score; AUROC in each legend.",
    "reliability": "Reliability diagrams: accuracy against confidence per bin, one panel per measure and "
    "one line per split; the dashed diagonal is perfect calibration.",
    "maps": "Example images, one per row: the input (when the store holds it), the prediction, the raters' "
    "disagreement and the AU, EU and TU maps.",
}
COMPARISON_FIGURES = {
    "entanglement": "The correct measure against the best wrong one, per task and split, one point per model "
    "(mean ± interval over seeds). Above the dashed diagonal (shaded) the correct measure wins: Δ > 0.",
    "collapse": "Epistemic collapse: mean EU / mean AU per model and split; EU / AU ≪ 1 means EU has collapsed.",
}


#: How much larger than its print size a figure is shown (at most the page's width): the
#: figures are sized in inches for paper, where they are read closer than a screen.
FIGURE_SCALE = 1.3
#: CSS pixels per point.
_PIXELS_PER_POINT = 96 / 72
_SVG_WIDTH = re.compile(rb'<svg[^>]*?\swidth="([0-9.]+)pt"')


@dataclass(frozen=True)
class PageFigure:
    """A figure of the page: its anchor, caption, ``data:`` URI, width on screen (CSS
    pixels, None when the SVG gives none) and the files it came from."""

    name: str
    caption: str
    uri: str
    width: int | None
    files: list[str]


def _screen_width(svg: bytes) -> int | None:
    """The width to show an SVG at: its print width (in points) × :data:`FIGURE_SCALE`, in CSS pixels."""
    match = _SVG_WIDTH.search(svg[:2000])
    return round(float(match.group(1)) * _PIXELS_PER_POINT * FIGURE_SCALE) if match else None


def svg_figures(svgs: Mapping[str, bytes], captions: Mapping[str, str]) -> list[PageFigure]:
    """The figures of ``captions`` that ``svgs`` (file stem → SVG bytes) holds, in caption order,
    each as a base64 ``data:image/svg+xml`` URI (an ``<img>`` of it runs no script and
    shares no element id with the page or the other figures)."""
    figures = []
    for name, caption in captions.items():
        if name in svgs:
            uri = "data:image/svg+xml;base64," + base64.b64encode(svgs[name]).decode("ascii")
            figures.append(PageFigure(name, caption, uri, _screen_width(svgs[name]), [f"{name}.png", f"{name}.svg"]))
    return figures


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("uqeval.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _assets() -> dict[str, str]:
    """The page's inline CSS and script, and the Content-Security-Policy that allows exactly them."""
    from importlib.resources import files

    folder = files("uqeval.report") / "templates"
    colours = "".join(f"--{measure}:{colour};" for measure, colour in MEASURE_COLOURS.items())
    style = f":root{{{colours}}}\n" + (folder / "report.css").read_text(encoding="utf-8")
    script = (folder / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    policy = (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return {"style": style, "script": script, "policy": policy}


def _render(template: str, **context: Any) -> str:
    from markupsafe import Markup

    assets = _assets()
    return (
        _environment()
        .get_template(template)
        .render(
            style=Markup(assets["style"]),
            script=Markup(assets["script"]),
            policy=assets["policy"],
            measure_labels=MEASURE_LABELS,
            far_better=FAR_BETTER,
            no_better=NO_BETTER,
            **context,
        )
    )


def _json_text(value: Any) -> str:
    from uqeval.report.files import json_bytes

    return "\n".join(printable(line) for line in json_bytes(value).decode("utf-8").splitlines())


# ------------------------------------------------------------------ a run


def _headline(scores: Scores) -> dict[str, Any]:
    """Δ per task and split (columns as the terminal's, ``blur = ood`` merged) and each task's reading."""
    single = single_ood_domain(scores)
    splits = sorted(dict.fromkeys(str(row["split"]) for row in scores.entanglement), key=split_order)
    if single is not None:
        splits = [split for split in splits if split != POOLED_OOD]
    labels = [f"{shortened(split)} = {POOLED_OOD}" if split == single else shortened(split) for split in splits]
    readings = headline_rows(scores.entanglement)
    deltas = {(str(row["task"]), str(row["split"])): row["delta"] for row in scores.entanglement}
    rows = []
    for task, row in readings.items():
        rows.append(
            {
                "task": TASKS[task].title if task in TASKS else shortened(task),
                "key": shortened(task),
                "cells": [
                    format_value(deltas[(task, split)], digits=2) if (task, split) in deltas else "" for split in splits
                ],
                "reading": delta_reading(row),
            }
        )
    return {"splits": labels, "rows": rows}


def _what_was_scored(scores: Scores) -> list[tuple[str, str]]:
    model = [(name, shortened(value)) for name, value in scores.model.items() if value not in (None, "")]
    images = " · ".join(f"{shortened(split)} {count}" for split, count in scores.n_images.items())
    conventions = scores.conventions.to_dict()
    changed = changed_conventions(scores.conventions)
    shown = ", ".join(f"{name}={value}{' (changed)' if name in changed else ''}" for name, value in conventions.items())
    fields = [("store", printable(scores.store) if scores.store is not None else "arrays in memory")]
    fields += model or [("model", "not named by the store")]
    fields += [
        ("test images", images or "unknown"),
        ("unit", "z-slice" if scores.slice_z is not None else "image"),
        ("EU convention", scores.eu_convention),
        ("conventions", shown),
        ("uqeval", printable(scores.provenance.get("uqeval", "unknown"))),
        ("scored", printable(scores.provenance.get("created", "unknown"))),
    ]
    return fields


def score_page(scores: Scores, *, svgs: Mapping[str, bytes], files: Sequence[str], plots: bool = True) -> str:
    """``report.html`` of a run.

    Parameters
    ----------
    scores : Scores
    svgs : mapping
        Figure stem (``roc``, ``reliability``, ``maps``) → the SVG file the report folder holds.
    files : sequence of str
        The other files of the report folder, linked from the page (relative links).
    plots : bool
        Whether figures were asked for; without them the page says how to get them.

    Returns
    -------
    str
        The page (HTML5, UTF-8).
    """
    title = shortened(scores.model.get("model") or (Path(scores.store).name if scores.store else "scores"), 80)
    return _render(
        "score.html.j2",
        title=title,
        fields=_what_was_scored(scores),
        headline=_headline(scores),
        tables=[plain_table(table) for table in score_tables(scores)],
        remarks=[printable(remark) for remark in score_remarks(scores)],
        figures=svg_figures(svgs, SCORE_FIGURES),
        plots=plots,
        notes=[printable(note) for note in grouped_notes(scores.notes)],
        provenance=_json_text({"provenance": scores.provenance, "numerics": precision_record()}),
        files=list(files),
        id_split=ID_DOMAIN,
    )


# ------------------------------------------------------------------ a comparison


def run_links(comparison: Comparison, folder: str | os.PathLike[str]) -> list[str | None]:
    """Per run, the relative link from ``folder`` to the run's ``report.html``, or None
    when the run folder holds none (or lies where no relative path reaches it)."""
    base = Path(folder).resolve()
    links: list[str | None] = []
    for run in comparison.runs:
        page = Path(run.folder) / REPORT_PAGE
        try:
            relative = os.path.relpath(page.resolve(), base) if page.is_file() else None
        except ValueError:  # another drive (Windows)
            relative = None
        links.append(None if relative is None else urllib.parse.quote(Path(relative).as_posix()))
    return links


def comparison_page(comparison: Comparison, *, svgs: Mapping[str, bytes], links: Sequence[str | None]) -> str:
    """``report.html`` of a comparison: what was compared, the terminal's tables, the
    ranks as a chart (:mod:`uqeval.report.rank_chart`), the figures, one row per run
    (linked to its own page), the notes.

    Parameters
    ----------
    comparison : Comparison
    svgs : mapping
        Figure stem (``entanglement``, ``collapse``) → the SVG file the folder holds.
    links : sequence of str or None
        Per run (in :attr:`~uqeval.Comparison.runs` order), the relative link to its
        ``report.html`` (:func:`run_links`) or None.
    """
    from uqeval import __version__

    runs = []
    for run, link in zip(comparison.runs, links, strict=True):
        runs.append(
            {
                "group": shortened(run.group),
                "seed": "" if run.seed is None else str(run.seed),
                "dataset": shortened(run.dataset) if run.dataset is not None else "",
                "aggregation": shortened(run.aggregation) if run.aggregation is not None else "",
                "uqeval": printable((run.data.get("provenance") or {}).get("uqeval", "")),
                "folder": printable(run.folder),
                "link": link,
            }
        )
    groups = comparison.groups
    return _render(
        "compare.html.j2",
        title=f"{len(comparison.runs)} runs, {len(groups)} models",
        fields=[
            ("runs", str(len(comparison.runs))),
            ("models", ", ".join(shortened(group) for group in groups)),
            ("tasks ranked", ", ".join(comparison.tasks) or "none"),
            ("uqeval", __version__),
            ("compared", datetime.now(UTC).isoformat(timespec="seconds")),
        ],
        tables=[plain_table(table) for table in comparison_tables(comparison)],
        chart=rank_chart(comparison.ranks),
        figures=svg_figures(svgs, COMPARISON_FIGURES),
        runs=runs,
        notes=[printable(note) for note in grouped_notes(comparison.notes)],
    )
