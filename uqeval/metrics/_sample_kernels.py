"""Numba kernel of the sample scores (:mod:`uqeval.metrics.sample_scores`): every sample's
and every member's predicted class, counted in one pass over the sample cube.

The cube arrives as ``(image, eu, au, class, pixel)``, float16 as its ``uint16`` bit
pattern (:func:`uqeval._kernels.as_kernel_input`). Each value is read once: it is added
to its member's sum over samples and compared with the best class of its sample so far.
Nothing the size of the cube is allocated; a task holds one block of pixels' member
sums and member predictions.
"""

from __future__ import annotations

import numba
import numpy as np

from uqeval import _numba_cache
from uqeval._kernels import _widen

_numba_cache.install()  # before the first @numba.njit(cache=True)

#: Pixels per parallel task of :func:`sample_counts_kernel`: the block's member sums
#: (4 bytes per class and pixel) and member predictions (4 bytes per member and pixel)
#: stay in L2.
SAMPLE_PIXEL_BLOCK = 4096


@numba.njit(inline="always")
def _first_class(row, accumulator, best_value, best_class):
    """Class 0 of one sample: added to its member's sum, and the sample's best so far."""
    for i in range(row.shape[0]):
        v = _widen(row[i])
        accumulator[i] += v
        best_value[i] = v
        best_class[i] = 0


@numba.njit(inline="always")
def _next_class(row, accumulator, best_value, best_class, c):
    """Class ``c > 0`` of one sample: added to its member's sum; the sample's best class
    kept (the first on ties, as ``np.argmax``)."""
    for i in range(row.shape[0]):
        v = _widen(row[i])
        accumulator[i] += v
        better = v > best_value[i]
        best_value[i] = v if better else best_value[i]
        best_class[i] = c if better else best_class[i]


@numba.njit(inline="always")
def _last_class(row, accumulator, best_value, best_class, c, background):
    """:func:`_next_class` for the last class; returns the sample's foreground pixels."""
    count = 0
    for i in range(row.shape[0]):
        v = _widen(row[i])
        accumulator[i] += v
        better = v > best_value[i]
        label = c if better else best_class[i]
        count += label != background
    return count


@numba.njit(inline="always")
def _two_class_samples(first, second, first_other, second_other, accumulator, accumulator_second):
    """Two samples of a two-class cube at once (classes ``first``/``second`` of one
    sample, ``*_other`` of the next): their member sums, added in sample order, and the
    pixels each predicts as class 1 (``p_1 > p_0``; class 0 on ties)."""
    count = 0
    count_other = 0
    for i in range(first.shape[0]):
        v0 = _widen(first[i])
        v1 = _widen(second[i])
        w0 = _widen(first_other[i])
        w1 = _widen(second_other[i])
        accumulator[i] = accumulator[i] + v0 + w0
        accumulator_second[i] = accumulator_second[i] + v1 + w1
        count += v1 > v0
        count_other += w1 > w0
    return count, count_other


@numba.njit(inline="always")
def _two_class_sample(first, second, accumulator, accumulator_second):
    """:func:`_two_class_samples` for one sample."""
    count = 0
    for i in range(first.shape[0]):
        v0 = _widen(first[i])
        v1 = _widen(second[i])
        accumulator[i] += v0
        accumulator_second[i] += v1
        count += v1 > v0
    return count


