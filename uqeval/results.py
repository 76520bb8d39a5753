"""The result of scoring: :class:`Scores`, the model.

:class:`Scores` holds tidy rows, Δ, collapse, notes, fits and per-image statistics and
knows nothing of files or terminals: :mod:`uqeval.report.save` writes it (and
:mod:`uqeval.report.scores_file` reads ``scores.json`` back), :mod:`uqeval.report.tables`
prints it, and :mod:`uqeval.report.summary` is the few lines (``repr``) or small HTML
table (``_repr_html_``, in a notebook) it shows itself as.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.image_statistics import ExampleMaps, ImageStatistics
from uqeval.jsonable import json_ready
from uqeval.metrics.calibration import Reliability
from uqeval.metrics.oodd import roc_curve
from uqeval.names import ID_DOMAIN, MEASURES, NO_AGGREGATION, POOLED_OOD, SAMPLE_AGGREGATION, SAMPLE_MEASURES, TEST
from uqeval.notes import Note
from uqeval.precision import precision_record
from uqeval.tasks import TASKS
from uqeval.text import KEPT_NAME_CHARACTERS, shortened

if TYPE_CHECKING:
    import pandas

    # Only annotations here: importing the scoring package would import this module back.
    from uqeval.scoring.bootstrap import Bootstrap
    from uqeval.scoring.fitting import Fitted

#: ``schema`` of ``scores.json``.
SCORES_SCHEMA = "uqeval.scores/1"
#: Store attributes that identify the model in ``scores.json``.
MODEL_ATTRS = ("au_method", "eu_method", "model", "dataset", "seed")
#: Columns of :meth:`Scores.to_dataframe` (and ``metrics.csv``), one row per result.
METRIC_COLUMNS = ("task", "split", "measure", "aggregation", "metric", "value")
#: Columns of :meth:`Scores.entanglement_dataframe` (and ``entanglement.csv``), one row
#: per task and split.
ENTANGLEMENT_COLUMNS = ("task", "split", "correct", "wrong", "u_correct", "u_wrong", "delta")
#: Columns added to both after the value (Δ's) when scored with a bootstrap.
INTERVAL_COLUMNS = ("ci_low", "ci_high")


def _bounded(value: Any) -> Any:
    """A text attribute as :attr:`Scores.model` keeps it: cut when longer than :data:`KEPT_NAME_CHARACTERS`."""
    if isinstance(value, str) and len(value) > KEPT_NAME_CHARACTERS:
        return shortened(value, KEPT_NAME_CHARACTERS)
    return value


def entanglement_frame(rows: Iterable[Mapping[str, Any]]) -> pandas.DataFrame:
    """Entanglement rows as a pandas DataFrame with the columns :data:`ENTANGLEMENT_COLUMNS`."""
    import pandas

    return pandas.DataFrame(list(rows), columns=list(ENTANGLEMENT_COLUMNS))


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
    notes : list of Note
        Everything skipped, fallen back on or undefined (:class:`~uqeval.notes.Note`;
        ``str(note)`` is the sentence).
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
        What produced the numbers (:func:`uqeval.provenance.provenance_record`): uqeval and plugin
        versions, the UTC time of scoring, the store's attributes and the EU convention;
        empty when unknown.
    slice_z : (image,) int or None
        Scored per slice (``unit="slice"``): each image's ``z`` in its volume, whose id
        ``image_ids`` repeats; None when images are scored whole.
    bootstrap : Bootstrap or None
        With ``bootstrap=N``: every row's values in the resamples
        (:class:`~uqeval.scoring.bootstrap.Bootstrap`); the rows of ``results`` then
        have ``ci_low`` and ``ci_high`` (of the value) and those of ``entanglement``
        of Δ. None without.
    """

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[Note]
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
    slice_z: np.ndarray | None = None
    bootstrap: Bootstrap | None = None
    _by_key: dict[tuple[str, str, str, str, str], float] = field(init=False, repr=False, compare=False)
    _intervals: dict[tuple[str, str, str, str, str], tuple[float, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = [(row["task"], row["split"], row["measure"], row["aggregation"], row["metric"]) for row in self.results]
        self._by_key = {key: row["value"] for key, row in zip(keys, self.results, strict=True)}
        self._intervals = {
            key: (row["ci_low"], row["ci_high"]) for key, row in zip(keys, self.results, strict=True) if "ci_low" in row
        }

    @property
    def model(self) -> dict[str, Any]:
        """The model's identity from the store's attributes (None where absent); a text
        longer than :data:`~uqeval.text.KEPT_NAME_CHARACTERS` is cut
        (:func:`uqeval.text.shortened`), and ``provenance`` keeps it whole."""
        return {name: _bounded(self.attrs.get(name)) for name in MODEL_ATTRS}

    @property
    def measures(self) -> tuple[str, ...]:
        """The measures scored, in the order of :data:`~uqeval.names.MEASURES`: all
        three, or those a maps store gives."""
        return tuple(measure for measure in MEASURES if measure in self.images.means)

    def value(self, task: str, split: str, measure: str, metric: str, aggregation: str | None = None) -> float:
        """One result, e.g. ``scores.value("oodd", "ood", "eu", "auroc")``.

        ``aggregation`` defaults to the conventions' for OODD and FD (``samples`` for the
        sample scores ``pairwise_dice`` and ``cov``) and ``none`` otherwise; KeyError when
        there is no such row.
        """
        if aggregation is None and measure in SAMPLE_MEASURES:
            aggregation = SAMPLE_AGGREGATION
        if aggregation is None:
            aggregation = self.conventions.aggregation if task in TASKS and TASKS[task].aggregated else NO_AGGREGATION
        try:
            return self._by_key[(task, split, measure, aggregation, metric)]
        except KeyError:
            raise KeyError(f"no result for {task}/{split}/{measure}/{aggregation}/{metric}") from None

    def interval(
        self, task: str, split: str, measure: str, metric: str, aggregation: str | None = None
    ) -> tuple[float, float]:
        """``(ci_low, ci_high)`` of a result (arguments as :meth:`value`): its bootstrap
        interval, ``(nan, nan)`` when scored without a bootstrap; KeyError when there is no such row."""
        if aggregation is None:
            aggregation = self.conventions.aggregation if task in TASKS and TASKS[task].aggregated else NO_AGGREGATION
        self.value(task, split, measure, metric, aggregation)
        return self._intervals.get((task, split, measure, aggregation, metric), (float("nan"), float("nan")))

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
                "notes": [str(note) for note in self.notes],
                **({"unit": "slice"} if self.slice_z is not None else {}),
                **({"bootstrap": self.bootstrap.record()} if self.bootstrap is not None else {}),
            }
        )

    def to_dataframe(self) -> pandas.DataFrame:
        """The tidy results as a pandas DataFrame (one row per result)."""
        import pandas

        return pandas.DataFrame(self.results, columns=list(self.metric_columns))

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """Columns of :attr:`results`: :data:`METRIC_COLUMNS`, and :data:`INTERVAL_COLUMNS` with a bootstrap."""
        return METRIC_COLUMNS + (INTERVAL_COLUMNS if self.bootstrap is not None else ())

    @property
    def entanglement_columns(self) -> tuple[str, ...]:
        """Columns of :attr:`entanglement`: :data:`ENTANGLEMENT_COLUMNS`, and :data:`INTERVAL_COLUMNS`
        with a bootstrap."""
        return ENTANGLEMENT_COLUMNS + (INTERVAL_COLUMNS if self.bootstrap is not None else ())

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
        import pandas

        return pandas.DataFrame(list(self.entanglement), columns=list(self.entanglement_columns))

    def image_rows(self) -> list[dict[str, Any]]:
        """One row per image: id, domain, role, mean AU/EU/TU and every per-image score
        (of the measures scored, and the sample scores ``pairwise_dice`` and ``cov``)."""
        statistics = self.images
        measures = self.measures
        columns: dict[str, np.ndarray] = {}
        for measure in measures:
            columns[f"mean_{measure}"] = statistics.means[measure]
        for aggregation, by_measure in statistics.scores.items():
            for measure in measures:
                columns[f"{aggregation}_{measure}"] = by_measure[measure]
        if statistics.ncc is not None:
            for measure in measures:
                columns[f"ncc_{measure}"] = statistics.ncc[measure].correlation
        if statistics.segmentation is not None:
            for metric in ("dice", "ged", "hungarian_iou"):
                columns[metric] = getattr(statistics.segmentation, metric)
        if statistics.risk is not None:
            columns["failure_risk"] = statistics.risk
        if statistics.sample_scores is not None:
            columns.update(statistics.sample_scores)
        rows = []
        for index, image_id in enumerate(self.image_ids.tolist()):
            row: dict[str, Any] = {"image": image_id}
            if self.slice_z is not None:
                row["z"] = int(self.slice_z[index])
            row.update({"domain": self.domains[index], "role": self.roles[index]})
            row.update({name: float(values[index]) for name, values in columns.items()})
            rows.append(row)
        return rows

    def images_dataframe(self) -> pandas.DataFrame:
        """:meth:`image_rows` as a pandas DataFrame indexed by image id (and ``z``, per slice)."""
        import pandas

        return pandas.DataFrame(self.image_rows()).set_index(["image", "z"] if self.slice_z is not None else "image")

    def roc_curves(
        self, aggregation: str | None = None, *, pooled: bool = False
    ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``(fpr, tpr)`` per OOD domain and measure, ID test images as negatives; with
        ``pooled`` and more than one OOD domain, also of the pooled ``ood`` split (every
        OOD test image a positive), last: the split whose AUROCs Δ compares."""
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
            for measure in self.measures:
                curve = roc_curve(scores[measure][chosen], positive)
                curves[domain][measure] = (curve.fpr, curve.tpr)
        if pooled and len(curves) > 1:
            chosen = test & ((self.domains == ID_DOMAIN) | np.isin(self.domains, list(curves)))
            positive = self.domains[chosen] != ID_DOMAIN
            curves[POOLED_OOD] = {}
            for measure in self.measures:
                curve = roc_curve(scores[measure][chosen], positive)
                curves[POOLED_OOD][measure] = (curve.fpr, curve.tpr)
        return curves

    # The summary is a view (uqeval.report.summary); the model only hands itself over.
    def __repr__(self) -> str:
        from uqeval.report.summary import scores_summary

        return scores_summary(self).text()

    def _repr_html_(self) -> str:
        from uqeval.report.summary import scores_summary

        return scores_summary(self).html()
