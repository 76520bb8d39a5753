r"""Bootstrap intervals: the images resampled within each (domain, role) stratum, every row tabulated again.

A resample draws, for every stratum (images of one domain and one role), as many images
as the stratum holds, uniformly with replacement. The rows are tabulated again from
the resampled images' statistics (:meth:`~uqeval.image_statistics.ImageStatistics.take`)
with every fitted parameter (EU scale, Platt fits, ``τ``, PAvPU's ``τ``) fixed, so a
resample costs what tabulating costs: nothing grows with the pixels of an image. OODD's
and FD's rows, most of a tabulation's cost, are computed for all resamples at once from
how often each image was drawn (:mod:`uqeval.scoring.resampled_detection`,
:mod:`uqeval.scoring.resampled_failure`), equal to tabulating each resample up to rounding.

Two pooled quantities are not per-image statistics, so the engine keeps per-image parts
of them when bootstrap is asked for (:class:`ImagePools`):

- the calibration tables (image, bins, 3) of each measure, whose resampled sums give
  the pooled ACE and ECE exactly;
- for the pooled equal-mass ACE, each image's confidence histogram coarsened from the
  Platt key's 2**-12 relative steps to :data:`COARSE_STEPS_PER_OCTAVE` steps per octave
  of ``U``, in fixed point as the full histograms (order-free integer sums).

A row's resampled values are moved by ``value − value₀``, where ``value₀`` is the row
tabulated from these per-image parts on the images as they are: 0 for every exact row,
and for the equal-mass ACE the difference between the full histograms and the coarse
ones, so that coarsening shifts no interval.

The interval is the percentile interval of the resampled values that are defined (not
NaN), widened where needed to hold the row's value (a biased statistic such as a pooled
ECE can put the value outside its resamples' central 95 %): ``[min(q_{2.5}, v),
max(q_{97.5}, v)]``. A row whose value is NaN, or that no resample defines, has a NaN
interval. Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.image_statistics import ImageStatistics
from uqeval.metrics import _kernels
from uqeval.names import TEST
from uqeval.scoring.resampled_detection import resampled_detection
from uqeval.scoring.resampled_failure import resampled_fd
from uqeval.task_tables import split_masks
from uqeval.tasks import Task

#: Coverage of the bootstrap intervals.
CONFIDENCE = 0.95
#: Bits of the Platt key dropped for the per-image equal-mass histograms: 2**12 / 2**9 = 8 steps per octave of U.
COARSE_SHIFT = 9
#: Steps per octave of ``U`` of the per-image equal-mass histograms.
COARSE_STEPS_PER_OCTAVE = 2 ** (_kernels.PLATT_MANTISSA_BITS - COARSE_SHIFT)
#: Keys of a per-image equal-mass histogram.
COARSE_KEYS = ((_kernels.PLATT_KEYS - 1) >> COARSE_SHIFT) + 1

#: Resamples whose FD rows are computed together (bounds the (resample, image) counts held).
_BLOCK = 256
#: A row's key: ``(task, split, measure, aggregation, metric)``; Δ's: ``(task, split)``.
RowKey = tuple[str, ...]
#: The values of an entanglement row that are resampled, in this order.
ENTANGLEMENT_VALUES = ("u_correct", "u_wrong", "delta")


@dataclass
class ImagePools:
    """Per-image parts of the pooled calibration quantities, kept only for the bootstrap.

    Attributes
    ----------
    tables : dict
        Per measure, (image, bins, 3) float64: each image's calibration table
        (count, ``Σw``, ``Σconfidence`` per equal-width confidence bin).
    histograms : dict
        Per measure, (image, :data:`COARSE_KEYS`, 3) int64: each image's coarse
        confidence histogram (count, ``Σw`` and ``Σconfidence`` in units of
        ``2**-32``), for the pooled equal-mass ACE; empty when that is not pooled.
    """

    tables: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(array.nbytes for part in (self.tables, self.histograms) for array in part.values())

    def add_tables(self, n_images: int, indices: np.ndarray, tables: Mapping[str, np.ndarray]) -> None:
        """The calibration tables (image, bins, 3) per measure of the images at ``indices``."""
        for measure, table in tables.items():
            if measure not in self.tables:
                self.tables[measure] = np.zeros((n_images, *table.shape[1:]))
            self.tables[measure][indices] = table

    def add_cells(self, n_images: int, measure: str, images: np.ndarray, cells: np.ndarray, rows: np.ndarray) -> None:
        """Full-histogram cells (``cells[:, 1]`` the Platt key, ``rows`` int64) of ``images``, coarsened."""
        if measure not in self.histograms:
            self.histograms[measure] = np.zeros((n_images, COARSE_KEYS, 3), dtype=np.int64)
        np.add.at(self.histograms[measure], (images, cells[:, 1] >> COARSE_SHIFT), rows)


@dataclass(frozen=True)
class Bootstrap:
    """The resampled values of every row of one run.

    Attributes
    ----------
    n, seed : int
        Resamples and the seed of their generator (:func:`resample_indices`).
    result_keys : list of tuple
        ``(task, split, measure, aggregation, metric)`` of each row of ``results``.
    results : (row, n) float64
        Per row, its value in each resample (moved as the module says; NaN where a
        resample leaves it undefined).
    entanglement_keys : list of tuple
        ``(task, split)`` of each row of the ``entanglement`` arrays.
    entanglement : dict
        Per value of :data:`ENTANGLEMENT_VALUES`, (row, n) float64.
    """

    n: int
    seed: int
    result_keys: list[RowKey] = field(repr=False)
    results: np.ndarray = field(repr=False)
    entanglement_keys: list[RowKey] = field(repr=False)
    entanglement: dict[str, np.ndarray] = field(repr=False)
    confidence: float = CONFIDENCE

    def for_rows(self, results: Sequence[Mapping[str, Any]], entanglement: Sequence[Mapping[str, Any]]) -> Bootstrap:
        """The resamples of these rows, in their order (rows dropped after resampling are dropped here)."""
        result_index = {key: index for index, key in enumerate(self.result_keys)}
        delta_index = {key: index for index, key in enumerate(self.entanglement_keys)}
        result_keys = [_row_key(row) for row in results]
        entanglement_keys = [_delta_key(row) for row in entanglement]
        kept = [result_index[key] for key in result_keys]
        kept_deltas = [delta_index[key] for key in entanglement_keys]
        return Bootstrap(
            self.n,
            self.seed,
            result_keys,
            self.results[kept],
            entanglement_keys,
            {name: values[kept_deltas] for name, values in self.entanglement.items()},
            self.confidence,
        )

    def record(self) -> dict[str, Any]:
        """What ``scores.json`` says of the bootstrap."""
        return {
            "n": self.n,
            "seed": self.seed,
            "confidence": self.confidence,
            "interval": "percentile",
            "strata": ["domain", "role"],
        }


def resample_indices(domains: np.ndarray, roles: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` resamples of the images, each within its (domain, role) stratum.

    Returns
    -------
    (n, image) int64
        ``indices[b, i]``: the image drawn in place of image ``i`` in resample ``b``; it
        has ``i``'s domain and role. Strata are drawn in sorted (domain, role) order, each
        as one ``(n, size)`` draw of ``numpy.random.default_rng(seed).integers``, so the
        indices depend on the seed and the strata only.
    """
    generator = np.random.default_rng(seed)
    indices = np.empty((n, len(domains)), dtype=np.int64)
    strata = sorted(set(zip(np.asarray(domains).tolist(), np.asarray(roles).tolist(), strict=True)))
    for domain, role in strata:
        positions = np.flatnonzero((domains == domain) & (roles == role))
        indices[:, positions] = positions[generator.integers(0, positions.size, size=(n, positions.size))]
    return indices


