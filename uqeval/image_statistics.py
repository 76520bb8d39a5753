"""Per-image statistics: everything the task summaries need, computed a batch at a time.

A batch of decomposed maps (and the raters' labels) becomes small per-image results —
aggregated scores, NCC, calibration bin tables, segmentation scores — that
concatenate across batches, and the full maps of the few example images a report shows
(:class:`ExampleMaps`). Parameters fitted on calibration images (the EU scale,
the threshold ``τ``, Platt scaling) come in as plain values; they are fitted in
:mod:`uqeval.scoring.fitting`. The scoring engine (:mod:`uqeval.scoring.engine`) calls
these per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from uqeval.aggregation import AggregationParameters, Aggregator, spatial_axes
from uqeval.conventions import Conventions
from uqeval.metrics.ambiguity import Correlation, RaterStatistics, ncc
from uqeval.metrics.calibration import CalibrationTable, ImageCalibration, PlattFit
from uqeval.metrics.pavpu import pavpu_counts
from uqeval.metrics.predictive import PredictiveSums
from uqeval.metrics.segmentation import SegmentationQuality
from uqeval.names import MEASURES


def rescaled(maps: Mapping[str, np.ndarray], eu_scale: float) -> dict[str, np.ndarray]:
    """Maps with ``EU' = r·EU`` and ``TU' = AU + EU'`` (unchanged when ``r = 1``)."""
    maps = dict(maps)
    if eu_scale != 1.0:
        maps["eu"] = (maps["eu"] * np.float32(eu_scale)).astype(np.float32)
        maps["tu"] = maps["au"] + maps["eu"]
    return maps


@dataclass(frozen=True)
class ExampleMaps:
    """The maps of one image kept for the report's panel (nats; ``mean`` is (class, y, x)).

    ``input`` is the image's input pixels (channel, y, x) when the source has them, and
    ``labels`` its raters' label maps (rater, y, x) when it has those; else None. Of a
    volume, one z-slice is kept (:func:`shown_slice`), and ``z`` says which. A measure
    that a maps store does not give is None.
    """

    position: int
    image_id: str
    mean: np.ndarray = field(repr=False)
    au: np.ndarray | None = field(repr=False)
    eu: np.ndarray | None = field(repr=False)
    tu: np.ndarray | None = field(repr=False)
    domain: str = ""
    input: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    z: int | None = None


def shown_slice(eu: np.ndarray, tu: np.ndarray) -> int:
    """The z-slice of a volume (z, y, x) that its figure shows: the one with the most EU,
    what the model does not know, or with the most TU when EU is 0 everywhere (the first
    such slice on ties).

    >>> eu = np.zeros((3, 2, 2)); tu = np.ones((3, 2, 2)); tu[1] = 2
    >>> shown_slice(eu, tu), shown_slice(eu + np.arange(3)[:, None, None], tu)
    (1, 2)
    """
    by_slice = np.sum(eu, axis=(1, 2), dtype=np.float64)
    if not by_slice.any():
        by_slice = np.sum(tu, axis=(1, 2), dtype=np.float64)
    return int(np.argmax(by_slice))


