"""The streaming scorer behind ``uqeval score``: one pass over the cube, bounded memory.

The cube is read a batch of whole store chunks at a time. Each batch is decomposed
into AU / EU / TU maps and reduced at once to small per-image results (means,
segmentation quality and, when nothing needs fitting, every aggregated score, NCC and
so on); the batch's probabilities are then dropped. Parameters fitted on calibration
images — Platt scaling, the threshold ``τ``, the EU scale — need every calibration
image before any image can be scored, so when a task needs one, the per-image maps
(about 5 % of the cube's bytes) are spilled to a scratch folder and a second pass
over the spill, never over the cube, finishes the job.

Locally, reading and decoding the next batch overlaps with computing on the current
one (the numba kernels use every core). With a ``dask.distributed`` scheduler the
first pass runs on the cluster's workers, which read the store themselves, and the
client gathers the per-image maps; the numbers are the same.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

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
    """The result of the first pass over one batch of images ``[start, stop)``."""

    start: int
    stop: int
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
    ranges = batch_ranges(_image_chunks(probs), _bytes_per_image(probs), batch_bytes)
    examples = example_images(domains, roles)
    variable = dataset.attrs.get("source_variable", "probs")
    reader = _reader(dataset, path)
    n_images = len(ids)

    def report(phase: str, done: int) -> None:
        if progress is not None:
            progress(phase, done, n_images)

    with _Scratch(scratch) as spill:
        first = {}
        done = 0
        passes = (
            _distributed_first_pass(
                scheduler, path, variable, has_labels, ranges, ids, evaluation_plan, options, examples
            )
            if scheduler is not None
            else _local_first_pass(reader, ranges, ids, evaluation_plan, options, examples)
        )
        example_maps: list[ExampleMaps] = []
        for result in _named(passes, where):
            if options.needs_fit:
                spill.write(result.start, result.maps, result.raters)
                result.maps = result.raters = None
            example_maps.extend(replace(example, domain=str(domains[example.position])) for example in result.examples)
            first[result.start] = result
            done += result.stop - result.start
            report("score", done)
        results = [first[start] for start, _ in ranges]

        fitted = Fitted()
        if options.needs_fit:
            fitted = _fit(results, spill, evaluation_plan, options)
            notes.extend(evaluation_plan.fit_notes(fitted))
            done = 0
            for result in results:
                maps, raters = spill.read(result.start)
                result.statistics = image_statistics(
                    maps,
                    fitted=fitted,
                    conventions=conventions,
                    aggregations=aggregations,
                    raters=raters,
                    background=options.background,
                )
                result.statistics.segmentation = result.segmentation
                done += result.stop - result.start
                report("calibrate", done)

    statistics = ImageStatistics.concatenate([result.statistics for result in results])
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


def batch_ranges(chunk_sizes: Sequence[int], bytes_per_image: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Group consecutive store chunks into batches of about ``batch_bytes`` decoded bytes.

    A batch never splits a chunk, so each chunk is decoded once.
    """
    ranges = []
    start = stop = 0
    for size in chunk_sizes:
        stop += size
        if (stop - start) * bytes_per_image >= batch_bytes:
            ranges.append((start, stop))
            start = stop
    if stop > start:
        ranges.append((start, stop))
    return ranges


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


# --------------------------------------------------------------------------- reading


