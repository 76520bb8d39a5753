"""Numba kernels over plain arrays with explicit axes.

Public functions in :mod:`uqeval.decompose` and :mod:`uqeval.cube` wrap these for
numpy, xarray and dask inputs; nothing here knows about labels or dims.

Numba has no float16 on the CPU, so half-precision input is passed as its ``uint16``
bit pattern and widened through a 65,536-entry lookup table (exact, NaN and inf
included). Other float dtypes are read directly.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

#: Pixels handled by one parallel task; small enough that the per-task buffers
#: (class × block float32) stay in L1, large enough to amortise task start-up.
PIXEL_BLOCK = 1024

#: float32 value of every float16 bit pattern.
HALF_TO_FLOAT = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
#: Dummy table passed with float32/float64 input (never read).
NO_TABLE = np.zeros(1, dtype=np.float32)


def as_kernel_input(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(array, table)`` for the kernels: float16 becomes its uint16 bits."""
    if x.dtype == np.float16:
        return x.view(np.uint16), HALF_TO_FLOAT
    return x, NO_TABLE


def _widen(value, table):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_widen)
def _widen_overload(value, table):
    if isinstance(value, types.Integer):
        return lambda value, table: table[value]
    return lambda value, table: np.float32(value)


#: Floor inside the logarithm: ``v ln max(v, tiny)`` is exactly 0 at v = 0 and
#: branch-free, so the loop vectorises; below the floor the term is under 1e-36.
_TINY = np.float32(1e-38)


@numba.njit(inline="always")
def _track_sums(sample_sum, lowest_sum, highest_sum, not_finite):
    """Lane-wise running minimum and maximum of the class sums of one sample.

    A NaN or inf among the values makes its sum non-finite; ``total - total`` is then
    NaN and poisons that lane of ``not_finite``, which is otherwise 0.
    """
    for i in range(sample_sum.shape[0]):
        total = sample_sum[i]
        lowest_sum[i] = total if total < lowest_sum[i] else lowest_sum[i]
        highest_sum[i] = total if total > highest_sum[i] else highest_sum[i]
        not_finite[i] += total - total


@numba.njit(inline="always")
def _write_stats(stats, image, block, lowest, lowest_sum, highest_sum, not_finite):
    n_bad = 0.0
    for i in range(not_finite.shape[0]):
        if not_finite[i] != 0.0:
            n_bad += 1.0
    stats[image, block, 0] = n_bad
    stats[image, block, 1] = lowest.min()
    stats[image, block, 2] = lowest_sum.min()
    stats[image, block, 3] = highest_sum.max()


