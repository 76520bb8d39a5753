"""OOD detection metrics (docs/metrics.md) against scikit-learn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError
from uqeval.metrics.oodd import RocCurve, auroc, fpr_at_tpr, roc_curve

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)
TARGETS = (0.95, 1.0, 0.5, 0.01, 0.9, 1 / 3)


@st.composite
def labelled_scores(draw, max_per_class: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Scores with many ties (a few integer levels, or a few float levels) and both labels present."""
    n_positive = draw(st.integers(1, max_per_class))
    n_negative = draw(st.integers(1, max_per_class))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["integers", "few_floats", "continuous"]))
    n = n_positive + n_negative
    if kind == "integers":
        scores = rng.integers(0, draw(st.integers(1, 5)), size=n).astype(np.float64)
    elif kind == "few_floats":
        scores = rng.choice(rng.normal(size=draw(st.integers(1, 6))), size=n)
    else:
        scores = rng.normal(size=n)
    positive = np.zeros(n, dtype=bool)
    positive[rng.permutation(n)[:n_positive]] = True
    return scores, positive


def brute_force_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    wins = 0.0
    for s_pos in scores[positive]:
        for s_neg in scores[~positive]:
            wins += 1.0 if s_pos > s_neg else 0.5 if s_pos == s_neg else 0.0
    return wins / (positive.sum() * (~positive).sum())


