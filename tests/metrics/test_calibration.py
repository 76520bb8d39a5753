"""Tests of :mod:`uqeval.metrics.calibration` (docs/metrics.md, CAL) against scikit-learn and first principles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import _sigmoid_calibration

from uqeval import UQEvalError
from uqeval.metrics import calibration
from uqeval.metrics.ambiguity import rater_statistics
from uqeval.metrics.calibration import (
    BinnedPlattTable,
    CalibrationTable,
    ConfidenceHistogram,
    PlattFit,
    PlattTable,
    ace,
    ece,
    equal_mass_ace,
    equal_mass_ace_of_pixels,
    fit_platt,
    per_image_ace,
    per_image_ece,
    platt_targets,
    reliability,
    sparse_confidence_histogram,
)

IGNORE = 255
BINS = 20
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)
SEPARATED = "separates correct and wrong"


# --------------------------------------------------------------------------- data


def synthetic_maps(
    seed: int,
    *,
    n_images: int = 4,
    n_raters: int = 3,
    size: tuple[int, int] = (16, 16),
    shape: float = 2.0,
    scale: float = 0.3,
    ignore_rate: float = 0.1,
    slope: float = 2.0,
    intercept: float = 1.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``U`` maps and rater ``agree``/``valid`` counts, each (image, y, x).

    ``U`` is gamma distributed; each rater agrees with the prediction with probability
    ``σ(intercept - slope·U)``; some raters are ignored (255).
    """
    rng = np.random.default_rng(seed)
    u = rng.gamma(shape, scale, size=(n_images, *size)).astype(np.float32)
    p_correct = scipy.special.expit(intercept - slope * u.astype(np.float64))
    pred = rng.integers(0, 3, size=u.shape)
    wrong = (pred[:, None] + rng.integers(1, 3, size=(n_images, n_raters, *size))) % 3
    correct = rng.random((n_images, n_raters, *size)) < p_correct[:, None]
    labels = np.where(correct, pred[:, None], wrong).astype(np.uint8)
    labels[rng.random(labels.shape) < ignore_rate] = IGNORE
    stats = rater_statistics(labels, pred, 3)
    return u, stats.agree, stats.valid


def sklearn_platt(u: np.ndarray, agree: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """scikit-learn's sigmoid calibration (Platt's smoothed targets) of ``-U``: each pixel a positive
    of weight ``w`` and a negative of weight ``1 - w``. Returns uqeval's ``(slope, intercept)``."""
    mask = valid > 0
    w = agree[mask] / valid[mask]
    x = -np.asarray(u, dtype=np.float32)[mask].astype(np.float64)
    a, b = _sigmoid_calibration(np.r_[x, x], np.r_[np.ones(x.size), np.zeros(x.size)], sample_weight=np.r_[w, 1 - w])
    # scikit-learn's probability is 1 / (1 + exp(a·F + b)) with F = -U, that is σ(-b - (-a)·U).
    return -float(a), -float(b)


def smoothed_objective(u: np.ndarray, agree: np.ndarray, valid: np.ndarray):
    """The smoothed Platt objective over single pixels, in float64: ``f(slope, intercept)``."""
    mask = valid > 0
    w = agree[mask] / valid[mask]
    x = np.asarray(u, dtype=np.float32)[mask].astype(np.float64)
    high, low = platt_targets(w.sum(), (1 - w).sum())
    target = low + (high - low) * w

    def objective(parameters: np.ndarray) -> float:
        z = parameters[1] - parameters[0] * x
        return float((np.logaddexp(0.0, z) - target * z).sum())

    return objective


def test_synthetic_maps_have_what_the_tests_need():
    u, agree, valid = synthetic_maps(0, n_raters=4, ignore_rate=0.3)
    assert u.dtype == np.float32
    assert (valid == 0).any() and (valid == 4).any()
    w = agree[valid > 0] / valid[valid > 0]
    assert (w == 0).any() and (w == 1).any() and ((w > 0) & (w < 1)).any()


# --------------------------------------------------------------------------- correctness


def test_entirely_correct_image_has_correctness_one_everywhere():
    """An image whose prediction every rater shares has w = 1 (accuracy 1, not 0)."""
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, size=(2, 6, 6))
    labels = np.repeat(pred[:, None], 4, axis=1).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.4] = IGNORE  # ignored raters do not make it wrong
    labels[:, 0] = pred  # but at least one rater per pixel
    labels[1, :, 0, 0] = IGNORE  # a pixel no rater labelled
    labels[1, 0, 3, 3] = (pred[1, 3, 3] + 1) % 3  # image 1 has one disagreeing rater
    labels[1, 1:, 3, 3] = pred[1, 3, 3]
    stats = rater_statistics(labels, pred, 3)
    w = stats.correctness
    assert (w[0] == 1.0).all()
    assert w[1, 3, 3] == pytest.approx(3 / 4)
    assert np.isnan(w[1, 0, 0])
    rest = np.ones((6, 6), dtype=bool)
    rest[0, 0] = rest[3, 3] = False
    assert (w[1][rest] == 1.0).all()

    u = rng.gamma(2.0, 0.3, size=pred.shape).astype(np.float32)
    table = CalibrationTable.from_maps(u, stats.agree, stats.valid, PlattFit(1.0, 0.5, 1))
    count, _, correct = table.table[0].T
    np.testing.assert_array_equal(correct, count)  # Σw = n in every bin of the correct image
    assert count.sum() == 36
    accuracy = reliability(table.pooled([0])).accuracy
    np.testing.assert_array_equal(accuracy[count > 0], 1.0)
    assert table.table[1, :, 0].sum() == 35  # the unlabelled pixel is left out
    assert table.table[1, :, 2].sum() == pytest.approx(34 + 3 / 4)


# --------------------------------------------------------------------------- Platt fit


PLATT_CASES = [
    # seed, raters, gamma shape, gamma scale, ignore rate, true slope, true intercept, size
    (0, 1, 2.0, 0.3, 0.0, 2.0, 1.5, (16, 16)),
    (1, 2, 1.0, 0.5, 0.1, 3.0, 1.0, (16, 16)),
    (2, 3, 0.7, 0.4, 0.2, 1.0, 2.0, (20, 12)),
    (3, 5, 4.0, 0.1, 0.3, 6.0, 2.5, (16, 16)),
    (4, 7, 2.5, 0.8, 0.05, 0.8, 0.3, (24, 24)),
    (5, 4, 1.5, 0.2, 0.5, -1.0, 0.2, (12, 12)),  # more uncertainty, more often right: a < 0
]


