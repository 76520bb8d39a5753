"""The streaming scorer behind ``uqeval score``: one pass over the cube, bounded memory.

The cube is read a batch of whole store chunks at a time. Each batch is decomposed
into AU / EU / TU maps and reduced at once to small per-image results — means,
aggregated scores, NCC, calibration bin tables, segmentation quality — and its
probabilities are dropped.

Parameters fitted on calibration images (Platt scaling, the threshold ``τ``, the EU
scale) must be known before an image can be scored. So the chunks that hold the
images fitted on are read first; their per-image maps (about 5 % of the cube's bytes)
are spilled to a scratch folder, the parameters are fitted on them, and they get a
second look from the spill, never from the cube. Every other chunk is then scored in
a single pass with the fits in hand.

Locally, reading and decoding the next batch overlaps with computing on the current
one (the numba kernels use every core). With a ``dask.distributed`` scheduler the
batches run on the cluster's workers, which read the store themselves; the numbers
are the same.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numba
import numpy as np
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype

from uqeval.aggregate import get_aggregator
from uqeval.conventions import Conventions
from uqeval.conventions import preset as conventions_preset
from uqeval.cube import open_cube, softmax_array, validate_cube
from uqeval.decompose import decompose_batch
from uqeval.errors import UQEvalError
from uqeval.metrics.ambiguity import RaterStatistics, rater_statistics
from uqeval.metrics.segmentation import SegmentationQuality, segmentation_quality
from uqeval.results import ExampleMaps, Scores
from uqeval.statistics import MEASURES, Fitted, Fitter, ImageStatistics, eu_scale, image_statistics
from uqeval.tasks import TASKS, Plan, plan, summarise

#: Decoded bytes of probabilities read per batch (whole store chunks, at least one).
BATCH_BYTES = 64 * 2**20
#: Images whose maps are kept for the report's map panel: this many ID and OOD test images.
EXAMPLES_PER_KIND = 2

#: ``progress(phase, done, total)``: phase ``"score"`` counts images through the cube,
#: ``"calibrate"`` images through the second pass.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PassOptions:
    """What the first pass computes for each batch (the same on every worker)."""

    n_classes: int
    background: int
    conventions: Conventions
    aggregations: tuple[str, ...]
    needs_fit: bool
    segmentation: bool


@dataclass
class FirstPass:
    """The result of reading and reducing one batch of images (positions ``indices``)."""

    indices: np.ndarray
    statistics: ImageStatistics | None = None
    maps: dict[str, np.ndarray] | None = None
    raters: RaterStatistics | None = None
    segmentation: SegmentationQuality | None = None
    fit_sums: tuple[float, float] = (0.0, 0.0)
    examples: list[ExampleMaps] = field(default_factory=list)


def score(
    source: str | Path | xr.Dataset,
    *,
    tasks: Sequence[str] = ("oodd", "amb", "cal"),
    aggregations: Sequence[str] | None = None,
    conventions: Conventions | None = None,
    preset: str | None = None,
    segmentation: bool = False,
    scheduler: str | None = None,
    scratch: str | Path | None = None,
    progress: ProgressCallback | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> Scores:
    """Score a model's uncertainty on a cube store, streaming.

    Parameters
    ----------
    source : path or xarray.Dataset
        A cube store (DESIGN §3) or a Dataset that meets the same contract.
    tasks : sequence of str
        Any of ``oodd``, ``amb``, ``cal``.
    aggregations : sequence of str, optional
        Extra image-score aggregations for OODD; the conventions' one is always scored
        and is the one Δ uses.
    conventions, preset : optional
        :class:`~uqeval.conventions.Conventions`, or the name of a preset
        (``default``, ``paper``); not both.
    segmentation : bool
        Also score Dice, GED and Hungarian-matched IoU against the raters (heavier).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (``tcp://host:8786``) whose workers
        can read ``source`` at the same path; the first pass runs there.
    scratch : path, optional
        Folder for the spilled per-image maps (default: the system's temporary folder);
        removed when done.
    progress : callable, optional
        ``progress(phase, done, total)`` after each batch.
    batch_bytes : int
        Decoded bytes of probabilities per batch.

    Returns
    -------
    Scores
        Tidy results, Δ, collapse, per-image scores and plot data; ``.save(folder)``
        writes the report.

    Raises
    ------
    UQEvalError
        Naming the variable, dim or image at fault.
    """
    if conventions is not None and preset is not None:
        raise UQEvalError("score: pass conventions or preset, not both")
    conventions = conventions_preset(preset) if preset is not None else (conventions or Conventions())
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise UQEvalError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    aggregations = tuple(dict.fromkeys([conventions.aggregation, *(aggregations or ())]))
    for name in aggregations:
        get_aggregator(name)

    path = None
    if isinstance(source, xr.Dataset):
        dataset = validate_cube(source)
        where = "dataset"
    else:
        path = Path(source)
        dataset = open_cube(path)
        where = str(path)
    if scheduler is not None and path is None:
        raise UQEvalError("--scheduler: the workers read the store themselves, so pass a store path, not a Dataset")

    ids = dataset["image"].values
    domains = dataset["domain"].values.astype(str).astype(object)
    roles = dataset["role"].values.astype(str).astype(object)
    has_labels = "labels" in dataset
    probs = dataset["probs"]
    try:
        evaluation_plan = plan(
            domains,
            roles,
            has_labels=has_labels,
            tasks=tuple(tasks),
            aggregations=aggregations,
            conventions=conventions,
        )
    except UQEvalError as error:
        raise UQEvalError(f"{where}: {error}") from None
    notes = list(evaluation_plan.notes)
    if segmentation and not has_labels:
        notes.append("segmentation: skipped, the store has no rater labels")
    options = PassOptions(
        n_classes=int(probs.sizes["class"]),
        background=int(dataset.attrs.get("background", 0)),
        conventions=conventions,
        aggregations=aggregations,
        needs_fit=evaluation_plan.needs_fit,
        segmentation=segmentation and has_labels,
    )
    fitting_batches, other_batches = plan_batches(
        _image_chunks(probs), _bytes_per_image(probs), batch_bytes, evaluation_plan.fitting, options.needs_fit
    )
    examples = example_images(domains, roles)
    variable = dataset.attrs.get("source_variable", "probs")
    n_images = len(ids)
    done = {"score": 0, "calibrate": 0}

    def report(phase: str, result: FirstPass) -> None:
        done[phase] += len(result.indices)
        if progress is not None:
            progress(phase, done[phase], n_images)

    if scheduler is not None:
        runner = _DistributedRunner(scheduler, str(path.resolve()), variable, has_labels)
    else:
        runner = _LocalRunner(_reader(dataset, path))
    results: list[FirstPass] = []
    fitted = Fitted()
    with _Scratch(scratch) as spill, runner:
        work = functools.partial(
            _run_batch, ids=ids, fitting=evaluation_plan.fitting, options=options, examples=examples
        )
        for result in _named(runner.run(work, fitting_batches, other_batches), where):
            if result.statistics is None:  # a fitting batch: keep its maps for the fit
                spill.write(len(results), result.maps, result.raters)
                result.maps = result.raters = None
            results.append(result)
            report("score", result)
            if len(results) == len(fitting_batches) and options.needs_fit:
                # Every image to fit on has been seen: fit, score the spilled batches,
                # and hand the fits to the runner for the batches still to come.
                fitted = _fit(results, spill, evaluation_plan, options)
                notes.extend(evaluation_plan.fit_notes(fitted))
                for key, spilled in enumerate(results):
                    _score_spilled(spilled, *spill.read(key), fitted=fitted, options=options)
                    report("calibrate", spilled)
                runner.fitted = fitted

    example_maps = [
        replace(example, domain=str(domains[example.position])) for result in results for example in result.examples
    ]
    indices = np.concatenate([result.indices for result in results])
    statistics = ImageStatistics.concatenate([result.statistics for result in results]).take(np.argsort(indices))
    evaluation = summarise(
        statistics,
        domains,
        roles,
        fitted=fitted,
        tasks=evaluation_plan.tasks,
        aggregations=aggregations,
        conventions=conventions,
        notes=notes,
    )
    order = {image: position for position, image in enumerate(examples)}
    example_maps.sort(key=lambda example: order[example.position])
    return Scores(
        evaluation=evaluation,
        store=str(path.resolve()) if path is not None else None,
        attrs=dict(dataset.attrs),
        image_ids=ids,
        domains=domains,
        roles=roles,
        examples=example_maps,
        eu_convention="members" if probs.sizes["eu"] > 1 else "samples-as-members",
    )


# --------------------------------------------------------------------------- batches


def plan_batches(
    chunk_sizes: Sequence[int],
    bytes_per_image: int,
    batch_bytes: int,
    fitting: np.ndarray,
    needs_fit: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Group the store's chunks into batches of image positions, fitting chunks first.

    A chunk that holds an image fitted on is a *fitting* chunk (when anything is
    fitted). Chunks of each kind are grouped, in store order, into batches of about
    ``batch_bytes`` decoded bytes; a batch never splits a chunk, so each chunk is
    decoded exactly once.

    Returns
    -------
    (fitting batches, other batches), each a list of sorted int64 position arrays.
    """
    edges = np.cumsum([0, *chunk_sizes])
    groups: dict[bool, list[np.ndarray]] = {True: [], False: []}
    pending: dict[bool, list[np.ndarray]] = {True: [], False: []}
    sizes = {True: 0, False: 0}
    for start, stop in itertools.pairwise(edges.tolist()):
        kind = bool(needs_fit and fitting[start:stop].any())
        pending[kind].append(np.arange(start, stop))
        sizes[kind] += stop - start
        if sizes[kind] * bytes_per_image >= batch_bytes:
            groups[kind].append(np.concatenate(pending[kind]))
            pending[kind], sizes[kind] = [], 0
    for kind in (True, False):
        if pending[kind]:
            groups[kind].append(np.concatenate(pending[kind]))
    return groups[True], groups[False]


def batch_ranges(chunk_sizes: Sequence[int], bytes_per_image: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Consecutive chunks grouped into ``[start, stop)`` ranges of about ``batch_bytes`` decoded bytes."""
    _, batches = plan_batches(chunk_sizes, bytes_per_image, batch_bytes, np.zeros(sum(chunk_sizes), bool), False)
    return [(int(batch[0]), int(batch[-1]) + 1) for batch in batches]


def example_images(domains: np.ndarray, roles: np.ndarray, per_kind: int = EXAMPLES_PER_KIND) -> list[int]:
    """Positions of the images shown in the map panel: the first ID test images, then
    OOD test images from as many domains as possible."""
    test = roles == "test"
    chosen = [int(i) for i in np.flatnonzero(test & (domains == "id"))[:per_kind]]
    ood_domains = sorted(set(domains[test & (domains != "id")]))
    firsts = [int(np.flatnonzero(test & (domains == name))[0]) for name in ood_domains]
    chosen += firsts[:per_kind]
    if len(firsts) < per_kind:
        rest = [int(i) for i in np.flatnonzero(test & (domains != "id")) if int(i) not in firsts]
        chosen += rest[: per_kind - len(firsts)]
    return chosen


def _image_chunks(array: xr.DataArray) -> list[int]:
    if array.chunks is None:
        return [1] * array.sizes["image"]
    return [int(size) for size in array.chunks[0]]


def _bytes_per_image(array: xr.DataArray) -> int:
    return int(np.prod([array.sizes[dim] for dim in array.dims[1:]])) * array.dtype.itemsize


def _runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """``(offset, start, stop)`` of each run of consecutive positions in sorted ``indices``."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(indices)]
    return [(int(i), int(indices[i]), int(indices[j - 1]) + 1) for i, j in zip(starts, stops, strict=True)]


# --------------------------------------------------------------------------- reading

Reader = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]


def _reader(dataset: xr.Dataset, path: Path | None) -> Reader:
    """A function reading ``probs`` (and ``labels``) of some images as numpy."""
    has_labels = "labels" in dataset
    if path is not None:
        return _StoreReader(str(path), dataset.attrs.get("source_variable", "probs"), has_labels)

    def read_dataset(indices: np.ndarray, slot: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        probs = np.asarray(dataset["probs"][indices].values)
        labels = np.asarray(dataset["labels"][indices].values) if has_labels else None
        return probs, labels

    return read_dataset


class _StoreReader:
    """Reads batches of a store into two reused buffers (``slot`` 0 or 1).

    Decoding into memory that is already mapped avoids the page faults of a fresh
    multi-megabyte array per batch, which cost more than the decoding itself. Two
    slots let one batch be read while the previous one is computed on.
    """

    def __init__(self, path: str, variable: str, has_labels: bool) -> None:
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self._buffers: dict[tuple[str, int], np.ndarray] = {}

    def __call__(self, indices: np.ndarray, slot: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        def buffer(name: str) -> np.ndarray:
            array = _open_group(self.path)[name]
            held = self._buffers.get((name, slot))
            if held is None or held.shape[0] < len(indices):
                held = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
                self._buffers[(name, slot)] = held
            return held[: len(indices)]

        out = {self.variable: buffer(self.variable)}
        if self.has_labels:
            out["labels"] = buffer("labels")
        return read_store(self.path, self.variable, self.has_labels, indices, out=out)


@functools.lru_cache(maxsize=8)
def _open_group(path: str) -> zarr.Group:
    return zarr.open_group(path, mode="r")


def read_store(
    path: str,
    variable: str,
    has_labels: bool,
    indices: np.ndarray,
    out: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the images at sorted positions ``indices`` of a cube store straight through zarr.

    ``variable`` is ``probs`` or ``logits`` (softmax applied here). Each run of
    consecutive positions is one zarr read, so no dask graph is built. ``out`` may
    give arrays (by variable name) of the right shape to decode into.
    """
    group = _open_group(path)
    prototype = default_buffer_prototype()

    def read(name: str) -> np.ndarray:
        array = group[name]
        target = (out or {}).get(name)
        if target is None:
            target = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
        for offset, start, stop in _runs(indices):
            view = target[offset : offset + stop - start]
            array.get_basic_selection(slice(start, stop), out=prototype.nd_buffer.from_numpy_array(view))
        return target

    values = read(variable)
    if variable == "logits":
        values = softmax_array(values)
    return values, read("labels") if has_labels else None


# --------------------------------------------------------------------------- one batch


def first_pass(
    cubes: np.ndarray,
    labels: np.ndarray | None,
    indices: np.ndarray,
    *,
    ids: np.ndarray,
    fitting: np.ndarray,
    options: PassOptions,
    fitted: Fitted | None,
    examples: Sequence[int] = (),
) -> FirstPass:
    """Decompose one batch and reduce it to per-image results.

    Parameters
    ----------
    cubes : (image, eu, au, class, y, x)
        The batch's probabilities.
    labels : (image, rater, y, x) or None
    indices : (image,) int
        The batch's positions in the store.
    ids, fitting : (store image,)
        Image ids (for messages) and which images are fitted on, for the whole store.
    fitted : Fitted or None
        The fits, or None for a batch of images to fit on: its maps are returned
        for spilling instead of its statistics.
    examples : sequence of int
        Store positions of images whose maps to keep for the report.
    """
    image_ids = ids[indices]
    maps = decompose_batch(cubes, image_ids)
    raters = None
    if labels is not None:
        raters = rater_statistics(labels, maps["pred"], options.n_classes, image_ids=image_ids)
    result = FirstPass(indices)
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
            cubes,
            maps["pred"],
            labels,
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
    result.statistics = image_statistics(
        maps,
        fitted=fitted or Fitted(),
        conventions=options.conventions,
        aggregations=options.aggregations,
        raters=raters,
        background=options.background,
    )
    result.statistics.segmentation = result.segmentation
    return result


def _run_batch(
    cubes: np.ndarray,
    labels: np.ndarray | None,
    indices: np.ndarray,
    fitted: Fitted | None,
    *,
    ids: np.ndarray,
    fitting: np.ndarray,
    options: PassOptions,
    examples: Sequence[int],
) -> FirstPass:
    return first_pass(
        cubes, labels, indices, ids=ids, fitting=fitting, options=options, fitted=fitted, examples=examples
    )


BatchWork = Callable[[np.ndarray, "np.ndarray | None", np.ndarray, "Fitted | None"], FirstPass]


class _LocalRunner:
    """Batches in order on this machine; the next batch is read and decoded while this one is computed.

    ``fitted`` is read when each batch starts: the scorer sets it once the fitting
    batches are done.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.fitted: Fitted | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uqeval-read")

    def __enter__(self) -> _LocalRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[FirstPass]:
        """Results of the fitting batches, then of the others (which see :attr:`fitted`)."""
        # Reading and decoding keeps about one core busy; giving the kernels one thread
        # fewer than the machine has avoids oversubscribing it (measured: 15 % faster on
        # 2 cores). numba's thread count is per calling thread, so this stays local.
        threads = numba.get_num_threads()
        numba.set_num_threads(max(1, threads - 1))
        try:
            yield from self._batches(work, fitting_batches, other_batches)
        finally:
            numba.set_num_threads(threads)

    def _batches(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[FirstPass]:
        batches = [*fitting_batches, *other_batches]
        pending = self._pool.submit(self.reader, batches[0], 0) if batches else None
        for number, indices in enumerate(batches):
            cubes, labels = pending.result()
            if number + 1 < len(batches):
                # The other slot: its batch was computed on in the previous iteration.
                pending = self._pool.submit(self.reader, batches[number + 1], (number + 1) % 2)
            yield work(cubes, labels, indices, self.fitted if number >= len(fitting_batches) else None)
            del cubes, labels


def _store_batch(
    path: str, variable: str, has_labels: bool, indices: np.ndarray, fitted: Fitted | None, work: BatchWork
) -> FirstPass:
    """A worker's task: read one batch from the store and reduce it."""
    cubes, labels = read_store(path, variable, has_labels, indices)
    return work(cubes, labels, indices, fitted)


class _DistributedRunner:
    """Batches on a ``dask.distributed`` cluster, a bounded number in flight; results in completion order."""

    def __init__(self, scheduler: str, path: str, variable: str, has_labels: bool) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise UQEvalError("--scheduler needs dask.distributed: pip install distributed") from None
        try:
            self.client = Client(scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise UQEvalError(f"--scheduler {scheduler}: cannot connect ({error})") from None
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self.fitted: Fitted | None = None

    def __enter__(self) -> _DistributedRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.close()

    def run(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[FirstPass]:
        """Results of the fitting batches, then of the others (which see :attr:`fitted`)."""
        yield from self._phase(work, fitting_batches, None)
        yield from self._phase(work, other_batches, lambda: self.fitted)

    def _phase(
        self, work: BatchWork, batches: list[np.ndarray], fitted: Callable[[], Fitted | None] | None
    ) -> Iterator[FirstPass]:
        from distributed import as_completed

        if not batches:
            return
        queue = list(batches)
        current = fitted() if fitted is not None else None
        remote_work = self.client.scatter(work, broadcast=True, hash=False)

        def submit():
            return self.client.submit(
                _store_batch,
                self.path,
                self.variable,
                self.has_labels,
                queue.pop(0),
                current,
                remote_work,
                pure=False,
            )

        threads = max(1, sum(self.client.nthreads().values()))
        futures = as_completed([submit() for _ in range(min(2 * threads, len(queue)))], loop=self.client.loop)
        for future in futures:
            result = future.result()
            future.release()
            if queue:
                futures.add(submit())
            yield result


def _score_spilled(
    result: FirstPass,
    maps: dict[str, np.ndarray],
    raters: RaterStatistics | None,
    *,
    fitted: Fitted,
    options: PassOptions,
) -> None:
    """Give a fitting batch its statistics, from its spilled maps, once the fits are known."""
    result.statistics = image_statistics(
        maps,
        fitted=fitted,
        conventions=options.conventions,
        aggregations=options.aggregations,
        raters=raters,
        background=options.background,
    )
    result.statistics.segmentation = result.segmentation


def _named(passes: Iterator[FirstPass], where: str) -> Iterator[FirstPass]:
    """Prefix errors raised while reading with the store they come from."""
    try:
        yield from passes
    except UQEvalError as error:
        raise UQEvalError(f"{where}: {error}") from None


# --------------------------------------------------------------------------- fitting


def _fit(results: Sequence[FirstPass], spill: _Scratch, evaluation_plan: Plan, options: PassOptions) -> Fitted:
    """Fit the EU scale, ``τ`` and Platt scaling from the spilled maps of the fitting batches."""
    scale = 1.0
    if options.conventions.rescale_eu:
        scale = eu_scale(sum(r.fit_sums[0] for r in results), sum(r.fit_sums[1] for r in results))
    fitter = Fitter(
        conventions=options.conventions,
        background=options.background,
        thresholds=evaluation_plan.needs_threshold,
        platt=evaluation_plan.run_cal,
        eu_scale=scale,
        images_from=evaluation_plan.images_from,
    )
    # In store order, so that the sums (and so the fit) do not depend on which worker finished first.
    for key in sorted(range(len(results)), key=lambda key: results[key].indices[0]):
        result = results[key]
        chosen = evaluation_plan.fitting[result.indices]
        if not chosen.any():
            continue
        maps, raters = spill.read(key)
        fitter.add(
            {name: values[chosen] for name, values in maps.items()},
            raters.select(chosen) if raters is not None and evaluation_plan.run_cal else None,
        )
    return fitter.result()


class _Scratch:
    """A scratch folder of per-batch maps, removed on exit (a no-op when ``folder`` is None)."""

    def __init__(self, folder: str | Path | None) -> None:
        self._parent = folder
        self.path: Path | None = None

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def write(self, key: int, maps: dict[str, np.ndarray], raters: RaterStatistics | None) -> None:
        if self.path is None:
            parent = None if self._parent is None else Path(self._parent)
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix="uqeval-spill-", dir=parent))
        arrays = dict(maps)
        if raters is not None:
            arrays["rater_variance"] = raters.variance
            arrays["rater_agree"] = raters.agree.astype(np.uint16)
            arrays["rater_valid"] = raters.valid.astype(np.uint16)
        with open(self.path / f"{key}.npz", "wb") as file:
            np.savez(file, **arrays)

    def read(self, key: int) -> tuple[dict[str, np.ndarray], RaterStatistics | None]:
        with np.load(self.path / f"{key}.npz") as stored:
            arrays = {name: stored[name] for name in stored.files}
        raters = None
        if "rater_variance" in arrays:
            raters = RaterStatistics(
                arrays.pop("rater_variance"),
                arrays.pop("rater_agree").astype(np.int32),
                arrays.pop("rater_valid").astype(np.int32),
            )
        return arrays, raters


__all__ = ["BATCH_BYTES", "FirstPass", "PassOptions", "batch_ranges", "first_pass", "plan_batches", "score"]