def brute_force_fpr_at_tpr(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """Smallest FPR over "positive when score ≥ t" for t in every score and +inf."""
    best = np.inf
    for t in [np.inf, *np.unique(scores)]:
        flagged = scores >= t
        tpr = np.count_nonzero(flagged & positive) / np.count_nonzero(positive)
        fpr = np.count_nonzero(flagged & ~positive) / np.count_nonzero(~positive)
        if tpr >= target:
            best = min(best, fpr)
    return best


# --------------------------------------------------------------------------- AUROC


@PROPERTY_SETTINGS
@given(data=labelled_scores())
def test_auroc_matches_sklearn_with_ties(data):
    scores, positive = data
    value = auroc(scores, positive)
    assert isinstance(value, float)
    assert abs(value - sklearn.metrics.roc_auc_score(positive, scores)) <= 1e-12
    assert abs(value - brute_force_auroc(scores, positive)) <= 1e-12


def test_auroc_matches_sklearn_on_a_large_tied_sample():
    rng = np.random.default_rng(0)
    positive = rng.random(3000) < 0.3
    scores = rng.integers(0, 20, size=3000) + 3 * positive  # heavy ties, informative
    value = auroc(scores, positive)
    assert abs(value - sklearn.metrics.roc_auc_score(positive, scores)) <= 1e-12
    assert 0.6 < value < 0.9


def test_auroc_hand_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75, abs=1e-15)
    # One tie between a positive and a negative counts a half: (1 + 0.5 + 1 + 1) / 4.
    assert auroc([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx(0.875, abs=1e-15)


def test_auroc_constant_scores_is_one_half():
    assert auroc(np.full(7, 0.3), [1, 0, 0, 1, 0, 1, 0]) == 0.5
    assert auroc([5.0, 5.0], [True, False]) == 0.5


def test_auroc_perfect_separation():
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert auroc(scores, [0, 0, 0, 1, 1, 1]) == 1.0
    assert auroc(scores, [1, 1, 1, 0, 0, 0]) == 0.0
    assert auroc([-np.inf, np.inf], [False, True]) == 1.0


def test_auroc_single_positive():
    scores = np.array([0.2, 0.5, 0.5, 0.9, 0.1, 0.5])
    positive = np.array([False, False, False, False, False, True])
    # The positive beats 0.2 and 0.1, ties two 0.5s, loses to 0.9: (2 + 2 · 0.5) / 5.
    assert auroc(scores, positive) == pytest.approx(0.6, abs=1e-15)
    assert abs(auroc(scores, positive) - sklearn.metrics.roc_auc_score(positive, scores)) <= 1e-12
    # And a single negative.
    assert auroc(scores, ~positive) == pytest.approx(0.4, abs=1e-15)


def test_auroc_accepts_0_1_labels_and_any_shape():
    scores = np.array([[0.3, 0.1], [0.9, 0.4]])
    labels = np.array([[1, 0], [1, 0]])
    # Positives 0.3 and 0.9 against negatives 0.1 and 0.4: 3 of 4 pairs won.
    assert auroc(scores, labels) == auroc(scores.ravel(), labels.ravel().astype(bool)) == 0.75
    assert auroc(scores, labels.astype(np.float64)) == 0.75


@pytest.mark.parametrize(
    ("scores", "positive", "match"),
    [
        ([0.1, 0.2, 0.3], [False, False, False], "both"),  # no positives
        ([0.1, 0.2, 0.3], [1, 1, 1], "both"),  # no negatives
        ([], [], "both"),
        ([0.1, np.nan, 0.3], [True, False, True], "NaN"),
        ([0.1, 0.2, 0.3], [True, False], "3 scores but 2 labels"),
        ([0.1, 0.2], [True, False, True], "2 scores but 3 labels"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "boolean"),
        ([0.1, 0.2, 0.3], [0, 0.5, 1], "boolean"),
    ],
)
def test_bad_input_raises(scores, positive, match):
    for function in (auroc, roc_curve, fpr_at_tpr):
        with pytest.raises(UQEvalError, match=match):
            function(scores, positive)


# --------------------------------------------------------------------------- ROC curve


def _check_against_sklearn_curve(scores: np.ndarray, positive: np.ndarray) -> RocCurve:
    curve = roc_curve(scores, positive)
    fpr, tpr, thresholds = sklearn.metrics.roc_curve(positive, scores, drop_intermediate=False)
    assert thresholds[0] == np.inf
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    np.testing.assert_allclose(curve.fpr, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.tpr, tpr, rtol=0, atol=1e-15)
    return curve


@PROPERTY_SETTINGS
@given(data=labelled_scores())
def test_roc_curve_matches_sklearn(data):
    scores, positive = data
    curve = _check_against_sklearn_curve(scores, positive)
    assert curve.fpr.dtype == curve.tpr.dtype == curve.thresholds.dtype == np.float64
    assert len(curve.thresholds) == len(np.unique(scores)) + 1
    assert curve.fpr[0] == curve.tpr[0] == 0.0
    assert curve.fpr[-1] == curve.tpr[-1] == 1.0
    assert (np.diff(curve.thresholds) < 0).all()
    assert (np.diff(curve.fpr) >= 0).all()
    assert (np.diff(curve.tpr) >= 0).all()
    # The trapezoid area under every operating point is the AUROC, ties included.
    assert abs(np.trapezoid(curve.tpr, curve.fpr) - auroc(scores, positive)) <= 1e-12


def test_roc_curve_hand_values():
    curve = roc_curve([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_array_equal(curve.tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(curve.fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    # Ties collapse into one operating point.
    curve = roc_curve([2, 1, 2, 1, 3], [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 3, 2, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1 / 3, 2 / 3, 1], atol=1e-15)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 1], atol=1e-15)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0]])
def test_tied_infinite_scores_are_one_operating_point(order):
    """Regression: np.diff(inf, inf) is NaN, which used to split a run of tied infinite scores."""
    scores = np.array([np.inf, np.inf, -np.inf, -np.inf])[order]
    positive = np.array([True, False, True, False])[order]
    curve = roc_curve(scores, positive)
    np.testing.assert_array_equal(curve.tpr, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(curve.fpr, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(curve.thresholds, [np.inf, np.inf, -np.inf])
    assert fpr_at_tpr(scores, positive, 0.5) == brute_force_fpr_at_tpr(scores, positive, 0.5) == 0.5
    assert fpr_at_tpr(scores, positive, 1.0) == 1.0
    assert auroc(scores, positive) == 0.5


# --------------------------------------------------------------------------- FPR at TPR


@PROPERTY_SETTINGS
@given(data=labelled_scores())
def test_fpr_at_tpr_matches_sklearn_and_brute_force(data):
    scores, positive = data
    fpr, tpr, _ = sklearn.metrics.roc_curve(positive, scores, drop_intermediate=False)
    for target in TARGETS:
        value = fpr_at_tpr(scores, positive, target)
        assert isinstance(value, float)
        assert value == fpr[np.searchsorted(tpr, target, side="left")], target
        assert value == brute_force_fpr_at_tpr(scores, positive, target), target


def test_fpr_at_tpr_default_is_95_percent():
    assert fpr_at_tpr([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.5
    rng = np.random.default_rng(3)
    positive = np.r_[np.ones(40, dtype=bool), np.zeros(60, dtype=bool)]
    scores = rng.normal(size=100) + positive
    assert fpr_at_tpr(scores, positive) == fpr_at_tpr(scores, positive, 0.95)
    assert fpr_at_tpr(scores, positive) == brute_force_fpr_at_tpr(scores, positive, 0.95)


def test_fpr_at_tpr_exact_boundary():
    # 20 positives: TPR 19/20 = 0.95 is reached exactly, and the point that reaches it counts.
    positive = np.r_[np.ones(20, dtype=bool), np.zeros(10, dtype=bool)]
    scores = np.r_[np.arange(100.0, 120.0), np.arange(10.0)]
    scores[0] = 4.5  # the lowest positive sits among the negatives 5..9
    # Threshold 101 catches 19 positives and no negative; 4.5 needs 5 negatives (5..9).
    assert fpr_at_tpr(scores, positive, 0.95) == 0.0
    assert fpr_at_tpr(scores, positive, 0.96) == 0.5
    assert fpr_at_tpr(scores, positive, 1.0) == 0.5


def test_fpr_at_tpr_perfect_and_worst():
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert fpr_at_tpr(scores, [0, 0, 0, 1, 1, 1]) == 0.0
    assert fpr_at_tpr(scores, [1, 1, 1, 0, 0, 0]) == 1.0
    assert fpr_at_tpr(np.full(6, 0.5), [0, 0, 0, 1, 1, 1]) == 1.0  # constant: only all-or-nothing


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, np.nan])
def test_fpr_at_tpr_bad_target_raises(target):
    with pytest.raises(UQEvalError, match="target TPR"):
        fpr_at_tpr([0.1, 0.2], [0, 1], target)