@pytest.mark.parametrize(("seed", "raters", "shape", "scale", "ignore", "slope", "intercept", "size"), PLATT_CASES)
def test_platt_matches_sklearn_sigmoid_calibration(seed, raters, shape, scale, ignore, slope, intercept, size):
    u, agree, valid = synthetic_maps(
        seed,
        n_raters=raters,
        shape=shape,
        scale=scale,
        ignore_rate=ignore,
        slope=slope,
        intercept=intercept,
        size=size,
    )
    fit = fit_platt(u, agree, valid)
    expected_slope, expected_intercept = sklearn_platt(u, agree, valid)
    assert fit.note == ""
    assert fit.n_pixels == int((valid > 0).sum())
    assert fit.slope == pytest.approx(expected_slope, rel=1e-4)
    assert fit.intercept == pytest.approx(expected_intercept, rel=1e-4)
    assert np.sign(fit.slope) == np.sign(slope)

    table = PlattTable()
    for image in range(u.shape[0]):
        table.add(u[image : image + 1], agree[image : image + 1], valid[image : image + 1])
    assert table.n_pixels == fit.n_pixels
    streamed = table.fit()
    assert streamed.slope == pytest.approx(expected_slope, rel=1e-4)
    assert streamed.intercept == pytest.approx(expected_intercept, rel=1e-4)


def test_platt_with_exact_zero_uncertainty_matches_sklearn():
    u, agree, valid = synthetic_maps(6, n_raters=3)
    u[:, :4] = 0.0  # confident pixels: U exactly 0
    u[:, 4, :3] = 1e-30  # and below the table's smallest key
    fit = fit_platt(u, agree, valid)
    expected_slope, expected_intercept = sklearn_platt(u, agree, valid)
    assert fit.slope == pytest.approx(expected_slope, rel=1e-4)
    assert fit.intercept == pytest.approx(expected_intercept, rel=1e-4)


def test_platt_fit_is_the_stationary_point_of_the_smoothed_likelihood():
    """The fit zeroes the gradient of the likelihood with Platt's targets (independent of sklearn)."""
    u, agree, valid = synthetic_maps(7, n_raters=4, ignore_rate=0.2)
    fit = fit_platt(u, agree, valid)
    mask = valid > 0
    w = agree[mask] / valid[mask]
    high, low = (w.sum() + 1) / (w.sum() + 2), 1 / ((1 - w).sum() + 2)
    target = low + (high - low) * w
    x = u[mask].astype(np.float64)
    p = scipy.special.expit(fit.intercept - fit.slope * x)
    # ∂/∂b and ∂/∂a of Σ [t log p + (1 - t) log(1 - p)].
    assert abs((target - p).sum()) / w.size < 1e-7
    assert abs(((target - p) * x).sum()) / w.size < 1e-7
    np.testing.assert_allclose(fit.confidence(u[mask]), p, rtol=1e-15)


def test_platt_targets_are_platts():
    assert platt_targets(0.0, 0.0) == (0.5, 0.5)
    assert platt_targets(98.0, 3.0) == (0.99, 0.2)


def test_platt_ignores_pixels_without_a_rater():
    u, agree, valid = synthetic_maps(8)
    fit = fit_platt(u, agree, valid)
    u2, agree2, valid2 = u.copy(), agree.copy(), valid.copy()
    extra = np.zeros_like(valid2, dtype=bool)
    extra[:, ::3, ::2] = True
    u2[extra & (valid2 == 0)] = 25.0  # would pull the fit if counted
    valid2[extra] = 0
    agree2[extra] = 0
    fit2 = fit_platt(u2, agree2, valid2)
    assert fit2.n_pixels == int((valid2 > 0).sum()) < fit.n_pixels
    expected = sklearn_platt(u2, agree2, valid2)
    assert (fit2.slope, fit2.intercept) == pytest.approx(expected, rel=1e-4)


