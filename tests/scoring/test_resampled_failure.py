"""FD in every resample from counts (uqeval.scoring.resampled_failure) against the metrics on resampled arrays."""

from __future__ import annotations

import numpy as np

from uqeval.metrics.failure import augrc, aurc, eaugrc, eaurc
from uqeval.scoring.resampled_failure import resampled_fd_metrics


def test_counts_give_the_metrics_of_the_resampled_images_ties_included():
    generator = np.random.default_rng(0)
    scores = generator.integers(0, 6, 30).astype(float)  # many ties, and drawing twice ties more
    risks = np.round(generator.random(30), 1)
    indices = generator.integers(0, 30, (40, 30))
    counts = np.array([np.bincount(row, minlength=30) for row in indices])
    values = resampled_fd_metrics(scores, risks, counts)
    for metric, name in ((aurc, "aurc"), (eaurc, "eaurc"), (augrc, "augrc"), (eaugrc, "eaugrc")):
        expected = [metric(scores[row], risks[row]) for row in indices]
        np.testing.assert_allclose(values[name], expected, rtol=0, atol=1e-13)
    nothing = resampled_fd_metrics(scores, risks, np.zeros((1, 30)))
    assert all(np.isnan(value).all() for value in nothing.values())
