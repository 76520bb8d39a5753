"""One batch of images: decomposed and reduced at once to small per-image results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uqeval.aggregation import Aggregator
from uqeval.conventions import Conventions
from uqeval.decomposition import decompose_batch
from uqeval.image_statistics import (
    Fitted,
    ImageStatistics,
    image_statistics,
    member_background_fractions,
    rescaled,
)
from uqeval.metrics.ambiguity import RaterStatistics, rater_statistics
from uqeval.metrics.calibration import sparse_confidence_histogram
from uqeval.metrics.failure import failure_risk
from uqeval.metrics.segmentation import SegmentationQuality, segmentation_quality
from uqeval.names import MEASURES
from uqeval.results import ExampleMaps
from uqeval.scoring.sources import Loaded


@dataclass(frozen=True)
class BatchOptions:
    """What each batch computes (the same on every worker).

    Attributes
    ----------
    failure_risk : bool
        Compute each image's failure risk (for FD).
    n_groups : int
        Tables of the pooled equal-mass ACE histograms (one per test domain; 0: none).
    member_fractions : bool
        Fitting batches carry each member's background fraction (``τ`` with the
        ``members`` threshold fraction).
    """

    n_classes: int
    background: int
    conventions: Conventions
    aggregations: tuple[Aggregator, ...]
    needs_fit: bool
    segmentation: bool
    failure_risk: bool = False
    n_groups: int = 0
    member_fractions: bool = False


@dataclass
class BatchResult:
    """The result of reading and reducing one batch of images (positions ``indices``).

    A batch of images that parameters are fitted on, read before the fits exist, has
    ``maps`` and ``raters`` (to spill) instead of ``statistics``, and ``fit_sums``: the
    AU and EU sums of each of its images fitted on (for the EU scale).
    """

    indices: np.ndarray
    statistics: ImageStatistics | None = None
    maps: dict[str, np.ndarray] | None = None
    raters: RaterStatistics | None = None
    segmentation: SegmentationQuality | None = None
    risk: np.ndarray | None = None
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    fit_sums: tuple[np.ndarray, np.ndarray] | None = None
    examples: list[ExampleMaps] = field(default_factory=list)


def reduce_batch(
    loaded: Loaded,
    indices: np.ndarray,
    fitted: Fitted | None,
    *,
    ids: np.ndarray,
    fitting: np.ndarray,
    options: BatchOptions,
    examples: Sequence[int] = (),
    groups: np.ndarray | None = None,
) -> BatchResult:
    """Decompose one batch (unless it comes decomposed) and reduce it to per-image results.

    Parameters
    ----------
    loaded : Loaded
        The batch's probabilities (image, eu, au, class, y, x) or maps, and labels.
    indices : (image,) int
        The batch's positions in the source.
    fitted : Fitted or None
        The fits, or None for a batch of images to fit on: its maps are returned
        for spilling instead of its statistics.
    ids, fitting : (source image,)
        Image ids (for messages) and which images are fitted on, for the whole source.
    examples : sequence of int
        Positions of images whose maps to keep for the report.
    groups : (source image,) int, optional
        Each image's equal-mass histogram table (``-1``: none), for the whole source.
    """
    image_ids = ids[indices]
    maps = loaded.maps if loaded.maps is not None else decompose_batch(loaded.cubes, image_ids)
    raters = None
    if loaded.labels is not None:
        raters = rater_statistics(loaded.labels, maps["pred"], options.n_classes, image_ids=image_ids)
    result = BatchResult(indices)
    if "mean" in maps:
        for local, position in enumerate(indices.tolist()):
            if position in examples:
                result.examples.append(
                    ExampleMaps(
                        position=position,
                        image_id=str(image_ids[local]),
                        mean=maps["mean"][local].copy(),
                        au=maps["au"][local].copy(),
                        eu=maps["eu"][local].copy(),
                        tu=maps["tu"][local].copy(),
                    )
                )
    if options.segmentation:
        result.segmentation = segmentation_quality(
            loaded.cubes,
            maps["pred"],
            loaded.labels,
            indices,
            background=options.background,
            n_samples=options.conventions.segmentation_samples,
            seed=options.conventions.seed,
            empty=options.conventions.empty_iou,
        )
    if options.failure_risk and loaded.labels is not None:
        result.risk = failure_risk(
            maps["pred"],
            loaded.labels,
            options.n_classes,
            background=options.background,
            empty=options.conventions.empty_iou,
        )
    batch_groups = None if groups is None else groups[indices]
    if fitted is None and options.needs_fit:
        result.maps = {name: maps[name] for name in (*MEASURES, "pred")}
        if options.member_fractions and loaded.cubes is not None:
            result.maps["member_background"] = member_background_fractions(loaded.cubes, options.background)
        result.raters = raters
        chosen = fitting[indices]
        # Per image, so that the totals do not depend on how images are batched.
        result.fit_sums = (
            np.sum(maps["au"][chosen], axis=(1, 2), dtype=np.float64),
            np.sum(maps["eu"][chosen], axis=(1, 2), dtype=np.float64),
        )
        return result
    score_batch(result, maps, raters, fitted=fitted or Fitted(), options=options, groups=batch_groups)
    return result


def score_batch(
    result: BatchResult,
    maps: dict[str, np.ndarray],
    raters: RaterStatistics | None,
    *,
    fitted: Fitted,
    options: BatchOptions,
    groups: np.ndarray | None = None,
) -> None:
    """Give a batch its statistics, from its maps, with the fits in hand.

    ``groups`` (batch image,) names each image's equal-mass histogram table (``-1``: none).
    """
    pooled = bool(options.n_groups and groups is not None and raters is not None and fitted.platt)
    pooled = pooled and bool((groups >= 0).any())
    confidence = None
    if pooled:
        # The Platt confidences serve the per-image tables and the pooled histograms alike.
        scaled = rescaled(maps, fitted.eu_scale)
        confidence = {measure: fitted.platt[measure].confidence(scaled[measure]) for measure in MEASURES}
    result.statistics = image_statistics(
        maps,
        fitted=fitted,
        conventions=options.conventions,
        aggregations=options.aggregations,
        raters=raters,
        background=options.background,
        confidence=confidence,
    )
    result.statistics.segmentation = result.segmentation
    result.statistics.risk = result.risk
    if pooled:
        # Tables only for the groups in this batch (usually one), renumbered from 0.
        present = np.unique(groups[groups >= 0])
        local = np.where(groups >= 0, np.searchsorted(present, groups), -1)
        result.histograms = {}
        for measure in MEASURES:
            cells, rows = sparse_confidence_histogram(
                scaled[measure],
                raters.agree,
                raters.valid,
                fitted.platt[measure],
                local,
                len(present),
                confidence=confidence[measure],
            )
            cells[:, 0] = present[cells[:, 0]]
            result.histograms[measure] = (cells, rows)
