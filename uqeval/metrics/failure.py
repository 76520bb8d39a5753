r"""Failure detection: does the image uncertainty rank images by how badly they fail?

The risk of image ``i`` is one minus the mean Dice of the prediction against its raters,

.. math:: r_i = 1 - \frac{1}{|\mathcal{R}_i|} \sum_{j \in \mathcal{R}_i} \mathrm{Dice}(\hat y_i, y_{ij}),

with ``Dice`` as in :func:`uqeval.metrics.segmentation.overlap_matrix` and
:math:`\mathcal{R}_i` the raters who labelled at least one pixel. Images are then sorted
by ascending uncertainty score :math:`s`; keeping the ``k`` most certain of ``n`` images
(coverage ``k/n``) has the selective risk :math:`R_k = C_k / k`, with :math:`C_k` their
cumulative risk, and

.. math::

    \mathrm{AURC} = \frac{1}{n} \sum_{k=1}^{n} R_k, \qquad
    \mathrm{E\text{-}AURC} = \mathrm{AURC} - \mathrm{AURC}^{*},

where :math:`\mathrm{AURC}^{*}` is the AURC of the images sorted by their risk itself, the
best any score can do. Both are lower-is-better. Tied scores have no order, so they count
in expectation over all orders of the tied images: a run of ``m`` tied images of total
risk ``S`` that follows a prefix of cumulative risk ``P`` has :math:`C = P + jS/m` at its
``j``-th position. AURC is linear in the :math:`C_k`, so this is exactly the mean AURC over
the ``m!`` orders.

>>> round(aurc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]), 6)  # (0 + 0 + 1/3 + 1.5/4) / 4 = 17/96
0.177083
>>> round(eaurc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]), 6)  # 17/96 - 13/96
0.041667
>>> aurc([0.3, 0.3], [1.0, 0.0])  # mean of the two orders, 0.25 and 0.75
0.5

The generalized risk of Traub et al. (NeurIPS 2024) divides the cumulative risk by all
``n`` images instead of the ``k`` kept, :math:`G_k = C_k / n`, and AUGRC is the trapezoidal
area under (coverage, :math:`G`) as fd-shifts computes it, from (0, 0) through the end of
every run of tied scores (:func:`augrc`):

>>> augrc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5])  # G = 0, 0, 0, 1/4, 3/8: (1/8 + 5/16) / 4
0.109375
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from uqeval.errors import UQEvalError
from uqeval.metrics.segmentation import overlap_counts, overlap_matrix, overlap_scores
from uqeval.names import IGNORE_LABEL


def failure_risk(
    pred: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    background: int = 0,
    empty: float = 1.0,
    ignore: int = IGNORE_LABEL,
) -> np.ndarray:
    r"""Per-image risk: one minus the mean Dice of the prediction against each rater.

    .. math:: r_i = 1 - \frac{1}{|\mathcal{R}_i|} \sum_{j \in \mathcal{R}_i} \mathrm{Dice}(\hat y_i, y_{ij})

    ``Dice`` is that of :func:`~uqeval.metrics.segmentation.overlap_matrix` with
    ``kind="dice"``: averaged over the foreground classes present in either mask,
    ``empty`` when neither has foreground, pixels the rater marked ``ignore`` left out.
    :math:`\mathcal{R}_i` holds the raters with at least one labelled pixel; a rater whose
    map is all ``ignore`` does not count.

    Parameters
    ----------
    pred : (image, y, x) or, for volumes, (image, z, y, x) int
        Predicted class maps. The Dice of a volume is over its voxels (one Dice per
        volume, not a mean over its slices).
    labels : (image, rater, y, x) or (image, rater, z, y, x) int
        Rater label maps, ``ignore`` where a rater did not label.
    n_classes : int
        Number of classes, background included.
    background : int
        The class left out of the Dice.
    empty : float in [0, 1]
        Dice of two masks without foreground (risk ``1 - empty``).
    ignore : int
        Label value of an unlabelled pixel.

    Returns
    -------
    (image,) float64 in [0, 1]
        NaN for an image without a counting rater; drop those images before :func:`aurc`.
    """
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if (
        pred.ndim not in (3, 4)
        or labels.ndim != pred.ndim + 1
        or labels.shape[0] != pred.shape[0]
        or labels.shape[2:] != pred.shape[1:]
    ):
        raise UQEvalError(
            f"failure detection: predictions of shape {pred.shape} (image, [z,] y, x) do not match "
            f"labels of shape {labels.shape} (image, rater, [z,] y, x)"
        )
    if not 0.0 <= empty <= 1.0:
        raise UQEvalError(f"failure detection: empty is {empty}; expected a Dice in [0, 1]")
    options = {"kind": "dice", "background": background, "empty": empty, "ignore": ignore}
    risks = np.full(pred.shape[0], np.nan)
    for i in range(pred.shape[0]):
        counting = (labels[i] != ignore).any(axis=tuple(range(1, labels.ndim - 1)))
        if not counting.any():
            continue
        dice = overlap_matrix(pred[i][None], labels[i][counting], n_classes, **options)
        risks[i] = 1.0 - float(dice.mean())
    return risks


class VolumeRisk:
    """:func:`failure_risk` of one volume gathered z-slab by z-slab: the Dice counts of
    ``pred`` against each rater add up over the slabs, and a rater counts when any of its
    voxels is labelled."""

    def __init__(self, n_classes: int, *, background: int = 0, empty: float = 1.0, ignore: int = IGNORE_LABEL) -> None:
        self.n_classes, self.background, self.empty, self.ignore = n_classes, background, empty, ignore
        self._counts: np.ndarray | None = None
        self._counting: np.ndarray | None = None

    def add(self, pred: np.ndarray, labels: np.ndarray) -> None:
        """One slab: ``pred`` (z, y, x), ``labels`` (rater, z, y, x)."""
        counts = overlap_counts(pred[None], labels, self.n_classes, background=self.background, ignore=self.ignore)
        counting = (labels != self.ignore).reshape(len(labels), -1).any(axis=1)
        if self._counts is None:
            self._counts, self._counting = counts, counting
        else:
            self._counts += counts
            self._counting |= counting

    @property
    def added(self) -> bool:
        """Whether any slab was added."""
        return self._counts is not None

    def result(self) -> np.ndarray:
        """(1,) float64: the volume's risk, NaN without a counting rater."""
        if self._counts is None or not self._counting.any():
            return np.array([np.nan])
        dice = overlap_scores(self._counts[:, :, :, self._counting], kind="dice", empty=self.empty)
        return np.array([1.0 - float(dice.mean())])


