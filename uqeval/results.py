"""The results of :func:`uqeval.score`: tidy tables, per-image scores, and the report files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uqeval.metrics.oodd import roc_curve
from uqeval.report.files import ensure_writable, json_ready, write_csv, write_json
from uqeval.statistics import MEASURES
from uqeval.tasks import POOLED_OOD, Evaluation

if TYPE_CHECKING:
    import pandas

#: ``schema`` of ``scores.json``.
SCORES_SCHEMA = "uqeval.scores/1"
#: Store attributes that identify the model in ``scores.json``.
MODEL_ATTRS = ("au_method", "eu_method", "model", "dataset", "seed")
#: Columns of ``metrics.csv``, one row per result.
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
    """A model's uncertainty scored on one store.

    Attributes
    ----------
    evaluation : Evaluation
        Tidy results, Δ, collapse, notes, fits and per-image statistics.
    store : str or None
        Absolute path of the store (None for an in-memory Dataset).
    attrs : dict
        The store's attributes.
    image_ids, domains, roles : (image,) arrays
    examples : list of ExampleMaps
        Maps of a few ID and OOD test images, for the report.
    eu_convention : str
        ``members``, or ``samples-as-members`` for a cube with ``eu = 1``.
    """

    evaluation: Evaluation
    store: str | None
    attrs: dict[str, Any]
    image_ids: np.ndarray
    domains: np.ndarray
    roles: np.ndarray
    examples: list[ExampleMaps] = field(default_factory=list)
    eu_convention: str = "members"

    # ------------------------------------------------------------------ views

    @property
    def results(self) -> list[dict]:
        """Tidy rows ``task, split, measure, aggregation, metric, value``."""
        return self.evaluation.results

    @property
    def entanglement(self) -> list[dict]:
        """Δ per task and split, with the correct and wrong measures and their values."""
        return self.evaluation.entanglement

    @property
    def collapse(self) -> list[dict]:
        """Mean AU, mean EU and EU / AU per split."""
        return self.evaluation.collapse

    @property
    def notes(self) -> list[str]:
        """What was skipped, fallen back on or undefined."""
        return self.evaluation.notes

    @property
    def n_images(self) -> dict[str, int]:
        """Scored (test) images per domain."""
        return self.evaluation.n_images

    @property
    def model(self) -> dict[str, Any]:
        """The model's identity from the store's attributes (None where absent)."""
        return {name: self.attrs.get(name) for name in MODEL_ATTRS}

    def value(self, task: str, split: str, measure: str, metric: str, aggregation: str | None = None) -> float:
        """One result, e.g. ``scores.value("oodd", "ood", "eu", "auroc")``."""
        return self.evaluation.value(task, split, measure, metric, aggregation)

    def delta(self, task: str, split: str) -> float:
        """Δ of a task on a split."""
        return self.evaluation.delta(task, split)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``scores.json`` (DESIGN §5), JSON-ready: NaN is ``None``."""
        return json_ready(
            {
                "schema": SCORES_SCHEMA,
                "store": self.store,
                "model": self.model,
                "conventions": self.evaluation.conventions.to_dict(),
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
        statistics = self.evaluation.images
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
        aggregation = aggregation or self.evaluation.conventions.aggregation
        scores = self.evaluation.images.scores[aggregation]
        test = self.roles == "test"
        negatives = test & (self.domains == "id")
        curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        if not negatives.any():
            return curves
        for domain in sorted(set(self.domains[test & (self.domains != "id")])):
            chosen = negatives | (test & (self.domains == domain))
            positive = self.domains[chosen] == domain
            curves[domain] = {}
            for measure in MEASURES:
                curve = roc_curve(scores[measure][chosen], positive)
                curves[domain][measure] = (curve.fpr, curve.tpr)
        return curves

    # ------------------------------------------------------------------ files

    def save(self, folder: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
        """Write the report: ``scores.json``, ``metrics.csv``, ``images.csv``, ``fitted.json``
        and, with ``plots``, ``roc.png``, ``reliability.png`` and ``maps.png``.

        Every file is written atomically (a temporary file, then a rename). Returns the
        paths written.
        """
        folder = ensure_writable(folder)
        written = [
            write_json(folder / "scores.json", self.to_dict()),
            write_csv(folder / "metrics.csv", self.results, METRIC_COLUMNS),
        ]
        rows = self.image_rows()
        columns = list(rows[0]) if rows else ["image", "domain", "role"]
        written.append(write_csv(folder / "images.csv", rows, columns))
        written.append(write_json(folder / "fitted.json", self.evaluation.fitted.to_dict()))
        if plots:
            written.extend(self._save_plots(folder))
        return written

    def _save_plots(self, folder: Path) -> list[Path]:
        from uqeval.report import plots

        written = []
        aggregation = self.evaluation.conventions.aggregation
        curves = self.roc_curves()
        if curves and any(row["task"] == "oodd" for row in self.results):
            aurocs = {
                domain: {measure: self.value("oodd", domain, measure, "auroc", aggregation) for measure in MEASURES}
                for domain in curves
            }
            figure = plots.roc_figure(curves, aurocs, aggregation=aggregation)
            written.append(plots.save_figure(figure, folder / "roc.png"))
        reliabilities = {
            key: value
            for key, value in self.evaluation.reliability.items()
            if key[0] in ("id", POOLED_OOD) or len(self.evaluation.reliability) <= 9
        }
        if reliabilities:
            written.append(plots.save_figure(plots.reliability_figure(reliabilities), folder / "reliability.png"))
        if self.examples:
            examples = [
                plots.MapExample(
                    image_id=example.image_id,
                    domain=example.domain,
                    mean=example.mean,
                    au=example.au,
                    eu=example.eu,
                    tu=example.tu,
                )
                for example in self.examples
            ]
            background = int(self.attrs.get("background", 0))
            figure = plots.maps_figure(examples, background=background)
            written.append(plots.save_figure(figure, folder / "maps.png"))
        return written
