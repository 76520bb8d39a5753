"""How precise uqeval's numbers are, in one place: the EU floor, the constant-map
tolerance and the tie tolerances of ranks (Δ's follows from its scores').

Every value here is derived in ``docs/metrics.md`` ("Numerical precision") from a
measurement that ``benchmarks/eu_floor.py`` and ``benchmarks/storage_precision.py``
repeat, and ``scores.json`` records them. This module imports nothing, so the numba
kernels, the metrics and the comparison can all read it.
"""

from __future__ import annotations

#: EU below this many nats is set to exactly 0. The decomposition's EU differs from a
#: float64 evaluation of the same input by at most 2.3e-7 nats ≈ 2.5·u·ln C (u = 2**-24)
#: over 1064 shapes up to 1000 members or samples and 10 classes, float16 and float32
#: input alike (``benchmarks/eu_floor.py``). 2**-18 ≈ 3.8e-6 nats = 64·u is 16 times
#: that, and covers the same error law up to ln C ≈ 25. EU smaller than that cannot be
#: told from rounding.
EU_FLOOR = 2.0**-18

#: A map whose values span at most this many nats (or, for the rater-variance map, this
#: much variance) over an image's scored pixels is constant: it has no correlation.
#: The same bound as :data:`EU_FLOOR`, the accuracy of a map.
CONSTANT_TOLERANCE = EU_FLOOR

#: Two values of a metric closer than this are tied when runs are ranked. Stored as
#: float16 instead of float32, one model's NCC moves by at most 1.1e-5 on the benchmark
#: stores (``benchmarks/storage_precision.py``); 1e-4 ties that with a margin of 9.
#: AUROC, ACE and AURC are reported to 3 decimals and tied within 1e-3; storage rounding
#: can move them further on small test sets (a pair of near-tied image scores swapping,
#: a pixel crossing a bin edge), which is a change of the data they rank, not rounding
#: of the metric.
RANK_TOLERANCE = {"auroc": 1e-3, "ncc": 1e-4, "ace": 1e-3, "aurc": 1e-3}


def delta_tolerance(u_correct: float, u_wrong: float, metric_tolerance: float) -> float:
    r"""How far Δ can move when each score moves by ``metric_tolerance``: the tie
    tolerance of Δ between runs.

    .. math:: t_\Delta = \frac{4}{\pi} \, t \, \frac{|U_c| + |U_w|}{U_c^2 + U_w^2}

    the first-order bound from Δ's partial derivatives. 0 when Δ is undefined (NaN
    scores, or both 0).
    """
    norm = u_correct * u_correct + u_wrong * u_wrong
    if not norm > 0:  # NaN or both 0
        return 0.0
    return 4.0 / 3.141592653589793 * metric_tolerance * (abs(u_correct) + abs(u_wrong)) / norm


def precision_record() -> dict[str, object]:
    """The values above as ``scores.json`` records them (``numerics``)."""
    return {
        "eu_floor": EU_FLOOR,
        "constant_tolerance": CONSTANT_TOLERANCE,
        "rank_tolerance": dict(RANK_TOLERANCE),
    }
