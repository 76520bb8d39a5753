"""The pq metrics against independent implementations: scikit-learn's Brier score and log
loss, a plain numpy ECE, and scipy's bounded minimiser for the temperature."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss, log_loss

from uqeval import UQEvalError
from uqeval.metrics.ambiguity import rater_statistics
from uqeval.metrics.predictive import (
    PredictiveSums,
    TemperatureData,
    predictive_metrics,
    predictive_sums,
)

CLASSES, RATERS, IGNORE = 3, 2, 255


def _world(seed: int = 0, n_images: int = 5, size: int = 9):
    """Mean predictions of 3 classes with some probabilities at 0, and 2 raters who sample
    their labels from a sharper version of them and skip some pixels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_images, CLASSES, size, size)) * 2.5
    mean = np.exp(logits)
    mean /= mean.sum(axis=1, keepdims=True)
    mean[:, :, 0, 0] = [1.0, 0.0, 0.0]  # a floored probability
    mean = mean.astype(np.float32)
    sharper = mean.astype(np.float64) ** 1.5
    sharper /= sharper.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(sharper, axis=1)
    labels = np.stack(
        [(cumulative < rng.random((n_images, 1, size, size))).sum(axis=1) for _ in range(RATERS)], axis=1
    ).astype(np.uint8)
    labels = np.minimum(labels, CLASSES - 1)
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    labels[0, :, 1, 1] = IGNORE  # a pixel no rater labelled
    return mean, labels


