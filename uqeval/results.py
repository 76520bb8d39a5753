"""The result of scoring, :class:`Scores`, and the reader of the ``scores.json`` it is saved as.

:class:`Scores` is the model: tidy rows, Δ, collapse, notes, fits and per-image
statistics. It knows nothing of files or terminals; :mod:`uqeval.report` writes and
prints it. :meth:`Scores.to_dict` is the content of ``scores.json`` and
:func:`read_scores` reads such a file back, checked, as :class:`SavedScores`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.image_statistics import Fitted, ImageStatistics
from uqeval.jsonable import json_ready
from uqeval.metrics.calibration import Reliability
from uqeval.metrics.oodd import roc_curve
from uqeval.names import ID_DOMAIN, MEASURES, NO_AGGREGATION, TEST
from uqeval.precision import precision_record
from uqeval.tasks import TASKS

if TYPE_CHECKING:
    import pandas

#: ``schema`` of ``scores.json``.
SCORES_SCHEMA = "uqeval.scores/1"
#: File name of a run's scores inside its report folder.
SCORES_FILE = "scores.json"
#: Store attributes that identify the model in ``scores.json``.
MODEL_ATTRS = ("au_method", "eu_method", "model", "dataset", "seed")
#: Columns of :meth:`Scores.to_dataframe` (and ``metrics.csv``), one row per result.
METRIC_COLUMNS = ("task", "split", "measure", "aggregation", "metric", "value")


@dataclass(frozen=True)
class ExampleMaps:
    """The maps of one image kept for the report's panel (nats; ``mean`` is (class, y, x))."""

    position: int
    image_id: str
    mean: np.ndarray = field(repr=False)
    au: np.ndarray = field(repr=False)
    eu: np.ndarray = field(repr=False)
    tu: np.ndarray = field(repr=False)
    domain: str = ""


@dataclass
class Scores:
    """A model's uncertainty scored on one store (or on arrays in memory).

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


# ------------------------------------------------------------------ reading scores.json

_REQUIRED_KEYS = ("entanglement", "collapse")
_ENTANGLEMENT_KEYS = ("task", "split", "u_correct", "u_wrong", "delta")
_COLLAPSE_KEYS = ("split", "eu_over_au")


@dataclass(frozen=True, eq=False)
class SavedScores:
    """The checked contents of a ``scores.json``.

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
            of the wrong type.
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
        entanglement = tuple(_entanglement_rows(data["entanglement"], where))
        collapse = tuple(_collapse_rows(data["collapse"], where))
        return cls(source, dict(model), entanglement, collapse, dict(data))


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
