"""Numba kernels of the task metrics, over plain arrays with explicit axes.

Maps arrive flattened to ``(image, pixel)``; rater labels as ``(image, rater, pixel)``.
The public functions in :mod:`uqeval.metrics` validate inputs and wrap these.
"""

from __future__ import annotations

import numba
import numpy as np

from uqeval import _numba_cache

_numba_cache.install()  # before the first @numba.njit(cache=True)

#: Mantissa bits kept by the Platt key: values within a relative 2**-12 share a key.
PLATT_MANTISSA_BITS = 12
_SHIFT = 23 - PLATT_MANTISSA_BITS
#: Values below 2**-24 nats share key 0; values from 2**5 nats up share the last key.
PLATT_SMALLEST = np.float32(2.0**-24)
_LOW_KEY = int(np.array(PLATT_SMALLEST).view(np.uint32)) >> _SHIFT
_HIGH_KEY = int(np.array(np.float32(2.0**5)).view(np.uint32)) >> _SHIFT
#: Rows of a Platt table.
PLATT_KEYS = _HIGH_KEY - _LOW_KEY + 2
#: Units per 1 of the fixed-point sums of confidence histograms: 2**32, so a cell holds
#: up to 2**31 pixels and each value is kept to 2.3e-10.
FIXED_POINT = 2.0**32


@numba.njit(parallel=True, nogil=True, cache=True)
def rater_kernel(labels, pred, n_classes, ignore, class_index, variance, agree, valid, out_of_range):
    """Rater variance ``g``, agreement with ``pred`` and rater count.

    ``n_c`` counts the raters whose label is ``c`` at a pixel and ``n`` the raters whose
    label is not ``ignore``. ``g = 1 - Σ_c (n_c / n)² = Σ_c p_c (1 - p_c)`` is the
    population variance of the one-hot labels summed over classes; with
    ``class_index``, ``g = (n Σ l² - (Σ l)²) / n²`` is that of the labels ``l``
    themselves, in exact integer arithmetic. A pixel with ``n = 0`` gets ``g = 0`` and
    ``valid = 0``. Labels that are neither ``ignore`` nor a class are counted per image
    in ``out_of_range`` and otherwise treated as ignored.
    """
    n_images, n_raters, n_pixels = labels.shape
    for image in numba.prange(n_images):
        counts = np.zeros(n_classes, dtype=np.int64)
        bad = 0
        for pixel in range(n_pixels):
            total = 0
            squares = 0
            index_sum = 0
            index_squares = 0
            agreeing = 0
            predicted = pred[image, pixel]
            for rater in range(n_raters):
                label = labels[image, rater, pixel]
                if label == ignore:
                    continue
                if label < 0 or label >= n_classes:
                    bad += 1
                    continue
                squares += 2 * counts[label] + 1
                counts[label] += 1
                index = np.int64(label)
                index_sum += index
                index_squares += index * index
                total += 1
                if label == predicted:
                    agreeing += 1
            for rater in range(n_raters):
                label = labels[image, rater, pixel]
                if label >= 0 and label < n_classes:
                    counts[label] = 0
            valid[image, pixel] = total
            agree[image, pixel] = agreeing
            if total > 0 and class_index:
                variance[image, pixel] = (total * index_squares - index_sum * index_sum) / (total * total)
            elif total > 0:
                variance[image, pixel] = 1.0 - squares / (total * total)
            else:
                variance[image, pixel] = 0.0
        out_of_range[image] = bad


@numba.njit(nogil=True, cache=True)
def pearson_moments_kernel(reference, maps, valid, moments):
    """The moments of ``reference`` and ``maps`` over the valid pixels of one part of an image.

    ``moments`` (10,) float64 receives: count, the two means, the two centred sums of
    squares, the centred cross sum (two passes in float64), then the minimum and maximum
    of ``reference`` and of ``maps`` (±inf without a valid pixel). Parts merge with
    Chan et al.'s pairwise update (:class:`uqeval.metrics.ambiguity.PearsonMoments`).
    """
    count = 0
    sum_reference = 0.0
    sum_map = 0.0
    low_reference = np.inf
    high_reference = -np.inf
    low_map = np.inf
    high_map = -np.inf
    for pixel in range(maps.shape[0]):
        if valid[pixel] == 0:
            continue
        r = np.float64(reference[pixel])
        m = np.float64(maps[pixel])
        count += 1
        sum_reference += r
        sum_map += m
        low_reference = min(low_reference, r)
        high_reference = max(high_reference, r)
        low_map = min(low_map, m)
        high_map = max(high_map, m)
    mean_reference = sum_reference / count if count else 0.0
    mean_map = sum_map / count if count else 0.0
    cross = 0.0
    square_reference = 0.0
    square_map = 0.0
    for pixel in range(maps.shape[0]):
        if valid[pixel] == 0:
            continue
        r = np.float64(reference[pixel]) - mean_reference
        m = np.float64(maps[pixel]) - mean_map
        cross += r * m
        square_reference += r * r
        square_map += m * m
    moments[0] = count
    moments[1] = mean_reference
    moments[2] = mean_map
    moments[3] = square_reference
    moments[4] = square_map
    moments[5] = cross
    moments[6] = low_reference
    moments[7] = high_reference
    moments[8] = low_map
    moments[9] = high_map