def _pairs(mean: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (rater, pixel) pair with a label: its class and the mean prediction (pair, class)."""
    by_pixel = np.moveaxis(mean, 1, -1).astype(np.float64)
    classes, probabilities = [], []
    for rater in range(labels.shape[1]):
        labelled = labels[:, rater] != IGNORE
        classes.append(labels[:, rater][labelled])
        probabilities.append(by_pixel[labelled])
    return np.concatenate(classes), np.concatenate(probabilities)


def _numpy_ece(confidence: np.ndarray, accuracy: np.ndarray, bins: int = 20) -> float:
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            total += chosen.sum() * abs(accuracy[chosen].mean() - confidence[chosen].mean())
    return total / len(confidence)


def _scaled(mean: np.ndarray, temperature: float, axis: int) -> np.ndarray:
    z = np.log(np.maximum(mean.astype(np.float64), 1e-7)) / temperature
    z -= z.max(axis=axis, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=axis, keepdims=True)


def _nll_at(temperature: float, classes: np.ndarray, probabilities: np.ndarray) -> float:
    p = _scaled(probabilities, temperature, axis=1)
    return float(-np.log(p[np.arange(len(classes)), classes]).mean())


def _independent(mean, labels, pred, temperature=None) -> dict[str, float]:
    classes, probabilities = _pairs(mean, labels)
    if temperature is not None:
        probabilities = _scaled(probabilities, temperature, axis=1)
        mean = _scaled(mean, temperature, axis=1)
    onehot = np.eye(CLASSES)[classes]
    # Multi-class Brier as Σ_c of the one-vs-rest binary losses (sklearn's binary brier_score_loss).
    brier = sum(brier_score_loss(onehot[:, c], probabilities[:, c]) for c in range(CLASSES))
    nll = -np.log(np.maximum(probabilities[np.arange(len(classes)), classes], 1e-7)).mean()
    # scikit-learn's log loss of the floored rows, renormalised as it wants them: off by the floor's mass.
    floored = np.maximum(probabilities, 1e-7)
    floored /= floored.sum(axis=1, keepdims=True)
    assert log_loss(classes, floored, labels=list(range(CLASSES))) == pytest.approx(nll, rel=1e-5)
    agree = (labels == pred[:, None]).sum(axis=1)
    valid = (labels != IGNORE).sum(axis=1)
    counted = valid > 0
    confidence = mean.max(axis=1)[counted].astype(np.float64)
    return {"brier": brier, "nll": nll, "ece": _numpy_ece(confidence, agree[counted] / valid[counted])}


@pytest.fixture(scope="module")
def world():
    mean, labels = _world()
    pred = mean.argmax(axis=1)
    raters = rater_statistics(labels, pred, CLASSES)
    return mean, labels, pred, raters


def test_brier_nll_and_ece_match_sklearn_and_numpy(world):
    mean, labels, pred, raters = world
    metrics = predictive_metrics(predictive_sums(mean, labels, raters.agree, raters.valid))
    expected = _independent(mean, labels, pred)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_the_temperature_is_scipys_minimiser_and_the_scaled_metrics_match(world):
    mean, labels, pred, raters = world
    data = TemperatureData()
    data.add(mean[:3], labels[:3])
    data.merge(TemperatureData()).add(mean[3:], labels[3:])  # additive over images
    fit = data.fit()
    classes, probabilities = _pairs(mean, labels)
    found = minimize_scalar(
        _nll_at, bounds=(0.05, 20.0), args=(classes, probabilities), method="bounded", options={"xatol": 1e-10}
    )
    assert fit.temperature == pytest.approx(found.x, rel=1e-6)
    assert fit.temperature != pytest.approx(1.0, abs=0.05)  # the raters are sharper than the model
    assert fit.nll == pytest.approx(_nll_at(fit.temperature, classes, probabilities), rel=1e-12)
    assert fit.nll <= found.fun + 1e-15
    assert fit.n_pairs == len(classes) and fit.note == ""
    sums = predictive_sums(mean, labels, raters.agree, raters.valid, temperature=fit.temperature)
    metrics = predictive_metrics(sums)
    expected = _independent(mean, labels, pred, temperature=fit.temperature)
    for name, value in expected.items():
        assert metrics[name + "_ts"] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_sums_take_concatenate_and_add_as_the_images_and_pixels_do(world):
    mean, labels, _, raters = world
    whole = predictive_sums(mean, labels, raters.agree, raters.valid, temperature=0.7)
    parts = [
        predictive_sums(mean[s], labels[s], raters.agree[s], raters.valid[s], temperature=0.7)
        for s in (slice(0, 2), slice(2, None))
    ]
    joined = PredictiveSums.concatenate(parts)
    order = np.array([4, 0, 2])
    halves = [
        predictive_sums(mean[..., r, :], labels[..., r, :], raters.agree[:, r], raters.valid[:, r], temperature=0.7)
        for r in (slice(0, 4), slice(4, None))
    ]
    added = halves[0] + halves[1]
    for name in PredictiveSums._FIELDS:
        np.testing.assert_allclose(getattr(joined, name), getattr(whole, name), rtol=1e-15)
        np.testing.assert_allclose(getattr(whole.take(order), name), getattr(whole, name)[order])
        np.testing.assert_allclose(getattr(added, name), getattr(whole, name), rtol=1e-12)
    chosen = np.zeros(len(mean), dtype=bool)
    chosen[[1, 3]] = True
    assert predictive_metrics(whole, chosen) == predictive_metrics(whole.take(chosen))


def test_bounds_are_kept_and_noted_and_no_pair_is_an_error():
    # Labels that always contradict a confident mean: the flattest scaling is best.
    mean = np.array([[[[0.9, 0.8]], [[0.1, 0.2]]]], dtype=np.float32)
    data = TemperatureData()
    data.add(mean, np.array([[[[1, 0]]]], dtype=np.uint8))
    fit = data.fit()
    assert fit.temperature == 20.0 and "largest" in fit.note
    with pytest.raises(UQEvalError, match="no calibration pixel"):
        empty = TemperatureData()
        empty.add(mean, np.full((1, 1, 1, 2), IGNORE, dtype=np.uint8))
        empty.fit()
    sums = predictive_sums(
        mean, np.full((1, 1, 1, 2), IGNORE, dtype=np.uint8), np.zeros((1, 1, 2)), np.zeros((1, 1, 2))
    )
    assert all(np.isnan(value) for value in predictive_metrics(sums).values())


def test_the_smallest_temperature_is_kept_and_noted():
    # Every label agrees with a hesitant mean: the sharpest scaling is best.
    mean = np.array([[[[0.6, 0.4]], [[0.4, 0.6]]]], dtype=np.float32)
    data = TemperatureData()
    data.add(mean, np.array([[[[0, 1]]]], dtype=np.uint8))
    fit = data.fit()
    assert fit.temperature == 0.05 and "smallest" in fit.note
