"""One batch of images: decomposed, then scored with the fits, at once or after the fit.

A batch read before the fits exist (it holds images fitted on) becomes a
:class:`DecomposedBatch`: its maps, ready to spill, and what needs no fit. Scored with
the fits in hand, a batch becomes a :class:`ScoredBatch`: small per-image results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uqeval.aggregation import Aggregator
from uqeval.conventions import Conventions
from uqeval.decomposition import decompose_batch
from uqeval.image_statistics import ExampleMaps, ImageStatistics, image_statistics, rescaled, shown_slice
from uqeval.metrics.ambiguity import RaterStatistics, rater_statistics
from uqeval.metrics.calibration import sparse_confidence_histogram
from uqeval.metrics.failure import failure_risk
from uqeval.metrics.predictive import predictive_sums
from uqeval.metrics.sample_scores import sample_scores
from uqeval.metrics.segmentation import SegmentationQuality, segmentation_quality
from uqeval.names import MEASURES
from uqeval.scoring.fitting import FitSetup, Fitted, read_sums
from uqeval.scoring.sources import Loaded
from uqeval.scoring.task_sums import task_sums
from uqeval.tasks import Task


@dataclass(frozen=True)
class BatchOptions:
    """What each batch computes (the same on every worker).

    Attributes
    ----------
    failure_risk : bool
        Compute each image's failure risk (for FD).
    n_groups : int
        Tables of the pooled equal-mass ACE histograms (one per test domain; 0: none).
    tasks : tuple of Task
        The tasks scored that bring their own per-image ``statistics``.
    predictive : bool
        Score ``pq``: a batch with labels keeps ``mean`` and ``labels`` among its maps
        (spilled with them when it holds images fitted on).
    cells_by_image : bool
        Give the pooled equal-mass histograms' cells image by image (for the bootstrap's
        per-image histograms, :class:`uqeval.scoring.bootstrap.ImagePools`).
    sample_scores : bool
        Compute the image scores of the samples themselves
        (:mod:`uqeval.metrics.sample_scores`) of each batch that has its probabilities.
    """

    n_classes: int
    background: int
    conventions: Conventions
    aggregations: tuple[Aggregator, ...]
    segmentation: bool
    failure_risk: bool = False
    n_groups: int = 0
    tasks: tuple[Task, ...] = ()
    predictive: bool = False
    cells_by_image: bool = False
    sample_scores: bool = False


@dataclass
class DecomposedBatch:
    """A batch (positions ``indices``) decomposed and reduced as far as it goes without the fits.

    Attributes
    ----------
    maps : dict or None
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x), and for ``pq``
        (:attr:`BatchOptions.predictive`) ``mean`` (image, class, y, x) and the raters'
        ``labels`` (image, rater, y, x); None once spilled.
    raters : RaterStatistics or None
        None without labels, or once spilled.
    sample_scores : dict or None
        ``pairwise_dice`` and ``cov`` per image (:mod:`uqeval.metrics.sample_scores`).
    fit_sums : dict
        The ``read`` sums of each fitted quantity over its images fitted on
        (:func:`uqeval.scoring.fitting.read_sums`).
    """

    indices: np.ndarray
    maps: dict[str, np.ndarray] | None
    raters: RaterStatistics | None
    segmentation: SegmentationQuality | None = None
    risk: np.ndarray | None = None
    sample_scores: dict[str, np.ndarray] | None = None
    fit_sums: dict[str, Any] = field(default_factory=dict)
    examples: list[ExampleMaps] = field(default_factory=list)
    task_sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class ScoredBatch:
    """A batch (positions ``indices``) reduced to per-image results.

    Attributes
    ----------
    histograms : dict or None
        Per measure, the batch's sparse cells of the pooled equal-mass histograms.
    cells_by_image : bool
        The cells' first column is the image's place in the batch, not its histogram
        table (:attr:`BatchOptions.cells_by_image`).
    """

    indices: np.ndarray
    statistics: ImageStatistics
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    examples: list[ExampleMaps] = field(default_factory=list)
    cells_by_image: bool = False


def raters_of(
    loaded: Loaded, maps: Mapping[str, np.ndarray], image_ids: Sequence[object], options: BatchOptions
) -> RaterStatistics | None:
    """The rater statistics of a batch (or slab) as read, against its decomposed ``pred``;
    None without labels."""
    if loaded.labels is None:
        return None
    return rater_statistics(
        loaded.labels,
        maps["pred"],
        options.n_classes,
        image_ids=image_ids,
        reference=options.conventions.amb_reference,
    )


def decomposed_batch(
    loaded: Loaded,
    indices: np.ndarray,
    *,
    ids: np.ndarray,
    options: BatchOptions,
    fit: FitSetup | None = None,
    examples: Sequence[int] = (),
) -> DecomposedBatch:
    """Decompose one batch (unless it comes decomposed) and reduce what needs no fit.

    Parameters
    ----------
    loaded : Loaded
        The batch's probabilities (image, eu, au, class, y, x) or maps, and labels.
    indices : (image,) int
        The batch's positions in the source.
    ids : (source image,)
        Image ids, for messages.
    fit : FitSetup, optional
        For a batch read before the fits: the ``read`` sums of its images fitted on
        are taken.
    examples : sequence of int
        Positions of images whose maps to keep for the report.
    """
    image_ids = ids[indices]
    maps = loaded.maps if loaded.maps is not None else decompose_batch(loaded.cubes, image_ids)
    raters = raters_of(loaded, maps, image_ids, options)
    result = DecomposedBatch(indices, {name: maps[name] for name in (*MEASURES, "pred")}, raters)
    if options.predictive and loaded.labels is not None:
        # A copy of the labels: they were read into a buffer that the next batch reuses.
        result.maps.update(mean=maps["mean"], labels=loaded.labels.copy())
    if "mean" in maps:
        for local, position in enumerate(indices.tolist()):
            if position in examples:
                result.examples.append(example_maps(maps, local, position, str(image_ids[local])))
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
            empty_pair=options.conventions.empty_pair,
            matching=options.conventions.hungarian_matching,
        )
    if options.failure_risk and loaded.labels is not None:
        result.risk = failure_risk(
            maps["pred"],
            loaded.labels,
            options.n_classes,
            background=options.background,
            empty=options.conventions.empty_iou,
        )
    result.task_sums = task_sums(
        options.tasks, loaded, maps, n_classes=options.n_classes, background=options.background
    )
    if options.sample_scores and loaded.cubes is not None:
        result.sample_scores = sample_scores(loaded.cubes, options.background)
    if fit is not None:
        result.fit_sums = read_sums(fit, result.maps, raters, loaded.cubes, fit.images[indices])
    return result


def example_maps(maps: dict[str, np.ndarray], local: int, position: int, image_id: str) -> ExampleMaps:
    """The maps of image ``local`` of a batch kept for the report; of a volume, the slice
    :func:`~uqeval.image_statistics.shown_slice` picks."""
    picked = {name: maps[name][local] for name in ("mean", *MEASURES)}
    z = None
    if picked["au"].ndim == 3:
        z = shown_slice(picked["eu"], picked["tu"])
        picked = {name: array[:, z] if name == "mean" else array[z] for name, array in picked.items()}
    return ExampleMaps(position, image_id, **{name: array.copy() for name, array in picked.items()}, z=z)


def reduce_batch(
    loaded: Loaded,
    indices: np.ndarray,
    *,
    fitted: Fitted,
    ids: np.ndarray,
    options: BatchOptions,
    examples: Sequence[int] = (),
    groups: np.ndarray | None = None,
) -> ScoredBatch:
    """Decompose one batch and score it with the fits in hand (:func:`decomposed_batch`, :func:`score_batch`)."""
    return score_batch(
        decomposed_batch(loaded, indices, ids=ids, options=options, examples=examples),
        fitted=fitted,
        options=options,
        groups=groups,
    )


def score_batch(
    batch: DecomposedBatch,
    *,
    fitted: Fitted,
    options: BatchOptions,
    groups: np.ndarray | None = None,
) -> ScoredBatch:
    """Give a batch its statistics, from its maps, with the fits in hand.

    ``groups`` (source image,) names each image's equal-mass histogram table (``-1``: none).
    """
    maps, raters = batch.maps, batch.raters
    groups = None if groups is None else groups[batch.indices]
    pooled = bool(options.n_groups and groups is not None and raters is not None and fitted.platt)
    pooled = pooled and bool((groups >= 0).any())
    confidence = None
    if pooled:
        # The Platt confidences serve the per-image tables and the pooled histograms alike.
        scaled = rescaled(maps, fitted.eu_scale)
        confidence = {measure: fitted.platt[measure].confidence(scaled[measure]) for measure in MEASURES}
    statistics = image_statistics(
        maps,
        eu_scale=fitted.eu_scale,
        thresholds=fitted.thresholds,
        platt=fitted.platt,
        pavpu_thresholds=fitted.pavpu_thresholds,
        conventions=options.conventions,
        aggregations=options.aggregations,
        raters=raters,
        background=options.background,
        confidence=confidence,
    )
    statistics.segmentation = batch.segmentation
    statistics.risk = batch.risk
    statistics.tasks = batch.task_sums
    if "labels" in maps and raters is not None:
        statistics.predictive = predictive_sums(
            maps["mean"],
            maps["labels"],
            raters.agree,
            raters.valid,
            temperature=None if fitted.temperature is None else fitted.temperature.temperature,
        )
    statistics.sample_scores = batch.sample_scores
    result = ScoredBatch(batch.indices, statistics, examples=batch.examples)
    if pooled:
        # Tables only for the groups in this batch (usually one), renumbered from 0.
        present = np.unique(groups[groups >= 0])
        local = np.where(groups >= 0, np.searchsorted(present, groups), -1)
        result.histograms = {}
        if options.cells_by_image:
            result.histograms = _cells_by_image(scaled, raters, fitted, confidence, groups)
            result.cells_by_image = True
            return result
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
    return result


def _cells_by_image(
    scaled: Mapping[str, np.ndarray],
    raters: RaterStatistics,
    fitted: Fitted,
    confidence: Mapping[str, np.ndarray],
    groups: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per measure, the pooled equal-mass histogram cells of each image with a table, the
    first column the image's place in the batch: the same integer sums as by table."""
    histograms = {}
    for measure in MEASURES:
        parts_cells, parts_rows = [], []
        for local in np.flatnonzero(groups >= 0):
            one = slice(local, local + 1)
            cells, rows = sparse_confidence_histogram(
                scaled[measure][one],
                raters.agree[one],
                raters.valid[one],
                fitted.platt[measure],
                np.zeros(1, dtype=np.int64),
                1,
                confidence=confidence[measure][one],
            )
            cells[:, 0] = local
            parts_cells.append(cells)
            parts_rows.append(rows)
        histograms[measure] = (np.concatenate(parts_cells), np.concatenate(parts_rows))
    return histograms
