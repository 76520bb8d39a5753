"""Per-image statistics (:mod:`uqeval.image_statistics`) of volumes (image, z, y, x).

A volume is one image: its means, scores, NCC and calibration bins are over its voxels,
computed here independently with numpy and scipy. A volume of depth 1 has the
statistics of the image it holds, to the bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
from numpy.lib.stride_tricks import sliding_window_view

from uqeval import builtin_plugin
from uqeval.conventions import Conventions
from uqeval.image_statistics import ImageStatistics, image_statistics
from uqeval.metrics.ambiguity import rater_statistics
from uqeval.metrics.calibration import PlattFit
from uqeval.names import MEASURES

IGNORE = 255
STRATEGIES = builtin_plugin.uqeval_aggregators()


def volume_batch(seed: int, shape=(3, 5, 7, 9), n_classes: int = 3, n_raters: int = 3):
    """Maps ``au``, ``eu``, ``tu``, ``pred`` and rater labels of a batch, with some labels ignored."""
    rng = np.random.default_rng(seed)
    au = rng.gamma(2.0, 0.2, size=shape).astype(np.float32)
    eu = rng.gamma(1.0, 0.1, size=shape).astype(np.float32)
    pred = rng.integers(0, n_classes, size=shape).astype(np.uint8)
    noisy = rng.random((shape[0], n_raters, *shape[1:])) < 0.3
    labels = np.where(noisy, rng.integers(0, n_classes, size=noisy.shape), pred[:, None]).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    maps = {"au": au, "eu": eu, "tu": au + eu, "pred": pred}
    return maps, labels


def statistics(maps, labels, n_classes=3, **options) -> ImageStatistics:
    raters = rater_statistics(labels, maps["pred"], n_classes)
    platt = {measure: PlattFit(slope=3.0, intercept=2.0, n_pixels=1) for measure in MEASURES}
    return image_statistics(
        maps,
        conventions=Conventions(),
        aggregations=[STRATEGIES[name] for name in sorted(STRATEGIES)],
        raters=raters,
        thresholds=dict.fromkeys(MEASURES, 0.3),
        platt=platt,
        **options,
    )


@pytest.mark.parametrize("n_classes", [2, 3])
def test_statistics_of_volumes_are_over_their_voxels(n_classes):
    maps, labels = volume_batch(1, n_classes=n_classes)
    result = statistics(maps, labels, n_classes)
    assert result.n_images == 3
    for measure in MEASURES:
        voxels = maps[measure].reshape(3, -1).astype(np.float64)
        np.testing.assert_allclose(result.means[measure], voxels.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(result.scores["sum"][measure], voxels.sum(axis=1), rtol=1e-12)
        windows = [
            sliding_window_view(v.astype(np.float64), (5, 7, 9)).mean(axis=(-3, -2, -1)).max() for v in maps[measure]
        ]
        np.testing.assert_allclose(result.scores["patch_max"][measure], windows, rtol=1e-12)
        border = sum((np.diff(maps["pred"].astype(int), axis=a) != 0).reshape(3, -1).sum(axis=1) for a in (1, 2, 3))
        np.testing.assert_allclose(result.scores["border"][measure], voxels.sum(axis=1) / border, rtol=1e-12)
    stats = rater_statistics(labels, maps["pred"], n_classes)
    for measure in MEASURES:
        expected = []
        for g, u, valid in zip(stats.variance, maps[measure], stats.valid, strict=True):
            counted = valid > 0
            expected.append(
                scipy.stats.pearsonr(g[counted].astype(np.float64), u[counted].astype(np.float64)).statistic
            )
        np.testing.assert_allclose(result.ncc[measure].correlation, expected, atol=1e-6)
        # One calibration table per volume, of all its rated voxels.
        table = result.tables[measure].table
        assert table.shape == (3, 20, 3)
        counted = stats.valid > 0
        np.testing.assert_array_equal(table[..., 0].sum(axis=1), counted.reshape(3, -1).sum(axis=1))
        confidence = scipy.special.expit(2.0 - 3.0 * maps[measure].astype(np.float64))
        np.testing.assert_allclose(
            table[..., 1].sum(axis=1), np.where(counted, confidence, 0).reshape(3, -1).sum(axis=1), rtol=1e-12
        )
    assert not any(values.any() for values in result.fallbacks.values())


def test_a_volume_of_depth_one_has_the_statistics_of_its_image_to_the_bit():
    maps, labels = volume_batch(2, shape=(4, 1, 11, 13))
    images = {name: values[:, 0] for name, values in maps.items()}
    deep = statistics(maps, labels, eu_scale=1.5)
    flat = statistics(images, labels[:, :, 0], eu_scale=1.5)
    for measure in MEASURES:
        assert deep.means[measure].tobytes() == flat.means[measure].tobytes()
        for name in STRATEGIES:
            assert deep.scores[name][measure].tobytes() == flat.scores[name][measure].tobytes(), name
        assert deep.ncc[measure].correlation.tobytes() == flat.ncc[measure].correlation.tobytes()
        np.testing.assert_array_equal(deep.tables[measure].table, flat.tables[measure].table)
    for name, images_that_fall_back in deep.fallbacks.items():
        np.testing.assert_array_equal(images_that_fall_back, flat.fallbacks[name])


def test_take_and_concatenate_keep_the_sample_scores_with_their_images():
    maps, labels = volume_batch(3)
    whole = statistics(maps, labels)
    whole.sample_scores = {"pairwise_dice": np.array([0.1, 0.2, 0.3]), "cov": np.array([1.0, 2.0, 3.0])}
    picked = whole.take(np.array([2, 0, 2]))  # as a bootstrap resample does
    assert {name: values.tolist() for name, values in picked.sample_scores.items()} == {
        "pairwise_dice": [0.3, 0.1, 0.3],
        "cov": [3.0, 1.0, 3.0],
    }
    joined = ImageStatistics.concatenate([whole.take(np.array([0])), whole.take(np.array([1, 2]))])
    assert {name: values.tolist() for name, values in joined.sample_scores.items()} == {
        "pairwise_dice": [0.1, 0.2, 0.3],
        "cov": [1.0, 2.0, 3.0],
    }
    assert whole.take(np.array([1])).n_images == 1 and statistics(maps, labels).take([0]).sample_scores is None
