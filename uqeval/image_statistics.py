"""Per-image statistics: everything the task summaries need, computed a batch at a time.

A batch of decomposed maps (and the raters' labels) becomes small per-image results —
aggregated scores, NCC, calibration bin tables, segmentation scores — that
concatenate across batches. Parameters fitted on calibration images (Platt scaling,
the threshold ``τ``, the EU scale) come in as a :class:`Fitted`; :func:`fit` finds
them. The scoring engine (:mod:`uqeval.scoring.engine`) calls these per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from uqeval.aggregation import AggregationParameters, Aggregator
from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.metrics.ambiguity import Correlation, RaterStatistics, ncc
from uqeval.metrics.calibration import CalibrationTable, PlattFit, PlattTable
from uqeval.metrics.segmentation import SegmentationQuality
from uqeval.names import MEASURES


@dataclass(frozen=True)
class Fitted:
    """Parameters fitted on the calibration images.

    Attributes
    ----------
    thresholds : dict
        ``τ`` per measure, for the ``threshold`` aggregation.
    platt : dict
        :class:`~uqeval.metrics.calibration.PlattFit` per measure.
    eu_scale : float
        ``r`` of EU rescaling (1 when off).
    n_images : int
        Images fitted on.
    images_from : str
        ``calibration`` or, when the store has no calibration images, ``test``.
    """

    thresholds: dict[str, float] = field(default_factory=dict)
    platt: dict[str, PlattFit] = field(default_factory=dict)
    eu_scale: float = 1.0
    n_images: int = 0
    images_from: str = "calibration"

    def to_dict(self) -> dict:
        return {
            "images_from": self.images_from,
            "n_images": self.n_images,
            "eu_scale": self.eu_scale,
            "thresholds": dict(self.thresholds),
            "platt": {
                measure: {"slope": fit.slope, "intercept": fit.intercept, "n_pixels": fit.n_pixels}
                for measure, fit in self.platt.items()
            },
        }


def rescaled(maps: Mapping[str, np.ndarray], eu_scale: float) -> dict[str, np.ndarray]:
    """Maps with ``EU' = r·EU`` and ``TU' = AU + EU'`` (unchanged when ``r = 1``)."""
    maps = dict(maps)
    if eu_scale != 1.0:
        maps["eu"] = (maps["eu"] * np.float32(eu_scale)).astype(np.float32)
        maps["tu"] = maps["au"] + maps["eu"]
    return maps


def member_background_fractions(cubes: np.ndarray, background: int = 0) -> np.ndarray:
    """(image, member) share of pixels that each EU member's mean prediction puts in
    ``background``: the argmax over classes of ``mean_a p[e, a]`` (first class on ties).

    ``cubes`` is (image, eu, au, class, y, x); with ``eu = 1`` the samples are the
    members, as in the decomposition.
    """
    n_images, n_members, n_samples = cubes.shape[:3]
    if n_members == 1:
        cubes = cubes.reshape(n_images, n_samples, 1, *cubes.shape[3:])
    fractions = np.empty(cubes.shape[:2])
    for member in range(cubes.shape[1]):
        member_mean = cubes[:, member].mean(axis=1, dtype=np.float32)
        fractions[:, member] = (member_mean.argmax(axis=1) == background).mean(axis=(1, 2))
    return fractions


def eu_scale(total_au: float, total_eu: float) -> float:
    """``r = ΣAU / ΣEU`` over the calibration pixels, for EU rescaling."""
    if total_eu <= 0:
        raise UQEvalError("EU rescaling: EU is 0 on every calibration pixel, so it cannot be rescaled")
    return float(total_au) / float(total_eu)