def percentile_interval(
    samples: np.ndarray, values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the percentile interval of the defined ``samples`` (row, n), widened to hold ``values`` (row,).

    NaN where the value is NaN or no sample is defined.

    >>> low, high = percentile_interval(np.array([[1.0, 2, 3, np.nan], [5, 5, 5, 5]]), np.array([2.0, 6]), 0.5)
    >>> low.tolist(), high.tolist()
    ([1.5, 5.0], [2.5, 6.0])
    """
    values = np.asarray(values, dtype=np.float64)
    tail = 100 * (1 - confidence) / 2
    low = np.full(values.shape, np.nan)
    high = np.full(values.shape, np.nan)
    for row, value in enumerate(values):
        defined = samples[row][~np.isnan(samples[row])]
        if np.isnan(value) or not defined.size:
            continue
        quantiles = np.percentile(defined, [tail, 100 - tail])
        low[row], high[row] = min(quantiles[0], value), max(quantiles[1], value)
    return low, high


class _PooledGroups:
    """Stand-in for the pooled equal-mass histograms of one resample: ``groups(codes)``
    sums the resampled images' coarse histograms of those domain codes."""

    def __init__(self, by_code: Mapping[int, np.ndarray]) -> None:
        self.by_code = by_code

    def groups(self, chosen: Sequence[int]) -> np.ndarray:
        return sum((self.by_code[code] for code in chosen), np.zeros((COARSE_KEYS, 3)))


def bootstrap(
    tabulated: Any,
    statistics: ImageStatistics,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    pools: ImagePools,
    retabulate: Callable[..., Any],
    splits: Mapping[str, np.ndarray],
    histogram_domains: Sequence[str],
    tasks: Sequence[Task],
    aggregations: Sequence[str],
    primary: str,
    conventions: Conventions,
    n: int,
    seed: int,
) -> Bootstrap:
    """Every row of ``tabulated`` in ``n`` resamples.

    Parameters
    ----------
    tabulated : Tabulated
        The rows of the images as they are.
    statistics : ImageStatistics
        Of every image, in store order.
    pools : ImagePools
    retabulate : callable
        ``retabulate(statistics, tasks=..., calibration_sums=..., histograms=...)`` →
        Tabulated: the run's :func:`~uqeval.scoring.tabulate.tabulate` with everything
        else bound.
    splits : mapping
        The calibration sums' splits (split name → (image,) bool).
    histogram_domains : sequence of str
        The domains of the pooled equal-mass histograms, by code.
    tasks, aggregations, primary, conventions
        As the run's :func:`~uqeval.scoring.tabulate.tabulate` was given them. OODD's and
        FD's rows are computed for all resamples at once
        (:mod:`uqeval.scoring.resampled_detection`, :mod:`uqeval.scoring.resampled_failure`),
        every other task's by tabulating each resample.
    n, seed : int
    """
    indices = resample_indices(domains, roles, n, seed)
    n_images = len(domains)
    names = [task.name for task in tasks]
    vectorised = {name for name in names if name == "oodd" or (name == "fd" and statistics.risk is not None)}
    others = [task for task in tasks if task.name not in vectorised]
    codes = {
        code: (roles == TEST) & (domains == domain) for code, domain in enumerate(histogram_domains)
    }  # the images each pooled histogram holds
    scale = np.array([1.0, _kernels.FIXED_POINT, _kernels.FIXED_POINT])
    # Each split's (domain's) images' tables side by side, so that one product sums them for a block of resamples.
    table_parts = {
        measure: np.concatenate(
            [(table * chosen[:, None, None]).reshape(n_images, -1) for chosen in splits.values()], 1
        )
        for measure, table in pools.tables.items()
    }
    histogram_parts = {
        measure: np.concatenate(
            [((histogram / scale) * chosen[:, None, None]).reshape(n_images, -1) for chosen in codes.values()], 1
        )
        for measure, histogram in pools.histograms.items()
    }

    def pooled(counts: np.ndarray) -> list[tuple[dict, dict | None]]:
        """Per resample of the block ``counts`` (resample, image): its calibration sums and equal-mass histograms."""
        sums = {
            measure: (counts @ parts).reshape(len(counts), len(splits), -1) for measure, parts in table_parts.items()
        }
        cells = {
            measure: (counts @ parts).reshape(len(counts), len(codes), -1) for measure, parts in histogram_parts.items()
        }
        out = []
        for resample in range(len(counts)):
            by_split = {
                measure: {
                    split: values[resample, position].reshape(pools.tables[measure].shape[1:])
                    for position, split in enumerate(splits)
                }
                for measure, values in sums.items()
            }
            histograms = {
                measure: _PooledGroups(
                    {code: values[resample, position].reshape(COARSE_KEYS, 3) for position, code in enumerate(codes)}
                )
                for measure, values in cells.items()
            }
            out.append((by_split or None, histograms or None))
        return out

    def tabulated_with(parts: tuple[dict, dict | None], resampled: ImageStatistics) -> Any:
        sums, histograms = parts
        return retabulate(resampled, tasks=others, calibration_sums=sums, histograms=histograms, sample_tasks=names)

    row_keys = [_row_key(row) for row in tabulated.results]
    delta_keys = [(row["task"], row["split"]) for row in tabulated.entanglement]
    at_rest = tabulated_with(pooled(np.ones((1, n_images)))[0], statistics)
    results = np.full((len(row_keys), n), np.nan)
    entanglement = {name: np.full((len(delta_keys), n), np.nan) for name in ENTANGLEMENT_VALUES}
    row_index = {key: index for index, key in enumerate(row_keys)}
    delta_index = {key: index for index, key in enumerate(delta_keys)}
    test = roles == TEST
    with np.errstate(all="ignore"):
        for start in range(0, n, _BLOCK):
            block = indices[start : start + _BLOCK]
            offsets = block + n_images * np.arange(len(block))[:, None]
            counts = np.bincount(offsets.ravel(), minlength=len(block) * n_images).reshape(len(block), n_images)
            counts = counts.astype(np.float64)
            for offset, parts in enumerate(pooled(counts)):
                again = tabulated_with(parts, statistics.take(block[offset]))
                for row in again.results:
                    index = row_index.get(_row_key(row))
                    if index is not None:
                        results[index, start + offset] = row["value"]
                for row in again.entanglement:
                    index = delta_index.get((row["task"], row["split"]))
                    if index is not None:
                        for name in ENTANGLEMENT_VALUES:
                            entanglement[name][index, start + offset] = row[name]
            found: list[tuple[dict, dict]] = []
            if "oodd" in vectorised:
                found.append(
                    resampled_detection(
                        statistics.scores,
                        statistics.means,
                        split_masks(domains, test),
                        counts,
                        aggregations=aggregations,
                        primary=primary,
                        both_zero=conventions.delta_both_zero,
                    )
                )
            if "fd" in vectorised:
                found.append(
                    resampled_fd(
                        statistics.scores,
                        statistics.means,
                        statistics.risk,
                        split_masks(domains, test),
                        test,
                        counts,
                        aggregations=aggregations,
                        primary=primary,
                        domain_mean=conventions.ood_split == "domain-mean",
                        both_zero=conventions.delta_both_zero,
                    )
                )
            for rows, deltas in found:
                for key, values in rows.items():
                    if key in row_index:
                        results[row_index[key], start : start + len(block)] = values
                for key, by_name in deltas.items():
                    if key in delta_index:
                        for name in ENTANGLEMENT_VALUES:
                            entanglement[name][delta_index[key], start : start + len(block)] = by_name[name]
    results += _shift(tabulated.results, at_rest.results, _row_key, "value")[:, None]
    for name in ENTANGLEMENT_VALUES:
        entanglement[name] += _shift(tabulated.entanglement, at_rest.entanglement, _delta_key, name)[:, None]
    return Bootstrap(n, seed, row_keys, results, delta_keys, entanglement)


def bootstrap_rows(
    tabulated: Any, statistics: ImageStatistics, domains: np.ndarray, roles: np.ndarray, **options: Any
) -> tuple[Any, Bootstrap]:
    """``tabulated`` with ``ci_low`` and ``ci_high`` on every row (of Δ for the
    entanglement rows), and the :class:`Bootstrap` they come from; ``options`` as
    :func:`bootstrap` takes them."""
    resampled = bootstrap(tabulated, statistics, domains, roles, **options)
    return (
        replace(
            tabulated,
            results=with_intervals(tabulated.results, resampled.results, "value", resampled.confidence),
            entanglement=with_intervals(
                tabulated.entanglement, resampled.entanglement["delta"], "delta", resampled.confidence
            ),
        ),
        resampled,
    )


def _row_key(row: Mapping[str, Any]) -> RowKey:
    return (row["task"], row["split"], row["measure"], row["aggregation"], row["metric"])


def _delta_key(row: Mapping[str, Any]) -> RowKey:
    return (row["task"], row["split"])


def _shift(rows: Sequence[Mapping[str, Any]], at_rest: Sequence[Mapping[str, Any]], key, name: str) -> np.ndarray:
    """Per row, ``value − value₀`` (0 where either is NaN or the row is not among ``at_rest``)."""
    rest = {key(row): row[name] for row in at_rest}
    shifts = np.zeros(len(rows))
    for index, row in enumerate(rows):
        difference = row[name] - rest.get(key(row), np.nan)
        if not np.isnan(difference):
            shifts[index] = difference
    return shifts


def with_intervals(
    rows: Sequence[Mapping[str, Any]], samples: np.ndarray, name: str, confidence: float = CONFIDENCE
) -> list[dict[str, Any]]:
    """The rows with ``ci_low`` and ``ci_high`` of their ``name`` value after it."""
    values = np.array([row[name] for row in rows], dtype=np.float64)
    low, high = percentile_interval(samples, values, confidence)
    out = []
    for row, lower, upper in zip(rows, low.tolist(), high.tolist(), strict=True):
        out.append({**row, "ci_low": float(lower), "ci_high": float(upper)})
    return out
