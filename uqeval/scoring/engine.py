"""The engine: one pass over a source's batches in two phases, fit then score, bounded memory.

Each batch is decomposed into AU / EU / TU maps and reduced to small per-image
results (:mod:`uqeval.scoring.batch`); its probabilities are dropped.

Parameters fitted on calibration images (:mod:`uqeval.scoring.fitting`) must be known
before an image can be scored, so the runner is called twice:

1. *fit*: the batches that hold the images fitted on are read and decomposed; their
   maps are spilled (:mod:`uqeval.scoring.spill`) and every wanted quantity is
   fitted. They are then scored from the spill, never read from the source again.
2. *score*: every other batch is read and scored at once, the fits handed to the
   runner with the work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.image_statistics import ExampleMaps, ImageStatistics
from uqeval.metrics.ambiguity import RaterStatistics
from uqeval.metrics.calibration import ConfidenceHistogram
from uqeval.names import MEASURES, TEST
from uqeval.notes import Note
from uqeval.scoring import streaming
from uqeval.scoring.batch import BatchOptions, DecomposedBatch, ScoredBatch, decomposed_batch, reduce_batch, score_batch
from uqeval.scoring.batches import BATCH_BYTES, example_images, plan_batches
from uqeval.scoring.bootstrap import ImagePools
from uqeval.scoring.fitting import FitSetup, Fitted, fit
from uqeval.scoring.pooling import OrderedSums
from uqeval.scoring.prepare import Plan, Request
from uqeval.scoring.runners import DistributedRunner, LocalRunner
from uqeval.scoring.sources import Source
from uqeval.scoring.spill import Spill
from uqeval.scoring.tabulate import split_masks
from uqeval.volume_statistics import check_streamable

#: ``progress(phase, done, total)``: phase ``"score"`` counts images through the source,
#: ``"calibrate"`` images through the second look at the spilled batches.
ProgressCallback = Callable[[str, int, int], None]
Batch = TypeVar("Batch", DecomposedBatch, ScoredBatch)


@dataclass
class EngineResult:
    """What the engine computed: per-image statistics of every image, in source order.

    ``calibration_sums[measure][split]`` is the (bins, 3) sum of the calibration tables
    of the split's images (:mod:`uqeval.scoring.pooling`); empty without Platt fits.
    ``pools`` holds the per-image parts of the pooled quantities that the bootstrap
    resamples (:class:`~uqeval.scoring.bootstrap.ImagePools`); None unless asked for.
    """

    statistics: ImageStatistics
    fitted: Fitted
    examples: list[ExampleMaps]
    notes: list[Note]
    histograms: dict[str, ConfidenceHistogram] | None = None
    histogram_domains: tuple[str, ...] = ()
    calibration_sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pools: ImagePools | None = None


def run(
    source: Source,
    request: Request,
    plan: Plan,
    *,
    scheduler: str | None = None,
    scratch: str | Path | None = None,
    progress: ProgressCallback | None = None,
    batch_bytes: int = BATCH_BYTES,
    keep_pools: bool = False,
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
    keep_pools : bool
        Also keep the per-image parts of the pooled calibration quantities, for the
        bootstrap (:attr:`EngineResult.pools`).
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
        segmentation=plan.segmentation,
        failure_risk="fd" in plan.tasks,
        n_groups=len(histogram_domains),
        tasks=tuple(
            request.definitions[name] for name in plan.tasks if request.definitions[name].statistics is not None
        ),
        predictive="pq" in plan.tasks and source.has_labels,
        cells_by_image=keep_pools,
        sample_scores=source.has_probabilities and bool({"oodd", "fd"} & set(plan.tasks)),
    )
    setup = FitSetup(
        conventions=request.conventions,
        images=plan.fitting,
        images_from=plan.images_from,
        background=source.background,
        thresholds=plan.needs_threshold,
        platt=plan.run_cal,
        temperature="pq" in plan.tasks and source.has_labels,
    )
    examples = example_images(source.domains, source.roles)
    if scheduler is not None:
        if source.store is None:
            raise UQEvalError(
                "the workers of a scheduler read the store themselves, so pass a store path, not data in memory",
                parameter="scheduler",
            )
        runner = DistributedRunner(scheduler, source.store, source.variable, source.has_labels, source.slice_depth)
    else:
        runner = None
    engine_run = _EngineRun(
        source, plan, setup, options, groups, examples, histogram_domains, runner, progress, batch_bytes, scratch
    )
    if keep_pools:
        engine_run.pools = ImagePools()
    return engine_run.run()


class _EngineRun:
    """One run of the engine: what it was given, and what it gathers while it reads."""

    def __init__(
        self,
        source: Source,
        plan: Plan,
        setup: FitSetup,
        options: BatchOptions,
        groups: np.ndarray,
        examples: list[int],
        histogram_domains: tuple[str, ...],
        runner: DistributedRunner | None,
        progress: ProgressCallback | None,
        batch_bytes: int,
        scratch: str | Path | None,
    ) -> None:
        self.source, self.plan, self.setup, self.options = source, plan, setup, options
        self.groups, self.examples, self.histogram_domains = groups, examples, histogram_domains
        self.progress, self.batch_bytes, self.scratch = progress, batch_bytes, scratch
        # A volume larger than a batch is read in z-slabs by whoever scores it.
        self.streamed = (
            source.depth is not None and source.slab_reader is not None and source.bytes_per_image > batch_bytes
        )
        if self.streamed:
            check_streamable(options.aggregations, options.conventions)
        if runner is None:
            runner = LocalRunner(source.reader(), slab_reader=source.slab_reader() if self.streamed else None)
        self.runner = runner
        self.done = {"score": 0, "calibrate": 0}
        self.results: list[ScoredBatch] = []
        self.histograms: dict[str, ConfidenceHistogram] = {}
        self.calibration_sums = OrderedSums(split_masks(source.domains, source.roles == TEST), source.n_images)
        self.pools: ImagePools | None = None

    def report(self, phase: str, indices: np.ndarray) -> None:
        self.done[phase] += len(indices)
        if self.progress is not None:
            self.progress(phase, self.done[phase], self.source.n_images)

    def keep(self, result: ScoredBatch) -> None:
        """Keep a batch's result less what grows with its pixels: its calibration tables and
        histogram cells, folded into the per-split sums and the histograms first."""
        n_images = self.source.n_images
        for measure, (cells, rows) in (result.histograms or {}).items():
            if result.cells_by_image:
                images = result.indices[cells[:, 0]]
                cells = np.column_stack([self.groups[images], cells[:, 1]])
            else:
                # Without cells by image, a batch with pools is one streamed volume.
                images = np.full(len(cells), result.indices[0])
            table = self.histograms.setdefault(measure, ConfidenceHistogram(len(self.histogram_domains)))
            table.add_sparse((cells, rows))
            if self.pools is not None:
                if not result.cells_by_image and len(result.indices) != 1:
                    raise AssertionError("histogram cells of several images, not by image")
                self.pools.add_cells(n_images, measure, images, cells, rows)
        if result.statistics.tables is not None:
            tables = {name: table.table for name, table in result.statistics.tables.items()}
            self.calibration_sums.add(result.indices, tables)
            if self.pools is not None:
                self.pools.add_tables(n_images, result.indices, tables)
        self.results.append(replace(result, statistics=replace(result.statistics, tables=None), histograms=None))

    def run(self) -> EngineResult:
        with self.runner:
            fitted = self.stream_volumes() if self.streamed else self.two_phases()
        return self.joined(fitted)

    def two_phases(self) -> Fitted:
        """Score batches of whole images: those fitted on first (spilled, fitted on, then
        scored from the spill), then every other batch."""
        source, setup, runner = self.source, self.setup, self.runner
        fitting_batches, other_batches = plan_batches(
            source.chunk_sizes, source.bytes_per_image, self.batch_bytes, self.plan.fitting, bool(setup.wanted)
        )
        common = {"ids": source.ids, "options": self.options, "examples": self.examples}
        with Spill(self.scratch, in_memory=source.in_memory) as spill:
            # Phase 1, fit: read the batches that hold the images fitted on, spill their
            # maps, and fit every wanted quantity on them.
            decomposed: list[DecomposedBatch] = []
            reading = functools.partial(decomposed_batch, fit=setup, **common)
            for batch in _named(runner.run(reading, fitting_batches), source):
                spill.write(int(batch.indices[0]), batch.maps, batch.raters)
                decomposed.append(replace(batch, maps=None, raters=None))
                self.report("score", batch.indices)
            # In source order, so that the fits do not depend on which worker finished first.
            decomposed.sort(key=lambda batch: int(batch.indices[0]))
            fitted = fit(setup, [batch.fit_sums for batch in decomposed], lambda: _fitted_on(decomposed, spill, setup))
            # The spilled batches get their second look, scored with the fits.
            for batch in decomposed:
                maps, raters = spill.read(int(batch.indices[0]))
                spilled = replace(batch, maps=maps, raters=raters)
                self.keep(score_batch(spilled, fitted=fitted, options=self.options, groups=self.groups))
                self.report("calibrate", batch.indices)
            # Phase 2, score: every other batch, read and scored at once with the fits.
            scoring = functools.partial(reduce_batch, fitted=fitted, groups=self.groups, **common)
            for result in _named(runner.run(scoring, other_batches), source):
                self.keep(result)
                self.report("score", result.indices)
        return fitted

    def stream_volumes(self) -> Fitted:
        """Score volumes larger than a batch, each read in z-slabs by whoever scores it
        (:mod:`uqeval.scoring.streaming`): the volumes fitted on once per look the fits
        need, then every volume once."""
        source, setup, runner = self.source, self.setup, self.runner
        depth = source.depth
        common = {
            "ranges": streaming.slab_ranges(
                depth, source.chunk_depth or depth, source.bytes_per_image // depth, self.batch_bytes
            ),
            "ids": source.ids,
            "options": self.options,
        }
        fitting = np.flatnonzero(setup.images).tolist() if setup.wanted else []
        slabs = [(position, start, stop) for position in fitting for start, stop in common["ranges"]]
        looking = {"ids": source.ids, "options": self.options}

        def looked(look, looked_setup: FitSetup) -> Iterator[tuple[streaming.Slab, dict]]:
            """One look's sums of each slab of the volumes fitted on, in source and ``z`` order."""
            work = functools.partial(look, setup=looked_setup, **looking)
            return streaming.in_slab_order(_named(runner.run_slabs(work, slabs), source), slabs)

        read_sums: list[dict] = []
        if fitting and any(quantity.look == "read" for quantity in setup.wanted):
            by_volume: dict[int, list[dict]] = {position: [] for position in fitting}
            for (position, _, _), sums in looked(streaming.read_look, setup):
                by_volume[position].append(sums)
            planes = [stop - start for start, stop in common["ranges"]]
            read_sums = [streaming.joined_read_sums(setup, by_volume[position], planes) for position in fitting]
        fitted = fit(
            setup,
            read_sums,
            lambda: (),
            lambda later: (sums for _, sums in looked(streaming.spilled_look, later)),
        )
        for position in fitting:
            self.report("score", np.array([position]))
        scoring = functools.partial(
            streaming.scored_volume,
            shape=source.volume_shape,
            fitted=fitted,
            groups=self.groups,
            examples=tuple(self.examples),
            **common,
        )
        fitted_on = set(fitting)
        for result in _named(runner.run_volumes(scoring, range(source.n_images), common["ranges"]), source):
            self.keep(result)
            position = int(result.indices[0])
            self.report("calibrate" if position in fitted_on else "score", result.indices)
        return fitted

    def joined(self, fitted: Fitted) -> EngineResult:
        """Every batch's results joined, in source order."""
        source, results = self.source, self.results
        notes: list[Note] = self.plan.fit_notes(fitted) if self.setup.wanted else []
        with _named_errors(source):
            example_maps = [
                replace(
                    example,
                    domain=str(source.domains[example.position]),
                    input=source.input_of(example.position, example.z),
                    labels=source.labels_of(example.position, example.z),
                )
                for result in results
                for example in result.examples
            ]
        order = {image: position for position, image in enumerate(self.examples)}
        example_maps.sort(key=lambda example: order[example.position])
        indices = np.concatenate([result.indices for result in results])
        statistics = ImageStatistics.concatenate([result.statistics for result in results])
        results.clear()  # the batches' statistics, now joined
        if (np.diff(indices) < 0).any():
            statistics = statistics.take(np.argsort(indices))
        pooled_histograms = None
        if self.histogram_domains and fitted.platt:
            pooled_histograms = {
                measure: self.histograms.get(measure) or ConfidenceHistogram(len(self.histogram_domains))
                for measure in MEASURES
            }
        return EngineResult(
            statistics,
            fitted,
            example_maps,
            notes,
            pooled_histograms,
            self.histogram_domains,
            self.calibration_sums.sums(),
            self.pools,
        )


def _named(results: Iterator[Batch], source: Source) -> Iterator[Batch]:
    """Prefix errors raised while reading with the source they come from."""
    with _named_errors(source):
        yield from results


@contextlib.contextmanager
def _named_errors(source: Source) -> Iterator[None]:
    """Prefix errors raised while reading with the source they come from; a store that is
    gone is said to be gone, whatever its absent chunks read as (NaN probabilities)."""
    try:
        yield
    except UQEvalError as error:
        if source.store is not None and not Path(source.store).exists():
            raise UQEvalError(f"{source.where}: the store was removed while it was scored") from None
        raise UQEvalError(f"{source.where}: {error}", parameter=error.parameter) from None


def _fitted_on(
    batches: Sequence[DecomposedBatch], spill: Spill, setup: FitSetup
) -> Iterator[tuple[dict[str, np.ndarray], RaterStatistics | None]]:
    """The maps and rater statistics of the images fitted on, batch by batch from the spill."""
    for batch in batches:
        chosen = setup.images[batch.indices]
        if not chosen.any():
            continue
        maps, raters = spill.read(int(batch.indices[0]))
        yield {name: values[chosen] for name, values in maps.items()}, None if raters is None else raters.select(chosen)