@numba.njit(parallel=True, nogil=True, cache=True)
def decompose_kernel(x, table, au, eu, tu, mean, pred, stats):
    """Entropy decomposition of a batch of sample cubes, in one pass.

    Parameters
    ----------
    x : (image, eu, au, class, pixel) float32/float64, or uint16 float16 bits
    table : float16-bits-to-float32 table (ignored for float input)
    au, eu, tu : (image, pixel) float32, written
    mean : (image, class, pixel) float32, written
    pred : (image, pixel) uint8/int16, written
    stats : (image, block, 4) float64, written: number of pixels with a non-finite
        value in some sample, the minimum value, and the minimum and maximum class
        sum of one sample (finite sums only).

    Per pixel: ``m_e = mean_a p[e, a]``, ``m = mean_e m_e``, ``TU = H(m)``,
    ``AU = mean_e H(m_e)``, ``EU = max(TU - AU, 0)``, ``H(p) = -Σ p ln p`` with
    ``0 ln 0 = 0``. Sums accumulate in float32; the error against a float64
    reference stays below 1e-6 for up to a few hundred members × samples.
    """
    n_images, n_members, n_samples, n_classes, n_pixels = x.shape
    n_blocks = (n_pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    inv_samples = np.float32(1.0 / n_samples)
    inv_members = np.float32(1.0 / n_members)
    for task in numba.prange(n_images * n_blocks):
        image = task // n_blocks
        block = task % n_blocks
        start = block * PIXEL_BLOCK
        length = min(n_pixels, start + PIXEL_BLOCK) - start
        member_mean = np.empty((n_classes, length), dtype=np.float32)
        total_mean = np.zeros((n_classes, length), dtype=np.float32)
        expected_entropy = np.zeros(length, dtype=np.float32)
        sample_sum = np.empty(length, dtype=np.float32)
        lowest = np.full(length, np.inf, dtype=np.float32)
        lowest_sum = np.full(length, np.inf, dtype=np.float32)
        highest_sum = np.full(length, -np.inf, dtype=np.float32)
        not_finite = np.zeros(length, dtype=np.float32)
        for e in range(n_members):
            member_mean[:] = 0.0
            for a in range(n_samples):
                sample_sum[:] = 0.0
                for c in range(n_classes):
                    row = x[image, e, a, c, start : start + length]
                    accumulator = member_mean[c]
                    for i in range(length):
                        v = _widen(row[i], table)
                        accumulator[i] += v
                        sample_sum[i] += v
                        lowest[i] = v if v < lowest[i] else lowest[i]
                _track_sums(sample_sum, lowest_sum, highest_sum, not_finite)
            for c in range(n_classes):
                member_row = member_mean[c]
                total_row = total_mean[c]
                for i in range(length):
                    v = member_row[i] * inv_samples
                    total_row[i] += v
                    expected_entropy[i] -= v * math.log(max(v, _TINY))
        entropy = np.zeros(length, dtype=np.float32)
        best_value = np.full(length, -np.inf, dtype=np.float32)
        pred[image, start : start + length] = 0
        for c in range(n_classes):
            total_row = total_mean[c]
            for i in range(length):
                v = total_row[i] * inv_members
                mean[image, c, start + i] = v
                entropy[i] -= v * math.log(max(v, _TINY))
                if v > best_value[i]:
                    best_value[i] = v
                    pred[image, start + i] = c
        for i in range(length):
            aleatoric = expected_entropy[i] * inv_members
            au[image, start + i] = aleatoric
            tu[image, start + i] = entropy[i]
            eu[image, start + i] = max(entropy[i] - aleatoric, np.float32(0.0))
        _write_stats(stats, image, block, lowest, lowest_sum, highest_sum, not_finite)


@numba.njit(parallel=True, nogil=True, cache=True)
def value_stats_kernel(x, table, stats):
    """Per image and pixel block, the value statistics of :func:`decompose_kernel`.

    ``x`` is ``(image, sample, class, pixel)``; ``stats`` is ``(image, block, 4)``:
    non-finite class-sum count, minimum value, minimum and maximum finite class sum.
    """
    n_images, n_draws, n_classes, n_pixels = x.shape
    n_blocks = (n_pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    for task in numba.prange(n_images * n_blocks):
        image = task // n_blocks
        block = task % n_blocks
        start = block * PIXEL_BLOCK
        length = min(n_pixels, start + PIXEL_BLOCK) - start
        sample_sum = np.empty(length, dtype=np.float32)
        lowest = np.full(length, np.inf, dtype=np.float32)
        lowest_sum = np.full(length, np.inf, dtype=np.float32)
        highest_sum = np.full(length, -np.inf, dtype=np.float32)
        not_finite = np.zeros(length, dtype=np.float32)
        for s in range(n_draws):
            sample_sum[:] = 0.0
            for c in range(n_classes):
                row = x[image, s, c, start : start + length]
                for i in range(length):
                    v = _widen(row[i], table)
                    sample_sum[i] += v
                    lowest[i] = v if v < lowest[i] else lowest[i]
            _track_sums(sample_sum, lowest_sum, highest_sum, not_finite)
        _write_stats(stats, image, block, lowest, lowest_sum, highest_sum, not_finite)
