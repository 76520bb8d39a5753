"""Aggregation strategies (docs/metrics.md) against brute-force and first-principles references.

The strategies are checked as the built-in plugin offers them
(:func:`uqeval.builtin_plugin.uqeval_aggregators`), with no plugin manager in between;
the tests at the end check that name lookup (:func:`uqeval.aggregate`, the plugin
manager) gives the same strategies, with only the built-ins loaded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import uqeval
import uqeval.plugins
from uqeval import UQEvalError, aggregation, builtin_plugin
from uqeval.aggregation import (
    AggregationParameters,
    Aggregator,
    border_length,
    foreground_area,
    per_image,
)
from uqeval.plugins import LOAD_PLUGINS_ENV, PluginInfo, PluginManager

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)
BUILT_INS = ("area", "border", "mean", "patch_max", "sum", "threshold")
#: The built-in strategies by name, as the built-in plugin offers them.
STRATEGIES = builtin_plugin.uqeval_aggregators()


def aggregate(
    name: str, u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters | None = None
) -> np.ndarray:
    """The built-in strategy ``name`` applied: :func:`uqeval.aggregate` without the plugin manager."""
    return STRATEGIES[name](u, pred, parameters or AggregationParameters())


@pytest.fixture
def builtins_only(monkeypatch):
    """The process's plugin manager with no entry point loaded (hermetic); rebuilt afterwards."""
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")
    uqeval.plugins.reset_plugin_manager()
    yield uqeval.plugins.plugin_manager()
    uqeval.plugins.reset_plugin_manager()


# --------------------------------------------------------------------------- references


def reference_patch_max(u: np.ndarray, k: int) -> np.ndarray:
    """Max over every stride-1 window of ``min(k, H) × min(k, W)`` of the window mean, by brute force."""
    scores = []
    for image in np.asarray(u, dtype=np.float64):
        window = (min(k, image.shape[0]), min(k, image.shape[1]))
        scores.append(sliding_window_view(image, window).mean(axis=(-2, -1)).max())
    return np.array(scores)


def reference_quantile(values: np.ndarray, q: float) -> float:
    """``numpy.quantile(values, q, method="linear")`` written out: interpolate at ``h = (n - 1) q``."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    h = (x.size - 1) * q
    low = math.floor(h)
    high = min(low + 1, x.size - 1)
    return float(x[low] + (h - low) * (x[high] - x[low]))


def reference_fit_threshold(u: np.ndarray, pred: np.ndarray, background: int = 0) -> float:
    fractions = [np.count_nonzero(p == background) / p.size for p in pred]
    return reference_quantile(u, sum(fractions) / len(fractions))


def reference_threshold_scores(u: np.ndarray, tau: float) -> np.ndarray:
    scores = []
    for image in u:
        above = [float(value) for value in image.ravel() if value >= tau]
        scores.append(sum(above) / len(above) if above else 0.0)
    return np.array(scores)


def reference_border_length(pred: np.ndarray) -> np.ndarray:
    """4-neighbour pairs with different labels, counted with explicit loops."""
    lengths = []
    for image in pred:
        height, width = image.shape
        count = 0
        for y in range(height):
            for x in range(width):
                if y + 1 < height and image[y, x] != image[y + 1, x]:
                    count += 1
                if x + 1 < width and image[y, x] != image[y, x + 1]:
                    count += 1
        lengths.append(count)
    return np.array(lengths)


@st.composite
def batches(draw, max_side: int = 12, max_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 maps and multi-class predictions ``(image, y, x)``."""
    n_images = draw(st.integers(1, 3))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    n_classes = draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u = rng.gamma(0.5, size=(n_images, height, width)).astype(np.float32)
    pred = rng.integers(0, n_classes, size=(n_images, height, width)).astype(np.uint8)
    return u, pred


# --------------------------------------------------------------------------- patch_max


