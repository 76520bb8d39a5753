"""Volumes larger than a batch, read and scored in z-slabs, in memory for a few slabs.

When one volume's decoded probabilities exceed a batch, the engine hands out volumes,
not batches: whoever scores one (a thread here, or a dask worker) reads it slab by slab
(whole store chunks along ``z``), decomposes each slab (a maps store's slabs come
decomposed), and adds it to the volume's
statistics (:class:`uqeval.volume_statistics.VolumeStatistics`, with
:class:`~uqeval.metrics.segmentation.VolumeSegmentation` and
:class:`~uqeval.metrics.failure.VolumeRisk`).

The fits need no spill: the volumes fitted on are read once per look they need
(:mod:`uqeval.scoring.fitting`: the ``read`` look, each ``spilled`` look, PAvPU's
second one included), and once more to be scored. A look's slabs are shared
out among the workers one by one, each slab's sums made where it is read and merged in
slab order, so that a few calibration volumes keep every core busy too. Only the
calibration volumes are read more than once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from uqeval.decomposition import decompose_batch
from uqeval.image_statistics import rescaled
from uqeval.metrics.ambiguity import RaterStatistics
from uqeval.metrics.failure import VolumeRisk
from uqeval.metrics.predictive import predictive_sums
from uqeval.metrics.sample_scores import VolumeSampleScores
from uqeval.metrics.segmentation import VolumeSegmentation
from uqeval.names import MEASURES
from uqeval.scoring.batch import BatchOptions, ScoredBatch, raters_of
from uqeval.scoring.fitting import FitImages, FitSetup, Fitted, read_sums
from uqeval.scoring.sources import Loaded
from uqeval.scoring.task_sums import VolumeTaskSums
from uqeval.volume_statistics import VolumeStatistics

#: ``read_slab(z_start, z_stop) -> Loaded``: planes ``[z_start, z_stop)`` of one volume,
#: its probabilities (1, eu, au, class, planes, y, x) and labels (1, rater, planes, y, x).
SlabRead = Callable[[int, int], Loaded]
#: ``work(read_slab, position) -> result``: what is done with each volume.
VolumeWork = Callable[[SlabRead, int], Any]


def slab_ranges(depth: int, chunk_depth: int, bytes_per_plane: int, batch_bytes: int) -> list[tuple[int, int]]:
    """``[z_start, z_stop)`` of each slab of a volume: whole store chunks along ``z``, as
    many as fit in ``batch_bytes`` decoded bytes (at least one chunk).

    >>> slab_ranges(10, chunk_depth=2, bytes_per_plane=100, batch_bytes=450)
    [(0, 4), (4, 8), (8, 10)]
    """
    chunks_per_slab = max(1, batch_bytes // max(1, bytes_per_plane * chunk_depth))
    planes = chunk_depth * chunks_per_slab
    return [(start, min(start + planes, depth)) for start in range(0, depth, planes)]


def _decomposed(
    loaded: Loaded, image_id: object, options: BatchOptions
) -> tuple[dict[str, np.ndarray], RaterStatistics | None]:
    """A slab as decomposed (a maps store's slabs come decomposed), with its rater
    statistics (image axis of 1 kept)."""
    if loaded.maps is not None:
        maps = loaded.maps
    elif loaded.chunk_planes is None:
        maps = decompose_batch(loaded.cubes, [image_id])
    else:
        maps = _decomposed_chunks(loaded.cubes, image_id)
    return maps, raters_of(loaded, maps, [image_id], options)


def _decomposed_chunks(chunks: np.ndarray, image_id: object) -> dict[str, np.ndarray]:
    """The maps of a slab that came chunk by chunk (:attr:`Loaded.chunk_planes`), each
    chunk decomposed as an image of its own (every voxel alike), as (1, planes, y, x):
    the chunks' maps follow each other in ``z`` order, so only ``mean`` is moved."""
    maps = decompose_batch(chunks, [image_id] * len(chunks))
    planes = chunks.shape[0] * chunks.shape[4]
    for name in (*MEASURES, "pred"):
        maps[name] = maps[name].reshape(1, planes, *chunks.shape[5:])
    mean = np.ascontiguousarray(np.moveaxis(maps["mean"], 0, 1))
    maps["mean"] = mean.reshape(1, mean.shape[0], planes, *chunks.shape[5:])
    return maps


def _decomposed_slabs(
    read_slab: SlabRead, ranges: list[tuple[int, int]], image_id: object, options: BatchOptions
) -> Iterator[tuple[Loaded, dict[str, np.ndarray], RaterStatistics | None]]:
    """Each slab as read, decomposed, with its rater statistics."""
    for z_start, z_stop in ranges:
        loaded = read_slab(z_start, z_stop)
        yield (loaded, *_decomposed(loaded, image_id, options))


#: ``(position, z_start, z_stop)``: one slab of the volume at ``position``.
Slab = tuple[int, int, int]


def read_look(
    loaded: Loaded, slab: Slab, *, ids: np.ndarray, options: BatchOptions, setup: FitSetup
) -> tuple[Slab, dict[str, Any]]:
    """The ``read`` sums of one slab of a volume fitted on (:func:`~uqeval.scoring.fitting.read_sums`);
    :func:`joined_read_sums` joins a volume's slabs."""
    maps, raters = _decomposed(loaded, ids[slab[0]], options)
    return slab, read_sums(setup, maps, raters, loaded.in_planes().cubes, np.ones(1, dtype=bool))


def joined_read_sums(setup: FitSetup, parts: list[dict[str, Any]], planes: list[int]) -> dict[str, Any]:
    """The ``read`` sums of one volume from those of its slabs (``planes`` planes each, in
    ``z`` order): a quantity's slab sums are joined with its ``join_slabs(parts, planes)``
    when it has one (a per-image value that is a mean over voxels), else merged."""
    joined: dict[str, Any] = {}
    for quantity in setup.wanted:
        if quantity.look != "read":
            continue
        sums = [part[quantity.name] for part in parts]
        join = getattr(quantity, "join_slabs", None)
        joined[quantity.name] = join(sums, planes) if join else functools.reduce(quantity.merge, sums)
    return joined


def spilled_look(
    loaded: Loaded, slab: Slab, *, ids: np.ndarray, options: BatchOptions, setup: FitSetup
) -> tuple[Slab, dict[str, Any]]:
    """The ``spilled`` sums of one slab of a volume fitted on, on its maps as they will be
    scored (``setup.earlier`` holds the ``read`` fits), of the quantities this look adds
    to (:attr:`~uqeval.scoring.fitting.FitSetup.looking`: a further look's only those
    that asked for it)."""
    maps, raters = _decomposed(loaded, ids[slab[0]], options)
    kept = {name: maps[name] for name in (*MEASURES, "pred")}
    if setup.temperature and loaded.labels is not None:
        kept.update(mean=maps["mean"], labels=loaded.labels)
    images = FitImages(rescaled(kept, setup.earlier.eu_scale), raters)
    return slab, {quantity.name: quantity.add(quantity.empty(setup), images, setup) for quantity in setup.looking}


def in_slab_order(results: Iterable[tuple[Slab, Any]], slabs: list[Slab]) -> Iterator[tuple[Slab, Any]]:
    """The slabs' results in the order of ``slabs``, whatever order they come in: each is
    held only until every slab before it has come, so that sums merged in this order
    are the same to the last bit however the slabs were shared out."""
    order = {slab: number for number, slab in enumerate(slabs)}
    waiting: dict[int, tuple[Slab, Any]] = {}
    expected = 0
    for slab, result in results:
        waiting[order[tuple(slab)]] = (slab, result)
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1


def scored_volume(
    read_slab: SlabRead,
    position: int,
    *,
    ranges: list[tuple[int, int]],
    shape: tuple[int, int, int],
    ids: np.ndarray,
    options: BatchOptions,
    fitted: Fitted,
    groups: np.ndarray,
    examples: tuple[int, ...] = (),
) -> ScoredBatch:
    """One volume scored with the fits in hand, slab by slab: a one-image :class:`ScoredBatch`."""
    conventions = options.conventions
    statistics = VolumeStatistics(
        shape,
        conventions=conventions,
        aggregations=options.aggregations,
        background=options.background,
        eu_scale=fitted.eu_scale,
        thresholds=fitted.thresholds,
        platt=fitted.platt,
        pavpu_thresholds=fitted.pavpu_thresholds,
        histogram_group=int(groups[position]) if options.n_groups else -1,
    )
    segmentation = risk = None
    if options.segmentation:
        segmentation = VolumeSegmentation(
            position,
            options.n_classes,
            background=options.background,
            n_samples=conventions.segmentation_samples,
            seed=conventions.seed,
            empty=conventions.empty_iou,
            empty_pair=conventions.empty_pair,
            matching=conventions.hungarian_matching,
        )
    if options.failure_risk:
        risk = VolumeRisk(options.n_classes, background=options.background, empty=conventions.empty_iou)
    own_sums = VolumeTaskSums(options.tasks, n_classes=options.n_classes, background=options.background)
    samples = VolumeSampleScores(options.background) if options.sample_scores else None
    shown = position in examples
    temperature = None if fitted.temperature is None else fitted.temperature.temperature
    predictive = None
    for loaded, maps, raters in _decomposed_slabs(read_slab, ranges, ids[position], options):
        slab = {name: maps[name][0] for name in (*MEASURES, "pred", *(("mean",) if shown else ()))}
        statistics.add(slab, None if raters is None else raters.select(0))
        if segmentation is not None and loaded.labels is not None and loaded.cubes is not None:
            segmentation.add(loaded.in_planes().cubes[0], slab["pred"], loaded.labels[0])
        if risk is not None and loaded.labels is not None:
            risk.add(slab["pred"], loaded.labels[0])
        if own_sums.tasks:
            own_sums.add(loaded, maps)
        if options.predictive and loaded.labels is not None and raters is not None:
            sums = predictive_sums(maps["mean"], loaded.labels, raters.agree, raters.valid, temperature=temperature)
            predictive = sums if predictive is None else predictive + sums
        if samples is not None and loaded.cubes is not None:
            # Counts add up over voxels in any order: a slab's z-chunks as decoded will do.
            samples.add(loaded.cubes)
    result, histograms = statistics.result()
    result.tasks = own_sums.result()
    result.segmentation = None if segmentation is None or not segmentation.added else segmentation.result()
    result.risk = None if risk is None or not risk.added else risk.result()
    result.predictive = predictive
    result.sample_scores = None if samples is None or not samples.added else samples.result()
    kept = [statistics.example(position, str(ids[position]))] if shown else []
    return ScoredBatch(np.array([position]), result, histograms, examples=kept)