def _dyadic_maps(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps whose rater counts are 1, 2 or 4, so every ``w`` and ``w·U`` is exact and table sums do not round."""
    rng = np.random.default_rng(seed)
    u = rng.gamma(2.0, 0.3, size=(6, 10, 10)).astype(np.float32)
    valid = rng.choice([0, 1, 2, 4], size=u.shape)
    p = scipy.special.expit(1.0 - 2.0 * u)
    agree = rng.binomial(valid, p)
    return u, agree, valid


def test_merged_tables_equal_one_table_over_all_pixels():
    u, agree, valid = _dyadic_maps(9)
    whole = PlattTable()
    whole.add(u, agree, valid)
    first, second = PlattTable(), PlattTable()
    first.add(u[:2], agree[:2], valid[:2])
    second.add(u[2:], agree[2:], valid[2:])
    assert first.merge(second) is first
    np.testing.assert_array_equal(first.table, whole.table)
    assert first.n_pixels == whole.n_pixels == int((valid > 0).sum())
    assert first.fit() == whole.fit()

    # Merging in the other order, or three ways, changes nothing either.
    parts = [PlattTable() for _ in range(3)]
    for part, index in zip(parts, ([5], [0, 3], [1, 2, 4]), strict=True):
        part.add(u[index], agree[index], valid[index])
    merged = parts[2].merge(parts[0]).merge(parts[1])
    np.testing.assert_array_equal(merged.table, whole.table)
    assert merged.fit() == whole.fit()


def test_merged_tables_with_inexact_correctness_agree_to_rounding():
    u, agree, valid = synthetic_maps(10, n_raters=3, n_images=6)
    whole = PlattTable()
    whole.add(u, agree, valid)
    first, second = PlattTable(), PlattTable()
    first.add(u[::2], agree[::2], valid[::2])
    second.add(u[1::2], agree[1::2], valid[1::2])
    first.merge(second)
    np.testing.assert_array_equal(first.table[:, 0], whole.table[:, 0])
    np.testing.assert_array_equal(first.table[:, 2], whole.table[:, 2])  # Σ float32 U within a key is exact
    np.testing.assert_allclose(first.table, whole.table, rtol=1e-13, atol=0)
    a, b = first.fit(), whole.fit()
    assert a.slope == pytest.approx(b.slope, rel=1e-10)
    assert a.intercept == pytest.approx(b.intercept, rel=1e-10)


def test_splitting_pixels_differently_across_images_gives_the_same_fit():
    u, agree, valid = synthetic_maps(11, n_images=4, size=(12, 12))
    fit = fit_platt(u, agree, valid)
    # The same pixels in the same order, cut into other images: the very same table.
    for shape in [(1, 24, 24), (2, 36, 8), (16, 3, 12), (576, 1, 1)]:
        assert fit_platt(u.reshape(shape), agree.reshape(shape), valid.reshape(shape)) == fit
    # Shuffled across images: the same fit up to rounding of the sums.
    order = np.random.default_rng(0).permutation(u.size)
    shuffled = fit_platt(
        u.ravel()[order].reshape(8, 72), agree.ravel()[order].reshape(8, 72), valid.ravel()[order].reshape(8, 72)
    )
    assert shuffled.slope == pytest.approx(fit.slope, rel=1e-10)
    assert shuffled.intercept == pytest.approx(fit.intercept, rel=1e-10)
    assert shuffled.n_pixels == fit.n_pixels


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_images=st.integers(2, 5),
    split=st.integers(1, 4),
)
def test_merge_is_a_sum_of_tables(seed, n_images, split):
    split = min(split, n_images - 1)
    u, agree, valid = _dyadic_maps(seed)
    u, agree, valid = u[:n_images], agree[:n_images], valid[:n_images]
    whole, first, second = PlattTable(), PlattTable(), PlattTable()
    whole.add(u, agree, valid)
    first.add(u[:split], agree[:split], valid[:split])
    second.add(u[split:], agree[split:], valid[split:])
    np.testing.assert_array_equal(first.merge(second).table, whole.table)


def test_every_pixel_correct_or_wrong():
    """With one side only, the prior alone decides: a = 0 and b = logit(t₊) = ln(N₊ + 1), or
    logit(t₋) = −ln(N₋ + 1); finite, with a note."""
    u, _, valid = synthetic_maps(12)
    valid = np.maximum(valid, 1)
    n = u.size
    correct = fit_platt(u, valid, valid)
    assert correct.slope == pytest.approx(0.0, abs=1e-9)
    assert correct.intercept == pytest.approx(math.log(n + 1), rel=1e-9)
    assert "every calibration pixel is correct" in correct.note
    assert correct.n_pixels == n
    assert (correct.slope, correct.intercept) == pytest.approx(sklearn_platt(u, valid, valid), abs=1e-4)
    wrong = fit_platt(u, np.zeros_like(valid), valid)
    assert wrong.slope == pytest.approx(0.0, abs=1e-9)
    assert wrong.intercept == pytest.approx(-math.log(n + 1), rel=1e-9)
    assert "every calibration pixel is wrong" in wrong.note
    # Pixels without a rater do not spoil an all-correct set.
    agree, valid2 = valid.copy(), valid.copy()
    agree[:, 0] = 0
    valid2[:, 0] = 0
    assert fit_platt(u, agree, valid2).intercept == pytest.approx(math.log((valid2 > 0).sum() + 1), rel=1e-9)


def test_constant_uncertainty_gives_the_logit_of_the_mean_target():
    _, agree, valid = synthetic_maps(13, n_raters=3, ignore_rate=0.2)
    u = np.full(agree.shape, 0.37, dtype=np.float32)
    fit = fit_platt(u, agree, valid)
    mask = valid > 0
    w = agree[mask] / valid[mask]
    high, low = platt_targets(w.sum(), (1 - w).sum())
    mean_target = (low + (high - low) * w).mean()
    assert 0 < mean_target < 1
    assert fit.slope == 0.0
    assert fit.intercept == pytest.approx(math.log(mean_target / (1 - mean_target)), rel=1e-12)
    assert fit.note and "constant" in fit.note
    # sklearn's (slope, intercept) is not identifiable here, but its logit at U = 0.37 is.
    sk_slope, sk_intercept = sklearn_platt(u, agree, valid)
    assert fit.intercept == pytest.approx(sk_intercept - sk_slope * float(np.float32(0.37)), rel=1e-4)
    # Constant over the counted pixels only: other values where nobody rated do not matter.
    u[valid == 0] = 3.0
    assert fit_platt(u, agree, valid) == fit


def test_no_calibration_pixel_raises():
    u = np.ones((2, 3, 3), dtype=np.float32)
    zeros = np.zeros((2, 3, 3), dtype=np.int32)
    with pytest.raises(UQEvalError, match="no calibration pixel"):
        fit_platt(u, zeros, zeros)
    with pytest.raises(UQEvalError, match="no calibration pixel"):
        PlattTable().fit()


def test_mismatched_maps_raise():
    with pytest.raises(UQEvalError, match="share one shape"):
        fit_platt(np.ones((2, 3, 3), dtype=np.float32), np.ones((2, 3, 3)), np.ones((2, 3, 4)))
    with pytest.raises(UQEvalError, match="share one shape"):
        CalibrationTable.from_maps(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 3)), PlattFit(1.0, 0.0, 1))


@pytest.mark.parametrize("direction", ["low_u_correct", "high_u_correct"])
@pytest.mark.parametrize("boundary", ["clean", "mixed_boundary_pixel"])
def test_separable_data_give_a_finite_fit_and_a_note(direction, boundary):
    rng = np.random.default_rng(14)
    u = rng.gamma(2.0, 0.3, size=(3, 12, 12)).astype(np.float32)
    valid = np.full(u.shape, 2)
    low = u < np.median(u)
    correct = low if direction == "low_u_correct" else ~low
    agree = np.where(correct, 2, 0)
    if boundary == "mixed_boundary_pixel":
        # One rater of the pixel at the threshold disagrees: still (quasi-)separated.
        on_edge = np.unravel_index(np.argmin(np.where(low, np.inf, u)), u.shape)
        agree[on_edge] = 1
    fit = fit_platt(u, agree, valid)
    assert SEPARATED in fit.note
    assert "did not converge" not in fit.note
    assert math.isfinite(fit.slope) and math.isfinite(fit.intercept)
    assert (fit.slope > 0) == (direction == "low_u_correct")
    confidence = fit.confidence(u)
    assert confidence[correct].min() >= confidence[~correct].max()
    assert (fit.slope, fit.intercept) == pytest.approx(sklearn_platt(u, agree, valid), rel=1e-4)


def test_rare_errors_at_the_highest_uncertainty_give_an_optimiser_independent_fit():
    """40 wrong rater labels of ~43,000, all at the most uncertain pixels: U separates them.
    Without a prior the likelihood has no optimum (the slope runs off to wherever an
    optimiser stops); with Platt's targets every optimiser finds one finite fit."""
    rng = np.random.default_rng(15)
    u = rng.gamma(2.0, 0.05, size=(12, 30, 30)).astype(np.float32)
    valid = np.full(u.shape, 4)
    agree = valid.copy()
    top = np.argsort(u, axis=None)[-10:]
    agree.ravel()[top] = 0  # 10 pixels × 4 raters wrong
    fit = fit_platt(u, agree, valid)
    assert SEPARATED in fit.note
    assert math.isfinite(fit.slope) and 0 < fit.slope < 1e3
    # The same optimum from the table streamed in parts, with another tolerance, and from scipy's
    # quasi-Newton and simplex searches started elsewhere on the single-pixel objective.
    parts = PlattTable()
    for image in range(u.shape[0]):
        parts.add(u[image : image + 1], agree[image : image + 1], valid[image : image + 1])
    assert (parts.fit(tolerance=1e-9).slope, parts.fit().intercept) == pytest.approx(
        (fit.slope, fit.intercept), rel=1e-7
    )
    objective = smoothed_objective(u, agree, valid)
    for start, method in (((0.0, 0.0), "BFGS"), ((50.0, 10.0), "BFGS"), ((5.0, 5.0), "Nelder-Mead")):
        found = scipy.optimize.minimize(
            objective,
            np.array(start),
            method=method,
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000} if method == "Nelder-Mead" else {"gtol": 1e-9},
        )
        assert found.x == pytest.approx([fit.slope, fit.intercept], rel=1e-4)
        assert objective(np.array([fit.slope, fit.intercept])) <= found.fun + 1e-9
    assert (fit.slope, fit.intercept) == pytest.approx(sklearn_platt(u, agree, valid), rel=1e-4)


