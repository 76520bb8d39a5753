"""Value checks on probability cubes, with messages that name the image at fault."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from uqeval import _kernels
from uqeval.errors import UQEvalError

#: Largest accepted deviation of a sample's class sum from 1. float16 storage alone
#: moves a sum by up to ~C·2.4e-4, and mixed-precision softmax by a little more.
SUM_TOLERANCE = 1e-2


def check_decomposable(n_members: int, n_samples: int, n_classes: int, where: str) -> None:
    """Refuse cube sizes that have no AU/EU decomposition.

    ``eu = au = 1`` is a deterministic model (one sample per image), and fewer than two
    classes leave nothing to be uncertain about.
    """
    if n_members == 1 and n_samples == 1:
        raise UQEvalError(
            f"{where}: eu = au = 1 is a deterministic model (one sample per image); "
            "the AU/EU decomposition needs several members (eu) or samples (au)"
        )
    if n_classes < 2:
        raise UQEvalError(f"{where}: dim `class` has size {n_classes}; at least 2 classes are needed")


def value_stats(values: np.ndarray, class_axis: int = -3) -> np.ndarray:
    """Per-image value statistics of a probability array.

    Parameters
    ----------
    values : (image, ..., class, y, x) or (image, ..., class, z, y, x) float16/float32/float64
        Every dim between ``image`` and ``class`` counts as a sample dim, every dim
        after ``class`` as a spatial dim.
    class_axis : int
        The axis of ``class``: the default fits images; pass it for volumes.

    Returns
    -------
    (image, 4) float64: pixels (voxels) with a NaN/inf value, smallest value, smallest
    and largest class sum of one sample.
    """
    class_axis %= values.ndim
    n_images, n_classes = values.shape[0], values.shape[class_axis]
    n_pixels = math.prod(values.shape[class_axis + 1 :])
    flat = np.ascontiguousarray(values).reshape(n_images, -1, n_classes, n_pixels)
    kernel_input = _kernels.as_kernel_input(flat)
    n_blocks = -(-flat.shape[-1] // _kernels.PIXEL_BLOCK)
    stats = np.empty((n_images, n_blocks, 4))
    _kernels.value_stats_kernel(kernel_input, stats)
    return reduce_block_stats(stats)


def reduce_block_stats(stats: np.ndarray) -> np.ndarray:
    """Fold ``(image, block, 4)`` kernel statistics into ``(image, 4)``."""
    return np.stack(
        [stats[..., 0].sum(1), stats[..., 1].min(1), stats[..., 2].min(1), stats[..., 3].max(1)],
        axis=1,
    )


def raise_for_value_stats(stats: np.ndarray, image_ids: Sequence[object], variable: str = "probs") -> None:
    """Raise :class:`UQEvalError` for the first image whose values break the contract.

    Probabilities must be finite, non-negative and sum to 1 over ``class`` within
    :data:`SUM_TOLERANCE` for every sample and pixel.
    """
    n_bad, lowest, lowest_sum, highest_sum = stats.T
    off_sum = (np.abs(lowest_sum - 1) > SUM_TOLERANCE) | (np.abs(highest_sum - 1) > SUM_TOLERANCE)
    broken = np.flatnonzero((n_bad > 0) | (lowest < 0) | off_sum)
    if broken.size == 0:
        return
    index = broken[0]
    where = f"{variable}: image {image_name(image_ids[index])}"
    if n_bad[index] > 0:
        raise UQEvalError(f"{where} has NaN or inf values at {int(n_bad[index])} pixel(s)")
    if lowest[index] < 0:
        raise UQEvalError(
            f"{where} has negative probabilities (as low as {lowest[index]:.4g}); probabilities lie in "
            "[0, 1]. If these are logits, store them as the `logits` variable (softmax is applied on read)"
        )
    raise UQEvalError(
        f"{where} does not sum to 1 over `class` (sums from {lowest_sum[index]:.4g} to "
        f"{highest_sum[index]:.4g}); they look like logits or unnormalised scores: store logits as the "
        "`logits` variable (softmax is applied on read)"
    )


def image_name(image_id: object) -> str:
    """An image id as messages show it: ``'case-3'`` or ``7``, never ``np.str_('case-3')``."""
    return repr(image_id.item() if isinstance(image_id, np.generic) else image_id)