def _scores_and_risks(scores: ArrayLike, risks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    risks = np.asarray(risks, dtype=np.float64)
    if scores.shape != risks.shape:
        raise UQEvalError(f"failure detection: scores of shape {scores.shape} but risks of shape {risks.shape}")
    if scores.size == 0:
        raise UQEvalError("failure detection: no images")
    if np.isnan(scores).any():
        raise UQEvalError("failure detection: a score is NaN")
    if np.isnan(risks).any():
        raise UQEvalError("failure detection: a risk is NaN (drop the images without a counting rater first)")
    if not np.isfinite(risks).all() or (risks < 0).any():
        raise UQEvalError("failure detection: risks must be finite and non-negative")
    return scores.ravel(), risks.ravel()


@dataclass(frozen=True)
class RiskCoverage:
    """The discrete risk–coverage curve, one point per number ``k`` of images kept.

    Attributes
    ----------
    coverage : (n,) float64
        ``k / n`` for ``k = 1 … n``.
    risk : (n,) float64
        Selective risk ``R_k = C_k / k``: the mean risk of the ``k`` images with the lowest
        scores, in expectation over the orders of tied scores.
    """

    coverage: np.ndarray
    risk: np.ndarray


def _risk_coverage(scores: np.ndarray, risks: np.ndarray) -> RiskCoverage:
    n = scores.size
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_risks = risks[order]
    # Runs of tied scores (`!=` rather than np.diff, which gives NaN between tied infinities).
    # np.concatenate, not np.r_: the same arrays without its parsing (the bootstrap calls this often).
    starts = np.concatenate(([0], np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1))
    sizes = np.diff(np.concatenate((starts, [n])))
    sums = np.add.reduceat(sorted_risks, starts)
    before = np.concatenate(([0.0], np.cumsum(sums)[:-1]))
    run = np.repeat(np.arange(starts.size), sizes)
    k = np.arange(1, n + 1)
    position = k - starts[run]  # j = 1 … m inside each run
    cumulative = before[run] + position * (sums / sizes)[run]
    return RiskCoverage(coverage=k / n, risk=cumulative / k)


def risk_coverage(scores: ArrayLike, risks: ArrayLike) -> RiskCoverage:
    """Risk–coverage curve of images sorted by ascending uncertainty score.

    Parameters
    ----------
    scores : (n,) array
        Image uncertainty scores, higher meaning "more likely to fail"; ±inf is allowed.
    risks : (n,) array
        Image risks, e.g. from :func:`failure_risk`: any finite non-negative values
        (a 0/1 error indicator or an unbounded loss works too).

    Raises
    ------
    UQEvalError
        On different shapes, no images, a NaN score, or a NaN, infinite or negative risk.
    """
    return _risk_coverage(*_scores_and_risks(scores, risks))


def aurc(scores: ArrayLike, risks: ArrayLike) -> float:
    r"""Area under the discrete risk–coverage curve, exact with ties.

    .. math:: \mathrm{AURC} = \frac{1}{n} \sum_{k=1}^{n} \frac{C_k}{k}

    with :math:`C_k` the cumulative risk of the ``k`` images with the lowest scores (no
    trapezoids); tied scores count in expectation over their orders (see the module
    docstring). O(n log n). Lower is better; with every score tied it is the mean risk.

    Parameters and errors as in :func:`risk_coverage`.
    """
    return float(_risk_coverage(*_scores_and_risks(scores, risks)).risk.mean())


def eaurc(scores: ArrayLike, risks: ArrayLike) -> float:
    r"""Excess AURC: :func:`aurc` minus the AURC of the ideal ordering.

    .. math:: \mathrm{E\text{-}AURC} = \mathrm{AURC}(s, r) - \mathrm{AURC}(r, r)

    The ideal ordering sorts the images by their risk (ties among equal risks do not
    matter). Non-negative up to rounding, also with tied scores: their expectation over
    orders is no better than the best order. 0 when the scores order the images by risk.

    Parameters and errors as in :func:`risk_coverage`.
    """
    scores, risks = _scores_and_risks(scores, risks)
    return float(_risk_coverage(scores, risks).risk.mean() - _risk_coverage(risks, risks).risk.mean())


def _generalized_risk_area(scores: np.ndarray, risks: np.ndarray) -> float:
    """Trapezoidal area under (coverage, generalized risk), one point per end of a tie run."""
    n = scores.size
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # The last position of each run of tied scores (`!=`: tied infinities are tied).
    ends = np.concatenate((np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), [n - 1]))
    kept = np.concatenate(([0], ends + 1)) / n
    generalized = np.concatenate(([0.0], np.cumsum(risks[order])[ends])) / n
    return float(np.sum(np.diff(kept) * (generalized[1:] + generalized[:-1])) / 2)