@numba.njit(parallel=True, nogil=True, cache=True)
def pearson_kernel(reference, maps, valid, tolerance, shrink, correlation, state):
    """Pearson correlation (ddof 0) of ``reference`` and ``maps`` over valid pixels, per image.

    Each image's moments come from :func:`pearson_moments_kernel` (two passes in float64)
    and its correlation from :func:`pearson_of_moments`: ``state`` 0 scored, 1 a map is
    constant (its range is at most ``tolerance``, the range test, not a rounding residue
    of the variance), 2 no valid pixel; the correlation is NaN unless scored. With
    ``shrink``, the correlation of ``n`` pixels is multiplied by ``(n - 1) / n``.
    """
    for image in numba.prange(maps.shape[0]):
        moments = np.empty(10)
        pearson_moments_kernel(reference[image], maps[image], valid[image], moments)
        correlation[image], state[image] = pearson_of_moments(moments, tolerance, shrink)


@numba.njit(nogil=True, cache=True)
def pearson_of_moments(moments, tolerance, shrink):
    """``(correlation, state)`` from the moments of :func:`pearson_moments_kernel` (see :func:`pearson_kernel`)."""
    count = moments[0]
    if count == 0:
        return np.nan, 2
    if moments[7] - moments[6] <= tolerance or moments[9] - moments[8] <= tolerance:
        return np.nan, 1
    value = min(1.0, max(-1.0, moments[5] / np.sqrt(moments[3] * moments[4])))
    if shrink:
        value *= (count - 1) / count
    return value, 0


@numba.njit(inline="always")
def _platt_key(value, bits, last):
    """Row of ``value`` (its float32 bits ``bits``) in a Platt-keyed table of ``last + 1`` rows."""
    if value < PLATT_SMALLEST:
        return 0
    return min((np.int64(bits) >> _SHIFT) - _LOW_KEY + 1, last)


@numba.njit(nogil=True, cache=True)
def platt_table_kernel(maps, bits, agree, valid, table):
    """Add pixels to a Platt table: per key, ``n``, ``Σw``, ``ΣU`` and ``Σw·U``.

    ``bits`` is ``maps`` viewed as uint32; the key keeps the exponent and the top
    :data:`PLATT_MANTISSA_BITS` of the mantissa. ``w = agree / valid``; pixels with
    ``valid = 0`` are left out.
    """
    n_images, n_pixels = maps.shape
    last = table.shape[0] - 1
    for image in range(n_images):
        for pixel in range(n_pixels):
            raters = valid[image, pixel]
            if raters == 0:
                continue
            u = np.float64(maps[image, pixel])
            key = _platt_key(maps[image, pixel], bits[image, pixel], last)
            w = agree[image, pixel] / raters
            table[key, 0] += 1.0
            table[key, 1] += w
            table[key, 2] += u
            table[key, 3] += w * u


@numba.njit(parallel=True, nogil=True, cache=True)
def calibration_kernel(confidence, agree, valid, table):
    """Per image and confidence bin: pixel count, ``Σ confidence`` and ``Σ w``.

    ``confidence`` is each pixel's ``σ(intercept - slope·U)`` in float64 (computed by
    the caller with numpy, whose exp is vectorised); bin
    ``min(floor(confidence · bins), bins - 1)``, so 0 falls in the first bin and 1 in
    the last.
    """
    n_images, n_pixels = confidence.shape
    n_bins = table.shape[1]
    for image in numba.prange(n_images):
        for pixel in range(n_pixels):
            raters = valid[image, pixel]
            if raters == 0:
                continue
            value = confidence[image, pixel]
            index = min(int(value * n_bins), n_bins - 1)
            table[image, index, 0] += 1.0
            table[image, index, 1] += value
            table[image, index, 2] += agree[image, pixel] / raters


@numba.njit(nogil=True, cache=True)
def confidence_histogram_kernel(maps, bits, confidence, agree, valid, groups, table, touched):
    """Add pixels to per-group tables keyed like the Platt table: ``n``, ``Σw``, ``Σconfidence``.

    ``groups`` (image,) gives each image's table (``-1``: the image is left out);
    ``table`` is (group, key, 3) int64. ``confidence`` is each pixel's
    ``σ(intercept - slope·U)`` in float64, as in :func:`calibration_kernel`; ``w`` and it are added in
    fixed point, rounded to :data:`FIXED_POINT` units, so that the sums are exact
    integers whatever the order of the pixels.

    ``touched`` receives the flat index ``group · keys + key`` of each cell that was
    empty before, in the order first reached, while it has room; returns their number.
    """
    n_images, n_pixels = maps.shape
    n_keys = table.shape[1]
    last = n_keys - 1
    n_touched = 0
    for image in range(n_images):
        group = groups[image]
        if group < 0:
            continue
        for pixel in range(n_pixels):
            raters = valid[image, pixel]
            if raters == 0:
                continue
            key = _platt_key(maps[image, pixel], bits[image, pixel], last)
            if table[group, key, 0] == 0 and n_touched < touched.shape[0]:
                touched[n_touched] = group * n_keys + key
                n_touched += 1
            table[group, key, 0] += 1
            table[group, key, 1] += np.int64(np.round(agree[image, pixel] / raters * FIXED_POINT))
            table[group, key, 2] += np.int64(np.round(confidence[image, pixel] * FIXED_POINT))
    return n_touched


