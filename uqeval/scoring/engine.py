"""The engine: one pass over a source's batches, fitting first, bounded memory.

Each batch is decomposed into AU / EU / TU maps and reduced at once to small
per-image results (:mod:`uqeval.scoring.batch`); its probabilities are dropped.

Parameters fitted on calibration images (Platt scaling, the threshold ``τ``, the EU
scale) must be known before an image can be scored. So the batches that hold the
images fitted on are read first; their maps are spilled (:mod:`uqeval.scoring.spill`),
the parameters are fitted on them, and they get a second look from the spill, never
from the source. Every other batch is then scored in a single pass with the fits in
hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.image_statistics import Fitted, Fitter, ImageStatistics, eu_scale
from uqeval.metrics.calibration import ConfidenceHistogram
from uqeval.names import MEASURES, TEST
from uqeval.notes import Note
from uqeval.results import ExampleMaps
from uqeval.scoring.batch import BatchOptions, BatchResult, reduce_batch, score_batch
from uqeval.scoring.batches import BATCH_BYTES, example_images, plan_batches
from uqeval.scoring.prepare import Plan, Request
from uqeval.scoring.runners import DistributedRunner, LocalRunner
from uqeval.scoring.sources import Source
from uqeval.scoring.spill import Spill

#: ``progress(phase, done, total)``: phase ``"score"`` counts images through the source,
#: ``"calibrate"`` images through the second look at the spilled batches.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class EngineResult:
    """What the engine computed: per-image statistics of every image, in source order."""

    statistics: ImageStatistics
    fitted: Fitted
    examples: list[ExampleMaps]
    notes: list[Note]
    histograms: dict[str, ConfidenceHistogram] | None = None
    histogram_domains: tuple[str, ...] = ()


def run(
    source: Source,
    request: Request,
    plan: Plan,
    *,
    scheduler: str | None = None,
    scratch: str | Path | None = None,
    progress: ProgressCallback | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> EngineResult:
    """Read every image of ``source`` once and reduce it to per-image statistics.

    Parameters
    ----------
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler whose workers read the store.
    scratch : path, optional
        Parent folder of the spill (a store's source only).
    progress : callable, optional
    batch_bytes : int
        Decoded bytes of probabilities per batch.
    """
    # The pooled equal-mass ACE streams through one histogram per test domain.
    pooled_equal_mass = plan.run_cal and request.conventions.ace_scope == "pooled"
    test = source.roles == TEST
    histogram_domains = tuple(sorted(set(source.domains[test].tolist()))) if pooled_equal_mass else ()
    groups = np.full(source.n_images, -1, dtype=np.int64)
    for code, domain in enumerate(histogram_domains):
        groups[test & (source.domains == domain)] = code
    options = BatchOptions(
        n_classes=source.n_classes,
        background=source.background,
        conventions=request.conventions,
        aggregations=request.aggregations,
        needs_fit=plan.needs_fit,
        segmentation=plan.segmentation,
        failure_risk="fd" in plan.tasks,
        n_groups=len(histogram_domains),
        member_fractions=plan.needs_threshold and request.conventions.threshold_fraction == "members",
    )
    fitting_batches, other_batches = plan_batches(
        source.chunk_sizes, source.bytes_per_image, batch_bytes, plan.fitting, options.needs_fit
    )
    examples = example_images(source.domains, source.roles)
    done = {"score": 0, "calibrate": 0}

    def report(phase: str, result: BatchResult) -> None:
        done[phase] += len(result.indices)
        if progress is not None:
            progress(phase, done[phase], source.n_images)

    if scheduler is not None:
        if source.store is None:
            raise UQEvalError(
                "the workers of a scheduler read the store themselves, so pass a store path, not data in memory",
                parameter="scheduler",
            )
        runner = DistributedRunner(scheduler, source.store, source.variable, source.has_labels)
    else:
        runner = LocalRunner(source.reader())
    work = functools.partial(
        reduce_batch, ids=source.ids, fitting=plan.fitting, options=options, examples=examples, groups=groups
    )
    results: list[BatchResult] = []
    fitted = Fitted()
    notes: list[Note] = []
    with Spill(scratch, in_memory=source.in_memory) as spill, runner:
        for result in _named(runner.run(work, fitting_batches, other_batches), source.where):
            if result.statistics is None:  # a fitting batch: keep its maps for the fit
                spill.write(len(results), result.maps, result.raters)
                result.maps = result.raters = None
            results.append(result)
            report("score", result)
            if len(results) == len(fitting_batches) and options.needs_fit:
                # Every image to fit on has been seen: fit, score the spilled batches,
                # and hand the fits to the runner for the batches still to come.
                fitted = _fit(results, spill, plan, options)
                notes.extend(plan.fit_notes(fitted))
                for key, spilled in enumerate(results):
                    score_batch(
                        spilled, *spill.read(key), fitted=fitted, options=options, groups=groups[spilled.indices]
                    )
                    report("calibrate", spilled)
                runner.fitted = fitted

    example_maps = [
        replace(
            example,
            domain=str(source.domains[example.position]),
            input=source.input_of(example.position),
            labels=source.labels_of(example.position),
        )
        for result in results
        for example in result.examples
    ]
    order = {image: position for position, image in enumerate(examples)}
    example_maps.sort(key=lambda example: order[example.position])
    indices = np.concatenate([result.indices for result in results])
    statistics = ImageStatistics.concatenate([result.statistics for result in results]).take(np.argsort(indices))
    histograms = None
    if histogram_domains and fitted.platt:
        histograms = {measure: ConfidenceHistogram(len(histogram_domains)) for measure in MEASURES}
        for result in results:
            for measure, cells in (result.histograms or {}).items():
                histograms[measure].add_sparse(cells)
    return EngineResult(statistics, fitted, example_maps, notes, histograms, histogram_domains)


def _named(results: Iterator[BatchResult], where: str) -> Iterator[BatchResult]:
    """Prefix errors raised while reading with the source they come from."""
    try:
        yield from results
    except UQEvalError as error:
        raise UQEvalError(f"{where}: {error}", parameter=error.parameter) from None


def _fit(results: Sequence[BatchResult], spill: Spill, plan: Plan, options: BatchOptions) -> Fitted:
    """Fit the EU scale, ``τ`` and Platt scaling from the spilled maps of the fitting batches."""
    scale = 1.0
    if options.conventions.rescale_eu:
        ordered = sorted((r for r in results if r.fit_sums is not None), key=lambda r: r.indices[0])
        scale = eu_scale(
            float(np.sum(np.concatenate([r.fit_sums[0] for r in ordered]))),
            float(np.sum(np.concatenate([r.fit_sums[1] for r in ordered]))),
        )
    fitter = Fitter(
        conventions=options.conventions,
        background=options.background,
        thresholds=plan.needs_threshold,
        platt=plan.run_cal,
        eu_scale=scale,
        images_from=plan.images_from,
    )
    # In source order, so that the sums (and so the fit) do not depend on which worker finished first.
    for key in sorted(range(len(results)), key=lambda key: results[key].indices[0]):
        result = results[key]
        chosen = plan.fitting[result.indices]
        if not chosen.any():
            continue
        maps, raters = spill.read(key)
        fitter.add(
            {name: values[chosen] for name, values in maps.items()},
            raters.select(chosen) if raters is not None and plan.run_cal else None,
        )
    return fitter.result()
