"""Out-of-distribution detection: AUROC and FPR at 95 % TPR of image scores.

OOD images are the positives; a higher score should mean "more likely OOD".

>>> auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
0.75
>>> fpr_at_tpr([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
0.5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from uqeval.errors import UQEvalError


def _scores_and_labels(scores: ArrayLike, positive: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive).ravel()
    if positive.dtype != bool:
        if not np.isin(positive, (0, 1)).all():
            raise UQEvalError("OOD detection: `positive` must be boolean or 0/1")
        positive = positive.astype(bool)
    if scores.shape != positive.shape:
        raise UQEvalError(f"OOD detection: {scores.size} scores but {positive.size} labels")
    if np.isnan(scores).any():
        raise UQEvalError("OOD detection: a score is NaN")
    n_positive = int(positive.sum())
    if n_positive == 0 or n_positive == positive.size:
        raise UQEvalError(f"OOD detection: needs both OOD and ID images (got {n_positive} OOD of {positive.size})")
    return scores, positive


def auroc(scores: ArrayLike, positive: ArrayLike) -> float:
    r"""Area under the ROC curve, exact with ties.

    .. math::

        \mathrm{AUROC} = \frac{1}{n_+ n_-} \sum_{i \in +} \sum_{j \in -}
        \left(\mathbb{1}[s_i > s_j] + \tfrac12 \mathbb{1}[s_i = s_j]\right)

    computed as the Mann–Whitney statistic from mid-ranks in O(n log n).

    Parameters
    ----------
    scores : (n,) array
        Image scores, higher meaning more likely positive.
    positive : (n,) bool array
        True for OOD images.

    Returns
    -------
    float in [0, 1]; 0.5 is chance.

    See Also
    --------
    sklearn.metrics.roc_auc_score : the same number, used as the reference in the tests.
    """
    scores, positive = _scores_and_labels(scores, positive)
    from scipy.stats import rankdata  # imported here: scipy.stats costs ~0.4 s at import time

    ranks = rankdata(scores)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


@dataclass(frozen=True)
class RocCurve:
    """Operating points of "positive when score ≥ t" for every distinct score ``t``.

    Attributes
    ----------
    fpr, tpr : (k + 1,) float64
        False and true positive rates, starting at (0, 0).
    thresholds : (k + 1,) float64
        Descending; the first is ``inf`` (nothing is positive).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores: ArrayLike, positive: ArrayLike) -> RocCurve:
    """Every operating point of the ROC curve (no point is dropped).

    See Also
    --------
    sklearn.metrics.roc_curve : equal with ``drop_intermediate=False``.
    """
    scores, positive = _scores_and_labels(scores, positive)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_positives = np.cumsum(positive[order])
    false_positives = np.arange(1, scores.size + 1) - true_positives
    # One operating point per distinct score: the last index of each run of ties.
    # (`!=` rather than np.diff, which gives NaN and so splits a run of tied infinite scores.)
    last = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), scores.size - 1]
    tpr = np.r_[0, true_positives[last]] / true_positives[-1]
    fpr = np.r_[0, false_positives[last]] / false_positives[-1]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=np.r_[np.inf, sorted_scores[last]])


def fpr_at_tpr(scores: ArrayLike, positive: ArrayLike, tpr: float = 0.95) -> float:
    """Smallest false positive rate among operating points whose TPR is at least ``tpr``.

    With the default, "FPR at 95 % TPR": the share of ID images flagged when the
    threshold is set to catch 95 % of the OOD images. Lower is better.
    """
    if not 0.0 < tpr <= 1.0:
        raise UQEvalError(f"OOD detection: target TPR {tpr} is not in (0, 1]")
    curve = roc_curve(scores, positive)
    return float(curve.fpr[np.searchsorted(curve.tpr, tpr, side="left")])