@numba.njit(nogil=True, cache=True)
def take_cells_kernel(table, touched, cells, rows):
    """Copy the table cells listed in ``touched`` (flat ``group · keys + key``) out and
    zero them: ``cells`` (n, 2) gets (group, key), ``rows`` (n, 3) the cell's sums."""
    n_keys = table.shape[1]
    for i in range(touched.shape[0]):
        group = touched[i] // n_keys
        key = touched[i] % n_keys
        cells[i, 0] = group
        cells[i, 1] = key
        for column in range(3):
            rows[i, column] = table[group, key, column]
            table[group, key, column] = 0


@numba.njit(nogil=True, cache=True)
def add_cells_kernel(table, cells, rows):
    """``table[group, key] += row`` for each (group, key) of ``cells`` and row of ``rows``
    (a cell listed twice is added twice)."""
    for i in range(cells.shape[0]):
        group = cells[i, 0]
        key = cells[i, 1]
        for column in range(3):
            table[group, key, column] += rows[i, column]


@numba.njit(parallel=True, nogil=True, cache=True)
def predictive_kernel(mean, labels, n_classes, ignore, inverse_temperature, floor, brier, nll, pairs, confidence):
    """Per image, sums over (rater, pixel) pairs of the Brier score and the NLL of the
    predicted distribution ``p``, and each pixel's confidence ``max_c p_c``.

    ``mean`` is (image, class, pixel) float32, ``labels`` (image, rater, pixel); a pair
    whose label is ``ignore`` (or not a class) is left out. With ``inverse_temperature``
    0, ``p`` is ``mean`` as it is; else ``p = softmax(β · ln max(mean, floor))``. Per pair
    with label ``l``: Brier ``Σ_c p_c² − 2 p_l + 1``, NLL ``−ln max(p_l, floor)``.
    """
    n_images, _, n_pixels = mean.shape
    n_raters = labels.shape[1]
    beta = inverse_temperature
    for image in numba.prange(n_images):
        p = np.empty(n_classes)
        brier_sum = 0.0
        nll_sum = 0.0
        count = 0
        for pixel in range(n_pixels):
            if beta == 0.0:
                for c in range(n_classes):
                    p[c] = mean[image, c, pixel]
            else:
                top = -np.inf
                for c in range(n_classes):
                    p[c] = beta * np.log(max(np.float64(mean[image, c, pixel]), floor))
                    top = max(top, p[c])
                total = 0.0
                for c in range(n_classes):
                    p[c] = np.exp(p[c] - top)
                    total += p[c]
                for c in range(n_classes):
                    p[c] /= total
            squares = 0.0
            largest = p[0]
            for c in range(n_classes):
                squares += p[c] * p[c]
                largest = max(largest, p[c])
            confidence[image, pixel] = largest
            for rater in range(n_raters):
                label = labels[image, rater, pixel]
                if label == ignore or label < 0 or label >= n_classes:
                    continue
                chosen = p[label]
                brier_sum += squares - 2.0 * chosen + 1.0
                nll_sum -= np.log(max(chosen, floor))
                count += 1
        brier[image] = brier_sum
        nll[image] = nll_sum
        pairs[image] = count


@numba.njit(parallel=True, nogil=True, cache=True)
def temperature_moments_kernel(logs, weight, linear, beta):
    """The NLL of temperature scaling at ``T = 1/β`` and its first two derivatives in ``β``,
    summed over pixels ``i``: ``Σ_i [w_i LSE(β z_i) − β a_i]``, ``Σ_i [w_i E[z_i] − a_i]`` and
    ``Σ_i w_i Var[z_i]``, with ``z_i = ln max(m_i, floor)`` (``logs`` (pixel, class)
    float64), ``w_i`` the pixel's raters, ``a_i = Σ_r z_{i, l_r}`` (``linear``) and the
    expectations under ``softmax(β z_i)``."""
    n_pixels, n_classes = logs.shape
    value = 0.0
    first = 0.0
    second = 0.0
    for pixel in numba.prange(n_pixels):
        z = np.empty(n_classes)
        top = -np.inf
        for c in range(n_classes):
            z[c] = logs[pixel, c]
            top = max(top, beta * z[c])
        total = 0.0
        moment1 = 0.0
        moment2 = 0.0
        for c in range(n_classes):
            e = np.exp(beta * z[c] - top)
            total += e
            moment1 += e * z[c]
            moment2 += e * z[c] * z[c]
        moment1 /= total
        moment2 /= total
        w = weight[pixel]
        value += w * (top + np.log(total)) - beta * linear[pixel]
        first += w * moment1 - linear[pixel]
        second += w * (moment2 - moment1 * moment1)
    return value, first, second
