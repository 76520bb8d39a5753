r"""Image scores computed from the samples themselves, not from a map: how much the
members' predictions disagree, and how much the samples' foreground size varies.

With ``p[e, a, c]`` the probability of class ``c`` in sample ``a`` of member ``e`` at a
pixel, ``E`` members, ``A`` samples each and background class ``b``:

- **pairwise Dice** (Zenk et al., MedIA 2025, their ``pairwise_mean_dice``): member
  ``e`` predicts :math:`\hat y_e = \arg\max_c \frac{1}{A}\sum_a p[e, a, c]`, and

  .. math::

      \mathrm{pairwise\_dice} = 1 - \frac{2}{E(E-1)} \sum_{e < f} \frac{1}{C - 1}
      \sum_{c \ne b} \mathrm{Dice}(\hat y_e = c,\ \hat y_f = c),
      \quad \mathrm{Dice}(X, Y) = \frac{2|X \cap Y|}{|X| + |Y|}

  with a Dice of 1 where neither member predicts class ``c`` (two empty masks agree).
  Every foreground class counts, whether or not either member predicts it, as MONAI's
  ``compute_dice(include_background=False, ignore_empty=False)`` that Zenk et al. average;
  with two classes it is the binary Dice of the foreground. NaN with one member
  (``eu = 1``): there is no pair.
- **cov** (Roy et al., 2019, the coefficient of variation of a structure's size): each
  sample predicts :math:`\arg\max_c p[e, a, c]`; with :math:`n_{ea}` its foreground
  pixels (those not predicted ``b``, every foreground class together),

  .. math:: \mathrm{cov} = \frac{\operatorname{std}(n_{ea})}{\operatorname{mean}(n_{ea})}

  over all ``E·A`` samples (``std`` with ``ddof = 0``); 0 when every sample's prediction
  is empty.

Both are higher for more uncertain images, as AU, EU and TU are. Their counts are
integers, which add up exactly over the z-slabs of a volume (:class:`VolumeSampleScores`).
Argmaxes keep the first class on ties, as ``np.argmax``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from uqeval._kernels import as_kernel_input
from uqeval.errors import UQEvalError
from uqeval.metrics._sample_kernels import SAMPLE_PIXEL_BLOCK, sample_counts_kernel, two_class_sample_counts_kernel


def member_pairs(n_members: int) -> tuple[np.ndarray, np.ndarray]:
    """The members of each pair ``e < f``, in the order of ``itertools.combinations``.

    >>> member_pairs(3)
    (array([0, 0, 1]), array([1, 2, 2]))
    """
    pairs = np.array(list(itertools.combinations(range(n_members), 2)), dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


@dataclass(frozen=True)
class SampleCounts:
    """The counts behind the sample scores, per image (integers, exact).

    Attributes
    ----------
    foreground : (image, eu·au) int64
        Foreground pixels of each sample's prediction (sample ``(e, a)`` at ``e·au + a``).
    sizes : (image, eu, class) int64
        Pixels of each class in each member's prediction.
    intersections : (image, pair, class) int64
        Pixels both members of a pair (:func:`member_pairs`) predict as the class.
    """

    foreground: np.ndarray
    sizes: np.ndarray
    intersections: np.ndarray

    def __add__(self, other: SampleCounts) -> SampleCounts:
        """The counts of two disjoint parts of the same images (two z-slabs of a volume)."""
        return SampleCounts(
            self.foreground + other.foreground, self.sizes + other.sizes, self.intersections + other.intersections
        )

    def summed(self) -> SampleCounts:
        """The counts of all images together, as one image (the z-chunks of one slab)."""
        return SampleCounts(*(counts.sum(axis=0, keepdims=True) for counts in vars(self).values()))

    def scores(self, background: int = 0) -> dict[str, np.ndarray]:
        """``pairwise_dice`` and ``cov`` per image, (image,) float64 each."""
        return {"pairwise_dice": self.pairwise_dice(background), "cov": self.cov()}

    def pairwise_dice(self, background: int = 0) -> np.ndarray:
        """(image,) float64: 1 − the mean over pairs of members of their mean foreground
        Dice (module docstring); NaN with fewer than two members."""
        n_images, n_members, n_classes = self.sizes.shape
        if n_members < 2:
            return np.full(n_images, np.nan)
        first, second = member_pairs(n_members)
        foreground = np.arange(n_classes) != background
        intersection = self.intersections[:, :, foreground].astype(np.float64)
        total = (self.sizes[:, first] + self.sizes[:, second])[:, :, foreground].astype(np.float64)
        dice = np.ones_like(total)
        np.divide(2.0 * intersection, total, out=dice, where=total > 0)
        return 1.0 - dice.mean(axis=(1, 2))

    def cov(self) -> np.ndarray:
        """(image,) float64: std / mean (``ddof = 0``) of the samples' foreground sizes; 0
        when every sample's prediction is empty."""
        sizes = self.foreground.astype(np.float64)
        mean = sizes.mean(axis=1)
        std = sizes.std(axis=1)
        result = np.zeros_like(mean)
        np.divide(std, mean, out=result, where=mean > 0)
        return result


