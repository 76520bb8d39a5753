"""Per-split sums of calibration tables, folded in image order: the same to the last bit
as one sum over every table, whatever order the batches arrive in."""

from __future__ import annotations

import numpy as np
import pytest

from uqeval.metrics.calibration import CalibrationTable, ImageCalibration, per_image_ace, per_image_ece
from uqeval.scoring.pooling import OrderedSums


@pytest.fixture
def tables():
    rng = np.random.default_rng(3)
    values = rng.random((50, 20, 3)) * rng.random((50, 1, 1)) * 1e3
    values[:, :, 0] = np.round(values[:, :, 0])
    values[7] = 0  # an image without a scored pixel
    return values


@pytest.mark.parametrize("order", ["in order", "reversed", "fitting batches first"])
def test_sums_equal_one_sum_over_every_table_to_the_last_bit(tables, order):
    splits = {"a": np.arange(50) % 3 == 0, "b": np.arange(50) % 3 != 0, "none": np.zeros(50, bool)}
    batches = [np.arange(start, min(start + 8, 50)) for start in range(0, 50, 8)]
    if order == "reversed":
        batches = batches[::-1]
    elif order == "fitting batches first":  # a batch of two chunks apart, then the rest
        batches = [np.r_[0:8, 24:32], *(batch for batch in batches if batch[0] not in (0, 24))]
    sums = OrderedSums(splits, 50)
    for batch in batches:
        sums.add(batch, {"au": tables[batch]})
    result = sums.sums()["au"]
    for split, chosen in splits.items():
        np.testing.assert_array_equal(result[split], tables[chosen].sum(axis=0))  # bit for bit
    assert sums.waiting == 0


def test_a_gap_is_not_hidden(tables):
    sums = OrderedSums({"a": np.ones(50, bool)}, 50)
    sums.add(np.arange(8, 50), {"au": tables[8:]})
    assert sums.waiting == 42
    with pytest.raises(AssertionError, match="folded up to image 0 of 50"):
        sums.sums()


def test_each_images_own_errors_give_the_per_image_means(tables):
    table = CalibrationTable(tables)
    errors = ImageCalibration.of(table)
    assert np.isnan(errors.ace[7]) and np.isnan(errors.ece[7])
    chosen = np.arange(50) % 2 == 0
    assert errors.mean("ace", chosen) == per_image_ace(table, chosen)
    assert errors.mean("ece", chosen) == per_image_ece(table, chosen)
    joined = ImageCalibration.concatenate([errors.take(np.arange(20)), errors.take(np.arange(20, 50))])
    np.testing.assert_array_equal(joined.ace, errors.ace)