class Fitter:
    """Fit ``τ`` and Platt scaling per measure on calibration maps added batch by batch.

    Platt scaling accumulates a :class:`~uqeval.metrics.calibration.PlattTable` per
    measure, so its memory does not grow with the pixels. ``τ`` is an exact quantile of
    the pooled calibration pixels, so it keeps them (4 bytes per pixel and measure,
    only when a fitted aggregation is scored).

    Parameters
    ----------
    conventions : Conventions
    background : int
    thresholds, platt : bool
        Which fits to make.
    eu_scale : float
        ``r`` of EU rescaling, applied to the maps before fitting (1 when off).
    images_from : str
        ``calibration`` or ``test``, recorded in the result.
    """

    def __init__(
        self,
        *,
        conventions: Conventions,
        background: int = 0,
        thresholds: bool = False,
        platt: bool = False,
        eu_scale: float = 1.0,
        images_from: str = "calibration",
    ) -> None:
        self.conventions = conventions
        self.background = background
        self.thresholds = thresholds
        self.platt = platt
        self.eu_scale = eu_scale
        self.images_from = images_from
        self.n_images = 0
        self._values: dict[str, list[np.ndarray]] = {measure: [] for measure in MEASURES}
        self._background_fractions: list[np.ndarray] = []
        self._tables = {measure: PlattTable() for measure in MEASURES}

    def add(self, maps: Mapping[str, np.ndarray], raters: RaterStatistics | None) -> None:
        """Add the maps (``au``, ``eu``, ``tu``, ``pred``, image first) of some calibration images.

        With the ``members`` threshold fraction, ``maps`` also holds
        ``member_background`` (image, member): the background fraction of each EU
        member's argmax (:func:`member_background_fractions`).
        """
        maps = rescaled(maps, self.eu_scale)
        self.n_images += int(maps["au"].shape[0])
        if self.thresholds:
            for measure in MEASURES:
                self._values[measure].append(np.asarray(maps[measure], dtype=np.float32).ravel())
            fractions = (maps["pred"] == self.background).mean(axis=(1, 2))[:, None]
            if self.conventions.threshold_fraction == "members":
                if "member_background" not in maps:
                    raise UQEvalError(
                        "threshold_fraction 'members' needs each member's prediction, so the probabilities; "
                        "these maps come without them"
                    )
                fractions = np.concatenate([fractions, maps["member_background"]], axis=1)
            self._background_fractions.append(fractions.ravel())
        if self.platt:
            if raters is None:
                raise UQEvalError("calibration: Platt scaling needs rater labels")
            for measure in MEASURES:
                self._tables[measure].add(maps[measure], raters.agree, raters.valid)

    def result(self) -> Fitted:
        """The fitted parameters."""
        thresholds = {}
        if self.thresholds:
            if self.n_images == 0:
                raise UQEvalError("aggregation 'threshold': no calibration images to fit τ on")
            fraction = float(np.concatenate(self._background_fractions).mean())
            for measure in MEASURES:
                values = np.concatenate(self._values[measure])
                thresholds[measure] = float(np.quantile(values, fraction, method=self.conventions.quantile_method))
        platt = {}
        if self.platt and self._tables["au"].n_pixels > 0:
            # The three fits are independent and numpy releases the GIL in their array work.
            with ThreadPoolExecutor(max_workers=len(MEASURES), thread_name_prefix="uqeval-platt") as pool:
                fits = pool.map(PlattTable.fit, [self._tables[measure] for measure in MEASURES])
                platt = dict(zip(MEASURES, fits, strict=True))
        return Fitted(thresholds, platt, self.eu_scale, self.n_images, self.images_from)


@dataclass
class ImageStatistics:
    """Per-image results of a batch of images; every array has the image axis first.

    Attributes
    ----------
    means : dict
        Mean AU, EU and TU per image, before any EU rescaling (nats per pixel).
    scores : dict
        ``scores[aggregation][measure]``: the image scores.
    ncc : dict or None
        :class:`~uqeval.metrics.ambiguity.Correlation` per measure (None without labels).
    calibration : dict or None
        :class:`~uqeval.metrics.calibration.CalibrationTable` per measure (None without
        labels or Platt fits).
    segmentation : SegmentationQuality or None
    risk : (image,) float64 or None
        Failure risk, 1 − mean Dice of ``pred`` against the raters
        (:func:`uqeval.metrics.failure.failure_risk`; NaN without a rater; None
        without labels).
    """

    means: dict[str, np.ndarray]
    scores: dict[str, dict[str, np.ndarray]]
    ncc: dict[str, Correlation] | None = None
    calibration: dict[str, CalibrationTable] | None = None
    segmentation: SegmentationQuality | None = None
    risk: np.ndarray | None = None

    @property
    def n_images(self) -> int:
        return len(self.means["au"])

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
        return ImageStatistics(means, scores, correlations, calibration, segmentation, risk)

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
                measure: CalibrationTable.concatenate([part.calibration[measure] for part in parts])
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
        return cls(means, scores, correlations, calibration, segmentation, risk)


def image_statistics(
    maps: Mapping[str, np.ndarray],
    *,
    fitted: Fitted,
    conventions: Conventions,
    aggregations: Sequence[Aggregator],
    raters: RaterStatistics | None = None,
    background: int = 0,
    confidence: Mapping[str, np.ndarray] | None = None,
) -> ImageStatistics:
    """Per-image results of one batch (segmentation quality is added by the caller).

    Parameters
    ----------
    maps : mapping
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x), as from
        :func:`uqeval.decomposition.decompose_batch`.
    fitted : Fitted
        Calibration fits: ``τ`` is needed by a fitted aggregation, Platt by calibration
        (skipped when ``fitted.platt`` is empty).
    aggregations : sequence of Aggregator
        Strategies to score each measure with, already resolved.
    raters : RaterStatistics, optional
        For NCC and calibration.
    background : int
        Background class index.
    confidence : mapping, optional
        Per measure, the Platt confidence of every pixel (``fitted.platt[measure]``
        applied to the rescaled map), when the caller has it already.
    """
    means = {measure: maps[measure].mean(axis=(1, 2), dtype=np.float64) for measure in MEASURES}
    maps = rescaled(maps, fitted.eu_scale)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for aggregator in aggregations:
        scores[aggregator.name] = {}
        for measure in MEASURES:
            parameters = AggregationParameters(
                background=background,
                patch_size=conventions.patch_size,
                threshold=fitted.thresholds.get(measure) if aggregator.fitted else None,
            )
            scores[aggregator.name][measure] = aggregator(maps[measure], maps["pred"], parameters)
    correlations = calibration = None
    if raters is not None:
        correlations = {measure: ncc(raters.variance, maps[measure], raters.valid) for measure in MEASURES}
        if fitted.platt:
            calibration = {
                measure: CalibrationTable.from_maps(
                    maps[measure],
                    raters.agree,
                    raters.valid,
                    fitted.platt[measure],
                    bins=conventions.calibration_bins,
                    equal_mass=conventions.ace_scope == "per-image",
                    confidence=None if confidence is None else confidence[measure],
                )
                for measure in MEASURES
            }
    return ImageStatistics(means, scores, correlations, calibration)
