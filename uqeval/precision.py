"""How precise uqeval's numbers are, in one place: the EU floor, the constant-map
tolerance and the tie tolerances of ranks.

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

#: Two values of a metric closer than this are tied when runs are ranked. The same
#: model stored as float16 and as float32 (the coarsest and the usual storage) moves
#: each metric by less than half of it on the synthetic benchmark stores
#: (``benchmarks/storage_precision.py``), so a rank never turns on storage rounding.
RANK_TOLERANCE = {"auroc": 1e-3, "ncc": 1e-3, "ace": 1e-3, "aurc": 1e-3}

#: Δ values closer than this are tied: the metric tolerance carried through Δ's slope
#: ``(4/π) · |U| / (U_c² + U_w²)`` at typical scores is below it.
DELTA_TOLERANCE = 1e-2


def precision_record() -> dict[str, object]:
    """The values above as ``scores.json`` records them (``numerics``)."""
    return {
        "eu_floor": EU_FLOOR,
        "constant_tolerance": CONSTANT_TOLERANCE,
        "rank_tolerance": dict(RANK_TOLERANCE),
        "delta_tolerance": DELTA_TOLERANCE,
    }
