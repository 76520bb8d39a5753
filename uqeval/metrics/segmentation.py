r"""Segmentation quality (opt-in): Dice, generalised energy distance, Hungarian-matched IoU.

Masks are compared class by class over the foreground classes (every class but the
background) and the per-class scores averaged over the classes present in either
mask; with two classes this is the usual binary score. Masks may be images (y, x) or
volumes (z, y, x): the scores of a volume are over its voxels (volumetric IoU and Dice),
not means over its slices. Two masks with no foreground
at all score ``empty`` (1 by default), the convention of Valiuddin et al. that the
review recommends over dropping the pair. Pixels a rater marked with the ignore label
are left out of every comparison with that rater.

>>> import numpy as np
>>> a = np.array([[[0, 1, 1, 0]]])
>>> b = np.array([[[0, 1, 0, 0]], [[0, 0, 0, 0]]])
>>> overlap_matrix(a, b, n_classes=2).tolist()
[[0.5, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.names import IGNORE_LABEL

#: Pixels per block of :func:`overlap_matrix`: float32 products count a block exactly
#: (below 2**24), and the blocks' counts add up exactly in float64, so volumes of any
#: size are counted exactly with memory for one block's indicators.
OVERLAP_BLOCK = 2**20


def _one_hot(flat: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(class, mask, pixel) float32 indicators of ``flat == class``, ``flat`` (mask, pixel)."""
    return (flat[None, :, :] == classes[:, None, None]).astype(np.float32)


def overlap_matrix(
    first: np.ndarray,
    second: np.ndarray,
    n_classes: int,
    *,
    background: int = 0,
    kind: str = "iou",
    empty: float = 1.0,
    ignore: int = IGNORE_LABEL,
) -> np.ndarray:
    r"""IoU or Dice of every mask in ``first`` against every mask in ``second``.

    .. math::

        \mathrm{IoU}_c = \frac{|A_c \cap B_c|}{|A_c \cup B_c|}, \quad
        \mathrm{Dice}_c = \frac{2 |A_c \cap B_c|}{|A_c| + |B_c|}

    averaged over the foreground classes ``c`` with ``|A_c ∪ B_c| > 0``; ``empty`` when
    there is none. A pixel where either mask holds ``ignore`` does not count.

    Parameters
    ----------
    first : (n, y, x) or (n, z, y, x) int
    second : (m, y, x) or (m, z, y, x) int
        Class maps of one shape; either may hold ``ignore`` (rater label maps).
    kind : ``"iou"`` or ``"dice"``

    Returns
    -------
    (n, m) float64
    """
    if kind not in ("iou", "dice"):
        raise UQEvalError(f"segmentation: kind is {kind!r}; expected 'iou' or 'dice'")
    counts = overlap_counts(first, second, n_classes, background=background, ignore=ignore)
    return overlap_scores(counts, kind=kind, empty=empty)


def overlap_counts(
    first: np.ndarray,
    second: np.ndarray,
    n_classes: int,
    *,
    background: int = 0,
    ignore: int = IGNORE_LABEL,
) -> np.ndarray:
    """The counts behind :func:`overlap_matrix`: (3, foreground class, n, m) float64 of
    ``|A_c ∩ B_c|``, ``|A_c|`` and ``|B_c|``, each over the pixels where neither mask holds
    ``ignore``.

    The counts of disjoint parts of the masks (the z-slabs of a volume) add up to those
    of the whole, exactly (integers in float64), so a volume can be compared slab by slab.
    """
    first = np.asarray(first)
    second = np.asarray(second)
    if first.ndim not in (3, 4) or second.ndim != first.ndim or first.shape[1:] != second.shape[1:]:
        raise UQEvalError(f"segmentation: masks of shapes {first.shape} and {second.shape} cannot be compared")
    classes = np.array([c for c in range(n_classes) if c != background])
    first = first.reshape(first.shape[0], -1)
    second = second.reshape(second.shape[0], -1)
    counts = np.zeros((3, len(classes), len(first), len(second)))
    intersection, size_first, size_second = counts
    for start in range(0, max(first.shape[1], 1), OVERLAP_BLOCK):
        block_first = first[:, start : start + OVERLAP_BLOCK]
        block_second = second[:, start : start + OVERLAP_BLOCK]
        valid_first = (block_first != ignore).astype(np.float32)
        valid_second = (block_second != ignore).astype(np.float32)
        a = _one_hot(block_first, classes)
        b = _one_hot(block_second, classes)
        # float32 products count a block's pixels exactly (fewer than 2**24).
        intersection += np.matmul(a, b.transpose(0, 2, 1))
        size_first += np.matmul(a, valid_second.T)  # |A_c| where the other mask counts
        size_second += np.matmul(valid_first, b.transpose(0, 2, 1))
    return counts


