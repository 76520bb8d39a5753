"""Mean AU, EU and TU per domain of a cube (``uqeval inspect``), one chunk at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from uqeval.decomposition import decompose_batch
from uqeval.metrics.entanglement import collapse_ratio


@dataclass(frozen=True)
class DomainMeans:
    """Mean uncertainty (nats per pixel) over the images of one domain."""

    domain: str
    n_images: int
    au: float
    eu: float
    tu: float

    @property
    def eu_over_au(self) -> float:
        """The epistemic-collapse ratio, mean EU / mean AU (NaN when AU is 0)."""
        return collapse_ratio(self.eu, self.au)


def image_means(dataset: xr.Dataset, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Per-image mean AU, EU and TU of a validated cube (see :func:`uqeval.open_cube`).

    Reads each chunk of ``probs`` once; memory holds one chunk and its maps.
    ``progress(n)`` is called with the number of images done after each chunk.
    """
    probs = dataset["probs"]
    ids = dataset["image"].values
    n_images = probs.sizes["image"]
    means = {name: np.empty(n_images) for name in ("au", "eu", "tu")}
    sizes = probs.chunks[0] if probs.chunks is not None else (n_images,)
    start = 0
    for size in sizes:
        stop = start + size
        maps = decompose_batch(np.asarray(probs[start:stop].values), ids[start:stop])
        for name in means:
            means[name][start:stop] = maps[name].mean(axis=(1, 2))
        if progress is not None:
            progress(stop)
        start = stop
    return means


def domain_means(dataset: xr.Dataset, progress: Callable[[int], None] | None = None) -> list[DomainMeans]:
    """Mean AU, EU and TU per domain, ``id`` first, then the OOD domains by name."""
    means = image_means(dataset, progress)
    domains = dataset["domain"].values.astype(str)
    order = sorted(set(domains), key=lambda name: (name != "id", name))
    rows = []
    for domain in order:
        chosen = domains == domain
        rows.append(
            DomainMeans(
                domain=domain,
                n_images=int(chosen.sum()),
                au=float(means["au"][chosen].mean()),
                eu=float(means["eu"][chosen].mean()),
                tu=float(means["tu"][chosen].mean()),
            )
        )
    return rows
