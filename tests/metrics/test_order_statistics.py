"""Exact quantiles in two looks at values seen in parts, against numpy.quantile bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError
from uqeval.conventions import _QUANTILE_METHODS
from uqeval.metrics.order_statistics import (
    BUCKETS,
    high_key_counts,
    key_values,
    quantile_ranks,
    select,
    sort_keys,
)

METHODS = sorted(_QUANTILE_METHODS)
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
SPECIAL = np.array(
    [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 0.1, 1 + 2**-23], dtype=np.float32
)


def two_looks(parts: list[np.ndarray], level: float, method: str) -> float:
    """The quantile of the parts' values from the two looks, each summing counts over the parts."""
    chosen = select(sum(high_key_counts(part) for part in parts), level, method)
    return chosen.quantile(sum(chosen.low_key_counts(part) for part in parts))


def bits(value: float) -> int:
    """The float64 bits of a value, ``-0.0`` as ``+0.0`` (the two compare equal, and are keyed alike)."""
    return int(np.float64(value + 0.0).view(np.int64))


@st.composite
def values_and_level(draw):
    """float32 values in parts, with ties (few distinct levels), special values, values
    apart by one ulp or far apart in magnitude; and a level: 0, 1, k/n or any."""
    n = draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["ties", "normal", "magnitudes", "special", "ulps"]))
    if kind == "ties":
        values = rng.integers(0, draw(st.integers(1, 6)), n) / 7
    elif kind == "normal":
        values = rng.standard_normal(n)
    elif kind == "magnitudes":
        values = rng.random(n) * 10.0 ** rng.integers(-40, 38, n)
    elif kind == "special":
        values = rng.choice(SPECIAL, n)
    else:
        values = np.float32(0.5) + rng.integers(0, 4, n).astype(np.float32) * np.spacing(np.float32(0.5))
    values = np.asarray(values, dtype=np.float32)
    level = draw(
        st.one_of(
            st.sampled_from([0.0, 1.0, 0.5]),
            st.integers(0, n).map(lambda k: k / n),
            st.floats(0, 1, allow_nan=False),
        )
    )
    stops = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return np.split(values, stops), level


@PROPERTY_SETTINGS
@given(values_and_level())
def test_two_looks_give_numpys_quantile_bit_for_bit(case):
    parts, level = case
    values = np.concatenate(parts)
    for method in METHODS:
        with np.errstate(invalid="ignore", over="ignore"):
            expected = float(np.quantile(values, np.float64(level), method=method))
            found = two_looks(parts, level, method)
        assert bits(found) == bits(expected) or (np.isnan(found) and np.isnan(expected)), method


@pytest.mark.parametrize("method", METHODS)
def test_quantile_ranks_read_what_numpy_reads(method):
    """For every n up to 60 and a grid of levels with k/n among them, the ranks and
    weight give numpy's quantile of distinct values whose order statistic is its rank."""
    for n in range(1, 61):
        values = np.arange(n, dtype=np.float32) ** 2 / 7
        for level in {*np.linspace(0, 1, 41).tolist(), *(np.arange(n + 1) / n).tolist()}:
            ranks = quantile_ranks(n, level, method)
            assert 0 <= ranks.lower <= ranks.upper <= n - 1
            found = ranks.interpolated(values[ranks.lower], values[ranks.upper])
            assert bits(found) == bits(float(np.quantile(values, np.float64(level), method=method))), (n, level)


def test_a_nan_makes_the_quantile_nan_without_a_second_look():
    values = np.array([0.2, np.nan, 0.1], dtype=np.float32)
    chosen = select(high_key_counts(values), 0.5, "linear")
    assert len(chosen.buckets) == 0
    assert np.isnan(chosen.quantile(chosen.low_key_counts(values)))
    assert np.isnan(np.quantile(values, 0.5))


def test_sort_keys_order_as_the_values_and_invert():
    values = np.sort(np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 1e3)
    values = np.concatenate([[-np.inf], values, [np.inf]]).astype(np.float32)
    keys = sort_keys(values)
    assert (np.diff(keys.astype(np.int64)) >= 0).all()
    assert (key_values(keys) == values).all()
    assert sort_keys(np.float32(-0.0)) == sort_keys(np.float32(0.0))


def test_counts_keep_the_same_size_for_any_number_of_values():
    few, many = np.float32([0.5]), np.random.default_rng(1).random(200_000, dtype=np.float32)
    assert high_key_counts(few).shape == high_key_counts(many).shape == (BUCKETS + 1,)
    chosen = select(high_key_counts(many), 0.3, "hazen")
    assert chosen.low_key_counts(many).shape == (len(chosen.buckets), BUCKETS)
    assert 1 <= len(chosen.buckets) <= 2
    assert chosen.quantile(chosen.low_key_counts(many)) == float(np.quantile(many, np.float64(0.3), method="hazen"))


def test_refuses_no_value_and_an_unknown_method():
    with pytest.raises(UQEvalError, match="at least one value"):
        quantile_ranks(0, 0.5, "linear")
    with pytest.raises(UQEvalError, match="not one of numpy's"):
        quantile_ranks(3, 0.5, "cubic")
