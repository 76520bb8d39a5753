"""The image scores of the samples themselves: pairwise Dice between members and the CoV of
the foreground size, against their definitions written with itertools and np.argmax."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference_sample_scores
from scipy.special import softmax

from uqeval._kernels import as_kernel_input
from uqeval.metrics._sample_kernels import sample_counts_kernel, two_class_sample_counts_kernel
from uqeval.metrics.sample_scores import VolumeSampleScores, member_pairs, sample_counts, sample_scores


def _cubes(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(size=shape) * 2, axis=3).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "dtype", "background"),
    [
        ((3, 4, 3, 3, 6, 5), np.float32, 0),  # 3 classes: the general path
        ((2, 3, 3, 2, 7, 6), np.float16, 1),  # 2 classes (an odd number of samples), background 1
        ((2, 3, 2, 3, 3, 4, 5), np.float32, 2),  # volumes
        ((2, 1, 4, 3, 5, 5), np.float32, 0),  # one member: no pair
    ],
)
def test_sample_scores_match_their_definitions(shape, dtype, background):
    cubes = _cubes(shape, dtype=dtype)
    got = sample_scores(cubes, background)
    expected = reference_sample_scores(cubes, background)
    for name in ("pairwise_dice", "cov"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.isnan(got["pairwise_dice"]).all() == (shape[1] == 1)


def test_empty_predictions_agree_and_do_not_vary():
    cubes = np.zeros((1, 3, 2, 3, 4, 4), dtype=np.float32)
    cubes[:, :, :, 0] = 1.0  # every sample predicts the background everywhere
    assert sample_scores(cubes) == {"pairwise_dice": np.array([0.0]), "cov": np.array([0.0])}
    # Member 0 predicts class 1 at one pixel and class 2 nowhere: Dice of class 1 against
    # each empty member is 0, class 2 is empty in both (Dice 1); members 1 and 2 agree (1, 1).
    cubes[0, 0, :, :, 0, 0] = [0.1, 0.8, 0.1]
    scores = sample_scores(cubes)
    np.testing.assert_allclose(scores["pairwise_dice"], [1 - (0.5 + 0.5 + 1) / 3])
    sizes = np.array([1, 1, 0, 0, 0, 0])  # foreground pixels of the six samples
    np.testing.assert_allclose(scores["cov"], [sizes.std() / sizes.mean()])


def test_member_pairs_are_those_of_itertools():
    assert [tuple(pair) for pair in zip(*member_pairs(4), strict=True)] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
        (2, 3),
    ]


def test_a_volume_added_slab_by_slab_or_chunk_by_chunk_scores_as_held_whole():
    volume = _cubes((1, 3, 2, 3, 7, 5, 4), seed=1)  # (1, eu, au, class, z, y, x)
    whole = sample_scores(volume)
    slabs = VolumeSampleScores()
    for start, stop in ((0, 3), (3, 6), (6, 7)):
        slabs.add(volume[..., start:stop, :, :])
    chunks = VolumeSampleScores()
    # A slab that comes as its z-chunks, (chunk, eu, au, class, planes, y, x), then one plane.
    chunks.add(np.stack([volume[0, ..., 0:3, :, :], volume[0, ..., 3:6, :, :]]))
    chunks.add(volume[..., 6:7, :, :])
    for gathered in (slabs.result(), chunks.result()):
        assert gathered.keys() == whole.keys()
        for name, values in whole.items():
            assert gathered[name] == pytest.approx(values, rel=1e-15, abs=0), name
    counts = sample_counts(volume)
    assert counts.foreground.dtype == np.int64 and counts.foreground.shape == (1, 6)


@pytest.mark.parametrize("background", [0, 1])
def test_the_two_class_kernel_counts_as_the_general_one(background):
    """A two-class store compiles only the two-class kernel; its counts are those of the
    general kernel, which a two-class cube never reaches otherwise."""
    cube = as_kernel_input(_cubes((2, 3, 5, 2, 1, 70), dtype=np.float16).reshape(2, 3, 5, 2, 70))
    counts = {}
    for kernel in (sample_counts_kernel, two_class_sample_counts_kernel):
        arrays = (np.empty((2, 1, 15), np.int64), np.empty((2, 1, 3, 2), np.int64), np.empty((2, 1, 3, 2), np.int64))
        kernel(cube, background, *arrays)
        counts[kernel] = arrays
    for general, two_class in zip(*counts.values(), strict=True):
        np.testing.assert_array_equal(general, two_class)
    assert counts[sample_counts_kernel][0].sum() > 0  # some foreground, so the comparison is not of zeros