@PROPERTY_SETTINGS
@given(data=st.data())
def test_patch_max_matches_brute_force(data):
    u, pred = data.draw(batches(max_side=25))
    k = data.draw(st.integers(1, 14))
    scores = aggregate("patch_max", u, pred, AggregationParameters(patch_size=k))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, reference_patch_max(u, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "k"),
    [
        ((3, 7), 10),  # smaller than the patch along both axes: the whole image
        ((3, 17), 10),  # clamped along y only: 3 × 10 windows
        ((15, 4), 10),  # clamped along x only: 10 × 4 windows
        ((12, 13), 10),
        ((10, 10), 10),  # exactly one window
        ((9, 11), 1),  # k = 1: the largest pixel
        ((1, 1), 10),
    ],
)
def test_patch_max_shapes_against_sliding_window_view(shape, k):
    rng = np.random.default_rng(sum(shape) * 31 + k)
    u = rng.random((3, *shape)).astype(np.float32)
    pred = np.zeros(u.shape, dtype=np.uint8)
    scores = aggregate("patch_max", u, pred, AggregationParameters(patch_size=k))
    np.testing.assert_allclose(scores, reference_patch_max(u, k), rtol=1e-12, atol=1e-12)


def test_patch_max_small_image_is_its_mean_and_k1_is_its_max():
    rng = np.random.default_rng(5)
    u = rng.random((2, 3, 7))
    pred = np.zeros(u.shape, dtype=np.uint8)
    np.testing.assert_allclose(aggregate("patch_max", u, pred), u.mean(axis=(1, 2)), rtol=1e-13)
    ones = AggregationParameters(patch_size=1)
    np.testing.assert_allclose(aggregate("patch_max", u, pred, ones), u.max(axis=(1, 2)), rtol=1e-13)


def test_patch_max_hand_values_default_k_is_10():
    u = np.zeros((3, 20, 20))
    u[0, 5:15, 7:17] = 1.0  # a 10 × 10 hot block: one window covers it exactly
    u[1, 0, 0] = 1.0  # one hot pixel: 1 / 100
    u[2, 18:, 18:] = 2.0  # a 2 × 2 block in the corner: 8 / 100
    pred = np.zeros(u.shape, dtype=np.uint8)
    assert AggregationParameters().patch_size == 10
    np.testing.assert_allclose(aggregate("patch_max", u, pred), [1.0, 0.01, 0.08], rtol=1e-14)
    # k = 11: the hot block fills 100 of the 121 pixels of the best window.
    big = AggregationParameters(patch_size=11)
    np.testing.assert_allclose(aggregate("patch_max", u, pred, big), [100 / 121, 1 / 121, 8 / 121], rtol=1e-14)


# --------------------------------------------------------------------------- threshold


@PROPERTY_SETTINGS
@given(data=st.data())
def test_threshold_score_matches_first_principles(data):
    u, pred = data.draw(batches())
    u = u.astype(np.float64)
    tau = reference_fit_threshold(u, pred)
    scores = aggregate("threshold", u, pred, AggregationParameters(threshold=tau))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, reference_threshold_scores(u, tau), rtol=1e-12, atol=0)


def test_threshold_fit_then_score_end_to_end():
    rng = np.random.default_rng(11)
    calibration_u = rng.random((4, 8, 9)).astype(np.float32)
    calibration_pred = (rng.random((4, 8, 9)) < 0.3).astype(np.uint8)  # ~70 % background
    tau = reference_fit_threshold(calibration_u, calibration_pred)
    assert 0.55 < tau < 0.85
    test_u = rng.random((3, 8, 9)).astype(np.float32)
    test_pred = np.zeros(test_u.shape, dtype=np.uint8)
    scores = aggregate("threshold", test_u, test_pred, AggregationParameters(threshold=tau))
    np.testing.assert_allclose(scores, reference_threshold_scores(test_u, tau), rtol=1e-6)
    assert (scores >= tau).all()


def test_threshold_includes_values_equal_to_tau():
    u = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    pred = np.zeros(u.shape, dtype=np.uint8)
    parameters = AggregationParameters(threshold=4.0)  # τ fitted on these pixels: q = 1, the largest U
    np.testing.assert_array_equal(aggregate("threshold", u, pred, parameters), [4.0])
    low = AggregationParameters(threshold=2.0)
    np.testing.assert_allclose(aggregate("threshold", u, pred, low), [3.0], rtol=1e-15)


