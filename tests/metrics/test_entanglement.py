"""The entanglement metric Δ and the epistemic-collapse ratio (docs/metrics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval.metrics.entanglement import collapse_ratio, entanglement_delta

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
NON_NEGATIVE = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


def reference_delta(u_correct: float, u_wrong: float, lower_is_better: bool = False) -> float:
    """Δ = s (θ − π/4) / (π/4), θ the angle of (U_w, U_c), computed through atan (not atan2)."""
    theta = math.pi / 2 if u_wrong == 0 else math.atan(u_correct / u_wrong)
    sign = -1.0 if lower_is_better else 1.0
    return sign * (theta - math.pi / 4) / (math.pi / 4)


# --------------------------------------------------------------------------- Δ


@pytest.mark.parametrize("value", [1e-9, 0.3, 0.5, 1.0, 7.0])
def test_delta_equal_scores_is_zero(value):
    assert entanglement_delta(value, value) == pytest.approx(0.0, abs=1e-15)
    assert entanglement_delta(value, value, lower_is_better=True) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("value", [1e-9, 0.5, 1.0, 3.0])
def test_delta_extremes(value):
    assert entanglement_delta(value, 0.0) == pytest.approx(1.0, abs=1e-15)  # only the correct measure works
    assert entanglement_delta(0.0, value) == pytest.approx(-1.0, abs=1e-15)  # only the wrong one works
    assert entanglement_delta(value, 0.0, lower_is_better=True) == pytest.approx(-1.0, abs=1e-15)
    assert entanglement_delta(0.0, value, lower_is_better=True) == pytest.approx(1.0, abs=1e-15)


def test_delta_hand_values():
    # atan2(0.9, 0.6) = atan(1.5) = 0.982793723...; (0.9827937 − 0.7853982) / 0.7853982 = 0.2513318
    assert entanglement_delta(0.9, 0.6) == pytest.approx(0.2513318, abs=1e-7)
    assert entanglement_delta(0.6, 0.9) == pytest.approx(-0.2513318, abs=1e-7)
    # atan(√3) = π/3: Δ = (π/3 − π/4) / (π/4) = 1/3.
    assert entanglement_delta(math.sqrt(3), 1.0) == pytest.approx(1 / 3, abs=1e-15)
    assert entanglement_delta(1.0, math.sqrt(3)) == pytest.approx(-1 / 3, abs=1e-15)
    # ACE-like errors: the correct measure's error is half the wrong one's, which is good.
    assert entanglement_delta(0.05, 0.10, lower_is_better=True) == pytest.approx(0.4096655, abs=1e-7)
    assert entanglement_delta(0.05, 0.10) == pytest.approx(-0.4096655, abs=1e-7)
    # Only the ratio matters.
    assert entanglement_delta(0.9, 0.6) == pytest.approx(entanglement_delta(9e-6, 6e-6), abs=1e-15)


def test_delta_lower_is_better_flips_the_sign():
    for u_correct, u_wrong in [(0.9, 0.6), (0.2, 0.7), (3.0, 1.0)]:
        plain = entanglement_delta(u_correct, u_wrong)
        assert entanglement_delta(u_correct, u_wrong, lower_is_better=True) == -plain
        assert plain == pytest.approx(reference_delta(u_correct, u_wrong), abs=1e-14)


def test_delta_nan_cases():
    assert math.isnan(entanglement_delta(0.0, 0.0))
    assert math.isnan(entanglement_delta(0.0, 0.0, lower_is_better=True))
    assert math.isnan(entanglement_delta(-0.0, 0.0))
    assert math.isnan(entanglement_delta(float("nan"), 0.5))
    assert math.isnan(entanglement_delta(0.5, float("nan")))
    assert math.isnan(entanglement_delta(np.nan, np.nan, lower_is_better=True))
    assert math.isnan(entanglement_delta(np.float32("nan"), 0.0))


def test_delta_accepts_numpy_scalars_and_returns_float():
    value = entanglement_delta(np.float32(0.9), np.float64(0.6))
    assert type(value) is float
    assert value == pytest.approx(0.2513318, abs=1e-6)


@PROPERTY_SETTINGS
@given(u_correct=NON_NEGATIVE, u_wrong=NON_NEGATIVE, lower_is_better=st.booleans())
def test_delta_bounded_and_antisymmetric(u_correct, u_wrong, lower_is_better):
    delta = entanglement_delta(u_correct, u_wrong, lower_is_better=lower_is_better)
    if u_correct == 0 and u_wrong == 0:
        assert math.isnan(delta)
        return
    assert -1.0 <= delta <= 1.0
    swapped = entanglement_delta(u_wrong, u_correct, lower_is_better=lower_is_better)
    assert delta == pytest.approx(-swapped, abs=1e-12)
    assert delta == pytest.approx(reference_delta(u_correct, u_wrong, lower_is_better), abs=1e-12)
    # Δ > 0 exactly when the correct measure scores better.
    better = u_correct < u_wrong if lower_is_better else u_correct > u_wrong
    if better:
        assert delta > 0
    elif u_correct == u_wrong:
        assert delta == pytest.approx(0.0, abs=1e-15)
    else:
        assert delta < 0


# --------------------------------------------------------------------------- collapse ratio


def test_collapse_ratio_hand_values():
    eu = np.array([[0.1, 0.2], [0.3, 0.0]])
    au = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert collapse_ratio(eu, au) == pytest.approx(0.6 / 4, abs=1e-15)
    assert collapse_ratio(au, eu) == pytest.approx(4 / 0.6, rel=1e-14)
    assert collapse_ratio(np.zeros(3), np.ones(3)) == 0.0
    assert type(collapse_ratio(eu, au)) is float


def test_collapse_ratio_is_sum_ratio_not_mean_of_ratios():
    eu = np.array([1.0, 1.0])
    au = np.array([1.0, 3.0])
    assert collapse_ratio(eu, au) == pytest.approx(0.5, abs=1e-15)  # not mean(1, 1/3) = 2/3
    # Equal pixel counts: the ratio of sums equals the ratio of means.
    rng = np.random.default_rng(0)
    eu, au = rng.random((2, 5, 6, 7))
    assert collapse_ratio(eu, au) == pytest.approx(eu.mean() / au.mean(), rel=1e-13)


def test_collapse_ratio_accumulates_in_float64():
    eu = np.full((500, 500), 0.01, dtype=np.float32)
    au = np.full((500, 500), 0.1, dtype=np.float32)
    expected = float(np.float32(0.01)) / float(np.float32(0.1))
    assert collapse_ratio(eu, au) == pytest.approx(expected, rel=1e-12)


def test_collapse_ratio_nan_when_au_sums_to_zero():
    assert math.isnan(collapse_ratio(np.array([0.1, 0.2]), np.zeros(2)))
    assert math.isnan(collapse_ratio(np.zeros((2, 2)), np.zeros((2, 2))))
    assert math.isnan(collapse_ratio(np.array([]), np.array([])))


# --------------------------------------------------------------------------- edge cases and range


def test_both_zero_is_nan_by_default_and_minus_s_under_the_atan2_convention():
    assert math.isnan(entanglement_delta(0.0, 0.0))
    assert math.isnan(entanglement_delta(0.0, 0.0, lower_is_better=True))
    assert entanglement_delta(0.0, 0.0, both_zero="atan2") == -1.0  # the study's np.arctan2(0, 0) = 0
    assert entanglement_delta(0.0, 0.0, lower_is_better=True, both_zero="atan2") == 1.0
    assert math.isnan(entanglement_delta(math.nan, 0.0, both_zero="atan2"))


ANY_SCORE = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@PROPERTY_SETTINGS
@given(u_correct=ANY_SCORE, u_wrong=ANY_SCORE, lower_is_better=st.booleans())
def test_delta_lies_in_minus_five_to_three(u_correct, u_wrong, lower_is_better):
    """atan2 ∈ (−π, π], so s·(atan2 − π/4)/(π/4) ∈ (−5, 3] for s = 1 and [−3, 5) for s = −1;
    in floating point −π itself is reached when U_c < 0 is below U_w's rounding."""
    value = entanglement_delta(u_correct, u_wrong, lower_is_better=lower_is_better)
    sign = -1.0 if lower_is_better else 1.0
    if u_correct == 0 and u_wrong == 0:
        assert math.isnan(value)
        return
    assert -5.0 <= sign * value <= 3.0
    if not (u_correct < 0 and u_wrong < 0 and abs(u_correct) < 1e-15 * abs(u_wrong)):
        assert sign * value > -5.0


def test_delta_of_negative_scores():
    assert entanglement_delta(-0.1, -0.2) == pytest.approx(-4.4097, abs=1e-4)  # both negative: below −1
    # U_c crossing 0 with U_w < 0: from about +3 to about −5.
    assert entanglement_delta(1e-9, -0.3) == pytest.approx(3.0, abs=1e-7)
    assert entanglement_delta(-1e-9, -0.3) == pytest.approx(-5.0, abs=1e-7)
    assert entanglement_delta(0.0, -0.3) == 3.0  # atan2(0, negative) = π


def test_unknown_both_zero_convention_raises():
    from uqeval import UQEvalError

    with pytest.raises(UQEvalError, match="both_zero"):
        entanglement_delta(0.0, 0.0, both_zero="minus-one")
