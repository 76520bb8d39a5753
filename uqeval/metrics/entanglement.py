r"""The entanglement metric Δ and the epistemic-collapse ratio.

.. math:: \Delta = s \cdot \frac{\operatorname{atan2}(U_c, U_w) - \pi/4}{\pi/4}

``U_c`` is the task score of the theoretically correct measure, ``U_w`` that of the
wrong one, and ``s = -1`` when lower scores are better. Δ > 0: the correct measure
wins (disentangled); Δ < 0: the wrong one does; for non-negative scores Δ ∈ [-1, 1].

>>> round(entanglement_delta(0.9, 0.6), 4)
0.2513
>>> round(entanglement_delta(0.05, 0.10, lower_is_better=True), 4)
0.4097
>>> entanglement_delta(0.0, 0.0)
nan
"""

from __future__ import annotations

import math

import numpy as np


def entanglement_delta(u_correct: float, u_wrong: float, *, lower_is_better: bool = False) -> float:
    """Δ of one task and split; NaN when both scores are 0 or either is NaN.

    Parameters
    ----------
    u_correct, u_wrong : float
        Score of the correct and of the wrong measure (e.g. EU and AU AUROC for OOD
        detection).
    lower_is_better : bool
        True for errors such as ACE (``s = -1``).
    """
    u_correct, u_wrong = float(u_correct), float(u_wrong)
    if math.isnan(u_correct) or math.isnan(u_wrong) or (u_correct == 0 and u_wrong == 0):
        return float("nan")
    sign = -1.0 if lower_is_better else 1.0
    return sign * (math.atan2(u_correct, u_wrong) - math.pi / 4) / (math.pi / 4)


def collapse_ratio(eu: np.ndarray | float, au: np.ndarray | float) -> float:
    """Epistemic collapse: mean EU / mean AU over all pixels given (NaN when AU sums to 0).

    Far below 1 means the members barely disagree, so ``TU ≈ AU``.
    """
    total_au = float(np.sum(au, dtype=np.float64))
    return float(np.sum(eu, dtype=np.float64)) / total_au if total_au > 0 else float("nan")
