"""The fitted quantities: τ, the EU scale and Platt scaling from sums, in two looks, and one entry per quantity."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.metrics.ambiguity import RaterStatistics
from uqeval.metrics.calibration import PlattTable
from uqeval.names import MEASURES
from uqeval.scoring import fitting
from uqeval.scoring.fitting import FitSetup, Fitted, fit, read_sums


def maps_of(u: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Maps with the same ``U`` for AU, EU and TU."""
    u = np.asarray(u, dtype=np.float32)
    return {"au": u, "eu": u, "tu": u, "pred": np.asarray(pred, dtype=np.uint8)}


def fit_batches(
    batches: list[tuple[dict[str, np.ndarray], RaterStatistics | None]],
    conventions: Conventions | None = None,
    **wanted,
) -> Fitted:
    """Fit as the engine does: the ``read`` sums batch by batch, then the spilled maps in order."""
    n_images = sum(len(maps["au"]) for maps, _ in batches)
    setup = FitSetup(conventions or Conventions(), images=np.ones(n_images, dtype=bool), **wanted)
    sums = [read_sums(setup, maps, raters, None, np.ones(len(maps["au"]), dtype=bool)) for maps, raters in batches]
    return fit(setup, sums, lambda: iter(batches))


def tau(u, pred, background: int = 0) -> float:
    fitted = fit_batches([(maps_of(u, pred), None)], thresholds=True, background=background)
    assert len(set(fitted.thresholds.values())) == 1  # one U for the three measures
    return fitted.thresholds["au"]


# --------------------------------------------------------------------------- τ


def test_tau_hand_values():
    u = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    pred = np.array([[[0, 0], [1, 2]]])  # half the pixels are background
    # q = 0.5, h = 3 · 0.5 = 1.5: halfway between 2 and 3.
    assert tau(u, pred) == pytest.approx(2.5, abs=1e-15)
    # Background 1: q = 0.25, h = 0.75, τ = 1.75.
    assert tau(u, pred, background=1) == pytest.approx(1.75, abs=1e-15)
    # Background 7 is never predicted: q = 0, τ = min U.
    assert tau(u, pred, background=7) == 1.0
    # Everything background: q = 1, τ = max U.
    assert tau(u, np.zeros_like(pred)) == 4.0


def test_tau_pools_images_and_batches_and_averages_fractions():
    u = np.array([[[0.0, 1.0, 2.0, 3.0]], [[10.0, 20.0, 30.0, 40.0]]])
    pred = np.array([[[0, 0, 0, 1]], [[1, 1, 1, 0]]])  # fractions 3/4 and 1/4: q = 1/2
    # Pooled sorted values 0 1 2 3 10 20 30 40; h = 7 / 2 = 3.5: between 3 and 10.
    assert tau(u, pred) == pytest.approx(6.5, abs=1e-14)
    two_batches = fit_batches([(maps_of(u[:1], pred[:1]), None), (maps_of(u[1:], pred[1:]), None)], thresholds=True)
    assert two_batches.thresholds["au"] == pytest.approx(6.5, abs=1e-14)
    # Per image the quantiles would be 2.25 and 17.5: pooling is not averaging per-image τ.
    assert tau(u[:1], pred[:1]) == pytest.approx(2.25, abs=1e-14)
    assert tau(u[1:], pred[1:]) == pytest.approx(17.5, abs=1e-14)


def reference_tau(u: np.ndarray, pred: np.ndarray, background: int) -> float:
    """``quantile(U, q)`` written out: ``q`` the mean background fraction, interpolated at ``h = (n - 1) q``."""
    q = sum(np.count_nonzero(p == background) / p.size for p in pred) / len(pred)
    x = np.sort(np.asarray(u, dtype=np.float64).ravel())
    h = (x.size - 1) * q
    low = math.floor(h)
    high = min(low + 1, x.size - 1)
    return float(x[low] + (h - low) * (x[high] - x[low]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), n_images=st.integers(1, 3), side=st.integers(1, 12), background=st.integers(0, 3)
)
def test_tau_matches_first_principles(seed, n_images, side, background):
    rng = np.random.default_rng(seed)
    u = rng.gamma(0.5, size=(n_images, side, side + 1)).astype(np.float32)
    pred = rng.integers(0, 4, size=u.shape)
    # float32 maps: numpy interpolates in float32.
    assert tau(u, pred, background) == pytest.approx(reference_tau(u, pred, background), rel=1e-6, abs=1e-7)


