r"""Exact quantiles of float32 values seen in parts, in memory that does not grow with them.

``numpy.quantile`` needs every value at once. The same quantile, to the last bit, comes
from two looks at the values in parts (a *radix selection*), each keeping only counts:

1. :func:`high_key_counts`: how many values fall in each of the :math:`2^{16}` buckets of
   the upper 16 bits of their *key* (:func:`sort_keys`, a uint32 that orders as the
   float32 values do). With the values' number ``n`` and the level ``q`` known,
   :func:`quantile_ranks` gives the one or two order statistics that numpy's method
   reads, :math:`u_{(j)}` and :math:`u_{(k)}` (0-based ranks), and the counts give the
   bucket of each (:func:`select`).
2. :meth:`KeySelection.low_key_counts`: within those buckets only, how many values have
   each lower 16 bits. The counts give the key, so the value, of each rank, and
   :meth:`KeySelection.quantile` interpolates them as numpy does.

Memory: :math:`2^{16}` int64 per bucket counted, 512 KiB per look and bucket. Values
are ordered as numpy compares them: ``-0.0`` as ``+0.0``; any NaN makes the quantile
NaN, as with numpy.

>>> rng = np.random.default_rng(0)
>>> parts = [rng.random(n, dtype=np.float32) for n in (5, 8, 3)]
>>> first = sum(high_key_counts(part) for part in parts)
>>> chosen = select(first, 0.3, "linear")
>>> second = sum(chosen.low_key_counts(part) for part in parts)
>>> chosen.quantile(second) == float(np.quantile(np.concatenate(parts), np.float64(0.3)))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uqeval.errors import UQEvalError

#: Buckets of a key's upper (or lower) 16 bits.
BUCKETS = 1 << 16
_SIGN = np.uint32(0x80000000)

# Hyndman & Fan's (alpha, beta) of numpy's continuous methods: virtual index n·q + α + q·(1 - α - β) - 1.
_PLOTTING_POSITIONS = {
    "interpolated_inverted_cdf": (0, 1),
    "hazen": (0.5, 0.5),
    "weibull": (0, 0),
    "median_unbiased": (1 / 3.0, 1 / 3.0),
    "normal_unbiased": (3 / 8.0, 3 / 8.0),
}


def sort_keys(values: np.ndarray) -> np.ndarray:
    """The uint32 key of each float32 value, ordered as the values are: the sign bit set
    on non-negative values, every bit flipped on negative ones (``-0.0`` as ``+0.0``).

    >>> sort_keys(np.array([-1.0, -0.0, 0.0, 2.0], dtype=np.float32)).tolist()
    [1082130431, 2147483648, 2147483648, 3221225472]
    """
    bits = (np.asarray(values, dtype=np.float32).ravel() + np.float32(0)).view(np.uint32)  # -0 + 0 is +0
    negative = bits >> np.uint32(31)
    return bits ^ (negative * np.uint32(0x7FFFFFFF) | _SIGN)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of :func:`sort_keys` keys."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys & _SIGN, keys ^ _SIGN, ~keys).astype(np.uint32)
    return bits.view(np.float32)


def high_key_counts(values: np.ndarray) -> np.ndarray:
    """The first look at some float32 values: (BUCKETS + 1,) int64, how many values have
    each upper 16 bits of their key, and last how many are NaN. Counts of parts add up."""
    values = np.asarray(values, dtype=np.float32).ravel()
    nan = np.isnan(values)
    n_nan = int(np.count_nonzero(nan))
    if n_nan:
        values = values[~nan]
    counts = np.bincount(sort_keys(values) >> np.uint32(16), minlength=BUCKETS + 1).astype(np.int64, copy=False)
    counts[BUCKETS] = n_nan
    return counts


@dataclass(frozen=True)
class QuantileRanks:
    """Which order statistics numpy's quantile of ``n`` values reads, and how it joins them.

    Attributes
    ----------
    lower, upper : int
        0-based ranks :math:`j \\le k` of the values read (equal for a method that picks one).
    gamma : float or None
        The interpolation weight: the quantile is ``lerp(u_(j), u_(k), gamma)`` as numpy
        computes it (:meth:`interpolated`); None for the methods that pick ``u_(j)``.
    """

    lower: int
    upper: int
    gamma: float | None

    def interpolated(self, lower_value: np.float32, upper_value: np.float32) -> float:
        """The quantile from the values at :attr:`lower` and :attr:`upper`, with numpy's
        arithmetic (``numpy.lib._function_base_impl._lerp``): ``a + (b - a)·γ``, or for
        ``γ ≥ 0.5`` ``b - (b - a)·(1 - γ)``, in the types numpy uses (the float32 values'
        difference in float32, the weight a float64 array)."""
        a, b = np.float32(lower_value), np.float32(upper_value)
        if self.gamma is None:
            return float(a)
        gamma = np.asarray(self.gamma, dtype=np.float64)
        difference = b - a
        if gamma >= 0.5:
            return float(np.subtract(b, difference * (1 - gamma), dtype=np.float64))
        return float(np.add(a, difference * gamma))


def quantile_ranks(n: int, level: float, method: str) -> QuantileRanks:
    """numpy's virtual index and interpolation weight of the quantile at ``level`` (a
    float64, as :func:`numpy.quantile` gets it) of ``n`` values with ``method``
    (numpy's ``_QuantileMethods``, reproduced operation by operation).

    >>> quantile_ranks(5, 0.3, "linear")  # index (5 - 1)·0.3 = 1.2
    QuantileRanks(lower=1, upper=2, gamma=0.19999999999999996)
    """
    if n < 1:
        raise UQEvalError("a quantile needs at least one value")
    q = np.float64(level)
    if method in ("inverted_cdf", "closest_observation"):
        index = n * q - 1 if method == "inverted_cdf" else n * q - 1 - 0.5
        previous = np.floor(index)
        at_previous = index - previous == 0
        if method == "closest_observation":
            at_previous &= previous % 2 == 1
        rank = max(0, int(previous if at_previous else previous + 1))
        return QuantileRanks(rank, rank, None)
    if method in ("lower", "higher", "nearest"):
        pick = {"lower": np.floor, "higher": np.ceil, "nearest": np.around}[method]
        rank = int(pick((n - 1) * q))
        return QuantileRanks(rank, rank, None)
    if method == "linear":
        index = (n - 1) * q
    elif method == "averaged_inverted_cdf":
        index = n * q - 1
    elif method == "midpoint":
        index = 0.5 * (np.floor((n - 1) * q) + np.ceil((n - 1) * q))
    elif method in _PLOTTING_POSITIONS:
        alpha, beta = _PLOTTING_POSITIONS[method]
        index = n * q + (alpha + q * (1 - alpha - beta)) - 1
    else:
        raise UQEvalError(f"quantile method {method!r} is not one of numpy's")
    index = np.float64(index)
    previous = int(np.floor(index))
    upper = previous + 1
    if index >= n - 1:
        previous = upper = n - 1
        gamma = index - np.float64(-1)  # numpy's index -1 for the last value
    elif index < 0:
        previous = upper = 0
        gamma = index - np.float64(0)
    else:
        gamma = index - np.float64(previous)
    if method == "averaged_inverted_cdf":
        gamma = 0.5 if gamma == 0 else 1.0
    elif method == "midpoint":
        gamma = 0.0 if index % 1 == 0 else 0.5
    return QuantileRanks(previous, upper, float(gamma))


@dataclass(frozen=True)
class KeySelection:
    """Where the order statistics of a quantile lie after the first look (:func:`select`).

    Attributes
    ----------
    ranks : QuantileRanks or None
        None when the quantile is known without a second look (NaN).
    buckets : (bucket,) int64
        The upper 16 bits of the keys to count in the second look, ascending.
    within : tuple of (int, int)
        For :attr:`ranks`' lower and upper rank: the position of its bucket in
        :attr:`buckets`, and its rank among the values of that bucket.
    """

    ranks: QuantileRanks | None
    buckets: np.ndarray
    within: tuple[tuple[int, int], ...]

    def low_key_counts(self, values: np.ndarray) -> np.ndarray:
        """The second look at some of the values: (bucket, BUCKETS) int64, per bucket
        selected how many values have each lower 16 bits of their key. Counts of parts add up."""
        counts = np.zeros((len(self.buckets), BUCKETS), dtype=np.int64)
        if not len(self.buckets):
            return counts
        values = np.asarray(values, dtype=np.float32).ravel()
        keys = sort_keys(values[~np.isnan(values)])
        high = keys >> np.uint32(16)
        for row, bucket in enumerate(self.buckets):
            counts[row] = np.bincount(keys[high == bucket] & np.uint32(0xFFFF), minlength=BUCKETS)
        return counts

    def quantile(self, counts: np.ndarray) -> float:
        """The quantile from the second look's counts (:meth:`low_key_counts` of every value, summed)."""
        if self.ranks is None:
            return float("nan")
        picked = []
        for row, rank in self.within:
            low = int(np.searchsorted(np.cumsum(counts[row]), rank, side="right"))
            picked.append(key_values(np.uint32((int(self.buckets[row]) << 16) | low))[()])
        return self.ranks.interpolated(picked[0], picked[1])


def select(counts: np.ndarray, level: float, method: str) -> KeySelection:
    """The buckets a second look must count for the quantile at ``level`` with ``method``,
    from the first look's counts (:func:`high_key_counts` of every value, summed)."""
    if counts[BUCKETS]:
        return KeySelection(None, np.zeros(0, dtype=np.int64), ())
    high = counts[:BUCKETS]
    ends = np.cumsum(high)
    ranks = quantile_ranks(int(ends[-1]), level, method)
    places = []
    for rank in (ranks.lower, ranks.upper):
        bucket = int(np.searchsorted(ends, rank, side="right"))
        places.append((bucket, rank - int(ends[bucket] - high[bucket])))
    buckets = np.unique([bucket for bucket, _ in places])
    within = tuple((int(np.searchsorted(buckets, bucket)), rank) for bucket, rank in places)
    return KeySelection(ranks, buckets, within)