def overlap_scores(counts: np.ndarray, *, kind: str = "iou", empty: float = 1.0) -> np.ndarray:
    """IoU or Dice (n, m) from :func:`overlap_counts`, averaged over the foreground classes
    present in either mask; ``empty`` where none is."""
    intersection, size_first, size_second = counts
    if kind == "iou":
        denominator = size_first + size_second - intersection
        numerator = intersection
    else:
        denominator = size_first + size_second
        numerator = 2 * intersection
    present = denominator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(present, numerator / denominator, 0.0)
    n_present = present.sum(axis=0)
    scores = per_class.sum(axis=0) / np.maximum(n_present, 1)
    return np.where(n_present > 0, scores, empty)


def both_empty(counts: np.ndarray) -> np.ndarray:
    """(n, m) bool: the pairs of :func:`overlap_counts` where neither mask has foreground
    (on the pixels both count), those :func:`overlap_scores` gives ``empty``."""
    intersection, size_first, size_second = counts
    return ~((size_first + size_second - intersection) > 0).any(axis=0)


#: How GED and Hungarian-matched IoU treat a pair of masks without foreground: ``count``
#: it with IoU ``empty_iou``, or ``skip`` it.
EMPTY_PAIRS = ("count", "skip")

#: How Hungarian-matched IoU matches ``n`` samples with ``m`` raters: both repeated to
#: ``lcm(n, m)``, or the rectangular ``n × m`` matrix as it is.
MATCHINGS = ("lcm", "rectangular")