@dataclass
class ImageStatistics:
    """Per-image results of a batch of images; every array has the image axis first.

    Attributes
    ----------
    means : dict
        Mean AU, EU and TU per image, before any EU rescaling (nats per pixel or voxel).
        Every dict by measure holds the measures scored: all three, or those a maps
        store gives.
    scores : dict
        ``scores[aggregation][measure]``: the image scores.
    ncc : dict or None
        :class:`~uqeval.metrics.ambiguity.Correlation` per measure (None without labels).
    calibration : dict or None
        :class:`~uqeval.metrics.calibration.ImageCalibration` per measure: each
        image's own ACE, ECE and equal-mass ACE (None without labels or Platt fits).
    segmentation : SegmentationQuality or None
    risk : (image,) float64 or None
        Failure risk, 1 − mean Dice of ``pred`` against the raters
        (:func:`uqeval.metrics.failure.failure_risk`; NaN without a rater; None
        without labels).
    pavpu : dict or None
        Per measure, the (image, 3) int64 PAvPU counts of each image
        (:func:`uqeval.metrics.pavpu.pavpu_counts`; None without labels or PAvPU's ``τ``).
    tasks : dict
        ``tasks[task][name]``: the (image, ...) float64 sums a task's own ``statistics``
        function gives (:class:`uqeval.tasks.Task`), for the tasks that have one.
    predictive : PredictiveSums or None
        The sums of the ``pq`` metrics of each image
        (:class:`~uqeval.metrics.predictive.PredictiveSums`: pairs, Brier and NLL sums,
        the 20-bin ECE table, before and after temperature scaling); None without
        labels or when ``pq`` is not scored.
    sample_scores : dict or None
        Per sample score (``pairwise_dice``, ``cov``), the (image,) float64 image scores
        computed from the samples themselves (:mod:`uqeval.metrics.sample_scores`);
        None without samples (a maps store) or without a task that ranks images.
    fallbacks : dict
        ``fallbacks[aggregation]``: (image,) bool, the images that aggregation scored
        by its fallback convention (:class:`~uqeval.aggregation.AggregationFallback`),
        for the aggregations that have one.
    tables : dict or None
        :class:`~uqeval.metrics.calibration.CalibrationTable` per measure, the bin
        tables of one batch: the engine folds them into per-split sums
        (:mod:`uqeval.scoring.pooling`) and drops them, so that they do not grow with
        the image count. Not kept by :meth:`take` and :meth:`concatenate`.
    """

    means: dict[str, np.ndarray]
    scores: dict[str, dict[str, np.ndarray]]
    ncc: dict[str, Correlation] | None = None
    calibration: dict[str, CalibrationTable] | None = None
    segmentation: SegmentationQuality | None = None
    risk: np.ndarray | None = None
    fallbacks: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, CalibrationTable] | None = field(default=None, repr=False)
    pavpu: dict[str, np.ndarray] | None = None
    tasks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    predictive: PredictiveSums | None = None
    sample_scores: dict[str, np.ndarray] | None = None

    @property
    def n_images(self) -> int:
        return len(next(iter(self.means.values())))

    def take(self, indices: np.ndarray) -> ImageStatistics:
        """The statistics of some images, in the order of ``indices`` (positions or a boolean mask)."""
        scores = {
            aggregation: {measure: values[indices] for measure, values in by_measure.items()}
            for aggregation, by_measure in self.scores.items()
        }
        correlations = None
        if self.ncc is not None:
            correlations = {
                measure: Correlation(correlation.correlation[indices], correlation.state[indices])
                for measure, correlation in self.ncc.items()
            }
        calibration = None
        if self.calibration is not None:
            calibration = {measure: table.take(indices) for measure, table in self.calibration.items()}
        segmentation = None
        if self.segmentation is not None:
            segmentation = SegmentationQuality(
                *(getattr(self.segmentation, name)[indices] for name in ("dice", "ged", "hungarian_iou"))
            )
        means = {name: values[indices] for name, values in self.means.items()}
        risk = None if self.risk is None else self.risk[indices]
        fallbacks = {aggregation: images[indices] for aggregation, images in self.fallbacks.items()}
        pavpu = None if self.pavpu is None else {measure: counts[indices] for measure, counts in self.pavpu.items()}
        tasks = {task: {name: values[indices] for name, values in sums.items()} for task, sums in self.tasks.items()}
        predictive = None if self.predictive is None else self.predictive.take(indices)
        sample_scores = None
        if self.sample_scores is not None:
            sample_scores = {name: values[indices] for name, values in self.sample_scores.items()}
        return ImageStatistics(
            means,
            scores,
            correlations,
            calibration,
            segmentation,
            risk,
            fallbacks,
            pavpu=pavpu,
            tasks=tasks,
            predictive=predictive,
            sample_scores=sample_scores,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[ImageStatistics]) -> ImageStatistics:
        """Join the statistics of consecutive batches."""
        first = parts[0]

        def join(get):
            return np.concatenate([get(part) for part in parts])

        means = {name: join(lambda part, name=name: part.means[name]) for name in first.means}
        scores = {
            aggregation: {
                measure: join(lambda part, a=aggregation, m=measure: part.scores[a][m]) for measure in by_measure
            }
            for aggregation, by_measure in first.scores.items()
        }
        correlations = None
        if first.ncc is not None:
            correlations = {
                measure: Correlation(
                    join(lambda part, m=measure: part.ncc[m].correlation),
                    join(lambda part, m=measure: part.ncc[m].state),
                )
                for measure in first.ncc
            }
        calibration = None
        if first.calibration is not None:
            calibration = {
                measure: ImageCalibration.concatenate([part.calibration[measure] for part in parts])
                for measure in first.calibration
            }
        segmentation = None
        if first.segmentation is not None:
            segmentation = SegmentationQuality(
                *(
                    join(lambda part, name=name: getattr(part.segmentation, name))
                    for name in ("dice", "ged", "hungarian_iou")
                )
            )
        risk = None if first.risk is None else join(lambda part: part.risk)
        fallbacks = {
            aggregation: join(lambda part, a=aggregation: part.fallbacks[a]) for aggregation in first.fallbacks
        }
        pavpu = None
        if first.pavpu is not None:
            pavpu = {measure: join(lambda part, m=measure: part.pavpu[m]) for measure in first.pavpu}
        tasks = {
            task: {name: join(lambda part, t=task, n=name: part.tasks[t][n]) for name in sums}
            for task, sums in first.tasks.items()
        }
        predictive = None
        if first.predictive is not None:
            predictive = PredictiveSums.concatenate([part.predictive for part in parts])
        sample_scores = None
        if first.sample_scores is not None:
            sample_scores = {name: join(lambda part, n=name: part.sample_scores[n]) for name in first.sample_scores}
        return cls(
            means,
            scores,
            correlations,
            calibration,
            segmentation,
            risk,
            fallbacks,
            pavpu=pavpu,
            tasks=tasks,
            predictive=predictive,
            sample_scores=sample_scores,
        )


