"""Ambiguity modelling: rater variance maps and their correlation with uncertainty.

>>> import numpy as np
>>> labels = np.array([[[[0, 1, 1, 1]], [[0, 0, 1, 1]]]], dtype=np.uint8)  # 1 image, 2 raters, 1×4
>>> rater_variance(labels, n_classes=2)[0, 0].tolist()
[0.0, 0.5, 0.0, 0.0]
>>> u = np.array([[[0.1, 0.6, 0.2, 0.1]]], dtype=np.float32)
>>> round(float(ncc(rater_variance(labels, 2), u).correlation[0]), 4)
0.9802
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uqeval.checks import image_name
from uqeval.errors import UQEvalError
from uqeval.metrics import _kernels
from uqeval.names import IGNORE_LABEL
from uqeval.precision import CONSTANT_TOLERANCE

#: ``state`` of a scored image, one whose map is constant, and one with no valid pixel.
SCORED, CONSTANT, NO_PIXELS = 0, 1, 2


@dataclass(frozen=True)
class RaterStatistics:
    """Per-pixel summaries of the raters of a batch of images, each (image, y, x)
    (per voxel, (image, z, y, x), for volumes).

    Attributes
    ----------
    variance : float32
        ``g = Σ_c Var_r(1[label_r = c])``, population variance over the raters whose
        label is not the ignore label (or ``Var_r(label_r)``, see :func:`rater_statistics`).
    agree : int32
        Raters whose label equals ``pred``.
    valid : int32
        Raters whose label is not the ignore label; a pixel with 0 is left out of NCC
        and calibration.
    """

    variance: np.ndarray
    agree: np.ndarray
    valid: np.ndarray

    def select(self, images: np.ndarray) -> RaterStatistics:
        """The statistics of some images (boolean mask or indices)."""
        return RaterStatistics(self.variance[images], self.agree[images], self.valid[images])

    @property
    def correctness(self) -> np.ndarray:
        """``w = agree / valid``, the fraction of raters who agree with ``pred`` (NaN where no rater counts)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.agree / np.where(self.valid > 0, self.valid, np.nan)


def rater_statistics(
    labels: np.ndarray,
    pred: np.ndarray | None,
    n_classes: int,
    *,
    ignore: int = IGNORE_LABEL,
    image_ids: Sequence[object] | None = None,
    reference: str = "one-hot-variance",
) -> RaterStatistics:
    """Rater variance, agreement with the prediction, and rater count per pixel.

    Parameters
    ----------
    labels : (image, rater, y, x) or (image, rater, z, y, x) int array
        Label maps; ``ignore`` marks pixels a rater did not label.
    pred : (image, y, x) or (image, z, y, x) int array or None
        Predicted classes (``agree`` is 0 when None).
    n_classes : int
        Labels other than ``ignore`` must lie in ``[0, n_classes)``.
    image_ids : sequence, optional
        Ids that error messages name images by (default their positions).
    reference : ``"one-hot-variance"`` or ``"class-index-variance"``
        The variance map ``g``: ``Σ_c Var_r(1[label_r = c]) = 1 − Σ_c p_c²``, or
        ``Var_r(label_r)`` of the class indices (the study's, which depends on how the
        classes are numbered once there are more than two). Population variances over
        the raters whose label is not ``ignore``.
    """
    if reference not in ("one-hot-variance", "class-index-variance"):
        raise UQEvalError(f"labels: reference is {reference!r}; expected 'one-hot-variance' or 'class-index-variance'")
    labels = np.asarray(labels)
    if labels.ndim not in (4, 5) or labels.dtype.kind not in "iu":
        raise UQEvalError(
            f"labels: expected integer labels (image, rater, y, x) or (image, rater, z, y, x); "
            f"got {labels.dtype} {labels.shape}"
        )
    n_images, n_raters, *spatial = labels.shape
    shape = (n_images, *spatial)
    n_pixels = math.prod(spatial)
    if pred is None:
        pred = np.full(shape, -1, dtype=np.int16)
    pred = np.asarray(pred)
    if pred.shape != shape:
        raise UQEvalError(f"labels: shape {labels.shape} does not match predictions of shape {pred.shape}")
    flat = np.ascontiguousarray(labels).reshape(n_images, n_raters, n_pixels)
    variance = np.empty((n_images, n_pixels), dtype=np.float32)
    agree = np.empty((n_images, n_pixels), dtype=np.int32)
    valid = np.empty_like(agree)
    out_of_range = np.zeros(n_images, dtype=np.int64)
    _kernels.rater_kernel(
        flat,
        np.ascontiguousarray(pred).reshape(n_images, -1),
        n_classes,
        ignore,
        reference == "class-index-variance",
        variance,
        agree,
        valid,
        out_of_range,
    )
    if out_of_range.any():
        image = int(np.flatnonzero(out_of_range)[0])
        name = image if image_ids is None else image_name(image_ids[image])
        raise UQEvalError(
            f"labels: image {name} has {int(out_of_range[image])} label(s) outside [0, {n_classes}) "
            f"that are not the ignore label {ignore}"
        )
    return RaterStatistics(variance.reshape(shape), agree.reshape(shape), valid.reshape(shape))


