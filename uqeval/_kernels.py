"""Numba kernels over plain arrays with explicit axes.

Public functions in :mod:`uqeval.decomposition` and :mod:`uqeval.checks` wrap these for
numpy, xarray and dask inputs; nothing here knows about labels or dims.

The decomposition streams its input once, so every inner loop runs over a contiguous
row of pixels and LLVM vectorises it:

- Numba has no float16 on the CPU, so half-precision input arrives as its ``uint16``
  bit pattern and is widened in the loop that reads it: by the CPU's half-to-float
  conversion (x86 F16C) where there is one, else exactly by bit arithmetic (the
  pattern shifted into float32 position, times 2**112).
- ``ln`` is computed by :func:`_xlogx`, a branch-free float32 logarithm (Cephes
  ``logf``: exponent from the bits, degree-9 polynomial on the mantissa, about 1 ulp),
  since libm's scalar ``logf`` would cost as much as reading the input.
- The value checks (finite, non-negative, every sample summing to 1) ride along as
  integer minimum and maximum reductions of float bit patterns, which order like the
  floats for non-negative values. Only a block in which they see something odd
  (a sign bit, a sum of 2**16 or more, inf or NaN) is checked again value by value.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.extending import intrinsic, overload

from uqeval import _numba_cache

_numba_cache.install()  # before the first @numba.njit(cache=True)

#: Pixels per parallel task of the value checks (:func:`value_stats_kernel`).
PIXEL_BLOCK = 1024

#: Bounds on the pixels per parallel task of :func:`decompose_kernel`, chosen by
#: :func:`decompose_block`. Long blocks read each (member, sample, class) plane in long
#: sequential runs, which the memory system streams faster; 16384 pixels keep the
#: block's float32 and float64 accumulators (12 bytes per pixel and class) in L2.
SMALLEST_DECOMPOSE_BLOCK = 1024
LARGEST_DECOMPOSE_BLOCK = 16384

#: Floor inside the logarithm: ``v ln max(v, tiny)`` is exactly 0 at v = 0 and below
#: the floor the term is under 1e-28 nats. A normal float32, so the bit-level log holds.
_TINY = np.float32(1e-30)
_SQRT_HALF = np.float32(0.70710677)
_LN2_HIGH = np.float32(0.693359375)
_LN2_LOW = np.float32(-2.12194440e-4)

#: 2**112: rescales a float16 bit pattern shifted into float32 position to its value,
#: exactly for every finite half (subnormals included). The inf and NaN patterns become
#: 65536 or more, above every finite half (65504).
_HALF_EXPONENT_SHIFT = np.float32(2.0**112)

#: Bit pattern of 65536.0f. A sample whose class sum reaches it (or is inf or NaN), or
#: any value with its sign bit set, sends the block to the exact value checks; sums of
#: finite non-negative values below it are ordered by their bit patterns.
_SUSPECT_SUM_BITS = 0x47800000


def as_kernel_input(x: np.ndarray) -> np.ndarray:
    """The array as the kernels take it: float16 becomes its ``uint16`` bit pattern."""
    return x.view(np.uint16) if x.dtype == np.float16 else x


def decompose_block(n_images: int, n_pixels: int, n_threads: int) -> int:
    """Pixels per task of :func:`decompose_kernel`: as long as allowed while every thread
    still gets at least two tasks, a multiple of 64."""
    wanted_tasks = 2 * n_threads
    blocks_per_image = -(-wanted_tasks // max(n_images, 1))
    block = -(-n_pixels // blocks_per_image)
    block = -(-block // 64) * 64
    return int(min(LARGEST_DECOMPOSE_BLOCK, max(SMALLEST_DECOMPOSE_BLOCK, block)))


@intrinsic
def _bits_of(typingctx, value):
    """The int32 bit pattern of a float32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@intrinsic
