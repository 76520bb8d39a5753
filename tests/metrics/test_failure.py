"""Failure detection metrics against loop-based and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError
from uqeval.metrics.failure import (
    RiskCoverage,
    VolumeRisk,
    augrc,
    aurc,
    eaugrc,
    eaurc,
    failure_risk,
    risk_coverage,
)

IGNORE = 255
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# --------------------------------------------------------------------------- references


def loop_aurc_in_order(risks_in_order) -> float:
    """AURC of images already in the order they are kept: mean over k of (sum of the first k) / k."""
    total, cumulative = 0.0, 0.0
    for k, risk in enumerate(risks_in_order, start=1):
        cumulative += risk
        total += cumulative / k
    return total / len(risks_in_order)


def loop_aurc_distinct(scores, risks) -> float:
    """AURC for distinct scores: sort by score, then the plain loop."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    return loop_aurc_in_order([risks[i] for i in order])


def brute_force_aurc(scores, risks) -> float:
    """Mean AURC over every order of the images that sorts the scores ascending (ties in any order)."""
    n = len(scores)
    values = []
    for order in itertools.permutations(range(n)):
        if all(scores[order[i]] <= scores[order[i + 1]] for i in range(n - 1)):
            values.append(loop_aurc_in_order([risks[i] for i in order]))
    return sum(values) / len(values)


def loop_tie_rule_aurc(scores, risks) -> float:
    """The tie rule written out with Python loops: C = P + j·S/m inside a run of m tied scores."""
    groups: dict[float, list[float]] = {}
    for s, r in zip(scores, risks, strict=True):
        groups.setdefault(float(s), []).append(float(r))
    total, prefix, k = 0.0, 0.0, 0
    for s in sorted(groups):
        members = groups[s]
        m, group_sum = len(members), sum(members)
        for j in range(1, m + 1):
            k += 1
            total += (prefix + j * group_sum / m) / k
        prefix += group_sum
    return total / len(scores)


def reference_dice(a: np.ndarray, b: np.ndarray, n_classes: int, *, background=0, empty=1.0) -> float:
    """Dice of a prediction ``a`` against a rater map ``b`` (ignore pixels of ``b`` excluded), by counting."""
    counted = b != IGNORE
    values = []
    for c in range(n_classes):
        if c == background:
            continue
        in_a = (a == c) & counted
        in_b = (b == c) & counted
        size = int(in_a.sum()) + int(in_b.sum())
        if size > 0:
            values.append(2 * int((in_a & in_b).sum()) / size)
    return sum(values) / len(values) if values else empty


def reference_risk(pred, labels, n_classes, **options) -> np.ndarray:
    risks = []
    for image, raters in zip(pred, labels, strict=True):
        dices = [reference_dice(image, rater, n_classes, **options) for rater in raters if (rater != IGNORE).any()]
        risks.append(1 - sum(dices) / len(dices) if dices else np.nan)
    return np.array(risks)


# --------------------------------------------------------------------------- strategies


