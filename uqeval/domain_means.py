"""Mean AU, EU and TU per domain of a cube (``uqeval inspect``), one chunk at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from uqeval.cube.contract import MAP_MEASURES, MEAN, VOLUME_DIMS, is_maps_store
from uqeval.cube.read import z_slabs
from uqeval.decomposition import decompose_batch
from uqeval.metrics.entanglement import collapse_ratio


@dataclass(frozen=True)
class DomainMeans:
    """Mean uncertainty (nats per pixel, or per voxel) over the images (volumes) of one domain."""

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

    Reads each chunk of ``probs`` once; memory holds one chunk and its maps. A volume
    is read one z-slab (chunk) at a time and its means are taken over all its voxels.
    ``progress(n)`` is called with the number of images done after each chunk of images.
    A maps store's maps are averaged as they are (NaN for a measure it does not hold).
    """
    if is_maps_store(dataset):
        return _given_means(dataset, progress)
    probs = dataset["probs"]
    ids = dataset["image"].values
    n_images = probs.sizes["image"]
    means = {name: np.empty(n_images) for name in ("au", "eu", "tu")}
    sizes = probs.chunks[0] if probs.chunks is not None else (n_images,)
    volumes = VOLUME_DIMS[0] in probs.dims
    start = 0
    for size in sizes:
        stop = start + size
        if not volumes:
            maps = decompose_batch(np.asarray(probs[start:stop].values), ids[start:stop])
            for name in means:
                means[name][start:stop] = maps[name].mean(axis=(1, 2))
        else:
            sums = {name: np.zeros(stop - start) for name in means}
            for slab in z_slabs(probs):
                maps = decompose_batch(np.asarray(probs[start:stop].isel(slab).values), ids[start:stop])
                for name in means:
                    sums[name] += maps[name].sum(axis=(1, 2, 3), dtype=np.float64)
            n_voxels = probs.sizes["z"] * probs.sizes["y"] * probs.sizes["x"]
            for name in means:
                means[name][start:stop] = sums[name] / n_voxels
        if progress is not None:
            progress(stop)
        start = stop
    return means


def _given_means(dataset: xr.Dataset, progress: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    """Per-image means of a maps store's ``au``, ``eu`` and ``tu``, one chunk at a time."""
    mean = dataset[MEAN.name]
    n_images = mean.sizes["image"]
    means = {name: np.full(n_images, np.nan) for name in MAP_MEASURES}
    start = 0
    for size in mean.chunks[0] if mean.chunks is not None else (n_images,):
        stop = start + size
        for name in MAP_MEASURES:
            if name in dataset:
                values = dataset[name][start:stop]
                means[name][start:stop] = values.mean(dim=values.dims[1:], dtype=np.float64).values
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
