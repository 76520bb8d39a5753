"""The example's QUBIQ task, on arrays small enough to check by hand, and through uqeval.score."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import uqeval

try:
    import uqeval_plugin_example as example
except ImportError:  # run from a checkout without installing the example
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import uqeval_plugin_example as example


def inputs(foreground: np.ndarray, labels: np.ndarray) -> uqeval.TaskInputs:
    """One image of 2 classes whose mean prediction has this foreground probability."""
    mean = np.stack([1 - foreground, foreground])[None].astype(np.float32)
    zeros = np.zeros(foreground.shape, np.float32)[None]
    return uqeval.TaskInputs(
        mean, zeros, zeros, zeros, (foreground > 0.5)[None].astype(np.int64), labels[None], None, 2, 0
    )


def test_sums_count_the_thresholded_masks():
    foreground = np.array([[0.95, 0.55], [0.25, 0.0]])
    labels = np.array([[[1, 1], [0, 0]], [[1, 0], [1, 0]]])  # soft label [[1, .5], [.5, 0]]
    sums = example.qubiq_sums(inputs(foreground, labels))["dice_sums"][0]
    # At 0.3: P = {0.95, 0.55}, L = {1, .5, .5}: |P ∩ L| = 2, |P| = 2, |L| = 3.
    np.testing.assert_array_equal(sums[2], [2, 2, 3])
    # At 0.9: P = {0.95}, L = {1}.
    np.testing.assert_array_equal(sums[8], [1, 1, 1])


def test_an_ignored_pixel_counts_for_neither_mask():
    foreground = np.array([[0.95, 0.95]])
    labels = np.array([[[1, -1]], [[1, 1]]])
    sums = example.qubiq_sums(inputs(foreground, labels))["dice_sums"][0]
    np.testing.assert_array_equal(sums[0], [1, 1, 1])


def test_the_task_scores_a_store(tmp_path):
    manager = uqeval.plugin_manager()
    manager.register(example)
    try:
        store = uqeval.make_synthetic_cube(tmp_path / "q.zarr", n_images=8, size=12, eu=2, au=2)
        scores = uqeval.score(store, tasks=["qubiq"])
    finally:
        uqeval.plugins.reset_plugin_manager()
    values = {row["split"]: row["value"] for row in scores.results}
    assert set(values) == {"id", "blur", "noise", "ood"}
    assert all(0 < value <= 1 for value in values.values())
    assert scores.images.tasks["qubiq"]["dice_sums"].shape == (8, 9, 3)