def test_members_fraction_needs_the_probabilities():
    u = np.ones((1, 2, 2))
    with pytest.raises(UQEvalError, match="threshold_fraction 'members' needs each member's prediction"):
        fit_batches([(maps_of(u, np.zeros(u.shape)), None)], Conventions(threshold_fraction="members"), thresholds=True)


# --------------------------------------------------------------------------- every quantity


def random_batch(rng: np.random.Generator, n_images: int) -> tuple[dict[str, np.ndarray], RaterStatistics]:
    au = rng.gamma(0.5, size=(n_images, 6, 7)).astype(np.float32)
    eu = rng.gamma(0.2, size=au.shape).astype(np.float32)
    maps = {"au": au, "eu": eu, "tu": au + eu, "pred": rng.integers(0, 3, size=au.shape).astype(np.uint8)}
    valid = np.full(au.shape, 3, dtype=np.int32)
    agree = rng.binomial(3, 1 / (1 + au + eu)).astype(np.int32)  # more uncertain, less often right
    return maps, RaterStatistics(np.zeros(au.shape, dtype=np.float32), agree, valid)


def split(maps: dict[str, np.ndarray], raters: RaterStatistics, *stops: int):
    edges = [0, *stops, len(maps["au"])]
    return [
        ({name: values[a:b] for name, values in maps.items()}, raters.select(np.arange(a, b)))
        for a, b in itertools.pairwise(edges)
    ]


def test_fits_do_not_depend_on_how_the_images_are_batched():
    maps, raters = random_batch(np.random.default_rng(3), 7)
    wanted = {"conventions": Conventions(rescale_eu=True), "thresholds": True, "platt": True}
    whole = fit_batches([(maps, raters)], **wanted)
    assert set(whole.parameters) == {"eu_scale", "threshold_level", "thresholds", "platt", "pavpu_thresholds"}
    assert whole.n_images == 7
    for stops in [(3,), (1, 2, 5)]:
        assert fit_batches(split(maps, raters, *stops), **wanted).to_dict() == whole.to_dict()


def test_the_spilled_look_sees_the_maps_as_scored():
    """τ and Platt scaling are fitted on ``EU' = r·EU`` and ``TU' = AU + EU'``, with ``r`` of the ``read`` look."""
    maps, raters = random_batch(np.random.default_rng(5), 4)
    fitted = fit_batches([(maps, raters)], Conventions(rescale_eu=True), thresholds=True, platt=True)
    r = float(maps["au"].sum(dtype=np.float64) / maps["eu"].sum(dtype=np.float64))
    assert fitted.eu_scale == pytest.approx(r, rel=1e-12)
    eu = (maps["eu"] * np.float32(fitted.eu_scale)).astype(np.float32)
    level = fitted["threshold_level"]
    assert fitted.thresholds["eu"] == float(np.quantile(eu, level))
    assert fitted.thresholds["tu"] == float(np.quantile(maps["au"] + eu, level))
    assert fitted.thresholds["au"] == float(np.quantile(maps["au"], level))
    table = PlattTable()
    table.add(eu, raters.agree, raters.valid)
    assert fitted.platt["eu"] == table.fit()


def test_pavpu_tau_is_the_quantile_of_the_rated_pixels_at_their_accuracy():
    """PAvPU's τ: numpy's quantile of U (as scored: EU rescaled) over the pixels with a
    rater, at the fraction of them where at least half the raters agree."""
    maps, raters = random_batch(np.random.default_rng(11), 5)
    valid = raters.valid.copy()
    valid[0, :2] = 0  # pixels without a rater count in neither q nor the quantile
    raters = RaterStatistics(raters.variance, np.minimum(raters.agree, valid), valid)
    fitted = fit_batches(split(maps, raters, 2), Conventions(rescale_eu=True), platt=True)
    counted = valid > 0
    level = np.mean((raters.agree / np.maximum(valid, 1) >= 0.5)[counted])
    eu = (maps["eu"] * np.float32(fitted.eu_scale)).astype(np.float32)
    for measure, u in (("au", maps["au"]), ("eu", eu), ("tu", maps["au"] + eu)):
        assert fitted.pavpu_thresholds[measure] == float(np.quantile(u[counted], level))
    assert fitted.to_dict()["pavpu_thresholds"] == dict(fitted.pavpu_thresholds)
    unrated = RaterStatistics(raters.variance, raters.agree * 0, raters.valid * 0)
    assert fit_batches([(maps, unrated)], platt=True).pavpu_thresholds == {}
    assert "pavpu_thresholds" not in fit_batches([(maps, unrated)], platt=True).to_dict()