def _counting_kernel(two_class: bool):
    """The sample-count kernel for cubes of two classes (``two_class``) or of any number.

    ``two_class`` is a constant of the compiled code, so each kernel compiles only its
    own path: a store compiles one of them, about a third faster than both paths in one
    kernel (numba caches each closure by its constants).
    """

    @numba.njit(parallel=True, nogil=True, cache=True)
    def sample_counts_kernel(x, background, foreground, sizes, intersections):
        """Count the predicted classes of every sample and member, per image and pixel block.

        Parameters
        ----------
        x : (image, eu, au, class, pixel) float32/float64, or uint16 float16 bits; C-contiguous
        background : int
            The background class.
        foreground : (image, block, eu·au) int64, written
            Pixels of the block whose sample ``(e, a)`` (at ``e·au + a``) predicts a class
            other than ``background``: ``argmax_c p[e, a, c]``.
        sizes : (image, block, eu, class) int64, written
            Pixels of the block that member ``e`` predicts as class ``c``: its prediction is
            ``argmax_c Σ_a p[e, a, c]``, the argmax of its mean over its samples.
        intersections : (image, block, pair, class) int64, written
            Pixels of the block that both members of a pair predict as class ``c`` (0 for
            the background); the pairs ``(e1, e2)``, ``e1 < e2``, in the order of
            ``itertools.combinations``.

        Blocks are :data:`SAMPLE_PIXEL_BLOCK` pixels. A member's sum over its samples
        accumulates in float32, sample by sample in order; argmaxes keep the first class on
        ties. The kernel for two-class cubes takes a path of its own that reads two samples
        per pass and keeps each sample's prediction in registers.
        """
        n_images, n_members, n_samples, n_classes, n_pixels = x.shape
        n_blocks = foreground.shape[1]
        paired = n_samples - n_samples % 2
        last = n_classes - 1
        for task in numba.prange(n_images * n_blocks):
            image = task // n_blocks
            block = task % n_blocks
            start = block * SAMPLE_PIXEL_BLOCK
            stop = min(n_pixels, start + SAMPLE_PIXEL_BLOCK)
            length = stop - start
            member_sum = np.empty((n_classes, length), dtype=np.float32)
            best_value = np.empty(length, dtype=np.float32)
            best_class = np.empty(length, dtype=np.int32)
            predicted = np.empty((n_members, length), dtype=np.int32)
            for e in range(n_members):
                member_sum[:] = 0.0
                first_sample = e * n_samples
                if two_class:
                    for a in range(0, paired, 2):
                        count, count_other = _two_class_samples(
                            x[image, e, a, 0, start:stop],
                            x[image, e, a, 1, start:stop],
                            x[image, e, a + 1, 0, start:stop],
                            x[image, e, a + 1, 1, start:stop],
                            member_sum[0],
                            member_sum[1],
                        )
                        foreground[image, block, first_sample + a] = count if background == 0 else length - count
                        foreground[image, block, first_sample + a + 1] = (
                            count_other if background == 0 else length - count_other
                        )
                    if paired < n_samples:
                        count = _two_class_sample(
                            x[image, e, paired, 0, start:stop],
                            x[image, e, paired, 1, start:stop],
                            member_sum[0],
                            member_sum[1],
                        )
                        foreground[image, block, first_sample + paired] = count if background == 0 else length - count
                else:
                    for a in range(n_samples):
                        _first_class(x[image, e, a, 0, start:stop], member_sum[0], best_value, best_class)
                        for c in range(1, last):
                            _next_class(x[image, e, a, c, start:stop], member_sum[c], best_value, best_class, c)
                        foreground[image, block, first_sample + a] = _last_class(
                            x[image, e, a, last, start:stop], member_sum[last], best_value, best_class, last, background
                        )
                labels = predicted[e]
                best_value[:] = member_sum[0]
                labels[:] = 0
                for c in range(1, n_classes):
                    row = member_sum[c]
                    for i in range(length):
                        better = row[i] > best_value[i]
                        best_value[i] = row[i] if better else best_value[i]
                        labels[i] = c if better else labels[i]
                for c in range(n_classes):
                    count = 0
                    for i in range(length):
                        count += labels[i] == c
                    sizes[image, block, e, c] = count
            pair = 0
            for first in range(n_members):
                for second in range(first + 1, n_members):
                    intersections[image, block, pair, background] = 0
                    for c in range(n_classes):
                        if c == background:
                            continue
                        count = 0
                        for i in range(length):
                            count += (predicted[first, i] == c) & (predicted[second, i] == c)
                        intersections[image, block, pair, c] = count
                    pair += 1

    return sample_counts_kernel


#: :func:`_counting_kernel` for cubes of any number of classes.
sample_counts_kernel = _counting_kernel(two_class=False)
#: :func:`_counting_kernel` for cubes of two classes: the same counts, faster.
two_class_sample_counts_kernel = _counting_kernel(two_class=True)
