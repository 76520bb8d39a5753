"""The two ways into the pipeline: :func:`score` (a cube store or Dataset, streamed) and
:func:`evaluate` (decomposed maps in memory). Both prepare the request, plan, run the
one engine and tabulate the result."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from uqeval.conventions import Conventions
from uqeval.cube import open_cube, validate_cube
from uqeval.errors import UQEvalError
from uqeval.names import TEST
from uqeval.provenance import provenance_record
from uqeval.results import Scores
from uqeval.scoring import engine
from uqeval.scoring.batches import BATCH_BYTES
from uqeval.scoring.bootstrap import Bootstrap, bootstrap_rows
from uqeval.scoring.engine import ProgressCallback
from uqeval.scoring.given_measures import (
    check_conventions,
    examples_without,
    fitted_without,
    statistics_without,
    tables_without,
)
from uqeval.scoring.prepare import Plan, Request, plan, prepare
from uqeval.scoring.slices import UNITS, slice_source
from uqeval.scoring.sources import Source, cube_source, maps_source
from uqeval.scoring.tabulate import split_masks, tabulate


def score(
    source: str | Path | xr.Dataset,
    *,
    tasks: Sequence[str] | None = None,
    aggregations: Sequence[str] | None = None,
    conventions: Conventions | None = None,
    preset: str | None = None,
    segmentation: bool = False,
    scheduler: str | None = None,
    scratch: str | Path | None = None,
    progress: ProgressCallback | None = None,
    batch_bytes: int = BATCH_BYTES,
    unit: str = "volume",
    bootstrap: int = 0,
    seed: int = 0,
) -> Scores:
    """Score a model's uncertainty on a cube store, streaming.

    The store is read once, a batch of whole chunks at a time, with memory bounded by a
    few batches (docs/scoring.md).

    Parameters
    ----------
    source : path or xarray.Dataset
        A cube store (docs/cube.md) or a Dataset that meets the same contract.
    tasks : sequence of str, optional
        Any of ``oodd``, ``amb``, ``cal``, ``fd`` or a plugin's task
        (:func:`uqeval.plugins.plugin_manager`); default: every task found.
    aggregations : sequence of str, optional
        The image-score aggregations of OODD and FD, in order; the first is the one Δ
        uses, and the conventions record it. Default: the conventions' (or the
        preset's) aggregation alone. ``uqeval score --aggregation a --aggregation b``
        is ``aggregations=["a", "b"]``.
    conventions, preset : optional
        :class:`~uqeval.Conventions`, or the name of a preset (``default``,
        ``paper``); not both.
    segmentation : bool
        Also score Dice, GED and Hungarian-matched IoU against the raters (heavier).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (``tcp://host:8786``) whose workers
        can read ``source`` at the same path.
    scratch : path, optional
        Folder for the spilled per-image maps (default: the system's temporary folder);
        removed when done.
    progress : callable, optional
        ``progress(phase, done, total)`` after each batch; phase ``score`` counts images
        through the store, ``calibrate`` through the second look at the fitted ones.
    batch_bytes : int
        Decoded bytes of probabilities per batch.
    unit : ``"volume"`` or ``"slice"``
        For a store of volumes, ``slice`` scores every z-slice as an image of its own
        (aggregations, NCC, failure risk, OOD AUROC), each with its volume's domain and
        role; the fits and pooled calibration see the same voxels either way. No
        effect on 2D images.
    bootstrap : int
        With ``N > 0``, every row of ``results`` and ``entanglement`` gets ``ci_low``
        and ``ci_high``, the 95 % percentile interval over ``N`` resamples of the
        images within each (domain, role) stratum, the fitted parameters fixed
        (docs/metrics.md); ``Scores.bootstrap`` keeps the resampled values.
    seed : int
        Seed of the bootstrap's resamples: the same seed gives the same intervals.

    Returns
    -------
    Scores

    Raises
    ------
    UQEvalError
        Naming the variable, dim or image at fault, or (``parameter``) the argument.
    """
    request = prepare(
        tasks=tasks, aggregations=aggregations, conventions=conventions, preset=preset, segmentation=segmentation
    )
    if unit not in UNITS:
        raise UQEvalError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}", parameter="unit")
    if isinstance(source, xr.Dataset):
        cube = cube_source(validate_cube(source))
    else:
        path = Path(source)
        cube = cube_source(open_cube(path), path)
    if unit == "slice":
        cube = slice_source(cube)
    return _run(
        cube,
        request,
        scheduler=scheduler,
        scratch=scratch,
        progress=progress,
        batch_bytes=batch_bytes,
        bootstrap=bootstrap,
        seed=seed,
    )


def evaluate(
    maps: xr.Dataset | Mapping[str, np.ndarray],
    domain: Sequence[str] | np.ndarray | None = None,
    role: Sequence[str] | np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    tasks: Sequence[str] | None = None,
    aggregations: Sequence[str] | None = None,
    conventions: Conventions | None = None,
    background: int = 0,
    n_classes: int | None = None,
    cubes: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> Scores:
    """Score the downstream tasks on decomposed maps held in memory.

    The same pipeline as :func:`score`, with the maps as its source.

    Parameters
    ----------
    maps : xarray.Dataset or mapping
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x), e.g. ``uqeval.decompose(cubes)``.
    domain : (image,) str, optional
        ``id`` or the name of an OOD shift (default all ``id``).
    role : (image,) str, optional
        ``calibration`` or ``test`` (default all ``test``).
    labels : (image, rater, y, x) int, optional
        Rater label maps (255 = ignore); without them AMB and CAL are skipped.
    tasks : sequence of str, optional
        Any of ``oodd``, ``amb``, ``cal``, ``fd`` or a plugin's task
        (:func:`uqeval.plugins.plugin_manager`); default: every task found.
    aggregations : sequence of str, optional
        The aggregations scored for OODD and FD, the first the one Δ uses (as in
        :func:`score`); default the conventions' alone.
    conventions : Conventions, optional
    background : int
        Background class index.
    n_classes : int, optional
        Classes of ``labels``; read from ``maps["mean"]`` when absent.
    cubes : (image, eu, au, class, y, x), optional
        Probabilities; given with ``labels``, segmentation quality (Dice, GED,
        Hungarian IoU) is scored as well.
    bootstrap, seed : int
        Bootstrap intervals, as in :func:`score`.

    Returns
    -------
    Scores
    """
    request = prepare(tasks=tasks, aggregations=aggregations, conventions=conventions, segmentation=cubes is not None)
    try:
        source = maps_source(maps, domain, role, labels, background=background, n_classes=n_classes, cubes=cubes)
    except UQEvalError as error:
        raise UQEvalError(f"evaluate: {error}", parameter=error.parameter) from None
    return _run(source, request, bootstrap=bootstrap, seed=seed)


def tabulation(source: Source, request: Request, source_plan: Plan, computed: engine.EngineResult) -> functools.partial:
    """:func:`~uqeval.scoring.tabulate.tabulate` bound to everything of a run but the
    statistics, the notes and the pooled sums, which the bootstrap gives anew per resample."""
    return functools.partial(
        tabulate,
        domains=source.domains,
        roles=source.roles,
        fitted=computed.fitted,
        tasks=[request.definitions[name] for name in source_plan.tasks],
        aggregations=request.aggregation_names,
        primary=request.primary,
        conventions=request.conventions,
        histogram_domains=computed.histogram_domains,
        absent_measures=source.absent_measures,
        fallbacks={
            aggregator.name: aggregator.fallback.what for aggregator in request.aggregations if aggregator.fallback
        },
    )


def bootstrap_options(
    source: Source,
    request: Request,
    computed: engine.EngineResult,
    retabulate: functools.partial,
    tasks: Sequence[str],
) -> dict[str, Any]:
    """The keyword arguments of :func:`~uqeval.scoring.bootstrap.bootstrap` that come from a
    run: everything but the number of resamples and the seed. ``retabulate`` is the run's
    :func:`tabulation`; ``tasks`` are the names of the tasks to resample."""
    return {
        "pools": computed.pools,
        "retabulate": retabulate,
        "splits": split_masks(source.domains, source.roles == TEST),
        "histogram_domains": computed.histogram_domains,
        "tasks": [request.definitions[name] for name in tasks],
        "aggregations": request.aggregation_names,
        "primary": request.primary,
        "conventions": request.conventions,
    }


def _run(
    source: Source,
    request: Request,
    *,
    scheduler: str | None = None,
    scratch: str | Path | None = None,
    progress: ProgressCallback | None = None,
    batch_bytes: int = BATCH_BYTES,
    bootstrap: int = 0,
    seed: int = 0,
) -> Scores:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise UQEvalError(
            f"bootstrap must be a whole number of resamples ≥ 0, got {bootstrap!r}", parameter="bootstrap"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UQEvalError(f"seed must be a whole number ≥ 0, got {seed!r}", parameter="seed")
    try:
        source_plan = plan(
            request,
            source.domains,
            source.roles,
            has_labels=source.has_labels,
            segmentation_possible=source.has_probabilities,
            n_raters=source.n_raters,
            has_mean=source.has_mean,
        )
    except UQEvalError as error:
        raise UQEvalError(f"{source.where}: {error}") from None
    check_conventions(source.absent_measures, request.conventions, source.where)
    computed = engine.run(
        source,
        request,
        source_plan,
        scheduler=scheduler,
        scratch=scratch,
        progress=progress,
        batch_bytes=batch_bytes,
        keep_pools=bootstrap > 0,
    )
    retabulate = tabulation(source, request, source_plan, computed)
    tables = retabulate(
        computed.statistics,
        notes=[*source.notes, *source_plan.notes, *computed.notes],
        histograms=computed.histograms,
        calibration_sums=computed.calibration_sums,
    )
    resampled: Bootstrap | None = None
    if bootstrap > 0:
        tables, resampled = bootstrap_rows(
            tables,
            computed.statistics,
            source.domains,
            source.roles,
            **bootstrap_options(source, request, computed, retabulate, source_plan.tasks),
            n=int(bootstrap),
            seed=int(seed),
        )
    if source.absent_measures:
        absent = source.absent_measures
        tables = tables_without(tables, absent)
        computed = replace(
            computed,
            statistics=statistics_without(computed.statistics, absent),
            fitted=fitted_without(computed.fitted, absent),
            examples=examples_without(computed.examples, absent),
        )
        if resampled is not None:
            resampled = resampled.for_rows(tables.results, tables.entanglement)
    return Scores(
        results=tables.results,
        entanglement=tables.entanglement,
        collapse=tables.collapse,
        notes=tables.notes,
        n_images=tables.n_images,
        fitted=computed.fitted,
        reliability=tables.reliability,
        images=computed.statistics,
        conventions=request.conventions,
        image_ids=source.ids,
        domains=source.domains,
        roles=source.roles,
        store=source.store,
        attrs=source.attrs,
        examples=computed.examples,
        eu_convention=source.eu_convention,
        provenance=provenance_record(attrs=source.attrs, eu_convention=source.eu_convention),
        slice_z=source.slice_z,
        bootstrap=resampled,
    )