def _reader(dataset: xr.Dataset, path: Path | None) -> Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]:
    """A function reading ``probs`` (and ``labels``) of images ``[start, stop)`` as numpy."""
    has_labels = "labels" in dataset
    if path is not None:
        return functools.partial(read_store, str(path), dataset.attrs.get("source_variable", "probs"), has_labels)

    def read_dataset(start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        probs = np.asarray(dataset["probs"][start:stop].values)
        labels = np.asarray(dataset["labels"][start:stop].values) if has_labels else None
        return probs, labels

    return read_dataset


@functools.lru_cache(maxsize=8)
def _open_group(path: str) -> zarr.Group:
    return zarr.open_group(path, mode="r")


def read_store(
    path: str, variable: str, has_labels: bool, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images ``[start, stop)`` of a cube store straight through zarr (no dask graph).

    ``variable`` is ``probs`` or ``logits`` (softmax applied here).
    """
    group = _open_group(path)
    values = group[variable][start:stop]
    if variable == "logits":
        values = softmax_array(values)
    labels = group["labels"][start:stop] if has_labels else None
    return values, labels


# --------------------------------------------------------------------------- first pass


def first_pass(
    cubes: np.ndarray,
    labels: np.ndarray | None,
    image_ids: np.ndarray,
    *,
    start: int,
    fitting: np.ndarray,
    options: PassOptions,
    examples: Sequence[int] = (),
) -> FirstPass:
    """Decompose one batch and reduce it to per-image results.

    Parameters
    ----------
    cubes : (image, eu, au, class, y, x)
        The batch's probabilities.
    labels : (image, rater, y, x) or None
    image_ids : (image,)
        Ids of the batch's images (for messages).
    start : int
        Position of the batch's first image in the store.
    fitting : (image,) bool
        Which of the batch's images are fitted on.
    examples : sequence of int
        Store positions of images whose maps to keep for the report.
    """
    maps = decompose_batch(cubes, image_ids)
    stop = start + len(cubes)
    raters = None
    if labels is not None:
        raters = rater_statistics(labels, maps["pred"], options.n_classes, image_ids=image_ids)
    result = FirstPass(start, stop)
    kept = [position for position in examples if start <= position < stop]
    for position in kept:
        local = position - start
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
            np.arange(start, stop),
            background=options.background,
            n_samples=options.conventions.segmentation_samples,
            seed=options.conventions.seed,
            empty=options.conventions.empty_iou,
        )
    if options.needs_fit:
        result.maps = {name: maps[name] for name in (*MEASURES, "pred")}
        result.raters = raters
        if fitting.any():
            result.fit_sums = (
                float(np.sum(maps["au"][fitting], dtype=np.float64)),
                float(np.sum(maps["eu"][fitting], dtype=np.float64)),
            )
    else:
        result.statistics = image_statistics(
            maps,
            fitted=Fitted(),
            conventions=options.conventions,
            aggregations=options.aggregations,
            raters=raters,
            background=options.background,
        )
        result.statistics.segmentation = result.segmentation
    return result


def _local_first_pass(
    reader: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    ranges: Sequence[tuple[int, int]],
    ids: np.ndarray,
    evaluation_plan: Plan,
    options: PassOptions,
    examples: Sequence[int],
) -> Iterator[FirstPass]:
    """Batches in order; the next batch is read and decoded while this one is computed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uqeval-read") as pool:
        pending = pool.submit(reader, *ranges[0]) if ranges else None
        for index, (start, stop) in enumerate(ranges):
            cubes, labels = pending.result()
            pending = pool.submit(reader, *ranges[index + 1]) if index + 1 < len(ranges) else None
            yield first_pass(
                cubes,
                labels,
                ids[start:stop],
                start=start,
                fitting=evaluation_plan.fitting[start:stop],
                options=options,
                examples=examples,
            )
            del cubes, labels


def _store_first_pass(
    path: str,
    variable: str,
    has_labels: bool,
    start: int,
    stop: int,
    image_ids: np.ndarray,
    fitting: np.ndarray,
    options: PassOptions,
    examples: Sequence[int],
) -> FirstPass:
    """Read one batch from the store and run :func:`first_pass` on it (a worker's task)."""
    cubes, labels = read_store(path, variable, has_labels, start, stop)
    return first_pass(cubes, labels, image_ids, start=start, fitting=fitting, options=options, examples=examples)


def _distributed_first_pass(
    scheduler: str,
    path: Path,
    variable: str,
    has_labels: bool,
    ranges: Sequence[tuple[int, int]],
    ids: np.ndarray,
    evaluation_plan: Plan,
    options: PassOptions,
    examples: Sequence[int],
) -> Iterator[FirstPass]:
    """Batches as the cluster finishes them, with a bounded number in flight."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UQEvalError("--scheduler needs dask.distributed: pip install distributed") from None
    try:
        client = Client(scheduler, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise UQEvalError(f"--scheduler {scheduler}: cannot connect ({error})") from None
    try:
        threads = max(1, sum(client.nthreads().values()))
        queue = list(ranges)

        def submit():
            start, stop = queue.pop(0)
            return client.submit(
                _store_first_pass,
                str(path.resolve()),
                variable,
                has_labels,
                start,
                stop,
                ids[start:stop],
                evaluation_plan.fitting[start:stop],
                options,
                [position for position in examples if start <= position < stop],
                pure=False,
            )

        futures = as_completed([submit() for _ in range(min(2 * threads, len(queue)))], loop=client.loop)
        for future in futures:
            result = future.result()
            future.release()
            if queue:
                futures.add(submit())
            yield result
    finally:
        client.close()


def _named(passes: Iterator[FirstPass], where: str) -> Iterator[FirstPass]:
    """Prefix errors raised while reading with the store they come from."""
    try:
        yield from passes
    except UQEvalError as error:
        raise UQEvalError(f"{where}: {error}") from None


# --------------------------------------------------------------------------- fitting


def _fit(results: Sequence[FirstPass], spill: _Scratch, evaluation_plan: Plan, options: PassOptions) -> Fitted:
    """Fit the EU scale, ``τ`` and Platt scaling from the spilled calibration maps."""
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
    for result in results:
        chosen = evaluation_plan.fitting[result.start : result.stop]
        if not chosen.any():
            continue
        maps, raters = spill.read(result.start)
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


__all__ = ["BATCH_BYTES", "FirstPass", "PassOptions", "batch_ranges", "first_pass", "score"]