def rater_variance(
    labels: np.ndarray, n_classes: int, *, ignore: int = IGNORE_LABEL, reference: str = "one-hot-variance"
) -> np.ndarray:
    r"""Ground-truth ambiguity map ``g`` of each image.

    .. math:: g = \sum_c \mathrm{Var}_r\left(\mathbb{1}[l_r = c]\right) = 1 - \sum_c p_c^2

    with ``p_c`` the fraction of (non-ignored) raters who chose class ``c``; 0 where the
    raters all agree, at most ``1 - 1/C``. With ``reference="class-index-variance"``,
    ``g = Var_r(l_r)``, the population variance of the class indices. Returns
    (image, y, x) float32, or (image, z, y, x) for labels (image, rater, z, y, x).

    >>> labels = np.array([[[[0]], [[2]]], [[[1]], [[2]]]], dtype=np.uint8)  # 2 images, 2 raters, 1×1
    >>> rater_variance(labels, 3).ravel().tolist()
    [0.5, 0.5]
    >>> rater_variance(labels, 3, reference="class-index-variance").ravel().tolist()
    [1.0, 0.25]
    """
    return rater_statistics(labels, None, n_classes, ignore=ignore, reference=reference).variance


@dataclass(frozen=True)
class Correlation:
    """Per-image NCC with why an image was not scored.

    Attributes
    ----------
    correlation : (image,) float64
        Pearson correlation, NaN where not scored.
    state : (image,) int8
        :data:`SCORED`, :data:`CONSTANT` (g or U constant over the valid pixels) or
        :data:`NO_PIXELS` (no pixel with a rater).
    """

    correlation: np.ndarray
    state: np.ndarray


def ncc(
    variance: np.ndarray,
    u: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tolerance: float = CONSTANT_TOLERANCE,
    factor: str = "none",
) -> Correlation:
    r"""Normalised cross-correlation of rater variance and uncertainty, per image.

    .. math::

        \mathrm{NCC} = \frac{\sum_i (g_i - \bar g)(u_i - \bar u)}
        {\sqrt{\sum_i (g_i - \bar g)^2 \sum_i (u_i - \bar u)^2}}

    over the pixels (a volume's voxels) with at least one valid rater: the Pearson
    correlation (ddof 0), one per image or volume.
    An image where ``g`` or ``u`` is constant has none; see :func:`mean_ncc`. A map
    is constant when its values span at most ``tolerance`` (default
    :data:`uqeval.precision.CONSTANT_TOLERANCE`, the accuracy of a map), so an EU map
    of members that agree is constant, whatever its rounding.

    Parameters
    ----------
    variance, u : (image, y, x) or (image, z, y, x) float arrays
    valid : int array of the same shape, optional
        Raters per pixel; pixels with 0 are left out.
    tolerance : float, optional
        Largest range (maximum − minimum) of a constant map.
    factor : ``"none"`` or ``"n-1-over-n"``
        With ``"n-1-over-n"``, the correlation of an image of ``N`` valid pixels is
        multiplied by ``(N − 1)/N``, as the study's code computes it (standard
        deviations with ``ddof = 1``, the cross sum divided by ``N``).

    See Also
    --------
    scipy.stats.pearsonr : the reference in the tests.
    """
    variance = np.asarray(variance)
    u = np.asarray(u)
    if variance.shape != u.shape or u.ndim not in (3, 4):
        raise UQEvalError(
            f"NCC: expected two (image, y, x) or (image, z, y, x) maps of one shape; got {variance.shape} and {u.shape}"
        )
    if factor not in ("none", "n-1-over-n"):
        raise UQEvalError(f"NCC: factor is {factor!r}; expected 'none' or 'n-1-over-n'")
    n_images = u.shape[0]
    if valid is None:
        valid = np.ones(u.shape, dtype=np.int32)
    elif np.shape(valid) != u.shape:
        raise UQEvalError(f"NCC: rater counts of shape {np.shape(valid)} do not match maps of shape {u.shape}")
    correlation = np.empty(n_images)
    state = np.empty(n_images, dtype=np.int8)
    _kernels.pearson_kernel(
        np.ascontiguousarray(variance, dtype=np.float32).reshape(n_images, -1),
        np.ascontiguousarray(u, dtype=np.float32).reshape(n_images, -1),
        np.ascontiguousarray(valid).reshape(n_images, -1),
        float(tolerance),
        factor == "n-1-over-n",
        correlation,
        state,
    )
    return Correlation(correlation, state)


