"""Tests of :mod:`uqeval.metrics.ambiguity` (docs/metrics.md, AMB) against numpy/scipy references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError
from uqeval.metrics.ambiguity import (
    CONSTANT,
    NO_PIXELS,
    SCORED,
    Correlation,
    PearsonMoments,
    mean_ncc,
    ncc,
    rater_disagreement,
    rater_statistics,
    rater_variance,
)
from uqeval.precision import CONSTANT_TOLERANCE

IGNORE = 255
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------- reference


def reference_rater_statistics(
    labels: np.ndarray, pred: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel by pixel: ``Σ_c np.var(one_hot_c, ddof=0)`` over the raters not ignored, agreeing and valid raters."""
    n_images, _, height, width = labels.shape
    variance = np.zeros((n_images, height, width))
    agree = np.zeros((n_images, height, width), dtype=np.int64)
    valid = np.zeros((n_images, height, width), dtype=np.int64)
    for image in range(n_images):
        for y in range(height):
            for x in range(width):
                raters = labels[image, :, y, x].astype(np.int64)
                raters = raters[raters != IGNORE]
                valid[image, y, x] = raters.size
                agree[image, y, x] = int((raters == pred[image, y, x]).sum())
                if raters.size:
                    one_hot = np.eye(n_classes)[raters]  # (rater, class)
                    variance[image, y, x] = np.var(one_hot, axis=0, ddof=0).sum()
    return variance, agree, valid


def test_reference_rater_statistics_by_hand():
    # 4 raters at one pixel: classes 0, 0, 1 and one ignored -> p = (2/3, 1/3, 0).
    labels = np.array([0, 0, 1, IGNORE], dtype=np.uint8).reshape(1, 4, 1, 1)
    variance, agree, valid = reference_rater_statistics(labels, np.array([[[1]]]), 3)
    assert variance[0, 0, 0] == pytest.approx(2 * (2 / 3) * (1 / 3))  # Σ p(1-p) = 1 - Σ p²
    assert (agree[0, 0, 0], valid[0, 0, 0]) == (1, 3)


# --------------------------------------------------------------------------- strategies


@st.composite
def rater_labels(draw) -> tuple[np.ndarray, np.ndarray, int]:
    """Random ``(labels (image, rater, y, x), pred (image, y, x), n_classes)`` with some ignored raters."""
    n_classes = draw(st.integers(2, 4))
    n_images = draw(st.integers(1, 3))
    n_raters = draw(st.integers(1, 6))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ignore_rate = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.int64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n_images, n_raters, height, width)
    labels = rng.integers(0, n_classes, size=shape)
    labels[rng.random(shape) < ignore_rate] = IGNORE
    pred = rng.integers(0, n_classes, size=(n_images, height, width)).astype(
        draw(st.sampled_from([np.uint8, np.int64]))
    )
    return labels.astype(dtype), pred, n_classes


# --------------------------------------------------------------------------- rater statistics