def test_platt_without_a_rated_pixel_is_empty_and_without_raters_refused():
    maps, raters = random_batch(np.random.default_rng(7), 2)
    unrated = RaterStatistics(raters.variance, raters.agree * 0, raters.valid * 0)
    assert fit_batches([(maps, unrated)], platt=True).platt == {}
    with pytest.raises(UQEvalError, match="Platt scaling needs rater labels"):
        fit_batches([(maps, None)], platt=True)


def test_nothing_wanted_fits_nothing_and_writes_the_defaults():
    maps, raters = random_batch(np.random.default_rng(9), 2)
    fitted = fit_batches([(maps, raters)])
    assert fitted == Fitted()
    assert fitted.to_dict() == {
        "images_from": "calibration",
        "n_images": 0,
        "eu_scale": 1.0,
        "thresholds": {},
        "platt": {},
    }
    assert list(fitted.to_dict()) == ["images_from", "n_images", "eu_scale", "thresholds", "platt"]
    with pytest.raises(KeyError, match="no fitted quantity is named 'nope'"):
        fitted["nope"]


def test_no_image_to_fit_on_fits_nothing():
    setup = FitSetup(Conventions(rescale_eu=True), images=np.zeros(3, dtype=bool), thresholds=True, platt=True)
    assert setup.wanted == ()
    assert fit(setup, [], lambda: iter(())) == Fitted()


@dataclass(frozen=True)
class MeanTU:
    """A made-up quantity of the ``read`` look: the mean TU of the images fitted on."""

    name: str = "mean_tu"
    look: str = "read"
    default: float = 0.0

    def wanted(self, setup):
        return True

    def empty(self, setup):
        return np.zeros(2)

    def add(self, sums, images, setup):
        sums += [images.maps["tu"].sum(dtype=np.float64), images.maps["tu"].size]
        return sums

    def merge(self, sums, other):
        return sums + other

    def fit(self, sums, setup):
        return float(sums[0] / sums[1])

    def to_json(self, parameters):
        return {"mean": parameters}


def test_a_new_quantity_is_one_entry(monkeypatch):
    monkeypatch.setattr(fitting, "FITTED_QUANTITIES", (*fitting.FITTED_QUANTITIES, MeanTU()))
    maps, raters = random_batch(np.random.default_rng(11), 5)
    fitted = fit_batches(split(maps, raters, 2), platt=True)
    assert fitted["mean_tu"] == pytest.approx(float(maps["tu"].mean(dtype=np.float64)), rel=1e-12)
    assert list(fitted.to_dict())[-1] == "mean_tu"
    assert fitted.to_dict()["mean_tu"] == {"mean": fitted["mean_tu"]}
    assert set(fitted.platt) == set(MEASURES)


@dataclass(frozen=True)
class AboveMeanTU:
    """A made-up quantity of two ``spilled`` looks: the share of pixels whose TU is above
    the mean TU, the mean from the first look and the share from the second."""

    name: str = "above_mean_tu"
    look: str = "spilled"
    default: float = 0.0

    def wanted(self, setup):
        return True

    def empty(self, setup):
        return np.zeros(2)

    def add(self, sums, images, setup):
        tu = images.maps["tu"]
        if self.name in setup.again:
            sums += [np.count_nonzero(tu > setup.again[self.name]), tu.size]
        else:
            sums += [tu.sum(dtype=np.float64), tu.size]
        return sums

    def merge(self, sums, other):
        return sums + other

    def another_look(self, sums, setup):
        return None if self.name in setup.again else float(sums[0] / sums[1])

    def fit(self, sums, setup):
        return float(sums[0] / sums[1])

    def to_json(self, parameters):
        return None


def counting_looks(setup: FitSetup, batches) -> tuple[Fitted, list[int]]:
    """Fit as :func:`fit_batches` does, and count the calls of ``spilled`` (one per look)."""
    sums = [read_sums(setup, maps, raters, None, np.ones(len(maps["au"]), dtype=bool)) for maps, raters in batches]
    looks = []
    return fit(setup, sums, lambda: looks.append(1) or iter(batches)), looks