def image_statistics(
    maps: Mapping[str, np.ndarray],
    *,
    conventions: Conventions,
    aggregations: Sequence[Aggregator],
    raters: RaterStatistics | None = None,
    background: int = 0,
    confidence: Mapping[str, np.ndarray] | None = None,
    eu_scale: float = 1.0,
    thresholds: Mapping[str, float] | None = None,
    platt: Mapping[str, PlattFit] | None = None,
    pavpu_thresholds: Mapping[str, float] | None = None,
) -> ImageStatistics:
    """Per-image results of one batch (segmentation quality is added by the caller).

    Parameters
    ----------
    maps : mapping
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x), or (image, z, y, x) for volumes, as from
        :func:`uqeval.decomposition.decompose_batch`.
    aggregations : sequence of Aggregator
        Strategies to score each measure with, already resolved.
    raters : RaterStatistics, optional
        For NCC and calibration.
    background : int
        Background class index.
    confidence : mapping, optional
        Per measure, the Platt confidence of every pixel (``platt[measure]`` applied
        to the rescaled map), when the caller has it already.
    eu_scale : float
        ``r`` of EU rescaling: the scores, NCC and calibration see ``EU' = r·EU`` and
        ``TU' = AU + EU'`` (:func:`rescaled`).
    thresholds : mapping, optional
        ``τ`` per measure, needed by a fitted aggregation.
    platt : mapping, optional
        :class:`~uqeval.metrics.calibration.PlattFit` per measure; calibration is
        skipped without them.
    pavpu_thresholds : mapping, optional
        PAvPU's ``τ`` per measure; PAvPU's counts are skipped without them.
    """
    means = {measure: maps[measure].mean(axis=spatial_axes(maps[measure]), dtype=np.float64) for measure in MEASURES}
    maps = rescaled(maps, eu_scale)
    scores: dict[str, dict[str, np.ndarray]] = {}
    fallbacks: dict[str, np.ndarray] = {}
    for aggregator in aggregations:
        if aggregator.fallback is not None:
            parameters = AggregationParameters(background=background, patch_size=conventions.patch_size)
            fallbacks[aggregator.name] = np.asarray(aggregator.fallback.where(maps["pred"], parameters), dtype=bool)
        scores[aggregator.name] = {}
        for measure in MEASURES:
            parameters = AggregationParameters(
                background=background,
                patch_size=conventions.patch_size,
                threshold=(thresholds or {}).get(measure) if aggregator.fitted else None,
            )
            scores[aggregator.name][measure] = aggregator(maps[measure], maps["pred"], parameters)
    correlations = calibration = tables = pavpu = None
    if raters is not None:
        if pavpu_thresholds:
            pavpu = {
                measure: pavpu_counts(maps[measure], raters.agree, raters.valid, pavpu_thresholds[measure])
                for measure in MEASURES
            }
        correlations = {
            measure: ncc(raters.variance, maps[measure], raters.valid, factor=conventions.ncc_factor)
            for measure in MEASURES
        }
        if platt:
            tables = {
                measure: CalibrationTable.from_maps(
                    maps[measure],
                    raters.agree,
                    raters.valid,
                    platt[measure],
                    bins=conventions.calibration_bins,
                    equal_mass=conventions.ace_scope == "per-image",
                    confidence=None if confidence is None else confidence[measure],
                )
                for measure in MEASURES
            }
            calibration = {
                measure: ImageCalibration.of(table, all_correct=conventions.all_correct_image)
                for measure, table in tables.items()
            }
    return ImageStatistics(means, scores, correlations, calibration, fallbacks=fallbacks, tables=tables, pavpu=pavpu)
