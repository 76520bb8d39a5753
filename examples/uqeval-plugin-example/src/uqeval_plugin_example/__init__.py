"""An example uqeval plugin: one aggregation strategy, ``top_decile``.

The image score is the mean uncertainty of the most uncertain tenth of the image's
pixels: a middle way between ``mean`` (dominated by the many certain pixels) and
``patch_max`` (one window). Install the package and ``uqeval score --aggregation
top_decile`` uses it; ``uqeval plugins`` lists it.
"""

from __future__ import annotations

import numpy as np

import uqeval

#: Share of the pixels, the most uncertain ones, that the score averages.
SHARE = 0.1


def top_decile(u: np.ndarray, pred: np.ndarray) -> float:
    """Mean of U over the most uncertain 10 % of the pixels."""
    values = np.sort(u, axis=None)
    count = max(1, int(np.ceil(SHARE * values.size)))
    return float(values[-count:].mean(dtype=np.float64))


@uqeval.hookimpl
def uqeval_aggregators():
    return {"top_decile": top_decile}