def test_threshold_none_above_tau_scores_zero():
    u = np.array([[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.9], [0.6, 0.7]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = np.zeros(u.shape, dtype=np.uint8)
    scores = aggregate("threshold", u, pred, AggregationParameters(threshold=0.55))
    np.testing.assert_allclose(scores, [0.0, (0.9 + 0.6 + 0.7) / 3, 0.0], rtol=1e-15)
    assert np.isfinite(scores).all()
    everything_below = aggregate("threshold", u, pred, AggregationParameters(threshold=5.0))
    np.testing.assert_array_equal(everything_below, [0.0, 0.0, 0.0])


def test_threshold_without_tau_raises():
    u = np.ones((2, 3, 3))
    pred = np.zeros(u.shape, dtype=np.uint8)
    with pytest.raises(UQEvalError, match="threshold"):
        aggregate("threshold", u, pred)
    with pytest.raises(UQEvalError, match="threshold"):
        STRATEGIES["threshold"](u, pred, AggregationParameters(threshold=None))
    # τ = 0 is a valid threshold, not a missing one.
    np.testing.assert_array_equal(aggregate("threshold", u, pred, AggregationParameters(threshold=0.0)), [1.0, 1.0])


# --------------------------------------------------------------------------- area, border, mean, sum


def test_docstring_example_hand_values():
    u = np.ones((1, 4, 4), dtype=np.float32)
    pred = np.zeros((1, 4, 4), dtype=np.uint8)
    pred[0, 1:3, 1:3] = 1
    np.testing.assert_array_equal(foreground_area(pred, 0), [4])
    np.testing.assert_array_equal(border_length(pred), [8])
    expected = {"mean": 1.0, "sum": 16.0, "area": 4.0, "border": 2.0, "patch_max": 1.0}
    for name, value in expected.items():
        assert aggregate(name, u, pred)[0] == pytest.approx(value, rel=1e-15), name


@PROPERTY_SETTINGS
@given(data=st.data())
def test_border_length_matches_loops(data):
    _, pred = data.draw(batches(max_side=9, max_classes=5))
    np.testing.assert_array_equal(border_length(pred), reference_border_length(pred))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_area_border_mean_sum_match_definitions(data):
    u, pred = data.draw(batches(max_side=9))
    background = data.draw(st.integers(0, 3))
    parameters = AggregationParameters(background=background)
    sums = np.array([sum(float(v) for v in image.ravel()) for image in u])
    pixels = u.shape[1] * u.shape[2]
    areas = np.array([sum(int(label != background) for label in image.ravel()) for image in pred])
    borders = reference_border_length(pred)
    np.testing.assert_array_equal(foreground_area(pred, background), areas)
    expected = {
        "mean": sums / pixels,
        "sum": sums,
        "area": sums / np.where(areas == 0, 1, areas),
        "border": sums / np.where(borders == 0, 1, borders),
    }
    for name, values in expected.items():
        scores = aggregate(name, u, pred, parameters)
        assert scores.dtype == np.float64
        assert scores.shape == (u.shape[0],)
        np.testing.assert_allclose(scores, values, rtol=1e-12, atol=0, err_msg=name)


def test_empty_prediction_divides_by_one():
    rng = np.random.default_rng(2)
    u = rng.random((2, 5, 6))
    pred = np.zeros(u.shape, dtype=np.uint8)  # A = 0 and B = 0
    np.testing.assert_array_equal(foreground_area(pred, 0), [0, 0])
    np.testing.assert_array_equal(border_length(pred), [0, 0])
    sums = u.sum(axis=(1, 2))
    np.testing.assert_allclose(aggregate("area", u, pred), sums, rtol=1e-14)
    np.testing.assert_allclose(aggregate("border", u, pred), sums, rtol=1e-14)
    # All one non-background class: A = 30 but still B = 0.
    ones = np.ones(u.shape, dtype=np.uint8)
    np.testing.assert_allclose(aggregate("area", u, ones), sums / 30, rtol=1e-14)
    np.testing.assert_allclose(aggregate("border", u, ones), sums, rtol=1e-14)


def test_non_zero_background_class():
    u = np.full((2, 3, 4), 0.5)
    pred = np.full((2, 3, 4), 2, dtype=np.uint8)
    pred[0, 0, :3] = 0  # 3 pixels of class 0: foreground when the background is 2
    pred[1] = 2  # all background
    parameters = AggregationParameters(background=2)
    np.testing.assert_array_equal(foreground_area(pred, 2), [3, 0])
    np.testing.assert_allclose(aggregate("area", u, pred, parameters), [6.0 / 3, 6.0], rtol=1e-15)
    # With the default background 0 the same prediction counts the other 9 and 12 pixels.
    np.testing.assert_allclose(aggregate("area", u, pred), [6.0 / 9, 6.0 / 12], rtol=1e-15)
    # Border does not depend on which class is background: 3 pairs below + 1 to the right.
    np.testing.assert_array_equal(border_length(pred), [4, 0])
    np.testing.assert_allclose(aggregate("border", u, pred, parameters), [6.0 / 4, 6.0], rtol=1e-15)


def test_border_counts_every_label_change_not_just_foreground():
    pred = np.array([[[0, 1, 2], [0, 1, 2]]])  # two vertical class boundaries, 2 pairs each
    np.testing.assert_array_equal(border_length(pred), [4])
    pred = np.array([[[1, 2], [2, 1]]])  # checkerboard: all 4 pairs differ
    np.testing.assert_array_equal(border_length(pred), [4])
    pred = np.array([[[3]]])
    np.testing.assert_array_equal(border_length(pred), [0])


def test_sums_accumulate_in_float64():
    u = np.full((1, 300, 300), 0.1, dtype=np.float32)  # float32 accumulation would drift
    pred = np.zeros(u.shape, dtype=np.uint8)
    expected = 90000 * float(np.float32(0.1))
    assert aggregate("sum", u, pred)[0] == pytest.approx(expected, rel=1e-12)
    assert aggregate("mean", u, pred)[0] == pytest.approx(float(np.float32(0.1)), rel=1e-12)


def test_images_are_scored_independently():
    rng = np.random.default_rng(9)
    u = rng.random((4, 11, 12))
    pred = rng.integers(0, 3, size=u.shape)
    parameters = AggregationParameters(threshold=0.6, patch_size=4)
    for name in BUILT_INS:
        together = aggregate(name, u, pred, parameters)
        alone = [aggregate(name, u[i : i + 1], pred[i : i + 1], parameters)[0] for i in range(len(u))]
        np.testing.assert_allclose(together, alone, rtol=1e-14, err_msg=name)


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("name", BUILT_INS)
def test_bad_shapes_raise(name):
    parameters = AggregationParameters(threshold=0.5)
    with pytest.raises(UQEvalError, match="shape"):
        aggregate(name, np.ones((2, 3, 3)), np.zeros((2, 3, 4), dtype=np.uint8), parameters)
    with pytest.raises(UQEvalError, match="shape"):
        aggregate(name, np.ones((3, 3)), np.zeros((3, 3), dtype=np.uint8), parameters)


# --------------------------------------------------------------------------- the built-in strategies by name


def test_built_in_strategies():
    assert sorted(STRATEGIES) == sorted(BUILT_INS)
    functions = {
        "mean": aggregation.mean,
        "sum": aggregation.total,
        "patch_max": aggregation.patch_max,
        "threshold": aggregation.threshold,
        "area": aggregation.area,
        "border": aggregation.border,
    }
    for name, aggregator in STRATEGIES.items():
        assert aggregator.name == name
        assert aggregator.source == "uqeval"
        assert aggregator.fitted == (name == "threshold")
        assert aggregator.function is functions[name]
        assert aggregator.description
    # Built afresh on every call: there is no global registry to change.
    fresh = builtin_plugin.uqeval_aggregators()
    assert fresh == STRATEGIES
    assert fresh is not STRATEGIES


def test_aggregation_module_is_pure():
    """It defines the strategies; names are resolved only by the plugin manager."""
    for removed in ("AGGREGATORS", "register_aggregator", "get_aggregator", "aggregate"):
        assert not hasattr(aggregation, removed), removed


def test_lookup_by_name_gives_the_built_in_strategies(builtins_only):
    assert builtins_only.aggregators() == STRATEGIES
    rng = np.random.default_rng(8)
    u = rng.random((3, 7, 9))
    pred = rng.integers(0, 3, size=u.shape)
    parameters = AggregationParameters(background=1, patch_size=3, threshold=0.4)
    for name in BUILT_INS:
        assert builtins_only.aggregator(name) == STRATEGIES[name]
        np.testing.assert_array_equal(
            uqeval.aggregate(name, u, pred, parameters), aggregate(name, u, pred, parameters), err_msg=name
        )
    # parameters default to AggregationParameters(): background 0, k = 10.
    np.testing.assert_array_equal(uqeval.aggregate("area", u, pred), aggregate("area", u, pred))
    assert not np.array_equal(uqeval.aggregate("area", u, pred), uqeval.aggregate("area", u, pred, parameters))


class Offers:
    """A plugin object whose ``uqeval_aggregators`` hook offers ``aggregators``."""

    def __init__(self, aggregators: dict[str, Aggregator]) -> None:
        self.aggregators = aggregators

    @uqeval.hookimpl
    def uqeval_aggregators(self):
        return self.aggregators


def test_unknown_name_lists_known_names(builtins_only):
    with pytest.raises(UQEvalError) as info:
        builtins_only.aggregator("nope")
    assert str(info.value) == "unknown aggregation 'nope'; choose one of area, border, mean, patch_max, sum, threshold"
    with pytest.raises(UQEvalError, match=r"^unknown aggregation 'nope'; choose one of area, border"):
        uqeval.aggregate("nope", np.ones((1, 2, 2)), np.zeros((1, 2, 2), dtype=np.uint8))
    # A plugin's names are listed with the built-ins.
    manager = PluginManager(load_entry_points=False)
    assert manager.register(Offers({"alpha": Aggregator("alpha", per_image(lambda u, p: 0.0), "zero")}))
    with pytest.raises(UQEvalError) as info:
        manager.aggregator("nope")
    assert str(info.value) == (
        "unknown aggregation 'nope'; choose one of alpha, area, border, mean, patch_max, sum, threshold"
    )


def test_a_plugin_strategy_on_a_manager_of_ones_own(builtins_only):
    median = Aggregator("median", per_image(lambda u, p: np.median(u)), "median of U")
    manager = PluginManager(load_entry_points=False)
    assert manager.register(Offers({"median": median}), PluginInfo("medians", "plugin-a", "1.0", "medians"))
    found = manager.aggregator("median")
    assert (found.name, found.description, found.source) == ("median", "median of U", "plugin 'medians' (plugin-a 1.0)")
    u = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    assert found(u, np.zeros(u.shape, dtype=np.uint8), AggregationParameters()).tolist() == [4.0, 13.0]
    # The process's manager, and the built-ins, are untouched.
    assert "median" not in builtins_only.aggregators()
    assert builtins_only.aggregators() == STRATEGIES


def test_duplicate_name_from_another_source_names_both():
    manager = PluginManager(load_entry_points=False)
    impostor = Aggregator("mean", per_image(lambda u, p: 1.0), "not the mean")
    assert manager.register(Offers({"mean": impostor}), PluginInfo("b", "plugin-b", "1.0", "b"))
    # A built-in name is never shadowed: the plugin's is left out, and that is its problem.
    assert manager.aggregator("mean") == STRATEGIES["mean"]
    assert [str(problem) for problem in manager.problems] == [
        "plugin 'b' (plugin-b 1.0) failed in uqeval_aggregators: aggregation name 'mean' is a built-in one; not added"
    ]

    first = Aggregator("spread", per_image(lambda u, p: np.ptp(u)), "range")
    second = Aggregator("spread", per_image(lambda u, p: np.std(u)), "std")
    assert manager.register(Offers({"spread": first}), PluginInfo("a", "plugin-a", "1.0", "a"))
    assert manager.register(Offers({"spread": second}), PluginInfo("c", "plugin-c", "2.0", "c"))
    with pytest.raises(UQEvalError) as info:
        manager.aggregator("spread")
    assert str(info.value) == (
        "aggregation name 'spread' is offered by both plugin 'a' (plugin-a 1.0) and plugin 'c' (plugin-c 2.0); "
        "uninstall all but one of them"
    )
    assert "spread" not in manager.aggregators()
    assert "spread" not in STRATEGIES


def test_per_image_lifts_a_scalar_function():
    rng = np.random.default_rng(4)
    u = rng.random((3, 4, 5)).astype(np.float32)
    pred = rng.integers(0, 3, size=u.shape).astype(np.uint8)
    calls = []

    def weighted(image_u: np.ndarray, image_pred: np.ndarray) -> float:
        calls.append((image_u.shape, image_pred.shape))
        return float((image_u * (image_pred == 1)).sum())

    aggregator = Aggregator("weighted", per_image(weighted), "U summed over class 1", source="plugin-a")
    scores = aggregator(u, pred, AggregationParameters())
    assert calls == [((4, 5), (4, 5))] * 3
    assert scores.dtype == np.float64
    expected = [float((u[i].astype(np.float64) * (pred[i] == 1)).sum()) for i in range(3)]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda u, pred, parameters: np.zeros(len(u) + 1),
        lambda u, pred, parameters: np.zeros((len(u), 1)),
        lambda u, pred, parameters: 0.0,
        lambda u, pred, parameters: u.mean(axis=1),
    ],
)
def test_wrong_output_shape_raises(wrong):
    aggregator = Aggregator("broken", wrong, "wrong shape", source="plugin-x")
    with pytest.raises(UQEvalError, match="shape") as info:
        aggregator(np.ones((2, 3, 4)), np.zeros((2, 3, 4), dtype=np.uint8), AggregationParameters())
    assert "broken" in str(info.value)
    assert "plugin-x" in str(info.value)


