r"""The entanglement metric Δ and the epistemic-collapse ratio.

.. math:: \Delta = s \cdot \frac{\operatorname{atan2}(U_c, U_w) - \pi/4}{\pi/4}

``U_c`` is the task score of the theoretically correct measure, ``U_w`` that of the
wrong one, and ``s = -1`` when lower scores are better. Δ > 0: the correct measure
wins (disentangled); Δ < 0: the wrong one does; for non-negative scores Δ ∈ [-1, 1].
A negative score (an NCC, say) takes Δ out of that range: ``atan2`` lies in (−π, π],
so Δ ∈ (−5, 3]. Δ falls below −1 when both scores are negative (−0.1 against −0.2
gives −4.41), and it jumps from about +3 to about −5 as ``U_c`` crosses 0 while
``U_w < 0``.

>>> round(entanglement_delta(0.9, 0.6), 4)
0.2513
>>> round(entanglement_delta(0.05, 0.10, lower_is_better=True), 4)
0.4097
>>> entanglement_delta(0.0, 0.0)
nan
>>> entanglement_delta(0.0, 0.0, both_zero="atan2")
-1.0
>>> round(entanglement_delta(-0.1, -0.2), 2)
-4.41
"""

from __future__ import annotations

import math

import numpy as np

from uqeval.errors import UQEvalError


def entanglement_delta(
    u_correct: float, u_wrong: float, *, lower_is_better: bool = False, both_zero: str = "nan"
) -> float:
    """Δ of one task and split; NaN when either score is NaN.

    Parameters
    ----------
    u_correct, u_wrong : float
        Score of the correct and of the wrong measure (e.g. EU and AU AUROC for OOD
        detection).
    lower_is_better : bool
        True for errors such as ACE (``s = -1``).
    both_zero : ``"nan"`` or ``"atan2"``
        Δ when both scores are 0: NaN (no direction to measure), or what
        ``atan2(0, 0) = 0`` gives, ``-s`` (the study's code).
    """
    # + 0.0 turns −0.0 into 0.0: atan2 tells the two apart (atan2(−0.0, −1) = −π), a score does not.
    u_correct, u_wrong = float(u_correct) + 0.0, float(u_wrong) + 0.0
    if both_zero not in ("nan", "atan2"):
        raise UQEvalError(f"both_zero is {both_zero!r}; expected 'nan' or 'atan2'")
    if math.isnan(u_correct) or math.isnan(u_wrong) or (u_correct == 0 and u_wrong == 0 and both_zero == "nan"):
        return float("nan")
    sign = -1.0 if lower_is_better else 1.0
    return sign * (math.atan2(u_correct, u_wrong) - math.pi / 4) / (math.pi / 4)


def collapse_ratio(eu: np.ndarray | float, au: np.ndarray | float) -> float:
    """Epistemic collapse: mean EU / mean AU over all pixels given (NaN when AU sums to 0).

    Far below 1 means the members barely disagree, so ``TU ≈ AU``.
    """
    total_au = float(np.sum(au, dtype=np.float64))
    return float(np.sum(eu, dtype=np.float64)) / total_au if total_au > 0 else float("nan")
