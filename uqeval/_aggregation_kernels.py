"""Numba kernels of the aggregation strategies that look at neighbours (:mod:`uqeval.aggregation`).

Maps arrive as ``(image, z, y, x)``; a 2D batch is a batch of volumes of depth 1. The
kernels count and sum in the same order as the summed-area table of the 2D strategies
did in numpy, so that 2D scores are unchanged to the last bit.
"""

from __future__ import annotations

import numba
import numpy as np

from uqeval import _numba_cache

_numba_cache.install()  # before the first @numba.njit(cache=True)

#: Output planes (z positions of a window) per parallel task of :func:`patch_max_kernel`.
#: Fixed, not chosen by the thread count, so that the running z-sums, and the scores,
#: are the same on every machine.
PLANES_PER_TASK = 8


@numba.njit(parallel=True, nogil=True, cache=True)
def patch_max_kernel(u, window_z, window_y, window_x, best):
    """Largest ``k_z × k_y × k_x`` window sum per image and task of output planes.

    Parameters
    ----------
    u : (image, z, y, x) float32 or float64, C-contiguous
    window_z, window_y, window_x : int
        Window sides, each at most the map's size along its axis.
    best : (image, task) float64, written
        The largest window sum among the windows whose first plane lies in the task's
        :data:`PLANES_PER_TASK` planes (``-inf`` for a task without any); NaN when a
        window sum is NaN.

    Along ``z`` the sum of the window's planes is kept in float64 and slid one plane at
    a time (one plane added, one taken away); each such plane of z-sums then gets a
    float64 summed-area table ``T`` (cumulative sums along ``y``, then ``x``), and a
    window's sum is ``T[y+k_y, x+k_x] - T[y, x+k_x] - T[y+k_y, x] + T[y, x]``. The cost
    per voxel does not grow with the window.
    """
    n_images, depth, height, width = u.shape
    n_planes = depth - window_z + 1
    n_tasks = (n_planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK
    for task in numba.prange(n_images * n_tasks):
        image = task // n_tasks
        first = (task % n_tasks) * PLANES_PER_TASK
        last = min(n_planes, first + PLANES_PER_TASK)
        plane = np.empty((height, width), dtype=np.float64)
        table = np.zeros((height + 1, width + 1), dtype=np.float64)
        result = -np.inf
        for z in range(first, last):
            if z == first:
                for y in range(height):
                    for x in range(width):
                        plane[y, x] = np.float64(u[image, z, y, x])
                for j in range(1, window_z):
                    for y in range(height):
                        for x in range(width):
                            plane[y, x] += np.float64(u[image, z + j, y, x])
            else:
                entering = z + window_z - 1
                for y in range(height):
                    for x in range(width):
                        plane[y, x] = plane[y, x] + np.float64(u[image, entering, y, x])
                        plane[y, x] = plane[y, x] - np.float64(u[image, z - 1, y, x])
            # The summed-area table as numpy's cumsum along y, then along x, builds it.
            for x in range(width):
                table[1, x + 1] = plane[0, x]
            for y in range(1, height):
                for x in range(width):
                    table[y + 1, x + 1] = table[y, x + 1] + plane[y, x]
            for y in range(1, height + 1):
                for x in range(2, width + 1):
                    table[y, x] = table[y, x - 1] + table[y, x]
            for y in range(height - window_y + 1):
                for x in range(width - window_x + 1):
                    total = (
                        table[y + window_y, x + window_x]
                        - table[y, x + window_x]
                        - table[y + window_y, x]
                        + table[y, x]
                    )
                    if total > result or total != total:
                        result = total
        best[image, task % n_tasks] = result


@numba.njit(inline="always")
def _unequal(first, second, length):
    """How many of the first ``length`` positions of two rows hold different values."""
    count = 0
    for i in range(length):
        count += np.int64(first[i] != second[i])
    return count


@numba.njit(parallel=True, nogil=True, cache=True)
def border_kernel(pred, counts):
    """Neighbour pairs of unequal ``pred`` per image and plane.

    ``pred`` is (image, z, y, x), C-contiguous; ``counts`` (image, z) int64 receives, for
    plane ``z``, its 4-neighbour pairs (along ``y`` and ``x``) whose values differ plus
    the pairs between plane ``z`` and plane ``z + 1`` that differ. Their sum over ``z``
    is the image's 6-neighbour count (4-neighbour for depth 1). Every count compares
    two contiguous rows, which LLVM vectorises.
    """
    n_images, depth, height, width = pred.shape
    for task in numba.prange(n_images * depth):
        image = task // depth
        z = task % depth
        plane = pred[image, z]
        count = 0
        for y in range(height):
            row = plane[y]
            count += _unequal(row[:-1], row[1:], width - 1)
            if y + 1 < height:
                count += _unequal(row, plane[y + 1], width)
            if z + 1 < depth:
                count += _unequal(row, pred[image, z + 1, y], width)
        counts[image, z] = count