@PROPERTY_SETTINGS
@given(case=rater_labels())
def test_rater_statistics_match_reference(case):
    labels, pred, n_classes = case
    stats = rater_statistics(labels, pred, n_classes)
    variance, agree, valid = reference_rater_statistics(labels, pred, n_classes)
    assert stats.variance.dtype == np.float32
    assert stats.variance.shape == pred.shape
    np.testing.assert_allclose(stats.variance, variance, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(stats.agree, agree)
    np.testing.assert_array_equal(stats.valid, valid)
    # g = 1 - Σ p_c² lies in [0, 1 - 1/C]; pixels without a valid rater are 0.
    assert (stats.variance >= 0).all()
    assert (stats.variance <= 1 - 1 / n_classes + 1e-6).all()
    assert (stats.variance[valid == 0] == 0).all()
    # Without predictions, nothing agrees and the variance is the same.
    np.testing.assert_array_equal(rater_variance(labels, n_classes), stats.variance)
    no_pred = rater_statistics(labels, None, n_classes)
    assert (no_pred.agree == 0).all()
    np.testing.assert_array_equal(no_pred.valid, valid)


def test_rater_variance_by_hand():
    # Pixel 0: 2 raters of 3 choose class 2, one class 0 -> 1 - (1/9 + 4/9) = 4/9.
    # Pixel 1: one rater each of classes 0, 1, 2 -> 1 - 3/9 = 2/3 (the maximum 1 - 1/C).
    # Pixel 2: one rater ignored, two choose 0 and 1 -> 1/2.
    labels = np.array([[[[2, 0, IGNORE]], [[2, 1, 0]], [[0, 2, 1]]]], dtype=np.uint8)
    pred = np.array([[[2, 1, 0]]])
    stats = rater_statistics(labels, pred, 3)
    np.testing.assert_allclose(stats.variance[0, 0], [4 / 9, 2 / 3, 1 / 2], rtol=1e-6)
    np.testing.assert_array_equal(stats.agree[0, 0], [2, 1, 1])
    np.testing.assert_array_equal(stats.valid[0, 0], [3, 3, 2])
    np.testing.assert_allclose(stats.correctness[0, 0], [2 / 3, 1 / 3, 1 / 2])


def test_all_raters_ignored_gives_no_valid_rater_and_zero_variance():
    labels = np.full((2, 3, 2, 2), IGNORE, dtype=np.uint8)
    labels[1, :, 0, 0] = [1, 0, 1]  # image 1 has one labelled pixel
    stats = rater_statistics(labels, np.ones((2, 2, 2), dtype=np.uint8), 2)
    expected_valid = np.zeros((2, 2, 2), dtype=np.int32)
    expected_valid[1, 0, 0] = 3
    np.testing.assert_array_equal(stats.valid, expected_valid)
    assert stats.agree[1, 0, 0] == 2
    assert stats.agree.sum() == 2
    expected_variance = np.zeros((2, 2, 2), dtype=np.float32)
    expected_variance[1, 0, 0] = 1 - (1 / 9 + 4 / 9)
    np.testing.assert_allclose(stats.variance, expected_variance, rtol=1e-6, atol=0)
    assert np.isnan(stats.correctness[stats.valid == 0]).all()


@pytest.mark.parametrize("n_raters", [1, 2, 5])
def test_raters_that_agree_give_exactly_zero_variance(n_raters):
    rng = np.random.default_rng(n_raters)
    one = rng.integers(0, 4, size=(3, 1, 5, 4))
    labels = np.repeat(one, n_raters, axis=1).astype(np.uint8)
    # Ignoring some raters of a unanimous pixel leaves it unanimous.
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    labels[:, 0] = one[:, 0]  # at least one rater everywhere
    stats = rater_statistics(labels, one[:, 0], 4)
    assert (stats.variance == 0).all()
    np.testing.assert_array_equal(stats.agree, stats.valid)
    np.testing.assert_array_equal(stats.correctness, 1.0)


@pytest.mark.parametrize(
    ("dtype", "bad_value"),
    [(np.uint8, 3), (np.uint8, 254), (np.int16, -1), (np.int64, 7)],
)
def test_out_of_range_labels_raise_naming_the_image(dtype, bad_value):
    labels = np.zeros((4, 2, 3, 3), dtype=dtype)
    labels[0, 0, 0, 0] = IGNORE  # the ignore label itself is fine
    labels[2, 1, 1, 2] = bad_value
    labels[2, 0, 0, 1] = bad_value
    labels[3, 0, 0, 0] = bad_value  # a later image is not the one named
    with pytest.raises(UQEvalError, match=r"image 2 has 2 label\(s\) outside \[0, 3\)"):
        rater_statistics(labels, np.zeros((4, 3, 3), dtype=np.uint8), 3)
    with pytest.raises(UQEvalError, match="image 2"):
        rater_variance(labels, 3)


def test_labels_equal_to_n_classes_are_out_of_range_but_below_are_not():
    labels = np.array([[[[0, 1]], [[1, 1]]]], dtype=np.uint8)
    rater_statistics(labels, None, 2)  # fine
    with pytest.raises(UQEvalError, match="image 0"):
        rater_statistics(labels, None, 1)


def test_bad_label_arrays_raise():
    with pytest.raises(UQEvalError, match="integer labels"):
        rater_statistics(np.zeros((1, 2, 3, 3), dtype=np.float32), None, 2)
    with pytest.raises(UQEvalError, match="integer labels"):
        rater_statistics(np.zeros((2, 3, 3), dtype=np.uint8), None, 2)
    with pytest.raises(UQEvalError, match="does not match"):
        rater_statistics(np.zeros((1, 2, 3, 3), dtype=np.uint8), np.zeros((1, 3, 4), dtype=np.uint8), 2)


# --------------------------------------------------------------------------- NCC


def reference_ncc(variance: np.ndarray, u: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """scipy's Pearson correlation, image by image, over the pixels with a valid rater (float64 of float32 maps)."""
    out = []
    for g_image, u_image, v_image in zip(variance, u, valid, strict=True):
        mask = v_image > 0
        g_valid = g_image[mask].astype(np.float32).astype(np.float64)
        u_valid = u_image[mask].astype(np.float32).astype(np.float64)
        out.append(scipy.stats.pearsonr(g_valid, u_valid).statistic)
    return np.array(out)


def test_ncc_matches_scipy_on_random_maps():
    rng = np.random.default_rng(7)
    n_images, height, width = 6, 17, 13
    g = rng.random((n_images, height, width)).astype(np.float32)
    # Correlations across the whole range, from strongly negative to strongly positive.
    weights = np.linspace(-3, 3, n_images)[:, None, None]
    u = (weights * g + rng.gamma(2.0, 0.3, size=g.shape)).astype(np.float32)
    valid = rng.integers(0, 4, size=g.shape)
    result = ncc(g, u, valid)
    expected = reference_ncc(g, u, valid)
    np.testing.assert_array_equal(result.state, SCORED)
    np.testing.assert_allclose(result.correlation, expected, rtol=0, atol=1e-6)
    assert expected.min() < -0.5 and expected.max() > 0.5
    # Without a valid mask every pixel counts: np.corrcoef over the whole image.
    full = ncc(g, u)
    for image in range(n_images):
        expected_full = np.corrcoef(g[image].ravel().astype(np.float64), u[image].ravel().astype(np.float64))[0, 1]
        assert full.correlation[image] == pytest.approx(expected_full, abs=1e-6)


def test_ncc_ignores_pixels_without_a_rater():
    rng = np.random.default_rng(3)
    g = rng.random((1, 8, 8)).astype(np.float32)
    u = rng.random((1, 8, 8)).astype(np.float32)
    valid = np.ones((1, 8, 8), dtype=np.int32)
    valid[0, :2] = 0
    base = ncc(g, u, valid).correlation[0]
    # Whatever the invalid pixels hold, they do not count.
    g2, u2 = g.copy(), u.copy()
    g2[0, :2] = 100.0
    u2[0, :2] = -50.0
    assert ncc(g2, u2, valid).correlation[0] == pytest.approx(base, abs=1e-12)
    assert ncc(g2, u2).correlation[0] != pytest.approx(base, abs=1e-3)
    expected = np.corrcoef(g[0, 2:].ravel().astype(np.float64), u[0, 2:].ravel().astype(np.float64))[0, 1]
    assert base == pytest.approx(expected, abs=1e-6)


def test_ncc_of_rater_statistics_matches_corrcoef():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, size=(4, 5, 9, 9)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    stats = rater_statistics(labels, None, 3)
    u = (stats.variance + rng.normal(0, 0.2, size=stats.variance.shape)).astype(np.float32)
    result = ncc(stats.variance, u, stats.valid)
    np.testing.assert_allclose(result.correlation, reference_ncc(stats.variance, u, stats.valid), rtol=0, atol=1e-6)


def test_ncc_by_hand_doc_example():
    g = np.array([[[0.0, 0.5, 0.0, 0.0]]], dtype=np.float32)
    u = np.array([[[0.1, 0.6, 0.2, 0.1]]], dtype=np.float32)
    expected = np.corrcoef(g[0, 0].astype(np.float64), u[0, 0].astype(np.float64))[0, 1]
    assert ncc(g, u).correlation[0] == pytest.approx(expected, abs=1e-6)
    assert ncc(g, u).correlation[0] == pytest.approx(0.98019, abs=1e-4)


def test_ncc_of_perfectly_related_maps_is_plus_or_minus_one():
    rng = np.random.default_rng(5)
    g = rng.random((2, 10, 10)).astype(np.float32)
    u = np.stack([2 * g[0] + 1, 1 - 3 * g[1]])
    result = ncc(g, u)
    np.testing.assert_allclose(result.correlation, [1.0, -1.0], atol=1e-6)
    assert (np.abs(result.correlation) <= 1.0).all()


def test_constant_maps_are_not_scored():
    rng = np.random.default_rng(2)
    g = rng.random((5, 6, 6)).astype(np.float32)
    u = rng.random((5, 6, 6)).astype(np.float32)
    valid = np.ones((5, 6, 6), dtype=np.int32)
    g[1] = 0.0  # raters all agree
    u[2] = 0.7  # constant uncertainty
    g[3] = 0.25  # constant over the valid pixels only
    g[3, 0, 0] = 0.9
    valid[3, 0, 0] = 0
    valid[4] = 0  # no pixel with a rater
    result = ncc(g, u, valid)
    np.testing.assert_array_equal(result.state, [SCORED, CONSTANT, CONSTANT, CONSTANT, NO_PIXELS])
    assert result.state.dtype == np.int8
    assert not np.isnan(result.correlation[0])
    assert np.isnan(result.correlation[1:]).all()


@pytest.mark.parametrize("which", ["rater variance", "uncertainty"])
def test_a_map_is_constant_up_to_the_tolerance_and_scored_beyond_it(which):
    """A map whose range is within CONSTANT_TOLERANCE is constant (rounding, not signal);
    one whose range is twice that is scored like any other."""
    varying = np.array([[[0.1, 0.2, 0.9, 0.3]]], dtype=np.float32)
    for step, state in ((CONSTANT_TOLERANCE, CONSTANT), (2 * CONSTANT_TOLERANCE, SCORED)):
        flat = np.full((1, 1, 4), 0.25, dtype=np.float32)
        flat[0, 0, 2] += np.float32(step)
        g, u = (flat, varying) if which == "rater variance" else (varying, flat)
        result = ncc(g, u)
        assert result.state[0] == state, step
        if state == SCORED:
            expected = np.corrcoef(g[0, 0].astype(np.float64), u[0, 0].astype(np.float64))[0, 1]
            assert result.correlation[0] == pytest.approx(expected, abs=1e-6)
        else:
            assert np.isnan(result.correlation[0])


def test_ncc_rejects_mismatched_maps():
    with pytest.raises(UQEvalError, match="NCC"):
        ncc(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(UQEvalError, match="NCC"):
        ncc(np.zeros((3, 3)), np.zeros((3, 3)))


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_pixels=st.integers(3, 60),
    n_images=st.integers(1, 3),
    rater_levels=st.integers(1, 6),
)
def test_ncc_is_invariant_to_pixel_permutations(seed, n_pixels, n_images, rater_levels):
    rng = np.random.default_rng(seed)
    # g takes few levels (like a rater variance), u is continuous; some pixels lack a rater.
    g = (rng.integers(0, rater_levels + 1, size=(n_images, 1, n_pixels)) / (rater_levels + 1)).astype(np.float32)
    u = rng.gamma(1.5, 0.4, size=(n_images, 1, n_pixels)).astype(np.float32)
    valid = rng.integers(0, 3, size=(n_images, 1, n_pixels))
    original = ncc(g, u, valid)
    order = rng.permutation(n_pixels)
    shuffled = ncc(g[..., order], u[..., order], valid[..., order])
    np.testing.assert_array_equal(shuffled.state, original.state)
    np.testing.assert_allclose(shuffled.correlation, original.correlation, rtol=0, atol=1e-9)
    # Reshaping the same pixels to another (y, x) grid changes nothing either.
    reshaped = ncc(
        g.reshape(n_images, n_pixels, 1), u.reshape(n_images, n_pixels, 1), valid.reshape(n_images, n_pixels, 1)
    )
    np.testing.assert_array_equal(reshaped.correlation, original.correlation)
    # And the scored values agree with scipy.
    for image in np.flatnonzero(original.state == SCORED):
        mask = valid[image, 0] > 0
        expected = scipy.stats.pearsonr(g[image, 0, mask].astype(np.float64), u[image, 0, mask].astype(np.float64))
        assert original.correlation[image] == pytest.approx(expected.statistic, abs=1e-6)
    for image in np.flatnonzero(original.state == CONSTANT):
        mask = valid[image, 0] > 0
        assert np.ptp(g[image, 0, mask]) == 0 or np.ptp(u[image, 0, mask]) == 0
    for image in np.flatnonzero(original.state == NO_PIXELS):
        assert (valid[image] == 0).all()


# --------------------------------------------------------------------------- mean NCC


def _correlation(values, states) -> Correlation:
    return Correlation(np.array(values, dtype=np.float64), np.array(states, dtype=np.int8))


def test_mean_ncc_skip_and_zero():
    corr = _correlation(
        [0.8, np.nan, 0.2, np.nan, -0.4, np.nan],
        [SCORED, CONSTANT, SCORED, NO_PIXELS, SCORED, CONSTANT],
    )
    value, n_constant = mean_ncc(corr)
    assert n_constant == 2
    assert value == pytest.approx((0.8 + 0.2 - 0.4) / 3)
    assert mean_ncc(corr, constant="skip") == (value, 2)
    zero, n_constant = mean_ncc(corr, constant="zero")
    assert n_constant == 2
    assert zero == pytest.approx((0.8 + 0.2 - 0.4) / 5)  # images without pixels never count


def test_mean_ncc_is_nan_when_nothing_is_scored():
    only_constant = _correlation([np.nan, np.nan], [CONSTANT, NO_PIXELS])
    value, n_constant = mean_ncc(only_constant)
    assert math.isnan(value) and n_constant == 1
    assert mean_ncc(only_constant, constant="zero") == (0.0, 1)
    value, n_constant = mean_ncc(_correlation([np.nan], [NO_PIXELS]), constant="zero")
    assert math.isnan(value) and n_constant == 0
    value, n_constant = mean_ncc(_correlation([], []))
    assert math.isnan(value) and n_constant == 0


def test_mean_ncc_end_to_end():
    rng = np.random.default_rng(9)
    g = rng.random((4, 5, 5)).astype(np.float32)
    u = (g + rng.normal(0, 0.3, size=g.shape)).astype(np.float32)
    g[1] = 0.0
    corr = ncc(g, u)
    expected = reference_ncc(g[[0, 2, 3]], u[[0, 2, 3]], np.ones((3, 5, 5)))
    value, n_constant = mean_ncc(corr)
    assert n_constant == 1
    assert value == pytest.approx(expected.mean(), abs=1e-6)
    assert mean_ncc(corr, constant="zero")[0] == pytest.approx(expected.sum() / 4, abs=1e-6)


def test_mean_ncc_rejects_unknown_policy():
    with pytest.raises(UQEvalError, match="constant"):
        mean_ncc(_correlation([0.5], [SCORED]), constant="nan")


# ---------------------------------------------------------------- rater_disagreement


def test_rater_disagreement_is_the_fraction_of_raters_off_the_majority():
    labels = np.array(
        [
            [[0, 1, 2, 255]],
            [[0, 1, 2, 255]],
            [[0, 0, 1, 255]],
            [[1, 255, 0, 255]],
        ]
    )
    got = rater_disagreement(labels)
    assert got.shape == (1, 4) and got.dtype == np.float32
    assert got[0, 0] == pytest.approx(0.25)  # 3 of 4 say 0
    assert got[0, 1] == pytest.approx(1 / 3)  # one rater did not label: 2 of 3 say 1
    assert got[0, 2] == pytest.approx(0.5)  # 2 of 4 say 2
    assert np.isnan(got[0, 3])  # nobody labelled it
    assert np.array_equal(rater_disagreement(np.zeros((3, 2, 2), dtype=np.uint8)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="rater, y, x"):
        rater_disagreement(np.zeros((2, 2)))


# --------------------------------------------------------------------------- the study's conventions


def test_class_index_variance_by_hand():
    """Raters 0, 2, 2 at a pixel: Var(0, 2, 2) = 8/3 − (4/3)² = 8/9, while Σ_c Var(1[l = c]) = 1 − 1/9 − 4/9 = 4/9.
    One ignored rater leaves Var(1, 2) = 1/4 and 1 − 2·(1/2)² = 1/2."""
    labels = np.array([[[[0, 1]], [[2, 2]], [[2, IGNORE]]]], dtype=np.uint8)  # 1 image, 3 raters, 1×2
    index = rater_variance(labels, 3, reference="class-index-variance")[0, 0]
    one_hot = rater_variance(labels, 3)[0, 0]
    assert index.tolist() == pytest.approx([8 / 9, 1 / 4], rel=1e-7)
    assert one_hot.tolist() == pytest.approx([4 / 9, 1 / 2], rel=1e-7)


def test_class_index_variance_depends_on_the_numbering_and_one_hot_does_not():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(4, 3, 8, 8)).astype(np.uint8)
    swapped = np.choose(labels, [0, 2, 1]).astype(np.uint8)  # classes 1 and 2 renamed
    u = rng.random((4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rater_variance(swapped, 3), rater_variance(labels, 3))
    index, index_swapped = (rater_variance(x, 3, reference="class-index-variance") for x in (labels, swapped))
    assert not np.allclose(index, index_swapped)
    expected = np.var(labels.astype(np.float64), axis=1)  # what numpy's var of the indices gives
    np.testing.assert_allclose(index, expected, rtol=1e-6)
    assert not np.allclose(ncc(index, u).correlation, ncc(index_swapped, u).correlation)


def test_two_classes_give_the_same_ncc_under_either_reference():
    """With classes 0 and 1, Var(l) = p₀p₁ is half of 1 − p₀² − p₁²: the correlation cannot tell."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=(3, 4, 10, 10)).astype(np.uint8)
    u = rng.random((3, 10, 10)).astype(np.float32)
    one_hot = rater_variance(labels, 2)
    index = rater_variance(labels, 2, reference="class-index-variance")
    np.testing.assert_allclose(2 * index, one_hot, rtol=1e-6)
    np.testing.assert_allclose(ncc(index, u).correlation, ncc(one_hot, u).correlation, rtol=1e-9)


def test_the_study_ncc_factor_is_n_minus_one_over_n_of_the_valid_pixels():
    """Σ(g − ḡ)(u − ū) / (N σ_g σ_u) with σ of ddof 1 is Pearson × (N − 1)/N, N the pixels with a rater."""
    rng = np.random.default_rng(5)
    g = rng.random((2, 6, 6)).astype(np.float32)
    u = rng.random((2, 6, 6)).astype(np.float32)
    valid = np.ones((2, 6, 6), dtype=np.int32)
    valid[1, :2] = 0  # 24 of 36 pixels count on image 1
    plain = ncc(g, u, valid).correlation
    shrunk = ncc(g, u, valid, factor="n-1-over-n").correlation
    np.testing.assert_allclose(shrunk, plain * np.array([35 / 36, 23 / 24]), rtol=1e-12)
    for image in range(2):
        keep = valid[image] > 0
        x, y = g[image][keep].astype(np.float64), u[image][keep].astype(np.float64)
        study = ((x - x.mean()) * (y - y.mean())).sum() / (x.size * x.std(ddof=1) * y.std(ddof=1))
        assert shrunk[image] == pytest.approx(study, rel=1e-9)
    with pytest.raises(UQEvalError, match="factor is 'half'"):
        ncc(g, u, factor="half")


# --------------------------------------------------------------------------- volumes (image, [rater,] z, y, x)


def reference_rater_statistics_of_voxels(
    labels: np.ndarray, pred: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`reference_rater_statistics` voxel by voxel, for labels of any spatial rank."""
    spatial = labels.shape[2:]
    variance = np.zeros((labels.shape[0], *spatial))
    agree = np.zeros(variance.shape, dtype=np.int64)
    valid = np.zeros(variance.shape, dtype=np.int64)
    for image in range(labels.shape[0]):
        for voxel in np.ndindex(*spatial):
            raters = labels[(image, slice(None), *voxel)].astype(np.int64)
            raters = raters[raters != IGNORE]
            valid[(image, *voxel)] = raters.size
            agree[(image, *voxel)] = int((raters == pred[(image, *voxel)]).sum())
            if raters.size:
                variance[(image, *voxel)] = np.var(np.eye(n_classes)[raters], axis=0, ddof=0).sum()
    return variance, agree, valid


@pytest.mark.parametrize("n_classes", [2, 3])
def test_rater_statistics_of_volumes_match_the_voxel_reference(n_classes):
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, size=(2, 3, 5, 7, 9)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.25] = IGNORE
    labels[1, :, 4] = IGNORE  # a slice no rater labelled
    pred = rng.integers(0, n_classes, size=(2, 5, 7, 9)).astype(np.uint8)
    stats = rater_statistics(labels, pred, n_classes)
    variance, agree, valid = reference_rater_statistics_of_voxels(labels, pred, n_classes)
    assert stats.variance.shape == stats.agree.shape == stats.valid.shape == (2, 5, 7, 9)
    np.testing.assert_allclose(stats.variance, variance, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(stats.agree, agree)
    np.testing.assert_array_equal(stats.valid, valid)
    assert (stats.valid[1, 4] == 0).all() and (stats.variance[1, 4] == 0).all()
    # Each slice of a volume has the statistics of the same slice scored as an image.
    flat = rater_statistics(labels.transpose(0, 2, 1, 3, 4).reshape(10, 3, 7, 9), pred.reshape(10, 7, 9), n_classes)
    np.testing.assert_array_equal(flat.variance.reshape(2, 5, 7, 9), stats.variance)
    np.testing.assert_array_equal(flat.agree.reshape(2, 5, 7, 9), stats.agree)


def test_rater_statistics_of_volumes_reject_mismatched_predictions_and_other_ranks():
    with pytest.raises(UQEvalError, match="does not match"):
        rater_statistics(np.zeros((1, 2, 3, 4, 5), dtype=np.uint8), np.zeros((1, 3, 4, 6), dtype=np.uint8), 2)
    with pytest.raises(UQEvalError, match=r"\(image, rater, z, y, x\)"):
        rater_statistics(np.zeros((1, 2, 1, 3, 4, 5), dtype=np.uint8), None, 2)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_ncc_of_volumes_is_one_pearson_correlation_per_volume(n_classes):
    rng = np.random.default_rng(20 + n_classes)
    labels = rng.integers(0, n_classes, size=(4, 3, 5, 7, 9)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    stats = rater_statistics(labels, None, n_classes)
    weights = np.linspace(-2, 2, 4)[:, None, None, None]
    u = (weights * stats.variance + rng.gamma(2.0, 0.2, size=stats.variance.shape)).astype(np.float32)
    result = ncc(stats.variance, u, stats.valid)
    np.testing.assert_array_equal(result.state, SCORED)
    expected = [
        scipy.stats.pearsonr(g[v > 0].astype(np.float64), m[v > 0].astype(np.float64)).statistic
        for g, m, v in zip(stats.variance, u, stats.valid, strict=True)
    ]
    np.testing.assert_allclose(result.correlation, expected, rtol=0, atol=1e-6)
    # Not the mean of the slices' correlations.
    slices = ncc(stats.variance.reshape(20, 7, 9), u.reshape(20, 7, 9), stats.valid.reshape(20, 7, 9))
    assert not np.allclose(slices.correlation.reshape(4, 5).mean(axis=1), result.correlation, atol=1e-3)
    study = ncc(stats.variance, u, stats.valid, factor="n-1-over-n")
    n_voxels = (stats.valid > 0).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(study.correlation, result.correlation * (n_voxels - 1) / n_voxels, rtol=1e-12)


def test_ncc_of_volumes_states():
    g = np.zeros((3, 2, 3, 4), dtype=np.float32)
    g[:, 1, 2, 3] = 1.0
    u = np.random.default_rng(0).random(g.shape).astype(np.float32)
    valid = np.ones(g.shape, dtype=np.int32)
    valid[1, 1] = 0  # the one voxel where g differs is unlabelled: g constant
    valid[2] = 0
    result = ncc(g, u, valid)
    np.testing.assert_array_equal(result.state, [SCORED, CONSTANT, NO_PIXELS])
    with pytest.raises(UQEvalError, match="do not match"):
        ncc(g, u, valid[:, 0])


def test_rater_disagreement_of_volumes_is_that_of_each_slice():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=(4, 3, 5, 6)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    volume = rater_disagreement(labels)
    assert volume.shape == (3, 5, 6)
    for z in range(3):
        np.testing.assert_array_equal(volume[z], rater_disagreement(labels[:, z]))


@settings(max_examples=60, deadline=None)
@given(
    n_pixels=st.integers(0, 60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    seed=st.integers(0, 2**16),
    offset=st.sampled_from([0.0, 1e3]),
)
def test_pearson_moments_merged_over_parts_equal_scipy_on_the_whole(n_pixels, cuts, seed, offset):
    """Chan's merge of the parts' moments gives the whole image's Pearson correlation, also far
    from zero, where a one-pass Σx² would cancel, and with parts without a valid pixel."""
    rng = np.random.default_rng(seed)
    g = (offset + rng.random(n_pixels)).astype(np.float32)
    u = (offset + g + rng.normal(scale=0.5, size=n_pixels)).astype(np.float32)
    valid = rng.integers(0, 2, size=n_pixels)
    moments = PearsonMoments()
    edges = [0, *sorted({cut for cut in cuts if cut < n_pixels}), n_pixels]
    for start, stop in itertools.pairwise(edges):
        moments.add(g[start:stop], u[start:stop], valid[start:stop])
    result = moments.correlation()
    whole = ncc(g[None, None], u[None, None], valid[None, None])
    assert result.state.tolist() == whole.state.tolist()
    if whole.state[0] == 0:
        chosen = valid > 0
        expected = scipy.stats.pearsonr(g[chosen].astype(np.float64), u[chosen].astype(np.float64)).statistic
        assert math.isclose(result.correlation[0], expected, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(result.correlation[0], whole.correlation[0], rel_tol=1e-9, abs_tol=1e-12)
        shrunk = moments.correlation(factor="n-1-over-n").correlation[0]
        n = int(chosen.sum())
        assert math.isclose(shrunk, result.correlation[0] * (n - 1) / n, rel_tol=1e-12)
