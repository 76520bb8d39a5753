"""A volume's statistics gathered z-slab by z-slab equal those of the volume held whole.

Every per-image statistic is checked against :func:`uqeval.image_statistics.image_statistics`
on the same volume, for slabs thinner and thicker than the ``patch_max`` window, slabs of
unequal depth, and fits (EU scale, τ, Platt); the aggregations' slab forms against the
whole-volume strategies with hypothesis.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import UQEvalError, builtin_plugin
from uqeval.aggregation import AggregationParameters, Aggregator
from uqeval.conventions import Conventions
from uqeval.image_statistics import image_statistics, shown_slice
from uqeval.metrics.ambiguity import RaterStatistics, rater_statistics
from uqeval.metrics.calibration import PlattFit
from uqeval.volume_statistics import VolumeStatistics, check_streamable

BUILTINS = builtin_plugin.uqeval_aggregators()
MEASURES = ("au", "eu", "tu")


def _volume(seed: int, shape=(11, 9, 7), n_classes: int = 3, raters: int = 3):
    rng = np.random.default_rng(seed)
    maps = {measure: rng.gamma(1.0, 0.3, size=(1, *shape)).astype(np.float32) for measure in ("au", "eu")}
    maps["eu"][0, 4] = 0.0  # a plane without EU: ties and zeros in the sums
    maps["tu"] = maps["au"] + maps["eu"]
    maps["pred"] = (rng.random((1, *shape)) * n_classes).astype(np.int64)
    maps["mean"] = rng.random((1, n_classes, *shape)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=(1, raters, *shape)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.1] = 255
    return maps, rater_statistics(labels, maps["pred"], n_classes)


def _slabs(depth: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = [0, *sorted({cut for cut in cuts if 0 < cut < depth}), depth]
    return list(itertools.pairwise(edges))


def _gathered(maps, raters, ranges, **options):
    statistics = VolumeStatistics(maps["au"].shape[1:], **options)
    for start, stop in ranges:
        slab = {
            name: array[0, start:stop] if name != "mean" else array[0, :, start:stop] for name, array in maps.items()
        }
        statistics.add(slab, _planes(raters, start, stop))
    return statistics


def _planes(raters, start, stop):
    return RaterStatistics(raters.variance[0, start:stop], raters.agree[0, start:stop], raters.valid[0, start:stop])


PLATT = {"au": PlattFit(3.0, 1.5, 100), "eu": PlattFit(-2.0, 0.5, 100), "tu": PlattFit(2.5, 1.0, 100)}
THRESHOLDS = {"au": 0.3, "eu": 0.2, "tu": 0.45}


@pytest.mark.parametrize(
    "cuts",
    [[], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [3, 6, 9], [5], [2, 10]],
    ids=["whole", "planes", "threes", "halves", "uneven"],
)
@pytest.mark.parametrize("patch_size", [3, 10])
def test_slabs_give_the_statistics_of_the_whole_volume(cuts, patch_size):
    maps, raters = _volume(0)
    conventions = Conventions(patch_size=patch_size, ncc_factor="n-1-over-n")
    aggregations = tuple(BUILTINS.values())
    options = {
        "conventions": conventions,
        "aggregations": aggregations,
        "background": 0,
        "eu_scale": 1.7,
        "thresholds": THRESHOLDS,
        "platt": PLATT,
    }
    whole = image_statistics({k: v for k, v in maps.items() if k != "mean"}, raters=raters, **options)
    gathered, histograms = _gathered(maps, raters, _slabs(11, cuts), **options).result()
    assert histograms is None
    for measure in MEASURES:
        np.testing.assert_allclose(gathered.means[measure], whole.means[measure], rtol=1e-12)
        for name in BUILTINS:
            np.testing.assert_allclose(
                gathered.scores[name][measure], whole.scores[name][measure], rtol=1e-10, err_msg=name
            )
        np.testing.assert_allclose(gathered.ncc[measure].correlation, whole.ncc[measure].correlation, rtol=1e-10)
        np.testing.assert_array_equal(gathered.ncc[measure].state, whole.ncc[measure].state)
        np.testing.assert_allclose(gathered.tables[measure].table, whole.tables[measure].table, rtol=1e-12)
        for error in ("ace", "ece"):
            np.testing.assert_allclose(
                getattr(gathered.calibration[measure], error), getattr(whole.calibration[measure], error), rtol=1e-10
            )
    for name, flags in whole.fallbacks.items():
        np.testing.assert_array_equal(gathered.fallbacks[name], flags)


def test_the_shown_slice_and_its_maps_are_those_of_the_whole_volume():
    maps, raters = _volume(1)
    options = {"conventions": Conventions(), "aggregations": (BUILTINS["mean"],)}
    statistics = _gathered(maps, raters, _slabs(11, [2, 5, 8]), **options)
    example = statistics.example(3, "vol-3")
    z = shown_slice(maps["eu"][0], maps["tu"][0])
    assert example.z == z
    np.testing.assert_array_equal(example.eu, maps["eu"][0, z])
    np.testing.assert_array_equal(example.mean, maps["mean"][0, :, z])
    # With EU 0 everywhere the slice with the most TU is shown.
    maps["eu"][:] = 0
    maps["tu"] = maps["au"].copy()
    statistics = _gathered(maps, raters, _slabs(11, [4]), **options)
    assert statistics.example(0, "v").z == shown_slice(maps["eu"][0], maps["tu"][0])


def test_a_volume_without_border_falls_back_as_whole():
    maps, raters = _volume(2)
    maps["pred"][:] = 1
    options = {"conventions": Conventions(), "aggregations": (BUILTINS["border"], BUILTINS["area"])}
    gathered, _ = _gathered(maps, raters, _slabs(11, [3, 7]), **options).result()
    assert gathered.fallbacks["border"].tolist() == [True]
    assert gathered.fallbacks["area"].tolist() == [False]
    np.testing.assert_allclose(gathered.scores["border"]["au"], maps["au"].sum(dtype=np.float64), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(1, 12),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    patch=st.integers(1, 5),
    cuts=st.lists(st.integers(1, 11), max_size=5),
    seed=st.integers(0, 2**16),
)
def test_each_slab_form_equals_its_strategy(depth, height, width, patch, cuts, seed):
    rng = np.random.default_rng(seed)
    u = rng.random((depth, height, width)).astype(np.float32)
    pred = rng.integers(0, 3, size=u.shape)
    parameters = AggregationParameters(patch_size=patch, threshold=0.5)
    for name, strategy in BUILTINS.items():
        form = strategy.slabs
        parts = None
        for start, stop in _slabs(depth, cuts):
            halo = min(form.halo(parameters, depth), start)
            part = form.partial(u[start - halo : stop], pred[start - halo : stop], halo, parameters, depth)
            parts = form.combine(parts, part)
        expected = strategy(u[None], pred[None], parameters)[0]
        assert np.isclose(form.finish(parts, parameters, u.shape), expected, rtol=1e-9, atol=1e-12), name


def test_what_cannot_be_gathered_by_slabs_is_refused_before_reading():
    plugin = Aggregator("median", lambda u, pred, parameters: np.median(u, axis=(1, 2)), "median", source="a-plugin")
    with pytest.raises(UQEvalError, match=r"'median' \(a-plugin\) has no slab form"):
        check_streamable((plugin,), Conventions())
    with pytest.raises(UQEvalError, match="ace_scope 'per-image'"):
        check_streamable((BUILTINS["mean"],), Conventions(ace_scope="per-image"))
    check_streamable(tuple(BUILTINS.values()), Conventions())


def test_a_volume_given_too_few_planes_is_an_error():
    maps, raters = _volume(3)
    statistics = _gathered(maps, raters, [(0, 5)], conventions=Conventions(), aggregations=(BUILTINS["mean"],))
    with pytest.raises(UQEvalError, match="depth 11 was given 5 planes"):
        statistics.result()