def test_overlapping_data_is_not_flagged_as_separable():
    """One pixel on the wrong side of the threshold: no separation, no note."""
    u = np.linspace(0.01, 1.0, 100, dtype=np.float32).reshape(1, 10, 10)
    valid = np.full(u.shape, 2)
    agree = np.where(u < 0.5, 2, 0)
    agree[0, 8, 0] = 1  # half right at U = 0.81
    fit = fit_platt(u, agree, valid)
    assert fit.note == ""
    assert (fit.slope, fit.intercept) == pytest.approx(sklearn_platt(u, agree, valid), rel=1e-4)


# --------------------------------------------------------------------------- the study's binned Platt fit


def study_binned_samples(u: np.ndarray, agree: np.ndarray, valid: np.ndarray):
    """The study's compressed data set, rebuilt pair by pair: every (rater, pixel) pair with a label
    goes to its log bin (256 bins over [1e-12, 1e2], clamped); each non-empty bin gives a positive
    of weight (correct pairs) and a negative of weight (wrong pairs), both at F = -(mean U of its pairs)."""
    edges = np.logspace(-12, 2, num=257)
    values, correct = [], []
    for position in np.ndindex(u.shape):
        for rater in range(int(valid[position])):
            values.append(float(u[position]))
            correct.append(rater < agree[position])
    values, correct = np.array(values), np.array(correct)
    bins = np.clip(np.digitize(values, edges) - 1, 0, 255)
    features, targets, weights = [], [], []
    for b in np.unique(bins):
        inside = bins == b
        for label, count in ((1, int(correct[inside].sum())), (0, int((~correct[inside]).sum()))):
            if count:
                features.append(-values[inside].mean())
                targets.append(label)
                weights.append(count)
    return np.array(features), np.array(targets, dtype=float), np.array(weights, dtype=float)


def study_platt(u: np.ndarray, agree: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """scikit-learn's sigmoid calibration on the study's binned samples, as uqeval's (slope, intercept)."""
    features, targets, weights = study_binned_samples(u, agree, valid)
    a, b = _sigmoid_calibration(features, targets, sample_weight=weights)
    return -float(a), -float(b)


def test_binned_platt_by_hand():
    """Three pixels of 2 raters in two bins: U = 0.1 and 0.1001 share a bin (edges 10^(-12 + 14k/256)
    step by a factor 1.134), U = 0.5 has its own. Bin one: 4 pairs, 3 correct, mean U 0.10005;
    bin two: 2 pairs, 0 correct. Targets t₊ = 4/5, t₋ = 1/5 of N₊ = 3, N₋ = 3."""
    u = np.array([[[0.1, 0.1001, 0.5]]], dtype=np.float32)
    agree = np.array([[[2, 1, 0]]])
    valid = np.full(u.shape, 2)
    table = BinnedPlattTable()
    table.add(u, agree, valid)
    used = table.table[table.table[:, 0] > 0]
    np.testing.assert_array_equal(used[:, [0, 1, 3]], [[4, 3, 2], [2, 0, 1]])
    mean_low = (2 * float(np.float32(0.1)) + 2 * float(np.float32(0.1001))) / 4
    assert used[0, 2] / used[0, 0] == pytest.approx(mean_low, rel=1e-15)
    fit = table.fit()
    high, low = 4 / 5, 1 / 5
    x = np.array([mean_low, float(np.float32(0.5))])
    n = np.array([4.0, 2.0])
    t = np.array([3 * high + 1 * low, 2 * low])

    def objective(parameters):
        z = parameters[1] - parameters[0] * x
        return float((n * np.logaddexp(0.0, z) - t * z).sum())

    found = scipy.optimize.minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-10})
    assert (fit.slope, fit.intercept) == pytest.approx(found.x, rel=1e-6)
    assert (fit.slope, fit.intercept) == pytest.approx(study_platt(u, agree, valid), rel=1e-4)
    assert fit.n_pixels == 3


def test_binned_platt_clamps_and_bins_as_numpy_digitize():
    """U = 0 and anything below 1e-12 share the first bin, 1e2 and above the last; a value exactly on
    an edge opens the next bin (numpy.digitize, right=False)."""
    edges = np.logspace(-12, 2, num=257)
    on_edge = np.float32(edges[100])
    u = np.array([[[0.0, 1e-30, 1e-12, 150.0, 1e3, float(on_edge)]]], dtype=np.float32)
    table = BinnedPlattTable()
    table.add(u, np.ones(u.shape, dtype=int), np.ones(u.shape, dtype=int))
    counts = table.table[:, 0]
    expected_edge_bin = int(np.digitize(np.float64(on_edge), edges)) - 1
    assert counts[0] == 3 and counts[255] == 2 and counts[expected_edge_bin] == 1
    assert counts.sum() == 6


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_binned_platt_matches_the_study_on_rater_pairs(seed):
    """Ignored raters leave their pair out; each pixel weighs by its raters (pairs, not pixels)."""
    u, agree, valid = synthetic_maps(seed, n_raters=3, ignore_rate=0.2, size=(10, 10))
    fit = fit_platt(u, agree, valid, method="binned-smoothed")
    assert fit.n_pixels == int((valid > 0).sum())
    assert (fit.slope, fit.intercept) == pytest.approx(study_platt(u, agree, valid), rel=1e-4)
    whole, first, second = BinnedPlattTable(), BinnedPlattTable(), BinnedPlattTable()
    whole.add(u, agree, valid)
    first.add(u[:2], agree[:2], valid[:2])
    second.add(u[2:], agree[2:], valid[2:])
    np.testing.assert_allclose(first.merge(second).table, whole.table, rtol=1e-15)


def test_binned_platt_differs_from_the_exact_fit_when_errors_are_rare():
    """The study's bins and pair counts change the fit: what docs/metrics.md measures."""
    rng = np.random.default_rng(15)
    u = rng.gamma(2.0, 0.05, size=(12, 30, 30)).astype(np.float32)
    valid = np.full(u.shape, 4)
    agree = valid.copy()
    agree.ravel()[np.argsort(u, axis=None)[-10:]] = 0
    exact, binned = fit_platt(u, agree, valid), fit_platt(u, agree, valid, method="binned-smoothed")
    assert (binned.slope, binned.intercept) == pytest.approx(study_platt(u, agree, valid), rel=1e-4)
    assert abs(binned.slope - exact.slope) > 0.1 * exact.slope


def test_platt_confidence_is_the_logistic_of_the_negated_uncertainty():
    fit = PlattFit(slope=2.5, intercept=0.75, n_pixels=1)
    u = np.array([0.0, 0.3, 1.0, 40.0], dtype=np.float32)
    np.testing.assert_allclose(fit.confidence(u), scipy.special.expit(0.75 - 2.5 * u.astype(np.float64)), rtol=1e-15)
    assert fit.confidence(np.array([0.3]))[0] == pytest.approx(1 / (1 + math.exp(-(0.75 - 0.75))))


# --------------------------------------------------------------------------- ACE / ECE reference


def reference_pixels(u, agree, valid, slope, intercept):
    """Per counted pixel: image index, confidence, correctness and bin (floor(c·20) clipped to 19)."""
    mask = valid > 0
    image = np.broadcast_to(np.arange(u.shape[0]).reshape(-1, *([1] * (u.ndim - 1))), u.shape)[mask]
    u64 = np.asarray(u, dtype=np.float32)[mask].astype(np.float64)
    with np.errstate(invalid="ignore"):
        z = intercept - slope * u64 if slope != 0 else np.full(u64.shape, float(intercept))
    confidence = scipy.special.expit(z)
    w = agree[mask] / valid[mask]
    index = np.minimum(np.floor(confidence * BINS), BINS - 1).astype(np.int64)
    return image, confidence, w, index