def _float_of(typingctx, value):
    """The float32 whose bit pattern is the low 32 bits of an integer."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        if value.bitwidth != 32:
            word = builder.trunc(word, context.get_value_type(types.int32))
        return builder.bitcast(word, context.get_value_type(types.float32))

    return types.float32(value), codegen


def _has_half_conversion() -> bool:
    """Whether kernels may convert float16 with the CPU's F16C instructions.

    Not when numba is told to compile for another CPU (``NUMBA_CPU_NAME`` or
    ``NUMBA_CPU_FEATURES``): LLVM would then call a runtime routine the JIT may lack.
    """
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return bool(binding.get_host_cpu_features().get("f16c", False))


#: Decided once per process; numba's cache keys compiled kernels by CPU and features.
HALF_CONVERSION = _has_half_conversion()


@intrinsic
def _half_to_float(typingctx, value):
    """float16 bits to float32 by LLVM's ``fpext`` (F16C ``vcvtph2ps``): exact for every
    pattern, inf and NaN included."""
    if value != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@numba.njit(inline="always")
def _half_bits_to_float(value):
    """float16 bits to float32 by bit arithmetic: exact for every finite half
    (subnormals included); inf and NaN become 65536 or more."""
    half = np.int32(value)
    return _float_of(((half & 0x7FFF) << 13) | ((half & 0x8000) << 16)) * _HALF_EXPONENT_SHIFT


def _widen(value):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_widen, inline="always")
def _widen_overload(value):
    """One input value as float32: float16 bits widened exactly for every finite half
    (inf and NaN stay inf and NaN with F16C, else become 65536 or more; either way the
    sample's sum sends the block to the exact checks), float32 as is, float64 rounded."""
    if isinstance(value, types.Integer):
        if HALF_CONVERSION:
            return lambda value: _half_to_float(value)
        return lambda value: _half_bits_to_float(value)
    if value == types.float32:
        return lambda value: value
    return lambda value: np.float32(value)


def _widen_exact(value):  # pragma: no cover - replaced by the overload below
    raise NotImplementedError


@overload(_widen_exact, inline="always")
def _widen_exact_overload(value):
    """As :func:`_widen`, but the float16 inf and NaN patterns become NaN."""
    if isinstance(value, types.Integer):

        def widen_half(value):
            widened = _half_bits_to_float(value)
            return np.float32(np.nan) if (np.int32(value) & 0x7C00) == 0x7C00 else widened

        return widen_half
    return lambda value: _widen(value)


@numba.njit(inline="always")
def _xlogx(v):
    """``v ln v`` for ``v`` in [0, 1] in float32, with ``0 ln 0 = 0``."""
    word = _bits_of(max(v, _TINY))
    exponent = np.float32(((word >> 23) & 0xFF) - 126)
    mantissa = _float_of((word & 0x007FFFFF) | 0x3F000000)  # in [0.5, 1)
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
    return v * (x + y + _LN2_HIGH * exponent)


@numba.njit(inline="always")
def _exact_value_stats(x, image, start, length):
    """Value statistics of one pixel block, value by value (the slow path).

    ``x`` is ``(image, sample, class, pixel)``. Returns the number of pixels with a
    non-finite value in some sample, the minimum value, and the minimum and maximum
    finite class sum of one sample. A NaN or inf among a sample's values makes its sum
    non-finite; ``total - total`` is then NaN, which marks that pixel.
    """
    n_draws, n_classes = x.shape[1], x.shape[2]
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
                v = _widen_exact(row[i])
                sample_sum[i] += v
                lowest[i] = v if v < lowest[i] else lowest[i]
        for i in range(length):
            total = sample_sum[i]
            finite = total - total == 0.0
            lowest_sum[i] = total if finite and total < lowest_sum[i] else lowest_sum[i]
            highest_sum[i] = total if finite and total > highest_sum[i] else highest_sum[i]
            not_finite[i] += total - total
    n_bad = 0.0
    for i in range(length):
        if not_finite[i] != 0.0:
            n_bad += 1.0
    return n_bad, lowest.min(), lowest_sum.min(), highest_sum.max()


@numba.njit(inline="always")
def _add_samples(row, other, accumulator, partial, partial_other, position, lowest_bits, lowest_sum, highest_sum):
    """Add class ``c`` of two samples to the member sum; track their checks.

    ``position`` is 0 for the first class (``partial`` starts), 1 for a middle one and
    2 for the last (the samples' class sums are complete and enter the reductions).
    Adding ``(acc + v) + w`` keeps the summation order of one sample at a time.
    """
    n = row.shape[0]
    if position == 0:
        for i in range(n):
            v = _widen(row[i])
            w = _widen(other[i])
            accumulator[i] = accumulator[i] + v + w
            partial[i] = v
            partial_other[i] = w
            lowest_bits = min(lowest_bits, min(_bits_of(v), _bits_of(w)))
    elif position == 1:
        for i in range(n):
            v = _widen(row[i])
            w = _widen(other[i])
            accumulator[i] = accumulator[i] + v + w
            partial[i] += v
            partial_other[i] += w
            lowest_bits = min(lowest_bits, min(_bits_of(v), _bits_of(w)))
    else:
        for i in range(n):
            v = _widen(row[i])
            w = _widen(other[i])
            accumulator[i] = accumulator[i] + v + w
            total = _bits_of(partial[i] + v)
            total_other = _bits_of(partial_other[i] + w)
            lowest_bits = min(lowest_bits, min(_bits_of(v), _bits_of(w)))
            lowest_sum = min(lowest_sum, min(total, total_other))
            highest_sum = max(highest_sum, max(total, total_other))
    return lowest_bits, lowest_sum, highest_sum


@numba.njit(inline="always")
def _add_two_class_samples(
    first, second, first_other, second_other, accumulator, accumulator_second, lowest_bits, lowest_sum, highest_sum
):
    """:func:`_add_samples` for both classes of a two-class cube at once.

    ``first``/``second`` are classes 0 and 1 of one sample, ``*_other`` of the next.
    A sample's class sum is then formed in registers rather than in a buffer; the
    order of every addition is that of the general path, so the results are identical.
    """
    n = first.shape[0]
    for i in range(n):
        v0 = _widen(first[i])
        v1 = _widen(second[i])
        w0 = _widen(first_other[i])
        w1 = _widen(second_other[i])
        accumulator[i] = accumulator[i] + v0 + w0
        accumulator_second[i] = accumulator_second[i] + v1 + w1
        total = _bits_of(v0 + v1)
        total_other = _bits_of(w0 + w1)
        lowest_bits = min(lowest_bits, min(min(_bits_of(v0), _bits_of(v1)), min(_bits_of(w0), _bits_of(w1))))
        lowest_sum = min(lowest_sum, min(total, total_other))
        highest_sum = max(highest_sum, max(total, total_other))
    return lowest_bits, lowest_sum, highest_sum


@numba.njit(inline="always")
def _add_two_class_sample(first, second, accumulator, accumulator_second, lowest_bits, lowest_sum, highest_sum):
    """:func:`_add_two_class_samples` for one sample."""
    n = first.shape[0]
    for i in range(n):
        v0 = _widen(first[i])
        v1 = _widen(second[i])
        accumulator[i] += v0
        accumulator_second[i] += v1
        total = _bits_of(v0 + v1)
        lowest_bits = min(lowest_bits, min(_bits_of(v0), _bits_of(v1)))
        lowest_sum = min(lowest_sum, total)
        highest_sum = max(highest_sum, total)
    return lowest_bits, lowest_sum, highest_sum


@numba.njit(inline="always")
def _add_sample(row, accumulator, partial, position, lowest_bits, lowest_sum, highest_sum):
    """:func:`_add_samples` for one sample (the last of an odd number)."""
    n = row.shape[0]
    if position == 0:
        for i in range(n):
            v = _widen(row[i])
            accumulator[i] += v
            partial[i] = v
            lowest_bits = min(lowest_bits, _bits_of(v))
    elif position == 1:
        for i in range(n):
            v = _widen(row[i])
            accumulator[i] += v
            partial[i] += v
            lowest_bits = min(lowest_bits, _bits_of(v))
    else:
        for i in range(n):
            v = _widen(row[i])
            accumulator[i] += v
            total = _bits_of(partial[i] + v)
            lowest_bits = min(lowest_bits, _bits_of(v))
            lowest_sum = min(lowest_sum, total)
            highest_sum = max(highest_sum, total)
    return lowest_bits, lowest_sum, highest_sum


@numba.njit(parallel=True, nogil=True, cache=True)
def decompose_kernel(x, au, eu, tu, mean, pred, stats, eu_floor, pixel_block):
    """Entropy decomposition of a batch of sample cubes, in one pass (any number of
    classes; :func:`two_class_decompose_kernel` is faster for two).

    Parameters
    ----------
    x : (image, eu, au, class, pixel) float32/float64, or uint16 float16 bits; C-contiguous
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
    pixel_block : int
        Pixels per parallel task (:func:`decompose_block`); ``stats`` has
        ``ceil(pixel / pixel_block)`` blocks.

    Per pixel: ``m_e = mean_a p[e, a]``, ``m = mean_e m_e``, ``TU = H(m)``,
    ``AU = mean_e H(m_e)``, ``EU = TU - AU`` where that is at least ``eu_floor``, else 0,
    ``H(p) = -Σ p ln p`` with ``0 ln 0 = 0``. Sums over samples and classes accumulate
    in float32, sums over members in float64. Where the input breaks the contract
    (``stats`` says so), the maps are unspecified.
    """
    n_blocks = (x.shape[4] + pixel_block - 1) // pixel_block
    for task in numba.prange(x.shape[0] * n_blocks):
        _decompose_block(x, au, eu, tu, mean, pred, stats, eu_floor, pixel_block, task // n_blocks, task % n_blocks)


@numba.njit(parallel=True, nogil=True, cache=True)
def two_class_decompose_kernel(x, au, eu, tu, mean, pred, stats, eu_floor, pixel_block):
    """:func:`decompose_kernel` for two-class cubes, by a path of its own: it reads two
    samples of both classes per pass. Identical maps; a store compiles one of the two."""
    n_blocks = (x.shape[4] + pixel_block - 1) // pixel_block
    for task in numba.prange(x.shape[0] * n_blocks):
        _two_class_decompose_block(
            x, au, eu, tu, mean, pred, stats, eu_floor, pixel_block, task // n_blocks, task % n_blocks
        )


def _block_function(two_class: bool):
    """The function that does one task of a decomposition kernel: the pixels
    ``[block·pixel_block, …)`` of ``image``, for two-class cubes or for any number of classes.

    A function of its own rather than the body of the parallel loop: numba's parallel
    passes then see one call, not a loop nest to analyse and outline, which cuts the
    first compilation of each input dtype from about 25 to about 14 CPU-seconds at the
    same speed. ``two_class`` is a constant of the compiled code, so each kernel compiles
    only its own path.
    """

    @numba.njit(nogil=True)
    def block_task(x, au, eu, tu, mean, pred, stats, eu_floor, pixel_block, image, block):
        n_images, n_members, n_samples, n_classes, n_pixels = x.shape
        draws = x.reshape(n_images, n_members * n_samples, n_classes, n_pixels)
        inv_samples = np.float32(1.0 / n_samples)
        inv_members = 1.0 / n_members
        last_class = n_classes - 1
        paired = n_samples - n_samples % 2
        start = block * pixel_block
        stop = min(n_pixels, start + pixel_block)
        length = stop - start
        member_sum = np.empty((n_classes, length), dtype=np.float32)
        # Sums over members in float64: a float32 running sum of E·C entropy terms
        # drifts by about E·C·2**-24·ln C, which for many members would exceed any
        # fixed EU floor; the sums over samples and classes stay in float32.
        total_mean = np.zeros((n_classes, length), dtype=np.float64)
        expected_entropy = np.zeros(length, dtype=np.float64)
        partial = np.empty(length, dtype=np.float32)
        partial_other = np.empty(length, dtype=np.float32)
        lowest_bits = np.int32(0x7FFFFFFF)
        lowest_sum = np.int32(0x7FFFFFFF)
        highest_sum = np.int32(0)
        for e in range(n_members):
            member_sum[:] = 0.0
            # Two samples per pass halve the loads and stores of the member sums.
            for a in range(0, paired, 2):
                if two_class:
                    lowest_bits, lowest_sum, highest_sum = _add_two_class_samples(
                        x[image, e, a, 0, start:stop],
                        x[image, e, a, 1, start:stop],
                        x[image, e, a + 1, 0, start:stop],
                        x[image, e, a + 1, 1, start:stop],
                        member_sum[0],
                        member_sum[1],
                        lowest_bits,
                        lowest_sum,
                        highest_sum,
                    )
                    continue
                for c in range(n_classes):
                    position = 0 if c == 0 else (2 if c == last_class else 1)
                    lowest_bits, lowest_sum, highest_sum = _add_samples(
                        x[image, e, a, c, start:stop],
                        x[image, e, a + 1, c, start:stop],
                        member_sum[c],
                        partial,
                        partial_other,
                        position,
                        lowest_bits,
                        lowest_sum,
                        highest_sum,
                    )
            if paired < n_samples and two_class:
                lowest_bits, lowest_sum, highest_sum = _add_two_class_sample(
                    x[image, e, paired, 0, start:stop],
                    x[image, e, paired, 1, start:stop],
                    member_sum[0],
                    member_sum[1],
                    lowest_bits,
                    lowest_sum,
                    highest_sum,
                )
            elif paired < n_samples:
                for c in range(n_classes):
                    position = 0 if c == 0 else (2 if c == last_class else 1)
                    lowest_bits, lowest_sum, highest_sum = _add_sample(
                        x[image, e, paired, c, start:stop],
                        member_sum[c],
                        partial,
                        position,
                        lowest_bits,
                        lowest_sum,
                        highest_sum,
                    )
            for c in range(n_classes):
                member_row = member_sum[c]
                total_row = total_mean[c]
                # The float32 logarithms in one loop (16 lanes), the float64 sums in the
                # next: mixed in one loop, the float64 half sets the vector width.
                for i in range(length):
                    v = member_row[i] * inv_samples
                    member_row[i] = v
                    partial[i] = _xlogx(v)
                for i in range(length):
                    total_row[i] += member_row[i]
                    expected_entropy[i] -= partial[i]
        entropy = np.zeros(length, dtype=np.float64)
        best_value = np.full(length, -np.inf, dtype=np.float32)
        best_class = np.zeros(length, dtype=np.int32)
        for c in range(n_classes):
            total_row = total_mean[c]
            mean_row = mean[image, c, start:stop]
            for i in range(length):
                v = np.float32(total_row[i] * inv_members)
                mean_row[i] = v
                entropy[i] -= _xlogx(v)
                better = v > best_value[i]
                best_value[i] = v if better else best_value[i]
                best_class[i] = c if better else best_class[i]
        for i in range(length):
            aleatoric = expected_entropy[i] * inv_members
            au[image, start + i] = aleatoric
            tu[image, start + i] = entropy[i]
            difference = entropy[i] - aleatoric
            eu[image, start + i] = difference if difference >= eu_floor else 0.0
            pred[image, start + i] = best_class[i]
        if lowest_bits < 0 or highest_sum >= _SUSPECT_SUM_BITS:
            n_bad, lowest, lowest_total, highest_total = _exact_value_stats(draws, image, start, length)
            stats[image, block, 0] = n_bad
            stats[image, block, 1] = lowest
            stats[image, block, 2] = lowest_total
            stats[image, block, 3] = highest_total
        else:
            stats[image, block, 0] = 0.0
            stats[image, block, 1] = _float_of(lowest_bits)
            stats[image, block, 2] = _float_of(lowest_sum)
            stats[image, block, 3] = _float_of(highest_sum)

    return block_task


_decompose_block = _block_function(two_class=False)
_two_class_decompose_block = _block_function(two_class=True)


@numba.njit(parallel=True, nogil=True, cache=True)
def value_stats_kernel(x, stats):
    """Per image and pixel block, the value statistics of :func:`decompose_kernel`.

    ``x`` is ``(image, sample, class, pixel)``; ``stats`` is ``(image, block, 4)`` with
    blocks of :data:`PIXEL_BLOCK` pixels: non-finite pixel count, minimum value,
    minimum and maximum finite class sum.
    """
    n_images, n_pixels = x.shape[0], x.shape[3]
    n_blocks = (n_pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    for task in numba.prange(n_images * n_blocks):
        image = task // n_blocks
        block = task % n_blocks
        start = block * PIXEL_BLOCK
        length = min(n_pixels, start + PIXEL_BLOCK) - start
        n_bad, lowest, lowest_sum, highest_sum = _exact_value_stats(x, image, start, length)
        stats[image, block, 0] = n_bad
        stats[image, block, 1] = lowest
        stats[image, block, 2] = lowest_sum
        stats[image, block, 3] = highest_sum