def test_fitted_plugin_needs_threshold():
    aggregator = Aggregator("tau_count", lambda u, pred, p: (u >= p.threshold).sum(axis=(1, 2)), "count", fitted=True)
    u = np.arange(8.0).reshape(2, 2, 2)
    pred = np.zeros(u.shape, dtype=np.uint8)
    with pytest.raises(UQEvalError, match="tau_count"):
        aggregator(u, pred, AggregationParameters())
    np.testing.assert_array_equal(aggregator(u, pred, AggregationParameters(threshold=3.0)), [1.0, 4.0])


# --------------------------------------------------------------------------- volumes (image, z, y, x)


def reference_patch_max_3d(u: np.ndarray, k: int) -> np.ndarray:
    """Max over every stride-1 window of ``min(k, D) × min(k, H) × min(k, W)`` voxels of the window mean."""
    scores = []
    for volume in np.asarray(u, dtype=np.float64):
        window = tuple(min(k, side) for side in volume.shape)
        scores.append(sliding_window_view(volume, window).mean(axis=(-3, -2, -1)).max())
    return np.array(scores)


def uniform_filter_patch_max(u: np.ndarray, k: int) -> np.ndarray:
    """The same by scipy's box filter: ``uniform_filter`` centres a window of ``size`` on each
    voxel; the windows that lie inside the volume are those whose centre is at least
    ``size // 2`` from the low edge and ``(size - 1) // 2`` from the high edge."""
    from scipy.ndimage import uniform_filter

    scores = []
    for volume in np.asarray(u, dtype=np.float64):
        size = tuple(min(k, side) for side in volume.shape)
        means = uniform_filter(volume, size=size, mode="constant")
        inside = tuple(slice(s // 2, side - (s - 1) // 2) for s, side in zip(size, volume.shape, strict=True))
        scores.append(means[inside].max())
    return np.array(scores)


def reference_border_length_3d(pred: np.ndarray) -> np.ndarray:
    """6-neighbour voxel pairs with different labels: unequal neighbours along each axis by ``np.diff``."""
    pred = np.asarray(pred, dtype=np.int64)
    return sum((np.diff(pred, axis=axis) != 0).sum(axis=(1, 2, 3)) for axis in (1, 2, 3))


@st.composite
def volume_batches(draw, max_side: int = 9, max_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 maps and multi-class predictions ``(image, z, y, x)``, sides drawn per axis."""
    n_images = draw(st.integers(1, 3))
    shape = (n_images, *(draw(st.integers(1, max_side)) for _ in range(3)))
    n_classes = draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u = rng.gamma(0.5, size=shape).astype(np.float32)
    pred = rng.integers(0, n_classes, size=shape).astype(np.uint8)
    return u, pred


@PROPERTY_SETTINGS
@given(data=st.data())
def test_patch_max_of_volumes_matches_brute_force(data):
    u, pred = data.draw(volume_batches(max_side=13))
    k = data.draw(st.integers(1, 14))
    scores = aggregate("patch_max", u, pred, AggregationParameters(patch_size=k))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, reference_patch_max_3d(u, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "k"),
    [
        ((5, 7, 9), 10),  # smaller than the window along every axis: the whole volume
        ((5, 7, 9), 6),  # clamped along z only: 5 × 6 × 6
        ((12, 3, 15), 10),  # clamped along y only
        ((11, 13, 4), 10),  # clamped along x only
        ((20, 11, 12), 10),  # clamped nowhere: 11 × 2 × 3 windows, over several tasks of planes
        ((10, 10, 10), 10),  # exactly one window
        ((5, 7, 9), 1),  # k = 1: the largest voxel
        ((1, 1, 1), 10),
    ],
)
def test_patch_max_of_volumes_against_sliding_window_view_and_uniform_filter(shape, k):
    rng = np.random.default_rng(sum(shape) * 31 + k)
    u = rng.random((2, *shape)).astype(np.float32)
    pred = np.zeros(u.shape, dtype=np.uint8)
    scores = aggregate("patch_max", u, pred, AggregationParameters(patch_size=k))
    np.testing.assert_allclose(scores, reference_patch_max_3d(u, k), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scores, uniform_filter_patch_max(u, k), rtol=1e-10, atol=1e-12)


def test_patch_max_of_volumes_hand_values():
    u = np.zeros((3, 12, 20, 20), dtype=np.float32)
    u[0, 1:11, 5:15, 7:17] = 1.0  # a 10³ hot block: one window covers it exactly
    u[1, 11, 0, 0] = 1.0  # one hot voxel in a corner: 1 / 1000
    u[2, 0:2, 18:, 18:] = 2.0  # a 2 × 2 × 2 block in a corner: 16 / 1000
    pred = np.zeros(u.shape, dtype=np.uint8)
    np.testing.assert_allclose(aggregate("patch_max", u, pred), [1.0, 0.001, 0.016], rtol=1e-14)
    # A volume of depth 4 clamps k_z to 4: windows of 4 × 10 × 10 voxels.
    shallow = np.zeros((1, 4, 20, 20), dtype=np.float32)
    shallow[0, 0, 0, 0] = 1.0
    np.testing.assert_allclose(aggregate("patch_max", shallow, shallow.astype(np.uint8)), [1 / 400], rtol=1e-14)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_volume_of_depth_one_scores_as_its_image_to_the_bit(data):
    u, pred = data.draw(batches(max_side=16))
    k = data.draw(st.integers(1, 12))
    parameters = AggregationParameters(patch_size=k, threshold=0.4, background=int(pred.flat[0]))
    for name in BUILT_INS:
        flat = aggregate(name, u, pred, parameters)
        deep = aggregate(name, u[:, None], pred[:, None], parameters)
        assert flat.tobytes() == deep.tobytes(), name


def summed_area_patch_max(u: np.ndarray, k: int) -> np.ndarray:
    """The 2D ``patch_max`` as uqeval computed it in numpy before volumes: a float64 summed-area
    table by ``np.cumsum``; kept here so that 2D scores stay the same to the bit."""
    n_images, height, width = u.shape
    window_y, window_x = min(k, height), min(k, width)
    table = np.zeros((n_images, height + 1, width + 1))
    np.cumsum(u, axis=1, dtype=np.float64, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    windows = (
        table[:, window_y:, window_x:]
        - table[:, :-window_y, window_x:]
        - table[:, window_y:, :-window_x]
        + table[:, :-window_y, :-window_x]
    )
    return windows.max(axis=(1, 2)) / (window_y * window_x)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_patch_max_of_images_is_the_summed_area_table_to_the_bit(data):
    u, pred = data.draw(batches(max_side=40))
    k = data.draw(st.integers(1, 14))
    scores = aggregate("patch_max", u, pred, AggregationParameters(patch_size=k))
    assert scores.tobytes() == summed_area_patch_max(u, k).tobytes()


@PROPERTY_SETTINGS
@given(data=st.data())
def test_border_of_a_volume_is_its_slices_borders_plus_the_pairs_between_slices(data):
    _, pred = data.draw(volume_batches(max_classes=4))
    lengths = border_length(pred)
    np.testing.assert_array_equal(lengths, reference_border_length_3d(pred))
    slices = sum(border_length(pred[:, z]) for z in range(pred.shape[1]))
    between = (pred[:, 1:] != pred[:, :-1]).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(lengths, slices + between)


def test_border_of_a_cube_in_a_volume_by_hand():
    pred = np.zeros((1, 5, 6, 7), dtype=np.uint8)
    pred[0, 1:3, 2:4, 2:5] = 1  # a 2 × 2 × 3 box: faces 2·(2·2 + 2·3 + 2·3) = 32 voxel pairs
    np.testing.assert_array_equal(border_length(pred), [32])
    np.testing.assert_array_equal(foreground_area(pred, 0), [12])
    u = np.ones(pred.shape, dtype=np.float32)
    total = float(u.size)
    assert aggregate("border", u, pred)[0] == pytest.approx(total / 32, rel=1e-15)
    assert aggregate("area", u, pred)[0] == pytest.approx(total / 12, rel=1e-15)
    assert aggregate("area", u, pred, AggregationParameters(background=1))[0] == pytest.approx(total / 198)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_strategy_on_volumes_matches_its_definition_over_voxels(data):
    u, pred = data.draw(volume_batches())
    background = data.draw(st.integers(0, 2))
    tau = data.draw(st.floats(0.0, 1.5))
    parameters = AggregationParameters(background=background, threshold=tau)
    voxels = u.reshape(len(u), -1).astype(np.float64)
    sums = np.array([math.fsum(row) for row in voxels])
    np.testing.assert_allclose(aggregate("sum", u, pred, parameters), sums, rtol=1e-12)
    np.testing.assert_allclose(aggregate("mean", u, pred, parameters), sums / voxels.shape[1], rtol=1e-12)
    np.testing.assert_allclose(
        aggregate("threshold", u, pred, parameters), reference_threshold_scores(u, tau), rtol=1e-12
    )
    area = np.array([np.count_nonzero(p != background) for p in pred])
    np.testing.assert_array_equal(foreground_area(pred, background), area)
    np.testing.assert_allclose(aggregate("area", u, pred, parameters), sums / np.maximum(area, 1), rtol=1e-12)
    border = reference_border_length_3d(pred)
    np.testing.assert_allclose(aggregate("border", u, pred, parameters), sums / np.maximum(border, 1), rtol=1e-12)


def test_fallback_masks_on_volumes():
    pred = np.zeros((3, 4, 5, 6), dtype=np.uint8)
    pred[1, 2, 3, 4] = 1  # one foreground voxel: A = 1, B = 6
    pred[2] = 1  # foreground everywhere, one class: B = 0
    parameters = AggregationParameters()
    np.testing.assert_array_equal(STRATEGIES["area"].fallback.where(pred, parameters), [True, False, False])
    np.testing.assert_array_equal(STRATEGIES["border"].fallback.where(pred, parameters), [True, False, True])
    np.testing.assert_array_equal(border_length(pred), [0, 6, 0])
    u = np.full(pred.shape, 0.5, dtype=np.float32)
    np.testing.assert_allclose(aggregate("border", u, pred), [60.0, 10.0, 60.0])  # ΣU = 60, divided by 1 when B = 0


def test_per_image_strategies_get_whole_volumes():
    rng = np.random.default_rng(4)
    u = rng.random((2, 3, 4, 5)).astype(np.float32)
    pred = rng.integers(0, 2, size=u.shape).astype(np.uint8)
    shapes = []

    def peak(image_u, image_pred):
        shapes.append(image_u.shape)
        return float(image_u.max())

    scores = Aggregator("peak", per_image(peak), "largest U")(u, pred, AggregationParameters())
    np.testing.assert_allclose(scores, u.reshape(2, -1).max(axis=1))
    assert shapes == [(3, 4, 5), (3, 4, 5)]


def test_other_ranks_raise():
    for shape in ((2, 3), (2, 1, 2, 3, 4)):
        with pytest.raises(UQEvalError, match=r"\(image, z, y, x\)"):
            aggregate("mean", np.ones(shape), np.zeros(shape, dtype=np.uint8))