def reference_table(u, agree, valid, slope, intercept):
    image, confidence, w, index = reference_pixels(u, agree, valid, slope, intercept)
    n_images = u.shape[0]
    flat = image * BINS + index
    table = np.stack(
        [
            np.bincount(flat, minlength=n_images * BINS),
            np.bincount(flat, weights=confidence, minlength=n_images * BINS),
            np.bincount(flat, weights=w, minlength=n_images * BINS),
        ],
        axis=-1,
    )
    return table.reshape(n_images, BINS, 3).astype(np.float64)


def reference_errors(confidence: np.ndarray, w: np.ndarray, index: np.ndarray) -> tuple[float, float]:
    """(ACE, ECE) from per-pixel values, bin by bin."""
    gaps, weights = [], []
    for b in range(BINS):
        in_bin = index == b
        if in_bin.any():
            gaps.append(abs(w[in_bin].mean() - confidence[in_bin].mean()))
            weights.append(in_bin.sum() / index.size)
    if not gaps:
        return math.nan, math.nan
    return float(np.mean(gaps)), float(np.dot(gaps, weights))


def assert_off_interior_edges(confidence: np.ndarray) -> None:
    scaled = confidence * BINS
    nearest = np.round(scaled)
    interior = (nearest > 0) & (nearest < BINS)
    assert (np.abs(scaled - nearest)[interior] > 1e-9).all(), "test data put a confidence on a bin edge"


def test_reference_errors_by_hand():
    # Bin 2 holds 0.12 and 0.13 with w 1 and 0; bin 17 holds 0.87 with w 1.
    confidence = np.array([0.12, 0.13, 0.87])
    w = np.array([1.0, 0.0, 1.0])
    index = np.minimum(np.floor(confidence * BINS), BINS - 1).astype(int)
    np.testing.assert_array_equal(index, [2, 2, 17])
    ace_value, ece_value = reference_errors(confidence, w, index)
    assert ace_value == pytest.approx((0.375 + 0.13) / 2)
    assert ece_value == pytest.approx((2 * 0.375 + 0.13) / 3)


def test_ace_and_ece_by_hand():
    """The same three pixels through the package: U chosen so that σ(-U) gives the confidences."""
    confidence = np.array([0.12, 0.13, 0.87])
    u = (-scipy.special.logit(confidence)).astype(np.float32).reshape(1, 1, 3)
    agree = np.array([[[1, 0, 3]]])
    valid = np.array([[[1, 2, 3]]])
    table = CalibrationTable.from_maps(u, agree, valid, PlattFit(slope=1.0, intercept=0.0, n_pixels=3))
    bins = table.pooled()
    assert bins.shape == (BINS, 3)
    np.testing.assert_array_equal(np.flatnonzero(bins[:, 0]), [2, 17])
    np.testing.assert_allclose(bins[2], [2, 0.25, 1.0], atol=1e-7)
    np.testing.assert_allclose(bins[17], [1, 0.87, 1.0], atol=1e-7)
    assert ace(bins) == pytest.approx((0.375 + 0.13) / 2, abs=1e-7)
    assert ece(bins) == pytest.approx((2 * 0.375 + 0.13) / 3, abs=1e-7)
    assert per_image_ace(table) == pytest.approx(ace(bins))
    assert per_image_ece(table) == pytest.approx(ece(bins))


def _random_calibration_case(seed: int):
    u, agree, valid = synthetic_maps(seed, n_images=5, n_raters=3, ignore_rate=0.25, size=(14, 11))
    valid[3] = 0  # an image without any rated pixel
    agree[3] = 0
    fit = fit_platt(u, agree, valid)
    return u, agree, valid, fit


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_calibration_table_matches_reference(seed):
    u, agree, valid, fit = _random_calibration_case(seed)
    image, confidence, w, index = reference_pixels(u, agree, valid, fit.slope, fit.intercept)
    assert_off_interior_edges(confidence)
    assert len(np.unique(index)) >= 8  # the data spread over many bins
    table = CalibrationTable.from_maps(u, agree, valid, fit, bins=BINS)
    expected = reference_table(u, agree, valid, fit.slope, fit.intercept)
    assert table.table.shape == (5, BINS, 3)
    np.testing.assert_array_equal(table.table[..., 0], expected[..., 0])
    np.testing.assert_allclose(table.table, expected, rtol=1e-12, atol=1e-12)
    assert (table.table[3] == 0).all()

    # Pooled over all images, some images (mask or indices), and one image.
    np.testing.assert_allclose(table.pooled(), expected.sum(axis=0), rtol=1e-12)
    mask = np.array([True, False, True, True, False])
    np.testing.assert_allclose(table.pooled(mask), expected[mask].sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(table.pooled(np.array([4, 1])), expected[[1, 4]].sum(axis=0), rtol=1e-12)

    # ACE / ECE of the pooled table equal the per-pixel reference.
    expected_ace, expected_ece = reference_errors(confidence, w, index)
    assert ace(table.pooled()) == pytest.approx(expected_ace, rel=1e-10)
    assert ece(table.pooled()) == pytest.approx(expected_ece, rel=1e-10)
    chosen = np.isin(image, [1, 4])
    subset_ace, subset_ece = reference_errors(confidence[chosen], w[chosen], index[chosen])
    assert ace(table.pooled([1, 4])) == pytest.approx(subset_ace, rel=1e-10)
    assert ece(table.pooled([1, 4])) == pytest.approx(subset_ece, rel=1e-10)

    # Per-image: the mean of each (non-empty) image's own ACE / ECE.
    per_image = [reference_errors(confidence[image == i], w[image == i], index[image == i]) for i in range(5)]
    scored = [i for i in range(5) if (image == i).any()]
    assert scored == [0, 1, 2, 4]
    assert per_image_ace(table) == pytest.approx(np.mean([per_image[i][0] for i in scored]), rel=1e-10)
    assert per_image_ece(table) == pytest.approx(np.mean([per_image[i][1] for i in scored]), rel=1e-10)
    assert per_image_ace(table, np.array([0, 3])) == pytest.approx(per_image[0][0], rel=1e-10)
    assert per_image_ece(table, mask) == pytest.approx(np.mean([per_image[0][1], per_image[2][1]]), rel=1e-10)
    # Per-image and pooled ACE are different quantities.
    assert abs(per_image_ace(table) - ace(table.pooled())) > 1e-4

    # The reliability diagram.
    diagram = reliability(table.pooled())
    edges = np.arange(BINS + 1) / BINS
    np.testing.assert_allclose(diagram.lower, edges[:-1])
    np.testing.assert_allclose(diagram.upper, edges[1:])
    np.testing.assert_array_equal(diagram.count, np.bincount(index, minlength=BINS))
    for b in range(BINS):
        if (index == b).any():
            assert diagram.confidence[b] == pytest.approx(confidence[index == b].mean(), rel=1e-12)
            assert diagram.accuracy[b] == pytest.approx(w[index == b].mean(), rel=1e-12)
            assert edges[b] <= diagram.confidence[b] < edges[b + 1]
        else:
            assert np.isnan(diagram.confidence[b]) and np.isnan(diagram.accuracy[b])
    as_dict = diagram.to_dict()
    assert set(as_dict) == {"lower", "upper", "count", "confidence", "accuracy"}
    assert all(len(v) == BINS for v in as_dict.values())


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    slope=st.floats(-8, 8),
    intercept=st.floats(-4, 4),
    n_images=st.integers(1, 4),
)
def test_ace_ece_match_reference_for_any_platt_parameters(seed, slope, intercept, n_images):
    rng = np.random.default_rng(seed)
    u = rng.gamma(1.5, 0.5, size=(n_images, 5, 7)).astype(np.float32)
    valid = rng.integers(0, 4, size=u.shape)
    agree = rng.binomial(valid, 0.7)
    image, confidence, w, index = reference_pixels(u, agree, valid, slope, intercept)
    scaled = confidence * BINS
    on_edge = np.abs(scaled - np.round(scaled)) < 1e-9
    if on_edge.any():  # a confidence on a bin edge: its bin is a matter of rounding, not of the spec
        return
    table = CalibrationTable.from_maps(u, agree, valid, PlattFit(slope, intercept, 1))
    np.testing.assert_allclose(table.table, reference_table(u, agree, valid, slope, intercept), rtol=1e-12, atol=1e-12)
    expected_ace, expected_ece = reference_errors(confidence, w, index)
    if image.size == 0:
        assert math.isnan(ace(table.pooled())) and math.isnan(ece(table.pooled()))
        assert math.isnan(per_image_ace(table)) and math.isnan(per_image_ece(table))
        return
    assert ace(table.pooled()) == pytest.approx(expected_ace, rel=1e-9, abs=1e-15)
    assert ece(table.pooled()) == pytest.approx(expected_ece, rel=1e-9, abs=1e-15)
    per_image = [reference_errors(confidence[image == i], w[image == i], index[image == i]) for i in np.unique(image)]
    assert per_image_ace(table) == pytest.approx(np.mean([a for a, _ in per_image]), rel=1e-9, abs=1e-15)
    assert per_image_ece(table) == pytest.approx(np.mean([e for _, e in per_image]), rel=1e-9, abs=1e-15)
    # Both are means of gaps between two numbers in [0, 1].
    assert 0 <= ece(table.pooled()) <= 1 and 0 <= ace(table.pooled()) <= 1