def augrc(scores: ArrayLike, risks: ArrayLike) -> float:
    r"""Area under the generalized risk–coverage curve (Traub et al., NeurIPS 2024), as fd-shifts computes it.

    Images are kept from the lowest score up. With :math:`C_k` the cumulative risk of
    the ``k`` kept, the generalized risk is :math:`G_k = C_k / n` (the risk of a kept
    image that fails, counted against all ``n`` images), and

    .. math:: \mathrm{AUGRC} = \sum_{g} \frac{k_g - k_{g-1}}{n} \cdot \frac{G_{k_g} + G_{k_{g-1}}}{2}

    the trapezoidal area under the points :math:`(k_g / n, G_{k_g})`, ``k_0 = 0`` and
    :math:`k_g` the end of the ``g``-th run of tied scores. A run of tied images is one
    straight segment, which is the mean over the orders of the tied images: exact with
    ties, like :func:`aurc`. Lower is better; in [0, 1/2] for risks in [0, 1]. Every score
    tied gives ``mean(r) / 2``; ``n = 1`` gives ``r / 2``. O(n log n).

    Parameters and errors as in :func:`risk_coverage` (no images raise).
    """
    return _generalized_risk_area(*_scores_and_risks(scores, risks))


def eaugrc(scores: ArrayLike, risks: ArrayLike) -> float:
    r"""Excess AUGRC: :func:`augrc` minus the AUGRC of the images ordered by their risk.

    .. math:: \mathrm{E\text{-}AUGRC} = \mathrm{AUGRC}(s, r) - \mathrm{AUGRC}(r, r)

    The ordering by risk keeps the lowest risks first, which makes every :math:`G_k` as
    small as it can be, so the excess is non-negative up to rounding and 0 when the
    scores order the images by risk (or all risks are equal). fd-shifts' ``eaugrc`` is
    the same difference (it reports both ×1000).

    Parameters and errors as in :func:`risk_coverage`.
    """
    scores, risks = _scores_and_risks(scores, risks)
    return _generalized_risk_area(scores, risks) - _generalized_risk_area(risks, risks)
