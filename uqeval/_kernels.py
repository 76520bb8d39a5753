"""Numba kernels over plain arrays with explicit axes.

Public functions in :mod:`uqeval.decomposition` and :mod:`uqeval.checks` wrap these for
numpy, xarray and dask inputs; nothing here knows about labels or dims.

Every loop runs over a block of pixels held in small float32 buffers, so that LLVM
vectorises it:

- Numba has no float16 on the CPU, so half-precision input arrives as its ``uint16``
  bit pattern and is widened exactly by bit arithmetic that LLVM vectorises: the
  pattern shifted into float32 position, times 2**112 (inf and NaN become NaN).
- ``ln`` is computed by :func:`_negative_xlogx`, a branch-free float32 logarithm
  (Cephes ``logf``: exponent from the bits, degree-9 polynomial on the mantissa,
  about 1 ulp), since libm's scalar ``logf`` would cost as much as reading the input.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import overload

#: Pixels handled by one parallel task; small enough that the per-task buffers
#: (class × block float32) stay in L1, large enough to amortise task start-up.
PIXEL_BLOCK = 1024

#: Floor inside the logarithm: ``v ln max(v, tiny)`` is exactly 0 at v = 0 and below
#: the floor the term is under 1e-28 nats. A normal float32, so the bit-level log holds.
_TINY = np.float32(1e-30)
_SQRT_HALF = np.float32(0.70710677)
_LN2_HIGH = np.float32(0.693359375)
_LN2_LOW = np.float32(-2.12194440e-4)


#: 2**112: rescales a float16 bit pattern shifted into float32 position to its value,
#: exactly for every finite half (subnormals included); inf and NaN patterns become NaN.
#: Vectorised, this widens about twice as fast as a 256 KiB lookup table (which gathers).
_HALF_EXPONENT_SHIFT = np.float32(2.0**112)


def as_kernel_input(x: np.ndarray) -> np.ndarray:
    """The array as the kernels take it: float16 becomes its ``uint16`` bit pattern."""
    return x.view(np.uint16) if x.dtype == np.float16 else x


def _widen_row(row, floats, bits):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_widen_row)
def _widen_row_overload(row, floats, bits):
    """A row of input as float32: itself for float32, widened into ``floats`` otherwise.

    ``floats`` and ``bits`` are the same buffer seen as float32 and int32.
    """
    if isinstance(row.dtype, types.Integer):

        def widen_half(row, floats, bits):
            n = row.shape[0]
            for i in range(n):
                half = np.int32(row[i])
                bits[i] = ((half & 0x7FFF) << 13) | ((half & 0x8000) << 16)
            for i in range(n):
                value = floats[i] * _HALF_EXPONENT_SHIFT
                floats[i] = np.float32(np.nan) if (np.int32(row[i]) & 0x7C00) == 0x7C00 else value
            return floats

        return widen_half
    if row.dtype == types.float32:
        return lambda row, floats, bits: row

    def narrow(row, floats, bits):
        for i in range(row.shape[0]):
            floats[i] = np.float32(row[i])
        return floats

    return narrow


@numba.njit(inline="always")
def _negative_xlogx(values, entropy, floats, bits, exponents):
    """``entropy[i] -= v ln v`` for ``v = values[i]`` in [0, 1], with ``0 ln 0 = 0``.

    ``floats``/``bits`` is one scratch buffer seen as float32 and int32;
    ``exponents`` is a float32 scratch buffer.
    """
    n = values.shape[0]
    for i in range(n):
        floats[i] = max(values[i], _TINY)
    for i in range(n):
        word = bits[i]
        exponents[i] = np.float32(((word >> 23) & 0xFF) - 126)
        bits[i] = (word & 0x007FFFFF) | 0x3F000000  # mantissa in [0.5, 1)
    for i in range(n):
        mantissa = floats[i]
        exponent = exponents[i]
        small = mantissa < _SQRT_HALF
        exponent = exponent - np.float32(1.0) if small else exponent
        x = mantissa + mantissa - np.float32(1.0) if small else mantissa - np.float32(1.0)
        z = x * x
        y = np.float32(7.0376836292e-2)
        y = y * x - np.float32(1.1514610310e-1)
        y = y * x + np.float32(1.1676998740e-1)
        y = y * x - np.float32(1.2420140846e-1)
        y = y * x + np.float32(1.4249322787e-1)
        y = y * x - np.float32(1.6668057665e-1)
        y = y * x + np.float32(2.0000714765e-1)
        y = y * x - np.float32(2.4999993993e-1)
        y = y * x + np.float32(3.3333331174e-1)
        y = y * x * z
        y += _LN2_LOW * exponent
        y -= np.float32(0.5) * z
        logarithm = x + y + _LN2_HIGH * exponent
        entropy[i] -= values[i] * logarithm


@numba.njit(inline="always")
def _track_sums(sample_sum, lowest_sum, highest_sum, not_finite):
    """Lane-wise running minimum and maximum of the finite class sums of one sample.

    A NaN or inf among the values makes its sum non-finite; ``total - total`` is then
    NaN and poisons that lane of ``not_finite``, which is otherwise 0.
    """
    for i in range(sample_sum.shape[0]):
        total = sample_sum[i]
        finite = total - total == 0.0
        lowest_sum[i] = total if finite and total < lowest_sum[i] else lowest_sum[i]
        highest_sum[i] = total if finite and total > highest_sum[i] else highest_sum[i]
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
def decompose_kernel(x, au, eu, tu, mean, pred, stats, eu_floor):
    """Entropy decomposition of a batch of sample cubes, in one pass.

    Parameters
    ----------
    x : (image, eu, au, class, pixel) float32/float64, or uint16 float16 bits
    au, eu, tu : (image, pixel) float32, written
    mean : (image, class, pixel) float32, written
    pred : (image, pixel) uint8/int16, written
    stats : (image, block, 4) float64, written: number of pixels with a non-finite
        value in some sample, the minimum value, and the minimum and maximum class
        sum of one sample (finite sums only).
    eu_floor : float32
        ``TU - AU`` below it is rounding, and EU is set to exactly 0
        (:data:`uqeval.precision.EU_FLOOR`; an argument, not a global, so that the
        cached compiled kernel never keeps an old value).

    Per pixel: ``m_e = mean_a p[e, a]``, ``m = mean_e m_e``, ``TU = H(m)``,
    ``AU = mean_e H(m_e)``, ``EU = TU - AU`` where that is at least ``eu_floor``, else 0,
    ``H(p) = -Σ p ln p`` with ``0 ln 0 = 0``. Sums accumulate in float32.
    """
    n_images, n_members, n_samples, n_classes, n_pixels = x.shape
    n_blocks = (n_pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    inv_samples = np.float32(1.0 / n_samples)
    inv_members = 1.0 / n_members
    for task in numba.prange(n_images * n_blocks):
        image = task // n_blocks
        block = task % n_blocks
        start = block * PIXEL_BLOCK
        length = min(n_pixels, start + PIXEL_BLOCK) - start
        member_mean = np.empty((n_classes, length), dtype=np.float32)
        # Sums over members in float64: a float32 running sum of E·C entropy terms
        # drifts by about E·C·2**-24·ln C, which for many members would exceed any
        # fixed EU floor; the sums over samples and classes stay in float32.
        total_mean = np.zeros((n_classes, length), dtype=np.float64)
        expected_entropy = np.zeros(length, dtype=np.float64)
        sample_sum = np.empty(length, dtype=np.float32)
        lowest = np.full(length, np.inf, dtype=np.float32)
        lowest_sum = np.full(length, np.inf, dtype=np.float32)
        highest_sum = np.full(length, -np.inf, dtype=np.float32)
        not_finite = np.zeros(length, dtype=np.float32)
        scaled = np.empty(length, dtype=np.float32)
        bits = np.empty(length, dtype=np.int32)
        floats = bits.view(np.float32)
        exponents = np.empty(length, dtype=np.float32)
        for e in range(n_members):
            member_mean[:] = 0.0
            for a in range(n_samples):
                sample_sum[:] = 0.0
                for c in range(n_classes):
                    row = _widen_row(x[image, e, a, c, start : start + length], floats, bits)
                    accumulator = member_mean[c]
                    for i in range(length):
                        v = row[i]
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
                    scaled[i] = v
                _negative_xlogx(scaled, expected_entropy, floats, bits, exponents)
        entropy = np.zeros(length, dtype=np.float64)
        best_value = np.full(length, -np.inf, dtype=np.float32)
        best_class = np.zeros(length, dtype=np.int32)
        for c in range(n_classes):
            total_row = total_mean[c]
            mean_row = mean[image, c, start : start + length]
            for i in range(length):
                v = np.float32(total_row[i] * inv_members)
                mean_row[i] = v
                scaled[i] = v
                better = v > best_value[i]
                best_value[i] = v if better else best_value[i]
                best_class[i] = c if better else best_class[i]
            _negative_xlogx(scaled, entropy, floats, bits, exponents)
        for i in range(length):
            aleatoric = expected_entropy[i] * inv_members
            au[image, start + i] = aleatoric
            tu[image, start + i] = entropy[i]
            difference = entropy[i] - aleatoric
            eu[image, start + i] = difference if difference >= eu_floor else 0.0
            pred[image, start + i] = best_class[i]
        _write_stats(stats, image, block, lowest, lowest_sum, highest_sum, not_finite)


@numba.njit(parallel=True, nogil=True, cache=True)
def value_stats_kernel(x, stats):
    """Per image and pixel block, the value statistics of :func:`decompose_kernel`.

    ``x`` is ``(image, sample, class, pixel)``; ``stats`` is ``(image, block, 4)``:
    non-finite pixel count, minimum value, minimum and maximum finite class sum.
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
        bits = np.empty(length, dtype=np.int32)
        floats = bits.view(np.float32)
        for s in range(n_draws):
            sample_sum[:] = 0.0
            for c in range(n_classes):
                row = _widen_row(x[image, s, c, start : start + length], floats, bits)
                for i in range(length):
                    v = row[i]
                    sample_sum[i] += v
                    lowest[i] = v if v < lowest[i] else lowest[i]
            _track_sums(sample_sum, lowest_sum, highest_sum, not_finite)
        _write_stats(stats, image, block, lowest, lowest_sum, highest_sum, not_finite)