# --------------------------------------------------------------------------- bin edges


@pytest.mark.parametrize(("intercept", "edge_bin", "confidence"), [(math.inf, BINS - 1, 1.0), (-math.inf, 0, 0.0)])
def test_confidence_exactly_one_or_zero_lands_in_the_last_or_first_bin(intercept, edge_bin, confidence):
    u, agree, valid = synthetic_maps(30, n_images=2)
    fit = PlattFit(slope=0.0, intercept=intercept, n_pixels=1)
    table = CalibrationTable.from_maps(u, agree, valid, fit)
    n = int((valid > 0).sum())
    mask = valid > 0
    correct = float((agree[mask] / valid[mask]).sum())
    bins = table.pooled()
    expected = np.zeros((BINS, 3))
    expected[edge_bin] = [n, confidence * n, correct]
    np.testing.assert_allclose(bins, expected, rtol=1e-12, atol=0)
    assert bins[edge_bin, 1] == confidence * n  # exactly 1 (or 0) per pixel
    gap = abs(correct / n - confidence)
    assert ace(bins) == pytest.approx(gap, rel=1e-12)
    assert ece(bins) == pytest.approx(gap, rel=1e-12)


def test_large_slopes_saturate_into_the_edge_bins():
    u = np.array([[[0.0, 0.25, 0.5, 0.75, 1.0, 30.0]]], dtype=np.float32)
    agree = np.array([[[1, 1, 1, 0, 0, 0]]])
    valid = np.ones_like(agree)
    fit = PlattFit(slope=1e4, intercept=5e3, n_pixels=6)
    confidence = fit.confidence(u)[0, 0]
    np.testing.assert_array_equal(confidence, [1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    bins = CalibrationTable.from_maps(u, agree, valid, fit).pooled()
    np.testing.assert_array_equal(np.flatnonzero(bins[:, 0]), [0, BINS // 2, BINS - 1])
    np.testing.assert_array_equal(bins[0], [3, 0.0, 0.0])
    np.testing.assert_array_equal(bins[BINS // 2], [1, 0.5, 1.0])  # 0.5 opens bin 10: [k/20, (k+1)/20)
    np.testing.assert_array_equal(bins[BINS - 1], [2, 2.0, 2.0])
    assert ace(bins) == pytest.approx(0.5 / 3)
    assert ece(bins) == pytest.approx(0.5 / 6)
    # Even larger: exp(-z) overflows without warnings or NaN.
    huge = CalibrationTable.from_maps(u, agree, valid, PlattFit(1e300, 1e299, 6)).pooled()
    assert np.isfinite(huge).all()
    assert huge[:, 0].sum() == 6
    np.testing.assert_array_equal(huge[0], [5, 0.0, 2.0])
    np.testing.assert_array_equal(huge[BINS - 1], [1, 1.0, 1.0])


def test_confidences_just_inside_a_bin_stay_there():
    # Confidences a hair below and above 0.95 straddle the boundary of bins 18 and 19.
    target = np.array([0.95 - 1e-6, 0.95 + 1e-6, 1e-6, 1 - 1e-12])
    u = (-scipy.special.logit(target)).reshape(1, 1, 4)
    bins = CalibrationTable.from_maps(
        u.astype(np.float32), np.ones((1, 1, 4)), np.ones((1, 1, 4)), PlattFit(1.0, 0.0, 4)
    )
    counts = bins.pooled()[:, 0]
    expected = np.zeros(BINS)
    expected[[18, 19, 0]] = [1, 2, 1]
    np.testing.assert_array_equal(counts, expected)


def test_pixels_without_a_rater_are_excluded_from_the_table():
    u, agree, valid = synthetic_maps(31, n_images=3, ignore_rate=0.4)
    fit = PlattFit(2.0, 1.0, 1)
    table = CalibrationTable.from_maps(u, agree, valid, fit).table
    np.testing.assert_array_equal(table[..., 0].sum(axis=1), (valid > 0).sum(axis=(1, 2)))
    # Changing what an unrated pixel holds changes nothing.
    u2, agree2 = u.copy(), agree.copy()
    u2[valid == 0] = 0.0
    agree2[valid == 0] = 5
    np.testing.assert_array_equal(CalibrationTable.from_maps(u2, agree2, valid, fit).table, table)
    # Only unrated pixels: an empty table and NaN errors.
    empty = CalibrationTable.from_maps(u, agree, np.zeros_like(valid), fit)
    assert (empty.table == 0).all()
    assert math.isnan(ace(empty.pooled())) and math.isnan(ece(empty.pooled()))
    assert math.isnan(per_image_ace(empty)) and math.isnan(per_image_ece(empty))
    assert np.isnan(reliability(empty.pooled()).accuracy).all()


def test_other_bin_counts():
    u, agree, valid = synthetic_maps(32, n_images=2)
    fit = fit_platt(u, agree, valid)
    table = CalibrationTable.from_maps(u, agree, valid, fit, bins=7)
    assert table.table.shape == (2, 7, 3)
    _, confidence, w, _ = reference_pixels(u, agree, valid, fit.slope, fit.intercept)
    index = np.minimum(np.floor(confidence * 7), 6).astype(int)
    np.testing.assert_array_equal(table.pooled()[:, 0], np.bincount(index, minlength=7))
    np.testing.assert_allclose(table.pooled()[:, 2], np.bincount(index, weights=w, minlength=7), rtol=1e-12)
    diagram = reliability(table.pooled())
    np.testing.assert_allclose(diagram.upper, np.arange(1, 8) / 7)


@pytest.mark.parametrize(("slope", "intercept"), [(math.inf, 0.0), (math.nan, 0.0), (1.0, math.nan)])
def test_unusable_platt_parameters_raise(slope, intercept):
    u, agree, valid = synthetic_maps(33, n_images=1)
    with pytest.raises(UQEvalError, match="not usable"):
        CalibrationTable.from_maps(u, agree, valid, PlattFit(slope, intercept, 1))


# --------------------------------------------------------------------------- equal-mass ACE


def array_split_ace(confidence: np.ndarray, correct: np.ndarray, bins: int, order: np.ndarray) -> float:
    """Independent reference: pixels in ``order`` cut by ``np.array_split`` into ``bins`` runs."""
    runs = [run for run in np.array_split(order, bins) if run.size]
    return float(np.mean([abs(correct[run].mean() - confidence[run].mean()) for run in runs]))


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 300),
    bins=st.integers(1, 25),
    seed=st.integers(0, 2**31 - 1),
)
def test_equal_mass_ace_with_distinct_confidences_is_the_array_split(n, bins, seed):
    rng = np.random.default_rng(seed)
    confidence = rng.permutation(np.linspace(0.01, 0.99, n))  # distinct
    correct = rng.random(n)
    expected = array_split_ace(confidence, correct, bins, np.argsort(confidence))
    assert equal_mass_ace_of_pixels(confidence, correct, bins=bins) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.2, 0.5, 0.7]), min_size=1, max_size=7),
    correct=st.lists(st.sampled_from([0.0, 1 / 3, 1.0]), min_size=7, max_size=7),
    bins=st.integers(1, 4),
)
def test_tied_confidences_count_in_expectation_over_their_orders(values, correct, bins):
    """Each run's Σw under the proportional rule is the mean of its Σw over every order of
    the tied pixels (brute force), and the ACE is taken from those expected sums."""
    import itertools

    confidence = np.array(values)
    w = np.array(correct[: len(values)])
    n = len(values)
    sizes = np.full(bins, n // bins)
    sizes[: n % bins] += 1
    edges = np.r_[0, np.cumsum(sizes)]
    by_order = []
    for order in itertools.permutations(range(n)):
        order = np.array(order)
        if not np.all(np.diff(confidence[order]) >= 0):
            continue  # only orders sorted by confidence
        by_order.append([w[order[a:b]].sum() for a, b in itertools.pairwise(edges)])
    expected_sums = np.mean(by_order, axis=0)
    groups = np.array(
        [
            [np.sum(confidence == v), w[confidence == v].sum(), v * np.sum(confidence == v)]
            for v in np.unique(confidence)
        ]
    )
    cumulative = np.vstack([np.zeros(3), np.cumsum(groups, axis=0)])
    sums = np.diff(np.interp(edges, cumulative[:, 0], cumulative[:, 1]))
    np.testing.assert_allclose(sums, expected_sums, atol=1e-12)
    used = sizes > 0
    value = equal_mass_ace(groups, bins=bins)
    confidence_sums = np.diff(np.interp(edges, cumulative[:, 0], cumulative[:, 2]))
    assert value == pytest.approx(np.mean(np.abs(expected_sums - confidence_sums)[used] / sizes[used]), abs=1e-12)


def test_equal_mass_ace_edge_cases():
    assert math.isnan(equal_mass_ace(np.zeros((0, 3))))
    assert math.isnan(equal_mass_ace(np.array([[0, 0.0, 0.0]])))
    # Fewer pixels than bins: one pixel per run, the rest empty and skipped.
    assert equal_mass_ace(np.array([[1, 1.0, 0.75], [1, 0.0, 0.25]]), bins=20) == pytest.approx(0.25)
    # One group of equal confidence spread over every run: each run gets its mean.
    assert equal_mass_ace(np.array([[40, 30.0, 40 * 0.5]]), bins=20) == pytest.approx(0.25)


def test_histogram_equal_mass_matches_sorted_pixels_and_merges_by_addition():
    """U on distinct histogram keys: the histogram's equal-mass ACE is the exact one (to the
    fixed point's 2**-32); split over images and tables, the sums are the same integers."""
    rng = np.random.default_rng(5)
    n = 4000
    u = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), n)).astype(np.float32)
    u = u[np.unique(u.view(np.uint32) >> 11, return_index=True)[1]]  # one pixel per key
    n = u.size
    agree = rng.integers(0, 4, n)
    valid = np.full(n, 3)
    fit = PlattFit(slope=3.0, intercept=2.0, n_pixels=n)
    histogram = ConfidenceHistogram()
    histogram.add(u[None], agree[None], valid[None], fit)
    confidence = fit.confidence(u)
    expected = array_split_ace(confidence, agree / valid, 20, np.argsort(confidence, kind="stable"))
    assert equal_mass_ace(histogram.groups(), bins=20) == pytest.approx(expected, abs=1e-9)
    # The same pixels as 4 images in two tables, merged through the sparse form.
    images = u[: n // 4 * 4].reshape(4, -1)
    parts = ConfidenceHistogram(2)
    parts.add(
        images, agree[: images.size].reshape(4, -1), valid[: images.size].reshape(4, -1), fit, np.array([0, 1, 1, 0])
    )
    whole = ConfidenceHistogram(1)
    whole.add(images, agree[: images.size].reshape(4, -1), valid[: images.size].reshape(4, -1), fit)
    merged = ConfidenceHistogram(2)
    merged.add_sparse(parts.sparse())
    np.testing.assert_array_equal(merged.table, parts.table)
    merged.add_sparse(parts.sparse())  # added again: every cell counts twice
    np.testing.assert_array_equal(merged.table, 2 * parts.table)
    np.testing.assert_array_equal(parts.groups(), whole.groups([0]))
    np.testing.assert_array_equal(parts.table.sum(axis=0), whole.table[0])


@settings(max_examples=40, deadline=None)
@given(
    n_images=st.integers(1, 5),
    n_groups=st.integers(1, 3),
    repeat_calls=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_histogram_equals_the_dense_one(n_images, n_groups, repeat_calls, seed):
    """The scratch-table path gives the cells and rows of a fresh table's ``sparse()``
    (in another order), call after call (the scratch table is zeroed between them), skipped images included."""
    rng = np.random.default_rng(seed)
    fit = PlattFit(slope=2.5, intercept=1.0, n_pixels=100)
    for _ in range(repeat_calls):
        u = rng.choice([0.0, 1e-30, 1e-3, 0.5, 3.0, 40.0], size=(n_images, 6, 7)).astype(np.float32)
        u *= rng.uniform(0.5, 1.5, u.shape).astype(np.float32)
        valid = rng.integers(0, 4, u.shape)
        agree = np.minimum(rng.integers(0, 4, u.shape), valid)
        groups = rng.integers(-1, n_groups, n_images)
        dense = ConfidenceHistogram(n_groups)
        dense.add(u, agree, valid, fit, groups)
        want_cells, want_rows = dense.sparse()
        cells, rows = sparse_confidence_histogram(u, agree, valid, fit, groups, n_groups)
        order = np.lexsort((cells[:, 1], cells[:, 0]))  # the dense form lists (group, key) in order
        np.testing.assert_array_equal(cells[order], want_cells)
        np.testing.assert_array_equal(rows[order], want_rows)
    assert not calibration._SCRATCH.table.any()


def test_sparse_histogram_after_an_interrupted_call_starts_from_a_clean_table():
    u = np.full((1, 4, 4), 0.5, dtype=np.float32)
    agree = np.ones(u.shape, dtype=np.int64)
    valid = np.ones(u.shape, dtype=np.int64)
    fit = PlattFit(slope=1.0, intercept=0.0, n_pixels=16)
    sparse_confidence_histogram(u, agree, valid, fit, np.zeros(1, dtype=np.int64), 1)
    # As if a call had been interrupted after filling cells and before zeroing them.
    calibration._SCRATCH.table[0, 5] = 7
    calibration._SCRATCH.clean = False
    cells, rows = sparse_confidence_histogram(u, agree, valid, fit, np.zeros(1, dtype=np.int64), 1)
    assert len(cells) == 1 and rows[0, 0] == 16


def test_all_correct_images_scored_as_the_study_scores_them():
    """An image every rater labels as predicted, confidences 0.9, 0.9 and 0.3: per-image ACE
    mean(|1 − 0.9|, |1 − 0.3|) = 0.4 and ECE (2·0.1 + 0.7)/3 = 0.3; the study's label_binarize of one
    class makes every pixel wrong: ACE mean(0.9, 0.3) = 0.6, ECE (2·0.9 + 0.3)/3 = 0.7. An image with
    one wrong pixel is the same either way."""
    u = np.zeros((2, 1, 3), dtype=np.float32)
    confidence = np.array([[[0.9, 0.9, 0.3]], [[0.9, 0.9, 0.3]]])
    valid = np.full(u.shape, 2)
    agree = valid.copy()
    agree[1, 0, 2] = 1  # image 1: one rater disagrees at the last pixel
    table = CalibrationTable.from_maps(u, agree, valid, PlattFit(1.0, 0.0, 1), confidence=confidence)
    correct = calibration.ImageCalibration.of(table)
    study = calibration.ImageCalibration.of(table, all_correct="wrong")
    assert correct.ace[0] == pytest.approx(0.4) and correct.ece[0] == pytest.approx(0.3)
    assert study.ace[0] == pytest.approx(0.6) and study.ece[0] == pytest.approx(0.7)
    assert study.ace[1] == correct.ace[1] == pytest.approx((0.1 + abs(0.5 - 0.3)) / 2)
    assert table.table[0, :, 2].sum() == 3  # the table itself keeps the truth
    with pytest.raises(UQEvalError, match="all_correct is 'maybe'"):
        calibration.ImageCalibration.of(table, all_correct="maybe")


# --------------------------------------------------------------------------- volumes (image, z, y, x)


def synthetic_volumes(seed: int, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``U`` volumes (image, 5, 7, 9) and rater counts from 3 raters, some labels ignored (255)."""
    rng = np.random.default_rng(seed)
    u = rng.gamma(2.0, 0.3, size=(3, 5, 7, 9)).astype(np.float32)
    pred = rng.integers(0, n_classes, size=u.shape)
    correct = rng.random((3, 3, *u.shape[1:])) < scipy.special.expit(1.5 - 2.0 * u.astype(np.float64))[:, None]
    wrong = (pred[:, None] + rng.integers(1, n_classes, size=correct.shape)) % n_classes
    labels = np.where(correct, pred[:, None], wrong).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    stats = rater_statistics(labels, pred, n_classes)
    return u, stats.agree, stats.valid


@pytest.mark.parametrize("n_classes", [2, 3])
def test_calibration_of_volumes_pools_voxels(n_classes):
    u, agree, valid = synthetic_volumes(40 + n_classes, n_classes)
    fit = fit_platt(u, agree, valid)
    slope, intercept = sklearn_platt(u, agree, valid)
    assert fit.slope == pytest.approx(slope, rel=2e-3, abs=2e-3)
    assert fit.intercept == pytest.approx(intercept, rel=2e-3, abs=2e-3)
    assert fit.n_pixels == int((valid > 0).sum())
    table = CalibrationTable.from_maps(u, agree, valid, fit, bins=BINS, equal_mass=True)
    assert table.table.shape == (3, BINS, 3)
    np.testing.assert_allclose(table.table, reference_table(u, agree, valid, fit.slope, fit.intercept), rtol=1e-12)
    _, confidence, w, index = reference_pixels(u, agree, valid, fit.slope, fit.intercept)
    expected_ace, expected_ece = reference_errors(confidence, w, index)
    assert ace(table.pooled()) == pytest.approx(expected_ace, rel=1e-10)
    assert ece(table.pooled()) == pytest.approx(expected_ece, rel=1e-10)
    # A volume's voxels are its samples: the same as its slices side by side in one image (to the
    # rounding of sums in another order; the fixed-point histogram is exact).
    flat = [np.stack([array[i].transpose(1, 0, 2).reshape(7, 45) for i in range(3)]) for array in (u, agree, valid)]
    flat_fit = fit_platt(*flat)
    assert (flat_fit.slope, flat_fit.intercept) == pytest.approx((fit.slope, fit.intercept), rel=1e-12)
    flat_table = CalibrationTable.from_maps(*flat, fit, bins=BINS, equal_mass=True)
    np.testing.assert_allclose(flat_table.table, table.table, rtol=1e-12)
    np.testing.assert_allclose(flat_table.equal_mass, table.equal_mass, rtol=1e-12)
    binned = BinnedPlattTable()
    binned.add(u, agree, valid)
    flat_binned = BinnedPlattTable()
    flat_binned.add(*flat)
    np.testing.assert_allclose(binned.table, flat_binned.table, rtol=1e-12)
    histogram = ConfidenceHistogram()
    histogram.add(u, agree, valid, fit)
    flat_histogram = ConfidenceHistogram()
    flat_histogram.add(*flat, fit)
    np.testing.assert_array_equal(histogram.table, flat_histogram.table)
