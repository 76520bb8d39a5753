"""OODD in every resample from counts (uqeval.scoring.resampled_detection) against the metrics on resampled arrays."""

from __future__ import annotations

import numpy as np

from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.scoring.resampled_detection import resampled_detection_metrics


def test_counts_give_auroc_and_fpr95_of_the_resampled_images_ties_included():
    generator = np.random.default_rng(1)
    scores = generator.integers(0, 8, 40).astype(float)
    positive = np.arange(40) >= 25
    # within each class, as the bootstrap's strata draw
    indices = np.concatenate([generator.integers(0, 25, (50, 25)), generator.integers(25, 40, (50, 15))], axis=1)
    counts = np.array([np.bincount(row, minlength=40) for row in indices])
    area, fpr = resampled_detection_metrics(scores, positive, counts)
    np.testing.assert_allclose(area, [auroc(scores[row], positive[row]) for row in indices], rtol=0, atol=1e-13)
    np.testing.assert_array_equal(fpr, [fpr_at_tpr(scores[row], positive[row]) for row in indices])
