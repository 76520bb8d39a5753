"""Tests of the checks: :func:`value_stats` and :func:`raise_for_value_stats`."""

from __future__ import annotations

import numpy as np
import pytest

from uqeval import UQEvalError, _kernels
from uqeval.checks import SUM_TOLERANCE, raise_for_value_stats, value_stats


def _valid(n_images: int = 3, n_samples: int = 2, height: int = 3, width: int = 4, dtype=np.float32) -> np.ndarray:
    """(image, sample, class=2, y, x) with class 0 = 0.25 and class 1 = 0.75."""
    values = np.empty((n_images, n_samples, 2, height, width), dtype=dtype)
    values[:, :, 0] = 0.25
    values[:, :, 1] = 0.75
    return values


# --------------------------------------------------------------------------- value_stats


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_value_stats_of_valid_values(dtype):
    stats = value_stats(_valid(dtype=dtype))
    assert stats.shape == (3, 4)
    assert stats.dtype == np.float64
    np.testing.assert_array_equal(stats, np.tile([0.0, 0.25, 1.0, 1.0], (3, 1)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_value_stats_known_minimum_and_sums(dtype):
    values = _valid(dtype=dtype)
    values[1, 0, :, 0, 0] = [0.5, 0.75]  # sum 1.25
    values[1, 1, :, 2, 3] = [0.125, 0.5]  # sum 0.625, smallest value 0.125
    values[2, 1, :, 1, 1] = [-0.5, 1.5]  # sum 1, smallest value -0.5
    stats = value_stats(values)
    np.testing.assert_array_equal(stats[0], [0, 0.25, 1.0, 1.0])
    np.testing.assert_array_equal(stats[1], [0, 0.125, 0.625, 1.25])
    np.testing.assert_array_equal(stats[2], [0, -0.5, 1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_value_stats_counts_pixels_with_nan_or_inf(dtype):
    values = _valid(n_images=4, dtype=dtype)
    values[1, 0, 0, 0, 0] = np.nan
    values[1, 1, 1, 0, 0] = np.nan  # same pixel, other sample: still one pixel
    values[1, 0, 1, 2, 3] = np.nan  # a second pixel
    values[2, 1, 0, 1, 2] = np.inf  # inf counts too
    values[3, 0, 1, 2, 2] = -np.inf
    values[3, 1, 0, 0, 1] = np.inf
    stats = value_stats(values)
    np.testing.assert_array_equal(stats[:, 0], [0, 2, 1, 2])
    # NaN sums do not enter the class sums; the finite values still set the minimum.
    np.testing.assert_array_equal(stats[1], [2, 0.25, 1.0, 1.0])
    assert stats[2, 1] == 0.25
    raise_for_value_stats(stats[:1], ["a"])
    for index in (1, 2, 3):
        with pytest.raises(UQEvalError, match="NaN or inf"):
            raise_for_value_stats(stats[index : index + 1], ["a"])


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_value_stats_sums_are_finite_sums_only(bad):
    values = _valid(n_images=1)
    values[0, 1, 0, 1, 2] = bad
    stats = value_stats(values)
    assert stats[0, 0] == 1
    np.testing.assert_array_equal(stats[0, 2:], [1.0, 1.0])


def test_value_stats_counts_across_pixel_blocks():
    block = _kernels.PIXEL_BLOCK
    height, width = 3, block  # 3 blocks of pixels per image
    values = _valid(n_images=2, n_samples=1, height=height, width=width)
    values[0, 0, 0, 0, 5] = np.nan  # block 0
    values[0, 0, 1, 1, 7] = np.nan  # block 1
    values[0, 0, 0, 2, width - 1] = np.nan  # last pixel, block 2
    values[1, 0, 0, 2, 10] = -2.0  # smallest value and smallest sum (-1.25) in the last block
    values[1, 0, 1, 1, 0] = 3.0  # largest sum (3.25) in the middle block
    stats = value_stats(values)
    np.testing.assert_array_equal(stats[0], [3, 0.25, 1.0, 1.0])
    np.testing.assert_array_equal(stats[1], [0, -2.0, -1.25, 3.25])


def test_value_stats_partial_last_block():
    width = _kernels.PIXEL_BLOCK + 3
    values = _valid(n_images=1, n_samples=1, height=1, width=width)
    values[0, 0, 0, 0, width - 1] = 0.5  # sum 1.25 at the very last pixel
    np.testing.assert_array_equal(value_stats(values)[0], [0, 0.25, 1.0, 1.25])


def test_value_stats_sample_dims_are_flattened():
    # (image, eu, au, class, y, x): both eu and au count as sample dims.
    values = np.full((2, 2, 3, 2, 2, 2), 0.5, dtype=np.float32)
    values[1, 1, 2, :, 1, 1] = [0.5, 0.25]
    stats = value_stats(values)
    np.testing.assert_array_equal(stats, [[0, 0.5, 1, 1], [0, 0.25, 0.75, 1]])
    # (image, class, y, x): no sample dim at all.
    stats = value_stats(values[:, 0, 0])
    np.testing.assert_array_equal(stats, [[0, 0.5, 1, 1], [0, 0.5, 1, 1]])


def test_value_stats_accepts_non_contiguous_input():
    values = np.moveaxis(_valid(), -1, -2).copy()  # x, y swapped
    values[2, 0, 0, 3, 1] = 0.0
    stats = value_stats(np.moveaxis(values, -1, -2))
    np.testing.assert_array_equal(stats[:, 1], [0.25, 0.25, 0.0])
    np.testing.assert_array_equal(stats[:, 2], [1.0, 1.0, 0.75])


# --------------------------------------------------------------------------- raise_for_value_stats


def _stats(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


GOOD = (0, 0.1, 1.0, 1.0)


def test_good_stats_do_not_raise():
    raise_for_value_stats(_stats(GOOD, GOOD), ["a", "b"])
    raise_for_value_stats(value_stats(_valid()), [0, 1, 2])


def test_sum_tolerance_edges():
    assert SUM_TOLERANCE == 0.01
    inside = 1 + 0.9 * SUM_TOLERANCE
    outside = 1 + 1.5 * SUM_TOLERANCE
    raise_for_value_stats(_stats((0, 0.0, 2 - inside, inside)), ["a"])
    with pytest.raises(UQEvalError, match="sum to 1"):
        raise_for_value_stats(_stats((0, 0.0, 1.0, outside)), ["a"])
    with pytest.raises(UQEvalError, match="sum to 1"):
        raise_for_value_stats(_stats((0, 0.0, 2 - outside, 1.0)), ["a"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_reported_with_the_image_id(bad):
    values = _valid(n_images=3)
    values[1, 0, 0, 1, 1] = bad
    ids = np.array(["img-a", "img-b", "img-c"])
    with pytest.raises(UQEvalError, match=r"probs: image 'img-b' has NaN or inf values at 1 pixel"):
        raise_for_value_stats(value_stats(values), ids)


def test_negative_values_suggest_logits():
    values = _valid()
    values[2, 1, 0, 0, 0] = -0.5
    values[2, 1, 1, 0, 0] = 1.5
    with pytest.raises(UQEvalError, match="image 2 has negative probabilities") as info:
        raise_for_value_stats(value_stats(values), np.arange(3))
    assert "-0.5" in str(info.value)
    assert "logits" in str(info.value)


def test_sums_of_five_suggest_logits():
    values = _valid() * 5
    with pytest.raises(UQEvalError, match="image 'x' does not sum to 1") as info:
        raise_for_value_stats(value_stats(values[:1]), ["x"])
    assert "logits" in str(info.value)
    assert "5" in str(info.value)


def test_first_bad_image_of_a_kind_is_named():
    stats = _stats(GOOD, (2, 0.1, 1.0, 1.0), (5, 0.1, 1.0, 1.0))
    with pytest.raises(UQEvalError, match="image 'b' has NaN or inf values at 2 pixel"):
        raise_for_value_stats(stats, ["a", "b", "c"])
    stats = _stats(GOOD, GOOD, (0, -1.0, 1.0, 1.0), (0, -2.0, 1.0, 1.0))
    with pytest.raises(UQEvalError, match="image 'c' has negative"):
        raise_for_value_stats(stats, ["a", "b", "c", "d"])


def test_variable_prefix_and_numpy_ids():
    stats = _stats(GOOD, (1, 0.1, 1.0, 1.0))
    with pytest.raises(UQEvalError, match=r"^logits: image 7 has NaN"):
        raise_for_value_stats(stats, np.array([3, 7]), variable="logits")
    with pytest.raises(UQEvalError, match=r"^probs: image 'q' has NaN"):
        raise_for_value_stats(stats, np.array(["p", "q"]))


def test_error_is_a_value_error():
    with pytest.raises(ValueError):
        raise_for_value_stats(_stats((0, -1.0, 1.0, 1.0)), ["a"])


def test_the_first_broken_image_is_named_whatever_its_problem():
    stats = _stats(GOOD, (0, 0.0, 1.0, 5.0), (3, 0.1, 1.0, 1.0))
    with pytest.raises(UQEvalError, match="image 'b' does not sum to 1"):
        raise_for_value_stats(stats, ["a", "b", "c"])