class PearsonMoments:
    """The sums of one image's NCC gathered part by part: the z-slabs of a volume read in turn.

    Each part's moments (count, means, centred sums of squares and cross products, and
    the ranges the constant test needs) are computed in two passes, and parts merge with
    the pairwise update of Chan, Golub and LeVeque (1979)::

        n = n_a + n_b,  δ = mean_b − mean_a,  mean = mean_a + δ·n_b/n,
        S_xy = S_xy,a + S_xy,b + δ_x·δ_y·n_a·n_b/n

    so that the correlation of the whole equals :func:`ncc` of the whole image to float
    rounding, in memory for one part.

    >>> g = np.array([[[0.0, 0.5, 0.0, 0.5]]], dtype=np.float32)
    >>> u = np.array([[[0.1, 0.6, 0.2, 0.4]]], dtype=np.float32)
    >>> moments = PearsonMoments()
    >>> for half in (slice(0, 2), slice(2, 4)):
    ...     moments.add(g[..., half], u[..., half])
    >>> bool(np.isclose(moments.correlation().correlation[0], ncc(g, u).correlation[0]))
    True
    """

    def __init__(self) -> None:
        self.moments = np.array([0, 0, 0, 0, 0, 0, np.inf, -np.inf, np.inf, -np.inf], dtype=np.float64)

    def add(self, variance: np.ndarray, u: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one part's pixels (any shape; ``valid`` raters per pixel, 0 leaves a pixel out)."""
        variance = np.ascontiguousarray(variance, dtype=np.float32).reshape(-1)
        u = np.ascontiguousarray(u, dtype=np.float32).reshape(-1)
        if valid is None:
            valid = np.ones(u.shape, dtype=np.int32)
        part = np.empty(10)
        _kernels.pearson_moments_kernel(variance, u, np.ascontiguousarray(valid).reshape(-1), part)
        self.merge(part)

    def merge(self, part: np.ndarray) -> None:
        """Merge the moments of another part (the ``moments`` of another instance)."""
        mine = self.moments
        n_a, n_b = mine[0], part[0]
        if n_b == 0:
            return
        if n_a == 0:
            self.moments = part.copy()
            return
        n = n_a + n_b
        delta_reference = part[1] - mine[1]
        delta_map = part[2] - mine[2]
        weight = n_a * n_b / n
        self.moments = np.array(
            [
                n,
                mine[1] + delta_reference * n_b / n,
                mine[2] + delta_map * n_b / n,
                mine[3] + part[3] + delta_reference * delta_reference * weight,
                mine[4] + part[4] + delta_map * delta_map * weight,
                mine[5] + part[5] + delta_reference * delta_map * weight,
                min(mine[6], part[6]),
                max(mine[7], part[7]),
                min(mine[8], part[8]),
                max(mine[9], part[9]),
            ]
        )

    def correlation(self, *, tolerance: float = CONSTANT_TOLERANCE, factor: str = "none") -> Correlation:
        """The image's NCC, as :func:`ncc` defines it (same states and ``factor``)."""
        value, state = _kernels.pearson_of_moments(self.moments, float(tolerance), factor == "n-1-over-n")
        return Correlation(np.array([value]), np.array([state], dtype=np.int8))


def mean_ncc(correlation: Correlation, *, constant: str = "skip") -> tuple[float, int]:
    """Mean NCC over images and the number of images with a constant map.

    ``constant="skip"`` leaves constant images out of the mean; ``"zero"`` scores them
    0. Images without valid pixels are always left out. NaN when nothing is scored.
    """
    if constant not in ("skip", "zero"):
        raise UQEvalError(f"NCC: constant is {constant!r}; expected 'skip' or 'zero'")
    values = correlation.correlation[correlation.state == SCORED]
    n_constant = int((correlation.state == CONSTANT).sum())
    if constant == "zero":
        values = np.r_[values, np.zeros(n_constant)]
    return (float(values.mean()) if values.size else float("nan")), n_constant


def rater_disagreement(labels: np.ndarray, *, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """Per pixel (voxel), the fraction of raters whose label differs from the majority label.

    ``d = 1 − max_c n_c / n``, with ``n_c`` the raters labelling class ``c`` and ``n``
    the raters that labelled the pixel at all (``ignore`` does not count). It is 0 where
    all raters agree and at most ``1 − 1/min(n, classes)``.

    Parameters
    ----------
    labels : (rater, y, x) or (rater, z, y, x) int
        The raters' label maps.
    ignore : int
        The label of an unlabelled pixel.

    Returns
    -------
    (y, x) or (z, y, x) float32
        NaN where no rater labelled the pixel.

    >>> rater_disagreement(np.array([[[0, 1]], [[0, 1]], [[1, 1]], [[0, 255]]]))
    array([[0.25, 0.  ]], dtype=float32)
    """
    labels = np.asarray(labels)
    if labels.ndim not in (3, 4):
        raise ValueError(
            f"rater_disagreement: labels must be (rater, y, x) or (rater, z, y, x), got shape {labels.shape}"
        )
    labelled = labels != ignore
    n_labelled = labelled.sum(axis=0)
    largest = np.zeros(labels.shape[1:], dtype=np.int64)
    for value in np.unique(labels[labelled]):
        largest = np.maximum(largest, (labels == value).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_labelled > 0, 1.0 - largest / n_labelled, np.nan).astype(np.float32)