def discrete_samples(cube: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Class maps of ``n_samples`` joint predictions drawn without replacement.

    ``cube`` is one image's (eu, au, class, [z,] y, x) probabilities; each of its
    ``eu·au`` member samples becomes its argmax class map. All of them when fewer exist.
    """
    n_members, n_draws, n_classes, *spatial = cube.shape
    flat = cube.reshape(n_members * n_draws, n_classes, *spatial)
    return flat[sample_choice(flat.shape[0], n_samples, rng)].argmax(axis=1)


def sample_choice(n_joint: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n_joint`` member samples :func:`discrete_samples` draws: sorted positions."""
    return np.sort(rng.choice(n_joint, size=min(n_samples, n_joint), replace=False))


def generalised_energy_distance(
    distance_cross: np.ndarray, distance_samples: np.ndarray, distance_raters: np.ndarray
) -> float:
    r"""Squared generalised energy distance from pairwise distances ``d = 1 - IoU``.

    .. math:: D^2_{GED} = 2\,\mathbb{E}[d(S, Y)] - \mathbb{E}[d(S, S')] - \mathbb{E}[d(Y, Y')]

    every expectation a mean over all ordered pairs, self-pairs included (the usual
    implementation since Kohl et al., 2018). Pairs that are NaN (skipped pairs of
    empty masks) are left out of their expectation; an expectation with no pair left
    makes the distance NaN.
    """
    means = []
    for distances in (distance_cross, distance_samples, distance_raters):
        kept = distances[~np.isnan(distances)]
        if kept.size == 0:
            return float("nan")
        means.append(kept.mean() if kept.size < distances.size else distances.mean())
    return float(2 * means[0] - means[1] - means[2])


def hungarian_iou(iou: np.ndarray, *, matching: str = "lcm") -> float:
    """Hungarian-matched IoU of an (n samples, m raters) IoU matrix.

    With ``matching="lcm"``, both sets are repeated up to ``lcm(n, m)`` members so that
    each rater is matched equally often (16 samples against 4 raters: each rater four
    times); with ``"rectangular"`` the ``n × m`` matrix is matched as it is, ``min(n, m)``
    pairs. ``scipy.optimize.linear_sum_assignment`` finds the matching of largest total
    IoU; the score is its mean IoU. A NaN entry (a skipped pair of empty masks) is
    matched as IoU 1, the perfect match it is, and left out of the mean; NaN when every
    matched pair is such a pair.
    """
    if matching not in MATCHINGS:
        raise UQEvalError(f"segmentation: matching is {matching!r}; expected {' or '.join(map(repr, MATCHINGS))}")
    n, m = iou.shape
    if matching == "lcm":
        size = math.lcm(n, m)
        iou = np.tile(iou, (size // n, size // m))
    skipped = np.isnan(iou)
    from scipy.optimize import linear_sum_assignment  # imported here: scipy is slow to import

    rows, columns = linear_sum_assignment(np.where(skipped, 1.0, iou), maximize=True)
    if not skipped.any():
        return float(iou[rows, columns].mean())
    kept = ~skipped[rows, columns]
    return float(iou[rows[kept], columns[kept]].mean()) if kept.any() else float("nan")


@dataclass(frozen=True)
class SegmentationQuality:
    """Per-image segmentation scores, each (image,) float64.

    Attributes
    ----------
    dice : mean over raters of the Dice of ``pred`` against the rater.
    ged : squared generalised energy distance between samples and raters (lower is better).
    hungarian_iou : Hungarian-matched IoU between samples and raters.
    """

    dice: np.ndarray
    ged: np.ndarray
    hungarian_iou: np.ndarray


def segmentation_quality(
    cubes: np.ndarray,
    pred: np.ndarray,
    labels: np.ndarray,
    image_indices: np.ndarray,
    *,
    background: int = 0,
    n_samples: int = 16,
    seed: int = 0,
    empty: float = 1.0,
    ignore: int = IGNORE_LABEL,
    empty_pair: str = "count",
    matching: str = "lcm",
) -> SegmentationQuality:
    """Dice, GED and Hungarian-matched IoU of a batch of images.

    Parameters
    ----------
    cubes : (image, eu, au, class, [z,] y, x) probabilities
    pred : (image, [z,] y, x) predicted classes (argmax of the mean prediction)
    labels : (image, rater, [z,] y, x) rater label maps
    image_indices : (image,) int
        Position of each image in its store: image ``i`` draws its samples from
        ``SeedSequence(seed, spawn_key=(i,))``, so results do not depend on chunking.
    empty_pair : ``"count"`` or ``"skip"``
        GED and Hungarian-matched IoU: a pair of masks without foreground has IoU
        ``empty``, or is left out (:func:`generalised_energy_distance`,
        :func:`hungarian_iou`). The Dice of ``pred`` always scores it ``empty``.
    matching : ``"lcm"`` or ``"rectangular"``
        :func:`hungarian_iou`'s matching.
    """
    _check_choices(empty_pair, matching)
    n_images, _, _, n_classes = cubes.shape[:4]
    results = np.empty((3, n_images))
    for i in range(n_images):
        raters = labels[i]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(image_indices[i]),)))
        samples = discrete_samples(cubes[i], n_samples, rng)
        options = {"background": background, "ignore": ignore}
        results[0, i] = overlap_matrix(pred[i][None], raters, n_classes, kind="dice", empty=empty, **options).mean()
        iou_cross, iou_samples, iou_raters = (
            _pair_iou(overlap_counts(first, second, n_classes, **options), empty, empty_pair)
            for first, second in ((samples, raters), (samples, samples), (raters, raters))
        )
        results[1, i] = generalised_energy_distance(1 - iou_cross, 1 - iou_samples, 1 - iou_raters)
        results[2, i] = hungarian_iou(iou_cross, matching=matching)
    return SegmentationQuality(*results)