def test_a_quantity_may_ask_for_another_spilled_look(monkeypatch):
    """The spilled maps are looked at once more, and the second look adds to the
    quantities that asked for it alone, with what they asked for in ``setup.again``."""
    monkeypatch.setattr(fitting, "FITTED_QUANTITIES", (*fitting.FITTED_QUANTITIES, AboveMeanTU()))
    seen: list[FitSetup] = []
    add = AboveMeanTU.add
    monkeypatch.setattr(
        AboveMeanTU, "add", lambda self, sums, images, setup: add(self, sums, images, seen.append(setup) or setup)
    )
    maps, raters = random_batch(np.random.default_rng(12), 5)
    batches = split(maps, raters, 2, 3)
    fitted, looks = counting_looks(FitSetup(Conventions(), images=np.ones(5, dtype=bool), thresholds=True), batches)
    tu = maps["tu"]
    mean = float(tu.sum(dtype=np.float64) / tu.size)
    assert fitted["above_mean_tu"] == np.count_nonzero(tu > mean) / tu.size
    assert len(looks) == 2
    assert [setup.again for setup in seen] == [{}] * 3 + [{"above_mean_tu": mean}] * 3
    assert [quantity.name for quantity in seen[0].looking] == ["thresholds", "above_mean_tu"]
    assert [quantity.name for quantity in seen[-1].looking] == ["above_mean_tu"]
    assert fitted.thresholds == fit_batches(batches, thresholds=True).thresholds


def test_spilled_maps_are_looked_at_once_without_cal_and_twice_with_it():
    """CAL's PAvPU τ takes the second look; the ``threshold`` aggregation's τ does not."""
    maps, raters = random_batch(np.random.default_rng(13), 4)
    for wanted, n_looks in (({"thresholds": True}, 1), ({"platt": True}, 2), ({"thresholds": True, "platt": True}, 2)):
        _, looks = counting_looks(FitSetup(Conventions(), images=np.ones(4, dtype=bool), **wanted), [(maps, raters)])
        assert len(looks) == n_looks, wanted


@pytest.mark.parametrize("method", ["linear", "inverted_cdf", "hazen", "nearest", "midpoint"])
def test_pavpu_tau_takes_the_quantile_method_however_the_images_are_batched(method):
    maps, raters = random_batch(np.random.default_rng(14), 6)
    conventions = Conventions(quantile_method=method)
    counted = raters.valid > 0
    level = np.float64(np.count_nonzero(2 * raters.agree >= raters.valid) / np.count_nonzero(counted))
    expected = {m: float(np.quantile(maps[m][counted], level, method=method)) for m in MEASURES}
    for stops in [(), (1,), (2, 3, 5)]:
        assert fit_batches(split(maps, raters, *stops), conventions, platt=True).pavpu_thresholds == expected


def test_pavpu_tau_is_fitted_in_memory_that_does_not_grow_with_the_calibration_pixels(monkeypatch):
    """PAvPU's τ keeps counts of a fixed size: 16 times the calibration pixels (64
    batches of 4 images of 64 × 64 against 4 batches; keeping their U would add 12 MB)
    leave the peak of its fit within 0.1 MB. (Platt's table, also bounded, fills up
    with more distinct values of U, so it is left out here.)"""
    monkeypatch.setattr(fitting, "FITTED_QUANTITIES", (fitting.EUScale(), fitting.PAvPUThresholds()))

    def batches(n_batches: int):
        for number in range(n_batches):
            rng = np.random.default_rng(number)
            au = rng.gamma(0.5, size=(4, 64, 64)).astype(np.float32)
            eu = rng.gamma(0.2, size=au.shape).astype(np.float32)
            agree = rng.binomial(3, 1 / (1 + au + eu)).astype(np.int32)
            maps = {"au": au, "eu": eu, "tu": au + eu, "pred": np.zeros(au.shape, dtype=np.uint8)}
            yield maps, RaterStatistics(np.zeros(au.shape, dtype=np.float32), agree, np.full(au.shape, 3, np.int32))

    def peak(n_batches: int) -> int:
        setup = FitSetup(Conventions(), images=np.ones(4 * n_batches, dtype=bool), platt=True)
        tracemalloc.start()
        try:
            fitted = fit(setup, [], lambda: batches(n_batches))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert set(fitted.pavpu_thresholds) == set(MEASURES)

    peak(1)  # imports and caches
    assert peak(64) < peak(4) + 100_000
