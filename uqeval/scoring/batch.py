"""One batch of images: decomposed and reduced at once to small per-image results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uqeval.aggregation import Aggregator
from uqeval.conventions import Conventions
from uqeval.decomposition import decompose_batch
from uqeval.image_statistics import Fitted, ImageStatistics, image_statistics
from uqeval.metrics.ambiguity import RaterStatistics, rater_statistics
from uqeval.metrics.segmentation import SegmentationQuality, segmentation_quality
from uqeval.names import MEASURES
from uqeval.results import ExampleMaps
from uqeval.scoring.sources import Loaded


@dataclass(frozen=True)
class BatchOptions:
    """What each batch computes (the same on every worker)."""

    n_classes: int
    background: int
    conventions: Conventions
    aggregations: tuple[Aggregator, ...]
    needs_fit: bool
    segmentation: bool


@dataclass
class BatchResult:
    """The result of reading and reducing one batch of images (positions ``indices``).

    A batch of images that parameters are fitted on, read before the fits exist, has
    ``maps`` and ``raters`` (to spill) instead of ``statistics``.
    """

    indices: np.ndarray
    statistics: ImageStatistics | None = None
    maps: dict[str, np.ndarray] | None = None
    raters: RaterStatistics | None = None
    segmentation: SegmentationQuality | None = None
    fit_sums: tuple[float, float] = (0.0, 0.0)
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
    if fitted is None and options.needs_fit:
        result.maps = {name: maps[name] for name in (*MEASURES, "pred")}
        result.raters = raters
        chosen = fitting[indices]
        result.fit_sums = (
            float(np.sum(maps["au"][chosen], dtype=np.float64)),
            float(np.sum(maps["eu"][chosen], dtype=np.float64)),
        )
        return result
    score_batch(result, maps, raters, fitted=fitted or Fitted(), options=options)
    return result


def score_batch(
    result: BatchResult,
    maps: dict[str, np.ndarray],
    raters: RaterStatistics | None,
    *,
    fitted: Fitted,
    options: BatchOptions,
) -> None:
    """Give a batch its statistics, from its maps, with the fits in hand."""
    result.statistics = image_statistics(
        maps,
        fitted=fitted,
        conventions=options.conventions,
        aggregations=options.aggregations,
        raters=raters,
        background=options.background,
    )
    result.statistics.segmentation = result.segmentation