def _check_choices(empty_pair: str, matching: str) -> None:
    if empty_pair not in EMPTY_PAIRS:
        raise UQEvalError(f"segmentation: empty_pair is {empty_pair!r}; expected {' or '.join(map(repr, EMPTY_PAIRS))}")
    if matching not in MATCHINGS:
        raise UQEvalError(f"segmentation: matching is {matching!r}; expected {' or '.join(map(repr, MATCHINGS))}")


def _pair_iou(counts: np.ndarray, empty: float, empty_pair: str) -> np.ndarray:
    """IoU (n, m) of :func:`overlap_counts`; NaN at the pairs of empty masks when they are skipped."""
    iou = overlap_scores(counts, empty=empty)
    if empty_pair == "skip":
        iou = np.where(both_empty(counts), np.nan, iou)
    return iou


class VolumeSegmentation:
    """:func:`segmentation_quality` of one volume gathered z-slab by z-slab.

    The samples are chosen once per volume (the same draw as for the volume held whole),
    and every comparison is kept as :func:`overlap_counts`, which add up over the slabs.
    """

    def __init__(
        self,
        position: int,
        n_classes: int,
        *,
        background: int = 0,
        n_samples: int = 16,
        seed: int = 0,
        empty: float = 1.0,
        ignore: int = IGNORE_LABEL,
        empty_pair: str = "count",
        matching: str = "lcm",
    ) -> None:
        _check_choices(empty_pair, matching)
        self.position, self.n_classes, self.n_samples, self.seed = position, n_classes, n_samples, seed
        self.background, self.empty, self.ignore = background, empty, ignore
        self.empty_pair, self.matching = empty_pair, matching
        self._chosen: np.ndarray | None = None
        self._counts: dict[str, np.ndarray] = {}

    def add(self, cube: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> None:
        """One slab: ``cube`` (eu, au, class, z, y, x), ``pred`` (z, y, x), ``labels`` (rater, z, y, x)."""
        n_members, n_draws, n_classes, *spatial = cube.shape
        if self._chosen is None:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(self.position),)))
            self._chosen = sample_choice(n_members * n_draws, self.n_samples, rng)
        samples = cube.reshape(n_members * n_draws, n_classes, *spatial)[self._chosen].argmax(axis=1)
        options = {"background": self.background, "ignore": self.ignore}
        parts = {
            "dice": overlap_counts(pred[None], labels, self.n_classes, **options),
            "cross": overlap_counts(samples, labels, self.n_classes, **options),
            "samples": overlap_counts(samples, samples, self.n_classes, **options),
            "raters": overlap_counts(labels, labels, self.n_classes, **options),
        }
        for name, counts in parts.items():
            self._counts[name] = counts if name not in self._counts else self._counts[name] + counts

    @property
    def added(self) -> bool:
        """Whether any slab was added."""
        return bool(self._counts)

    def result(self) -> SegmentationQuality:
        """The volume's scores, as :func:`segmentation_quality` gives them (one image)."""
        counts = self._counts
        dice = overlap_scores(counts["dice"], kind="dice", empty=self.empty).mean()
        iou_cross, iou_samples, iou_raters = (
            _pair_iou(counts[name], self.empty, self.empty_pair) for name in ("cross", "samples", "raters")
        )
        ged = generalised_energy_distance(1 - iou_cross, 1 - iou_samples, 1 - iou_raters)
        matched = hungarian_iou(iou_cross, matching=self.matching)
        return SegmentationQuality(np.array([dice]), np.array([ged]), np.array([matched]))