def sample_counts(cubes: np.ndarray, background: int = 0) -> SampleCounts:
    """Count the predictions of every sample and member of a batch of sample cubes.

    Parameters
    ----------
    cubes : (image, eu, au, class, *spatial) float16/float32/float64
        Probabilities; any spatial shape (an image, a volume, or a slab's z-chunks).
    background : int
        The background class.

    Returns
    -------
    SampleCounts
    """
    cubes = np.asarray(cubes)
    if cubes.ndim < 5 or cubes.dtype.kind != "f":
        raise UQEvalError(
            f"sample scores: expected (image, eu, au, class, *spatial) probabilities, got {cubes.dtype} of shape "
            f"{cubes.shape}"
        )
    n_images, n_members, n_samples, n_classes = cubes.shape[:4]
    if not 0 <= background < n_classes:
        raise UQEvalError(f"sample scores: background class {background} is not one of the {n_classes} classes")
    n_pixels = math.prod(cubes.shape[4:])
    flat = np.ascontiguousarray(cubes).reshape(n_images, n_members, n_samples, n_classes, n_pixels)
    n_blocks = max(1, -(-n_pixels // SAMPLE_PIXEL_BLOCK))
    n_pairs = n_members * (n_members - 1) // 2
    foreground = np.empty((n_images, n_blocks, n_members * n_samples), dtype=np.int64)
    sizes = np.empty((n_images, n_blocks, n_members, n_classes), dtype=np.int64)
    intersections = np.empty((n_images, n_blocks, n_pairs, n_classes), dtype=np.int64)
    if n_pixels:
        kernel = two_class_sample_counts_kernel if n_classes == 2 else sample_counts_kernel
        kernel(as_kernel_input(flat), background, foreground, sizes, intersections)
    else:
        for counts in (foreground, sizes, intersections):
            counts[:] = 0
    return SampleCounts(foreground.sum(axis=1), sizes.sum(axis=1), intersections.sum(axis=1))


def sample_scores(cubes: np.ndarray, background: int = 0) -> dict[str, np.ndarray]:
    """``pairwise_dice`` and ``cov`` (module docstring) of each image of a batch of sample
    cubes (image, eu, au, class, *spatial), (image,) float64 each."""
    return sample_counts(cubes, background).scores(background)


class VolumeSampleScores:
    """The sample scores of one volume gathered z-slab by z-slab: its counts add up."""

    def __init__(self, background: int = 0) -> None:
        self.background = background
        self._counts: SampleCounts | None = None

    def add(self, cubes: np.ndarray) -> None:
        """One slab: (part, eu, au, class, *spatial) cubes whose parts (one slab, or the
        slab's z-chunks as decoded) are all of this volume."""
        counts = sample_counts(cubes, self.background).summed()
        self._counts = counts if self._counts is None else self._counts + counts

    @property
    def added(self) -> bool:
        """Whether any slab was added."""
        return self._counts is not None

    def result(self) -> dict[str, np.ndarray]:
        """The volume's scores, (1,) float64 each."""
        if self._counts is None:
            raise UQEvalError("sample scores: no slab of the volume was added")
        return self._counts.scores(self.background)
