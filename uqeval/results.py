"""The result of scoring, :class:`Scores`, and the reader of the ``scores.json`` it is saved as.

:class:`Scores` is the model: tidy rows, Δ, collapse, notes, fits and per-image
statistics. It knows nothing of files or terminals; :mod:`uqeval.report` writes and
prints it. :meth:`Scores.to_dict` is the content of ``scores.json`` and
:func:`read_scores` reads such a file back, checked, as :class:`SavedScores`.

Both show themselves in a few lines (``repr``) and, in a notebook, as a small HTML
table (``_repr_html_``): what was scored and the headline Δ per task.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.image_statistics import ImageStatistics
from uqeval.jsonable import json_ready
from uqeval.metrics.calibration import Reliability
from uqeval.metrics.oodd import roc_curve
from uqeval.names import ALL_TEST, ID_DOMAIN, MEASURES, NO_AGGREGATION, POOLED_OOD, TEST
from uqeval.precision import precision_record
from uqeval.tasks import TASKS

if TYPE_CHECKING:
    import pandas

    # Only an annotation here: importing the scoring package would import this module back.
    from uqeval.scoring.fitting import Fitted

#: ``schema`` of ``scores.json``.
SCORES_SCHEMA = "uqeval.scores/1"
#: File name of a run's scores inside its report folder.
SCORES_FILE = "scores.json"
#: Store attributes that identify the model in ``scores.json``.
MODEL_ATTRS = ("au_method", "eu_method", "model", "dataset", "seed")
#: Columns of :meth:`Scores.to_dataframe` (and ``metrics.csv``), one row per result.
METRIC_COLUMNS = ("task", "split", "measure", "aggregation", "metric", "value")
#: Columns of :meth:`Scores.entanglement_dataframe` (and ``entanglement.csv``), one row
#: per task and split.
ENTANGLEMENT_COLUMNS = ("task", "split", "correct", "wrong", "u_correct", "u_wrong", "delta")
#: The pooled splits whose Δ ``repr`` shows: ID, all OOD images, all test images.
HEADLINE_SPLITS = (ID_DOMAIN, POOLED_OOD, ALL_TEST)


def provenance_record(*, attrs: Mapping[str, Any] | None = None, eu_convention: str = "members") -> dict[str, Any]:
    """What produced a run's numbers, now: ``scores.json`` records it under ``provenance``.

    Parameters
    ----------
    attrs : mapping, optional
        The store's attributes (None or empty for arrays scored in memory).
    eu_convention : str
        ``members``, or ``samples-as-members`` for a cube with ``eu = 1``.

    Returns
    -------
    dict
        ``uqeval`` (its version); ``plugins``, one ``{name, distribution, version}`` per
        registered plugin besides the built-in one, in registration order (the version of
        the installed distribution, from :mod:`importlib.metadata`; ``None`` for a
        plugin registered in code); ``created``, the UTC time in ISO 8601 to the second
        (``2025-01-31T09:30:00+00:00``); ``store_attributes``, every attribute of the
        store; ``eu_convention``.
    """
    # Imported here: reading scores.json (compare, the report) needs no plugin manager.
    from uqeval import __version__
    from uqeval.plugins import BUILTIN, plugin_manager

    plugins = [
        {"name": info.name, "distribution": info.distribution, "version": info.version or None}
        for info in plugin_manager().info.values()
        if info.name != BUILTIN
    ]
    return {
        "uqeval": __version__,
        "plugins": plugins,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "store_attributes": json_ready(dict(attrs or {})),
        "eu_convention": eu_convention,
    }


def entanglement_frame(rows: Iterable[Mapping[str, Any]]) -> pandas.DataFrame:
    """Entanglement rows as a pandas DataFrame with the columns :data:`ENTANGLEMENT_COLUMNS`."""
    import pandas

    return pandas.DataFrame(list(rows), columns=list(ENTANGLEMENT_COLUMNS))


@dataclass(frozen=True)
class ExampleMaps:
    """The maps of one image kept for the report's panel (nats; ``mean`` is (class, y, x)).

    ``input`` is the image's input pixels (channel, y, x) when the cube has ``input``,
    else None.
    """

    position: int
    image_id: str
    mean: np.ndarray = field(repr=False)
    au: np.ndarray = field(repr=False)
    eu: np.ndarray = field(repr=False)
    tu: np.ndarray = field(repr=False)
    domain: str = ""
    input: np.ndarray | None = field(default=None, repr=False)


@dataclass(repr=False)
class Scores:
    """A model's uncertainty scored on one store (or on arrays in memory).

    ``repr(scores)`` (and, in a notebook, its HTML table) summarises what was scored and
    the headline Δ per task; the methods ending in ``dataframe`` give everything else.

    Attributes
    ----------
    results : list of dict
        Tidy rows ``task, split, measure, aggregation, metric, value``.
    entanglement : list of dict
        ``task, split, correct, wrong, u_correct, u_wrong, delta`` per task and split.
    collapse : list of dict
        ``split, mean_au, mean_eu, eu_over_au``.
    notes : list of str
        Everything skipped, fallen back on or undefined, in words.
    n_images : dict
        Scored (test) images per domain.
    fitted : Fitted
        Parameters fitted on the calibration images.
    reliability : dict
        ``(split, measure)`` → :class:`~uqeval.metrics.calibration.Reliability`.
    images : ImageStatistics
        Per-image results of every image (calibration images included), store order.
    conventions : Conventions
    image_ids, domains, roles : (image,) arrays
    store : str or None
        Absolute path of the store (None for data in memory).
    attrs : dict
        The store's attributes.
    examples : list of ExampleMaps
        Maps of a few ID and OOD test images, for the report.
    eu_convention : str
        ``members``, or ``samples-as-members`` for a cube with ``eu = 1``.
    provenance : dict
        What produced the numbers (:func:`provenance_record`): uqeval and plugin
        versions, the UTC time of scoring, the store's attributes and the EU convention;
        empty when unknown.
    """

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[str]
    n_images: dict[str, int]
    fitted: Fitted
    reliability: dict[tuple[str, str], Reliability]
    images: ImageStatistics
    conventions: Conventions
    image_ids: np.ndarray
    domains: np.ndarray
    roles: np.ndarray
    store: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    examples: list[ExampleMaps] = field(default_factory=list)
    eu_convention: str = "members"
    provenance: dict[str, Any] = field(default_factory=dict)
    _by_key: dict[tuple[str, str, str, str, str], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_key = {
            (row["task"], row["split"], row["measure"], row["aggregation"], row["metric"]): row["value"]
            for row in self.results
        }

    @property
    def model(self) -> dict[str, Any]:
        """The model's identity from the store's attributes (None where absent)."""
        return {name: self.attrs.get(name) for name in MODEL_ATTRS}

    def value(self, task: str, split: str, measure: str, metric: str, aggregation: str | None = None) -> float:
        """One result, e.g. ``scores.value("oodd", "ood", "eu", "auroc")``.

        ``aggregation`` defaults to the conventions' for OODD and ``none`` otherwise;
        KeyError when there is no such row.
        """
        if aggregation is None:
            aggregation = self.conventions.aggregation if task in TASKS and TASKS[task].aggregated else NO_AGGREGATION
        try:
            return self._by_key[(task, split, measure, aggregation, metric)]
        except KeyError:
            raise KeyError(f"no result for {task}/{split}/{measure}/{aggregation}/{metric}") from None

    def delta(self, task: str, split: str) -> float:
        """Δ of a task on a split (KeyError when the task was not scored there)."""
        for row in self.entanglement:
            if row["task"] == task and row["split"] == split:
                return row["delta"]
        raise KeyError(f"no entanglement row for {task}/{split}")

    def to_dict(self) -> dict[str, Any]:
        """The content of ``scores.json`` (docs/scoring.md), JSON-ready: NaN is ``None``."""
        return json_ready(
            {
                "schema": SCORES_SCHEMA,
                "store": self.store,
                "model": self.model,
                "provenance": self.provenance,
                "conventions": self.conventions.to_dict(),
                "numerics": precision_record(),
                "n_images": self.n_images,
                "results": self.results,
                "entanglement": self.entanglement,
                "collapse": self.collapse,
                "notes": self.notes,
            }
        )

    def to_dataframe(self) -> pandas.DataFrame:
        """The tidy results as a pandas DataFrame (one row per result)."""
        import pandas

        return pandas.DataFrame(self.results, columns=list(METRIC_COLUMNS))

    def entanglement_dataframe(self) -> pandas.DataFrame:
        r""":attr:`entanglement` as a pandas DataFrame, one row per task and split.

        Columns (:data:`ENTANGLEMENT_COLUMNS`, as in ``entanglement.csv``): ``task``,
        ``split``, ``correct`` (the measure theory says should win), ``wrong`` (the best
        of the others on that split), ``u_correct`` and ``u_wrong`` (their scores
        :math:`U_c`, :math:`U_w` in the task's metric: AUROC, NCC, ACE or AURC) and
        ``delta``, the entanglement

        .. math:: \Delta = s \cdot \frac{\operatorname{atan2}(U_c, U_w) - \pi/4}{\pi/4}

        with :math:`s = -1` when lower scores are better (docs/metrics.md): 1 when the
        correct measure is far better, 0 when it is no better, below 0 when the wrong
        one wins; NaN when undefined.
        """
        return entanglement_frame(self.entanglement)

    def image_rows(self) -> list[dict[str, Any]]:
        """One row per image: id, domain, role, mean AU/EU/TU and every per-image score."""
        statistics = self.images
        columns: dict[str, np.ndarray] = {}
        for measure in MEASURES:
            columns[f"mean_{measure}"] = statistics.means[measure]
        for aggregation, by_measure in statistics.scores.items():
            for measure in MEASURES:
                columns[f"{aggregation}_{measure}"] = by_measure[measure]
        if statistics.ncc is not None:
            for measure in MEASURES:
                columns[f"ncc_{measure}"] = statistics.ncc[measure].correlation
        if statistics.segmentation is not None:
            for metric in ("dice", "ged", "hungarian_iou"):
                columns[metric] = getattr(statistics.segmentation, metric)
        if statistics.risk is not None:
            columns["failure_risk"] = statistics.risk
        rows = []
        for index, image_id in enumerate(self.image_ids.tolist()):
            row: dict[str, Any] = {"image": image_id, "domain": self.domains[index], "role": self.roles[index]}
            row.update({name: float(values[index]) for name, values in columns.items()})
            rows.append(row)
        return rows

    def images_dataframe(self) -> pandas.DataFrame:
        """:meth:`image_rows` as a pandas DataFrame indexed by image id."""
        import pandas

        return pandas.DataFrame(self.image_rows()).set_index("image")

    def roc_curves(self, aggregation: str | None = None) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``(fpr, tpr)`` per OOD domain and measure, ID test images as negatives."""
        aggregation = aggregation or self.conventions.aggregation
        scores = self.images.scores[aggregation]
        test = self.roles == TEST
        negatives = test & (self.domains == ID_DOMAIN)
        curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        if not negatives.any():
            return curves
        for domain in sorted(set(self.domains[test & (self.domains != ID_DOMAIN)])):
            chosen = negatives | (test & (self.domains == domain))
            positive = self.domains[chosen] == domain
            curves[domain] = {}
            for measure in MEASURES:
                curve = roc_curve(scores[measure][chosen], positive)
                curves[domain][measure] = (curve.fpr, curve.tpr)
        return curves

    def _summary(self) -> _Summary:
        aggregations = [self.conventions.aggregation]
        aggregations += sorted({row["aggregation"] for row in self.results} - {NO_AGGREGATION, *aggregations})
        measures = {row["measure"] for row in self.results}
        tasks = dict.fromkeys(row["task"] for row in self.results)
        return _Summary(
            kind="uqeval.Scores",
            places=[("store", self.store if self.store is not None else "arrays in memory")],
            model=self.model,
            n_images=self.n_images,
            measures=[measure for measure in MEASURES if measure in measures],
            aggregations=aggregations,
            delta_aggregation=self.conventions.aggregation,
            tasks=list(tasks),
            entanglement=self.entanglement,
            n_notes=len(self.notes),
            notes_at=".notes",
            more=(
                ".to_dataframe() results · .entanglement_dataframe() Δ · .images_dataframe() per image · "
                ".collapse · .notes · uqeval.save_report(scores, folder)"
            ),
        )

    def __repr__(self) -> str:
        return self._summary().text()

    def _repr_html_(self) -> str:
        return self._summary().html()


# ------------------------------------------------------------------ summaries (repr)

#: Bounds that keep a summary short whatever the store: characters of a path (its end
#: is kept), of any other value, and of a name in a list; names listed; task rows of Δ.
_PATH_CHARS, _VALUE_CHARS, _NAME_CHARS = 100, 40, 24
_LISTED, _TASK_ROWS = 6, 8
_DELTA_LEGEND = "1: the correct measure far better; 0: no better than the best wrong one; < 0: worse"


def _shorten(value: Any, limit: int, *, keep_end: bool = False) -> str:
    text = " ".join(str(value).split())  # one line
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
    return f"{value:.2f}"


@dataclass(frozen=True)
class _Summary:
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
        rows = [(task, [by_task[task].get(split, "") for split in columns]) for task in order[:_TASK_ROWS]]
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
            lines.append("  Δ: none (no task was scored on ID, pooled OOD or all test images)")
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
            parts.append("<p>Δ: none (no task was scored on ID, pooled OOD or all test images)</p>")
        parts += [f"<p><small>{escape(line)}</small></p>" for line in self._footer(left_out)]
        parts.append("</div>")
        return "".join(parts)


# ------------------------------------------------------------------ reading scores.json

_REQUIRED_KEYS = ("entanglement", "collapse")
_ENTANGLEMENT_KEYS = ("task", "split", "u_correct", "u_wrong", "delta")
_COLLAPSE_KEYS = ("split", "eu_over_au")


@dataclass(frozen=True, eq=False, repr=False)
class SavedScores:
    """The checked contents of a ``scores.json``.

    ``repr`` (and, in a notebook, its HTML table) summarises it as :class:`Scores` does.

    Attributes
    ----------
    source : str
        Where it was read from (for messages).
    model : dict
        ``model`` (an empty dict when ``null``).
    entanglement : tuple of dict
        Rows ``task, split, correct, wrong, u_correct, u_wrong, delta`` (floats, NaN
        for ``null``).
    collapse : tuple of dict
        Rows ``split, mean_au, mean_eu, eu_over_au`` (floats, NaN for ``null`` or missing).
    data : dict
        The whole document as read.
    """

    source: str
    model: dict[str, Any]
    entanglement: tuple[dict[str, Any], ...]
    collapse: tuple[dict[str, Any], ...]
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SavedScores:
        """Check the parsed document ``data``; errors name ``source`` and the key.

        Raises
        ------
        UQEvalError
            When the schema is not ``uqeval.scores/1`` or a key or value is missing or
            of the wrong type. ``provenance`` is optional (files written before uqeval
            recorded it lack it).
        """
        where = source
        if not isinstance(data, Mapping):
            raise UQEvalError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
        if "schema" not in data:
            raise UQEvalError(
                f"{where}: missing key 'schema' (expected {SCORES_SCHEMA!r}); is it a uqeval scores file?"
            )
        if data["schema"] != SCORES_SCHEMA:
            raise UQEvalError(f"{where}: schema is {data['schema']!r}, expected {SCORES_SCHEMA!r}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise UQEvalError(f"{where}: missing key(s) {', '.join(repr(key) for key in missing)}")
        model = data.get("model")
        if model is None:
            model = {}
        if not isinstance(model, Mapping):
            raise UQEvalError(f"{where}: 'model' must be an object, got {type(model).__name__}")
        provenance = data.get("provenance")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise UQEvalError(f"{where}: 'provenance' must be an object, got {type(provenance).__name__}")
        entanglement = tuple(_entanglement_rows(data["entanglement"], where))
        collapse = tuple(_collapse_rows(data["collapse"], where))
        return cls(source, dict(model), entanglement, collapse, dict(data))

    @property
    def provenance(self) -> dict[str, Any]:
        """``provenance``: uqeval and plugin versions, UTC time, store attributes, EU
        convention (:func:`provenance_record`); an empty dict in files written before
        uqeval recorded it."""
        return dict(self.data.get("provenance") or {})

    def entanglement_dataframe(self) -> pandas.DataFrame:
        """:attr:`entanglement` as a pandas DataFrame (columns as
        :meth:`Scores.entanglement_dataframe`)."""
        return entanglement_frame(self.entanglement)

    def _summary(self) -> _Summary:
        results = self.data.get("results")
        rows = [row for row in results if isinstance(row, Mapping)] if isinstance(results, list) else []
        conventions = self.data.get("conventions")
        delta_aggregation = conventions.get("aggregation") if isinstance(conventions, Mapping) else None
        aggregations = dict.fromkeys([str(delta_aggregation)] if delta_aggregation is not None else [])
        aggregations.update(dict.fromkeys(sorted({str(row.get("aggregation")) for row in rows} - {NO_AGGREGATION})))
        measures = {str(row.get("measure")) for row in rows}
        n_images = self.data.get("n_images")
        notes = self.data.get("notes")
        return _Summary(
            kind="uqeval.SavedScores",
            places=[("file", self.source), ("store", self.data.get("store"))],
            model=self.model,
            n_images=n_images if isinstance(n_images, Mapping) else {},
            measures=[measure for measure in MEASURES if measure in measures] + sorted(measures - set(MEASURES)),
            aggregations=list(aggregations),
            delta_aggregation=None if delta_aggregation is None else str(delta_aggregation),
            tasks=list(dict.fromkeys(str(row.get("task")) for row in [*rows, *self.entanglement])),
            entanglement=self.entanglement,
            n_notes=len(notes) if isinstance(notes, list) else 0,
            notes_at=".data['notes']",
            more=".entanglement_dataframe() Δ · .collapse · .provenance · .data (the whole file)",
        )

    def __repr__(self) -> str:
        return self._summary().text()

    def _repr_html_(self) -> str:
        return self._summary().html()


def read_scores(path: str | os.PathLike[str]) -> tuple[SavedScores, Path]:
    """Read a ``scores.json``: a report folder written by ``uqeval score`` or the file itself.

    Returns
    -------
    (SavedScores, Path)
        The checked contents and the report folder (the file's folder).

    Raises
    ------
    UQEvalError
        When the folder or file does not exist, the file is not JSON (with line and
        column), or its contents break the schema; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        folder, file = path, path / SCORES_FILE
        if not file.is_file():
            raise UQEvalError(f"{file}: missing; is {path} a report folder written by `uqeval score`?")
    elif path.is_file():
        folder, file = path.parent, path
    else:
        raise UQEvalError(f"{path}: no such run folder or scores file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UQEvalError(f"{file}: not JSON (not UTF-8 text at byte {error.start})") from None
    except OSError as error:
        raise UQEvalError(f"{file}: cannot be read ({error.strerror or error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UQEvalError(f"{file}: not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    return SavedScores.from_dict(data, str(file)), folder


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UQEvalError(f"{where} must be a number or null, got {value!r}")
    return float(value)


def _rows(value: Any, key: str, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise UQEvalError(f"{where}: {key!r} must be a list of objects, got {type(value).__name__}")
    for index, row in enumerate(value):
        if not isinstance(row, Mapping):
            raise UQEvalError(f"{where}: {key}[{index}] must be an object, got {type(row).__name__}")
    return value


def _entanglement_rows(value: Any, where: str) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for index, row in enumerate(_rows(value, "entanglement", where)):
        missing = [key for key in _ENTANGLEMENT_KEYS if key not in row]
        if missing:
            raise UQEvalError(f"{where}: entanglement[{index}] misses key(s) {', '.join(map(repr, missing))}")
        task, split = str(row["task"]), str(row["split"])
        if (task, split) in seen:
            raise UQEvalError(f"{where}: entanglement has two rows for task {task!r}, split {split!r}")
        seen.add((task, split))
        rows.append(
            {
                "task": task,
                "split": split,
                "correct": None if row.get("correct") is None else str(row["correct"]),
                "wrong": None if row.get("wrong") is None else str(row["wrong"]),
                **{
                    key: _number(row[key], f"{where}: entanglement[{index}].{key}")
                    for key in ("u_correct", "u_wrong", "delta")
                },
            }
        )
    return rows


def _collapse_rows(value: Any, where: str) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for index, row in enumerate(_rows(value, "collapse", where)):
        missing = [key for key in _COLLAPSE_KEYS if key not in row]
        if missing:
            raise UQEvalError(f"{where}: collapse[{index}] misses key(s) {', '.join(map(repr, missing))}")
        split = str(row["split"])
        if split in seen:
            raise UQEvalError(f"{where}: collapse has two rows for split {split!r}")
        seen.add(split)
        rows.append(
            {
                "split": split,
                **{
                    key: _number(row.get(key), f"{where}: collapse[{index}].{key}")
                    for key in ("mean_au", "mean_eu", "eu_over_au")
                },
            }
        )
    return rows
