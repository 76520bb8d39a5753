"""Per-image statistics of one volume gathered z-slab by z-slab, in memory for a few slabs.

A volume larger than a batch is read in z-slabs (:mod:`uqeval.scoring.streaming`). Every
per-image statistic of :func:`uqeval.image_statistics.image_statistics` is a sum or a
maximum over voxels, so each slab adds its part and the volume's statistics come out
at the end, equal to those of the volume held whole to float rounding:

- the means, and each aggregation's partial values (:class:`~uqeval.aggregation.SlabForm`;
  ``border`` and ``patch_max`` see the last planes of the slabs before, their *halo*);
- NCC's moments (:class:`~uqeval.metrics.ambiguity.PearsonMoments`);
- the calibration bin tables, and the cells of the pooled equal-mass histograms;
- PAvPU's counts (:func:`~uqeval.metrics.pavpu.pavpu_counts`);
- the slice a figure shows (:func:`~uqeval.image_statistics.shown_slice`): the running
  best plane by EU, and by TU, is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uqeval.aggregation import AggregationParameters, Aggregator
from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.image_statistics import ExampleMaps, ImageStatistics, rescaled
from uqeval.metrics.ambiguity import PearsonMoments, RaterStatistics
from uqeval.metrics.calibration import (
    CalibrationTable,
    ConfidenceHistogram,
    ImageCalibration,
    PlattFit,
    sparse_confidence_histogram,
)
from uqeval.metrics.pavpu import pavpu_counts
from uqeval.names import MEASURES


def check_streamable(aggregations: Sequence[Aggregator], conventions: Conventions) -> None:
    """Refuse what cannot be gathered slab by slab, before any volume is read.

    Raises
    ------
    UQEvalError
        For an aggregation without a :class:`~uqeval.aggregation.SlabForm`, or the
        per-image equal-mass ACE, whose equal-mass bins need every voxel of a volume at once.
    """
    for aggregator in aggregations:
        if aggregator.slabs is None:
            raise UQEvalError(
                f"aggregation {aggregator.name!r} ({aggregator.source}) has no slab form, so it cannot score volumes "
                "larger than a batch, which are read in z-slabs; give the aggregator `slabs=SlabForm(...)` "
                "(docs/plugins.md) or score with a larger batch",
                parameter="aggregations",
            )
    if conventions.ace_scope == "per-image":
        raise UQEvalError(
            "ace_scope 'per-image' needs every voxel of a volume at once for its equal-mass bins, and these volumes "
            "are larger than a batch and read in z-slabs; use ace_scope 'pooled' or score with a larger batch",
            parameter="conventions",
        )


class VolumeStatistics:
    """One volume's :class:`~uqeval.image_statistics.ImageStatistics`, added slab by slab in ``z`` order.

    Parameters
    ----------
    shape : (z, y, x)
        The volume's shape.
    conventions, aggregations, background, eu_scale, thresholds, platt, pavpu_thresholds
        As for :func:`~uqeval.image_statistics.image_statistics`.
    histogram_group : int
        The pooled equal-mass histogram table the volume's voxels go to (``-1``: none).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        conventions: Conventions,
        aggregations: Sequence[Aggregator],
        background: int = 0,
        eu_scale: float = 1.0,
        thresholds: Mapping[str, float] | None = None,
        platt: Mapping[str, PlattFit] | None = None,
        pavpu_thresholds: Mapping[str, float] | None = None,
        histogram_group: int = -1,
    ) -> None:
        check_streamable(aggregations, conventions)
        self.shape = tuple(shape)
        self.conventions, self.aggregations, self.background = conventions, tuple(aggregations), background
        self.eu_scale, self.platt, self.pavpu_thresholds = eu_scale, platt or {}, pavpu_thresholds or {}
        self.histogram_group = histogram_group
        self._parameters = {
            measure: AggregationParameters(
                background=background,
                patch_size=conventions.patch_size,
                threshold=(thresholds or {}).get(measure),
            )
            for measure in MEASURES
        }
        depth = self.shape[0]
        self._halo_planes = max(
            [aggregator.slabs.halo(self._parameters["au"], depth) for aggregator in self.aggregations] + [0]
        )
        self._previous: dict[str, np.ndarray] = {}
        self._sums = dict.fromkeys(MEASURES, 0.0)
        self._parts: dict[tuple[str, str], np.ndarray | None] = {
            (aggregator.name, measure): None for aggregator in self.aggregations for measure in MEASURES
        }
        self._moments = {measure: PearsonMoments() for measure in MEASURES}
        self._has_raters = False
        self._tables: dict[str, np.ndarray] = {}
        self._pavpu = {measure: np.zeros((1, 3), dtype=np.int64) for measure in MEASURES}
        # The volume's pooled histogram cells, one dense table per measure (a few MB):
        # the slabs' cells overlap, so keeping them as lists would grow with the slabs.
        self._histograms: dict[str, ConfidenceHistogram] = {}
        self._shown: dict[str, tuple[float, int, dict[str, np.ndarray]]] = {}
        self._z = 0

    def add(self, maps: Mapping[str, np.ndarray], raters: RaterStatistics | None = None) -> None:
        """Add the next slab: ``maps`` ``au``, ``eu``, ``tu``, ``pred`` (planes, y, x) as
        decomposed (and ``mean`` (class, planes, y, x) to keep the shown slice), ``raters``
        of the same planes."""
        planes = maps["au"].shape[0]
        for measure in MEASURES:
            self._sums[measure] += float(np.sum(maps[measure], dtype=np.float64))
        if "mean" in maps:
            self._keep_shown(maps)
        scaled = rescaled(maps, self.eu_scale)
        # Each map with the last planes of the slabs before it, joined once per slab.
        joined = {name: self._with_halo(scaled[name], name) for name in (*MEASURES, "pred")}
        pred = joined["pred"]
        for measure in MEASURES:
            u = joined[measure]
            available = u.shape[0] - planes
            for aggregator in self.aggregations:
                form = aggregator.slabs
                halo = min(form.halo(self._parameters[measure], self.shape[0]), available)
                start = available - halo
                partial = form.partial(u[start:], pred[start:], halo, self._parameters[measure], self.shape[0])
                key = (aggregator.name, measure)
                self._parts[key] = form.combine(self._parts[key], partial)
        if raters is not None:
            self._add_raters(scaled, raters)
        if self._halo_planes:
            self._previous = {name: array[-self._halo_planes :].copy() for name, array in joined.items()}
        self._z += planes

    def _with_halo(self, slab: np.ndarray, name: str) -> np.ndarray:
        held = self._previous.get(name)
        return slab if held is None or not len(held) else np.concatenate([held, slab])

    def _add_raters(self, scaled: Mapping[str, np.ndarray], raters: RaterStatistics) -> None:
        self._has_raters = True
        for measure in MEASURES:
            self._moments[measure].add(raters.variance, scaled[measure], raters.valid)
            if self.pavpu_thresholds:
                threshold = self.pavpu_thresholds[measure]
                self._pavpu[measure] += pavpu_counts(
                    scaled[measure][None], raters.agree[None], raters.valid[None], threshold
                )
        if not self.platt:
            return
        for measure in MEASURES:
            u = scaled[measure][None]
            confidence = self.platt[measure].confidence(u)
            table = CalibrationTable.from_maps(
                u,
                raters.agree[None],
                raters.valid[None],
                self.platt[measure],
                bins=self.conventions.calibration_bins,
                confidence=confidence,
            ).table
            self._tables[measure] = table if measure not in self._tables else self._tables[measure] + table
            if self.histogram_group >= 0:
                cells, rows = sparse_confidence_histogram(
                    u,
                    raters.agree[None],
                    raters.valid[None],
                    self.platt[measure],
                    np.zeros(1, dtype=np.int64),
                    1,
                    confidence=confidence,
                )
                if measure not in self._histograms:
                    self._histograms[measure] = ConfidenceHistogram(1)
                self._histograms[measure].add_sparse((cells, rows))

    def _keep_shown(self, maps: Mapping[str, np.ndarray]) -> None:
        """Keep the plane with the most EU, and the one with the most TU, seen so far
        (the first on ties, as :func:`~uqeval.image_statistics.shown_slice` picks)."""
        for measure in ("eu", "tu"):
            by_plane = np.sum(maps[measure], axis=(1, 2), dtype=np.float64)
            best = int(np.argmax(by_plane))
            held = self._shown.get(measure)
            if held is None or by_plane[best] > held[0]:
                plane = {
                    name: maps[name][:, best] if name == "mean" else maps[name][best] for name in ("mean", *MEASURES)
                }
                self._shown[measure] = (float(by_plane[best]), self._z + best, {k: v.copy() for k, v in plane.items()})

    def example(self, position: int, image_id: str) -> ExampleMaps:
        """The volume's maps at the slice its figure shows (``mean`` must have come with each slab)."""
        if not self._shown:
            raise UQEvalError("the example maps need the mean prediction of each slab")
        # The most EU, unless EU is 0 on every plane: then the most TU.
        _, z, maps = self._shown["eu"] if self._shown["eu"][0] > 0 else self._shown["tu"]
        return ExampleMaps(position, image_id, **maps, z=z)

    def result(self) -> tuple[ImageStatistics, dict[str, tuple[np.ndarray, np.ndarray]] | None]:
        """The volume's statistics (one image), and its pooled histogram cells per measure
        (None without a histogram group or Platt fits)."""
        if self._z != self.shape[0]:
            raise UQEvalError(f"a volume of depth {self.shape[0]} was given {self._z} planes")
        n_voxels = float(np.prod(self.shape))
        means = {measure: np.array([self._sums[measure] / n_voxels]) for measure in MEASURES}
        scores: dict[str, dict[str, np.ndarray]] = {}
        fallbacks: dict[str, np.ndarray] = {}
        for aggregator in self.aggregations:
            form = aggregator.slabs
            scores[aggregator.name] = {
                measure: np.array(
                    [form.finish(self._parts[aggregator.name, measure], self._parameters[measure], self.shape)],
                    dtype=np.float64,
                )
                for measure in MEASURES
            }
            if aggregator.fallback is not None:
                if form.falls_back is None:
                    raise UQEvalError(
                        f"aggregation {aggregator.name!r} has a fallback but its slab form cannot tell it"
                    )
                parts = self._parts[aggregator.name, "au"]
                fallbacks[aggregator.name] = np.array([form.falls_back(parts, self._parameters["au"])])
        correlations = calibration = tables = None
        if self._has_raters:
            factor = self.conventions.ncc_factor
            correlations = {measure: self._moments[measure].correlation(factor=factor) for measure in MEASURES}
            if self.platt:
                tables = {measure: CalibrationTable(self._tables[measure]) for measure in MEASURES}
                calibration = {
                    measure: ImageCalibration.of(table, all_correct=self.conventions.all_correct_image)
                    for measure, table in tables.items()
                }
        histograms = None
        if self.histogram_group >= 0 and self._histograms:
            histograms = {}
            for measure, histogram in self._histograms.items():
                cells, rows = histogram.sparse()
                cells[:, 0] = self.histogram_group
                histograms[measure] = (cells, rows)
        pavpu = self._pavpu if self._has_raters and self.pavpu_thresholds else None
        statistics = ImageStatistics(
            means, scores, correlations, calibration, fallbacks=fallbacks, tables=tables, pavpu=pavpu
        )
        return statistics, histograms