@st.composite
def tied_scores_and_risks(draw, max_images: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Few images with scores from a small set (ties are common) and risks in [0, 1], some tied or 0/1."""
    n = draw(st.integers(1, max_images))
    levels = draw(st.integers(1, 4))
    scores = draw(st.lists(st.integers(0, levels - 1), min_size=n, max_size=n))
    risk_values = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1, allow_nan=False))
    risks = draw(st.lists(risk_values, min_size=n, max_size=n))
    return np.array(scores, dtype=np.float64) / 3, np.array(risks)


@st.composite
def distinct_scores_and_risks(draw, max_images: int = 30) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_images))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scores = rng.permutation(n) + rng.random(n) * 0.5  # distinct
    risks = rng.random(n) if draw(st.booleans()) else (rng.random(n) < 0.3).astype(np.float64)
    return scores, risks


# --------------------------------------------------------------------------- AURC


@PROPERTY_SETTINGS
@given(data=distinct_scores_and_risks())
def test_aurc_matches_loop_for_distinct_scores(data):
    scores, risks = data
    value = aurc(scores, risks)
    assert isinstance(value, float)
    assert value == pytest.approx(loop_aurc_distinct(scores, risks), abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks())
def test_aurc_with_ties_is_the_mean_over_all_orders(data):
    scores, risks = data
    assert aurc(scores, risks) == pytest.approx(brute_force_aurc(scores, risks), abs=1e-12)


def test_aurc_matches_tie_loop_on_a_large_tied_sample():
    rng = np.random.default_rng(0)
    risks = rng.random(5000) ** 2
    scores = np.floor(risks * 10 + rng.normal(size=5000)).astype(np.float64)  # heavy ties, informative
    assert aurc(scores, risks) == pytest.approx(loop_tie_rule_aurc(scores, risks), abs=1e-12)
    assert aurc(scores, risks) < aurc(-scores, risks)


def test_aurc_hand_values():
    # Sorted by score: risks 0, 0, 1, 0.5 → C = 0, 0, 1, 1.5 → R = 0, 0, 1/3, 3/8.
    assert aurc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]) == pytest.approx((1 / 3 + 3 / 8) / 4, abs=1e-15)
    # Two orders of one tie: 0 then 1 gives (0 + 1/2) / 2, 1 then 0 gives (1 + 1/2) / 2.
    assert aurc([0.3, 0.3], [1.0, 0.0]) == pytest.approx(0.5, abs=1e-15)
    # Tie of the last two after a risk-1 image: C = 1, 1 + 0.5, 1 + 1 → R = 1, 0.75, 2/3.
    assert aurc([0.0, 1.0, 1.0], [1.0, 1.0, 0.0]) == pytest.approx((1 + 0.75 + 2 / 3) / 3, abs=1e-15)
    assert aurc([0.7], [0.25]) == 0.25


def test_aurc_all_scores_tied_is_the_mean_risk():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 50):
        risks = rng.random(n)
        assert aurc(np.full(n, 0.42), risks) == pytest.approx(risks.mean(), abs=1e-14)
    assert aurc([np.inf, np.inf, np.inf], [1.0, 0.0, 0.5]) == pytest.approx(0.5, abs=1e-15)


def test_aurc_accepts_any_non_negative_risk():
    assert aurc([1, 2], [3.0, 0.0]) == pytest.approx((3 + 1.5) / 2)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=12), seed=st.integers(0, 2**32 - 1))
def test_aurc_and_eaurc_do_not_depend_on_image_order(data, seed):
    scores, risks = data
    order = np.random.default_rng(seed).permutation(scores.size)
    assert aurc(scores[order], risks[order]) == pytest.approx(aurc(scores, risks), abs=1e-12)
    assert eaurc(scores[order], risks[order]) == pytest.approx(eaurc(scores, risks), abs=1e-12)


# --------------------------------------------------------------------------- E-AURC


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks())
def test_eaurc_is_non_negative_and_aurc_minus_best_order(data):
    scores, risks = data
    value = eaurc(scores, risks)
    assert isinstance(value, float)
    assert value >= -1e-12
    best = min(loop_aurc_in_order([risks[i] for i in order]) for order in itertools.permutations(range(scores.size)))
    assert value == pytest.approx(brute_force_aurc(scores, risks) - best, abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_eaurc_is_zero_when_scores_order_by_risk(data):
    _, risks = data
    assert eaurc(risks, risks) == pytest.approx(0.0, abs=1e-12)
    assert eaurc(2 * risks + 1, risks) == pytest.approx(0.0, abs=1e-12)
    assert eaurc(np.exp(risks), risks) == pytest.approx(0.0, abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_eaurc_is_invariant_to_increasing_transforms_of_the_scores(data):
    scores, risks = data
    value = eaurc(scores, risks)
    for transformed in (3 * scores - 7, np.exp(scores), scores**3, np.arctan(scores)):
        assert eaurc(transformed, risks) == pytest.approx(value, abs=1e-12)
        assert aurc(transformed, risks) == pytest.approx(aurc(scores, risks), abs=1e-12)


def test_eaurc_hand_value():
    # AURC 17/96 (see test_aurc_hand_values); ideal order 0, 0, 0.5, 1 → R = 0, 0, 1/6, 3/8 → 13/96.
    assert eaurc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]) == pytest.approx(4 / 96, abs=1e-15)
    # The worst order of two: 0.75 - 0.25.
    assert eaurc([0.1, 0.3], [1.0, 0.0]) == pytest.approx(0.5, abs=1e-15)


# --------------------------------------------------------------------------- risk-coverage curve


def test_risk_coverage_curve():
    curve = risk_coverage([0.0, 1.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.5])
    assert isinstance(curve, RiskCoverage)
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0], rtol=0, atol=1e-15)
    # C = 1, 1.5, 1.5 + 0.5, 1.5 + 1.
    np.testing.assert_allclose(curve.risk, [1.0, 0.75, 2 / 3, 2.5 / 4], rtol=0, atol=1e-15)
    assert curve.risk.mean() == pytest.approx(aurc([0.0, 1.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.5]), abs=1e-15)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_full_coverage_risk_is_the_mean_risk(data):
    scores, risks = data
    curve = risk_coverage(scores, risks)
    assert curve.risk.shape == curve.coverage.shape == (scores.size,)
    assert curve.risk[-1] == pytest.approx(risks.mean(), abs=1e-12)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("scores", "risks", "match"),
    [
        ([0.1, 0.2, 0.3], [0.0, 1.0], r"shape \(3,\) but risks of shape \(2,\)"),
        ([[0.1, 0.2]], [0.0, 1.0], "shape"),
        ([], [], "no images"),
        ([0.1, np.nan], [0.0, 1.0], "score is NaN"),
        ([0.1, 0.2], [np.nan, 1.0], "risk is NaN"),
        ([0.1, 0.2], [-0.5, 1.0], "non-negative"),
        ([0.1, 0.2], [np.inf, 1.0], "finite"),
    ],
)
def test_bad_input_raises(scores, risks, match):
    for function in (aurc, eaurc, risk_coverage):
        with pytest.raises(UQEvalError, match=match) as raised:
            function(scores, risks)
        assert str(raised.value).startswith("failure detection: ")


# --------------------------------------------------------------------------- failure_risk


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("background", [0, 1])
def test_failure_risk_matches_direct_dice(n_classes, background):
    rng = np.random.default_rng(10 * n_classes + background)
    pred = rng.integers(0, n_classes, (6, 9, 7)).astype(np.uint8)
    labels = rng.integers(0, n_classes, (6, 4, 9, 7)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.15] = IGNORE  # ignore pixels
    labels[2, 1] = IGNORE  # a rater who labelled nothing
    labels[3] = IGNORE  # an image without a counting rater
    labels[4, :, :, :] = background  # raters without foreground…
    pred[4] = background  # …against a prediction without foreground
    got = failure_risk(pred, labels, n_classes, background=background)
    assert got.shape == (6,)
    assert got.dtype == np.float64
    expected = reference_risk(pred, labels, n_classes, background=background)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.isnan(got[3])
    assert got[4] == 0.0
    assert ((got[~np.isnan(got)] >= 0) & (got[~np.isnan(got)] <= 1)).all()


def test_failure_risk_hand_values():
    pred = np.array([[[0, 1, 1, 0]]], dtype=np.uint8)
    labels = np.array(
        [
            [
                [[0, 1, 0, 0]],  # Dice 2·1 / (2 + 1) = 2/3
                [[0, 1, 1, IGNORE]],  # Dice 1
                [[IGNORE, IGNORE, IGNORE, IGNORE]],  # does not count (it would score `empty` = 1)
            ]
        ],
        dtype=np.uint8,
    )
    np.testing.assert_allclose(failure_risk(pred, labels, 2), [1 - (2 / 3 + 1) / 2], rtol=0, atol=1e-15)
    # Three classes: class 1 Dice 2/3, class 2 in the prediction only, Dice 0 → 1/3.
    pred = np.array([[[0, 1, 1, 2]]], dtype=np.uint8)
    labels = np.array([[[[0, 1, 0, 0]]]], dtype=np.uint8)
    np.testing.assert_allclose(failure_risk(pred, labels, 3), [1 - 1 / 3], rtol=0, atol=1e-15)


@pytest.mark.parametrize("empty", [1.0, 0.0, 0.25])
def test_failure_risk_of_two_empty_masks_is_one_minus_empty(empty):
    pred = np.zeros((2, 3, 3), dtype=np.uint8)
    labels = np.zeros((2, 2, 3, 3), dtype=np.uint8)
    labels[1, 0, 0, 0] = IGNORE
    np.testing.assert_array_equal(failure_risk(pred, labels, 3, empty=empty), [1 - empty, 1 - empty])


def test_failure_risk_feeds_aurc_after_dropping_nan():
    pred = np.array([[[1, 1]], [[1, 0]], [[0, 0]]], dtype=np.uint8)
    labels = np.array([[[[1, 1]]], [[[1, 1]]], [[[IGNORE, IGNORE]]]], dtype=np.uint8)
    risks = failure_risk(pred, labels, 2)
    np.testing.assert_allclose(risks[:2], [0.0, 1 / 3], atol=1e-15)
    assert np.isnan(risks[2])
    scores = np.array([0.1, 0.9, 0.5])
    with pytest.raises(UQEvalError, match="NaN"):
        aurc(scores, risks)
    keep = ~np.isnan(risks)
    assert eaurc(scores[keep], risks[keep]) == 0.0


@pytest.mark.parametrize(
    ("pred_shape", "labels_shape"),
    [((2, 3, 3), (3, 1, 3, 3)), ((2, 3, 3), (2, 1, 3, 4)), ((2, 3, 3), (2, 3, 3)), ((3, 3), (1, 1, 3, 3))],
)
def test_failure_risk_rejects_mismatched_shapes(pred_shape, labels_shape):
    with pytest.raises(UQEvalError, match="failure detection: predictions of shape"):
        failure_risk(np.zeros(pred_shape, dtype=np.uint8), np.zeros(labels_shape, dtype=np.uint8), 2)


@pytest.mark.parametrize("empty", [-0.1, 1.5, np.nan])
def test_failure_risk_rejects_empty_outside_the_unit_interval(empty):
    with pytest.raises(UQEvalError, match="empty"):
        failure_risk(np.zeros((1, 2, 2), dtype=np.uint8), np.zeros((1, 1, 2, 2), dtype=np.uint8), 2, empty=empty)


def test_failure_risk_without_raters_is_nan():
    risks = failure_risk(np.zeros((2, 3, 3), dtype=np.uint8), np.zeros((2, 0, 3, 3), dtype=np.uint8), 2)
    assert risks.shape == (2,)
    assert np.isnan(risks).all()


# --------------------------------------------------------------------------- volumes (image, [rater,] z, y, x)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_failure_risk_of_volumes_is_one_minus_the_volumetric_dice(n_classes):
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(60 + n_classes)
    pred = rng.integers(0, n_classes, size=(3, 5, 7, 9)).astype(np.uint8)
    noise = rng.random((3, 4, 5, 7, 9)) < 0.3
    labels = np.where(noise, rng.integers(0, n_classes, size=noise.shape), pred[:, None]).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.15] = IGNORE
    labels[1, 2] = IGNORE  # a rater who labelled nothing of this volume does not count
    labels[2] = IGNORE  # no rater: NaN
    risks = failure_risk(pred, labels, n_classes)
    np.testing.assert_allclose(risks, reference_risk(pred, labels, n_classes), rtol=1e-12)
    assert np.isnan(risks[2]) and not np.isnan(risks[:2]).any()
    # scikit-learn's F1 of the foreground classes over the labelled voxels is the Dice.
    dices = []
    for rater in labels[0]:
        counted = rater != IGNORE
        per_class = f1_score(rater[counted], pred[0][counted], labels=list(range(1, n_classes)), average=None)
        dices.append(per_class.mean())
    assert risks[0] == pytest.approx(1 - np.mean(dices), rel=1e-12)
    # One Dice per volume, not the mean of its slices' Dice.
    slices = failure_risk(pred[:1].reshape(5, 7, 9), labels[:1].transpose(0, 2, 1, 3, 4).reshape(5, 4, 7, 9), n_classes)
    assert abs(np.nanmean(slices) - risks[0]) > 1e-6


def test_failure_risk_of_volumes_rejects_mixed_ranks():
    with pytest.raises(UQEvalError, match="do not match"):
        failure_risk(np.zeros((1, 2, 3, 4), dtype=np.uint8), np.zeros((1, 2, 3, 4), dtype=np.uint8), 2)
    with pytest.raises(UQEvalError, match="do not match"):
        failure_risk(np.zeros((1, 2, 3, 4), dtype=np.uint8), np.zeros((1, 1, 2, 3, 5), dtype=np.uint8), 2)


def test_a_volume_gathered_by_slabs_has_the_risk_of_the_whole():
    """The Dice counts of the slabs add up; a rater counts when any slab of it is labelled,
    and a rater labelled in no slab does not count."""
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 3, size=(6, 5, 4))
    labels = rng.integers(0, 3, size=(3, 6, 5, 4))
    labels[1, :4] = 255  # labelled only in the last slab
    labels[2] = 255  # never labelled
    whole = failure_risk(pred[None], labels[None], 3)
    gathered = VolumeRisk(3)
    for start, stop in ((0, 2), (2, 4), (4, 6)):
        gathered.add(pred[start:stop], labels[:, start:stop])
    np.testing.assert_allclose(gathered.result(), whole, rtol=1e-12)
    nobody = VolumeRisk(3)
    nobody.add(pred, np.full_like(labels, 255))
    assert np.isnan(nobody.result()[0])


# --------------------------------------------------------------------------- AUGRC


def numpy_augrc(scores, risks) -> float:
    """fd-shifts' AUGRC written out independently: confidence = −score, points where the
    confidence changes, (0, 0) appended, np.trapezoid over the coverage."""
    scores = np.asarray(scores, dtype=np.float64)
    risks = np.asarray(risks, dtype=np.float64)
    n = len(scores)
    confidence = -scores
    order = np.argsort(-confidence, kind="mergesort")  # most confident first
    coverages, generalized = [0.0], [0.0]
    kept_risk = 0.0
    for position, image in enumerate(order):
        kept_risk += risks[image]
        last_of_group = position == n - 1 or confidence[order[position + 1]] != confidence[image]
        if last_of_group:
            coverages.append((position + 1) / n)
            generalized.append(kept_risk / n)
    return float(np.trapezoid(generalized, coverages))


def brute_force_augrc(scores, risks) -> float:
    """Mean over every order that sorts the scores of the trapezoid through every image."""
    n = len(scores)
    values = []
    for order in itertools.permutations(range(n)):
        if all(scores[order[i]] <= scores[order[i + 1]] for i in range(n - 1)):
            curve = np.r_[0.0, np.cumsum([risks[i] for i in order])] / n
            values.append(float(np.trapezoid(curve, np.arange(n + 1) / n)))
    return sum(values) / len(values)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_augrc_matches_independent_trapezoid(data):
    scores, risks = data
    assert augrc(scores, risks) == pytest.approx(numpy_augrc(scores, risks), abs=1e-12)
    best = numpy_augrc(risks, risks)
    assert eaugrc(scores, risks) == pytest.approx(numpy_augrc(scores, risks) - best, abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks())
def test_augrc_with_ties_is_the_mean_over_all_orders(data):
    scores, risks = data
    assert augrc(scores, risks) == pytest.approx(brute_force_augrc(scores, risks), abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=12), seed=st.integers(0, 2**32 - 1))
def test_augrc_and_eaugrc_do_not_depend_on_image_order(data, seed):
    scores, risks = data
    order = np.random.default_rng(seed).permutation(len(scores))
    assert augrc(scores[order], risks[order]) == pytest.approx(augrc(scores, risks), abs=1e-12)
    assert eaugrc(scores[order], risks[order]) == pytest.approx(eaugrc(scores, risks), abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_eaugrc_is_non_negative_and_zero_for_the_risk_order(data):
    scores, risks = data
    assert eaugrc(scores, risks) >= -1e-12
    assert eaugrc(risks, risks) == 0.0
    assert eaugrc(2 * risks + 1, risks) == pytest.approx(0.0, abs=1e-12)


@PROPERTY_SETTINGS
@given(data=tied_scores_and_risks(max_images=20))
def test_augrc_of_constant_scores_is_half_the_mean_risk(data):
    _, risks = data
    assert augrc(np.full(len(risks), 0.7), risks) == pytest.approx(risks.mean() / 2, abs=1e-12)


def test_augrc_hand_values():
    # Kept in order 0.1, 0.35, 0.4, 0.8: G = 0, 0, 0, 1/4, 3/8 at coverage 0, 1/4, …, 1.
    assert augrc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]) == 7 / 64
    # Best order 0, 0, 0.5, 1: G = 0, 0, 0, 1/8, 3/8; area (1/8 + 1/2) / 8 = 5/64.
    assert eaugrc([0.1, 0.4, 0.35, 0.8], [0.0, 1.0, 0.0, 0.5]) == pytest.approx(2 / 64)
    assert augrc([0.3, 0.3], [1.0, 0.0]) == 0.25  # one segment from (0, 0) to (1, 1/2)
    assert augrc([0.5], [0.6]) == 0.3


def test_augrc_edge_cases():
    # All risks equal: a straight line to the mean risk, whatever the scores; no excess.
    assert augrc([0.3, 0.1, 0.2], [0.4, 0.4, 0.4]) == pytest.approx(0.2)
    assert eaugrc([0.3, 0.1, 0.2], [0.4, 0.4, 0.4]) == pytest.approx(0.0, abs=1e-15)
    # Tied infinities are one run.
    assert augrc([np.inf, np.inf, 0.0], [1.0, 0.0, 0.0]) == pytest.approx(
        numpy_augrc([np.inf, np.inf, 0.0], [1.0, 0.0, 0.0])
    )
    with pytest.raises(UQEvalError, match="no images"):
        augrc([], [])
    with pytest.raises(UQEvalError, match="no images"):
        eaugrc([], [])
