"""PAvPU against a plain numpy implementation of its definition, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError
from uqeval.metrics.pavpu import accurate, certain, pavpu, pavpu_counts, pavpu_threshold

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


def numpy_pavpu(u_calibration, w_calibration, u_test, w_test) -> tuple[float, float]:
    """τ and PAvPU from the definition: pixels with a rater only (w not NaN); accurate w ≥ 0.5;
    τ = np.quantile(U_cal, fraction of accurate calibration pixels); certain U < τ."""
    counted = ~np.isnan(w_calibration)
    level = np.mean(w_calibration[counted] >= 0.5)
    tau = np.quantile(u_calibration[counted], level)
    counted = ~np.isnan(w_test)
    u, w = u_test[counted], w_test[counted]
    right, certain = w >= 0.5, u < tau
    return float(tau), float(np.mean((right & certain) | (~right & ~certain)))


@st.composite
def pixels(draw, max_pixels: int = 60):
    """(U float32, agree, valid) of one image, with ties in U and pixels without a rater."""
    n = draw(st.integers(1, max_pixels))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 6))
    u = (rng.integers(0, levels, n) / levels).astype(np.float32)
    valid = rng.integers(0 if draw(st.booleans()) else 1, 4, n)
    agree = rng.integers(0, valid + 1)
    return u[None], agree[None], valid[None]


def correctness(agree, valid):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, agree / np.where(valid > 0, valid, 1), np.nan)


@PROPERTY_SETTINGS
@given(calibration=pixels(), test=pixels())
def test_pavpu_matches_numpy_definition(calibration, test):
    u_cal, agree_cal, valid_cal = calibration
    u, agree, valid = test
    w_cal = correctness(agree_cal, valid_cal)
    if not (valid_cal > 0).any() or not (valid > 0).any():
        return
    level = accurate(agree_cal, valid_cal).sum() / (valid_cal > 0).sum()
    tau = pavpu_threshold(u_cal[valid_cal > 0], level)
    expected_tau, expected = numpy_pavpu(u_cal, w_cal, u, correctness(agree, valid))
    assert tau == expected_tau
    assert pavpu(pavpu_counts(u, agree, valid, tau)) == expected


@PROPERTY_SETTINGS
@given(data=pixels(), split=st.integers(1, 59), seed=st.integers(0, 2**32 - 1))
def test_counts_add_up_over_images_and_do_not_depend_on_pixel_order(data, split, seed):
    u, agree, valid = data
    counts = pavpu_counts(u, agree, valid, 0.5)
    order = np.random.default_rng(seed).permutation(u.shape[1])
    np.testing.assert_array_equal(pavpu_counts(u[:, order], agree[:, order], valid[:, order], 0.5), counts)
    split = min(split, u.shape[1])
    parts = [
        pavpu_counts(u[:, part], agree[:, part], valid[:, part], 0.5) for part in (slice(0, split), slice(split, None))
    ]
    np.testing.assert_array_equal(parts[0] + parts[1], counts)
    assert 0.0 <= pavpu(counts) <= 1.0 or np.isnan(pavpu(counts))


def test_hand_values_and_the_half_agreement_is_accurate():
    u = np.array([[0.1, 0.2, 0.7, 0.9, 0.3]])
    agree = np.array([[1, 0, 0, 2, 0]])
    valid = np.array([[2, 2, 2, 2, 0]])  # the last pixel has no rater
    np.testing.assert_array_equal(accurate(agree, valid), [[True, False, False, True, False]])
    # certain: 0.1, 0.2 (and 0.3, not counted); accurate∧certain: 0.1; inaccurate∧uncertain: 0.7
    np.testing.assert_array_equal(pavpu_counts(u, agree, valid, 0.25), [[1, 1, 4]])
    assert pavpu(pavpu_counts(u, agree, valid, 0.25)) == 0.5


def test_ties_at_tau_are_uncertain():
    u = np.array([[0.5, 0.5, 0.2]], dtype=np.float32)
    agree, valid = np.array([[1, 0, 1]]), np.array([[1, 1, 1]])
    np.testing.assert_array_equal(pavpu_counts(u, agree, valid, 0.5), [[1, 1, 3]])


def test_level_zero_and_one():
    u = np.array([0.3, 0.1, 0.2, 0.1], dtype=np.float32)
    assert pavpu_threshold(u, 0.0) == pytest.approx(0.1)  # no calibration pixel is accurate: none certain
    assert pavpu_threshold(u, 1.0) == pytest.approx(0.3)  # all accurate: all but the largest U certain
    counts = pavpu_counts(u[None], np.ones((1, 4), int), np.ones((1, 4), int), pavpu_threshold(u, 1.0))
    np.testing.assert_array_equal(counts, [[3, 0, 4]])


def test_the_quantile_method_is_numpys():
    u = np.arange(10, dtype=np.float64)
    for method in ("linear", "lower", "higher", "inverted_cdf"):
        assert pavpu_threshold(u, 0.35, method=method) == np.quantile(u, 0.35, method=method)


def test_no_pixel_and_bad_input():
    assert np.isnan(pavpu(np.zeros((2, 3), dtype=np.int64)))
    assert np.isnan(pavpu(pavpu_counts(np.ones((1, 2)), np.zeros((1, 2), int), np.zeros((1, 2), int), 0.5)))
    with pytest.raises(UQEvalError, match="no calibration pixel"):
        pavpu_threshold(np.array([]), 0.5)
    with pytest.raises(UQEvalError, match="accurate fraction"):
        pavpu_threshold(np.ones(3), 1.5)
    with pytest.raises(UQEvalError, match="share one shape"):
        pavpu_counts(np.ones((1, 3)), np.ones((1, 2), int), np.ones((1, 3), int), 0.5)


@PROPERTY_SETTINGS
@given(
    values=st.lists(st.floats(0, 3, width=32), min_size=1, max_size=20),
    threshold=st.floats(0, 3),
    pick=st.integers(0, 19),
    nudge=st.sampled_from([-1, 0, 1]),
)
def test_certain_on_float32_maps_is_the_float64_comparison(values, threshold, pick, nudge):
    u = np.array(values, dtype=np.float32)
    # τ at, just above or just below one of the values, as well as anywhere.
    near = float(u[pick % len(u)])
    for tau in (threshold, near, float(np.nextafter(near, near + nudge)) if nudge else near):
        np.testing.assert_array_equal(certain(u, tau), u.astype(np.float64) < tau)
