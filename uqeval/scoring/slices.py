"""Every z-slice of a volume scored as an image of its own (``uqeval score --unit slice``).

A store of ``n`` volumes of depth ``Z`` becomes a source of ``n·Z`` images: slice ``z`` of
volume ``v`` is image ``v·Z + z``, with the volume's id, domain and role. The engine then
scores them as it scores 2D images, so every per-image statistic (aggregations, NCC,
failure risk, OOD AUROC) is per slice, while the pooled ones (Platt scaling, ``τ``,
the EU scale, pooled calibration) see the same voxels as per volume. Batches still read
whole chunks of volumes; a batch's slices are cut from the volumes it read.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from uqeval.names import UNITS
from uqeval.scoring.sources import Loaded, Reader, Source

__all__ = ["UNITS", "as_slices", "slice_reader", "slice_source", "slices_of", "volumes_of"]


def volumes_of(indices: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted volumes that hold the slices ``indices`` (positions ``v·depth + z``), and
    where each slice lies in those volumes' slices stacked volume by volume.

    >>> volumes_of(np.array([2, 3, 7]), depth=4)
    (array([0, 1]), array([2, 3, 7]))
    >>> volumes_of(np.array([9, 10]), depth=4)
    (array([2]), array([1, 2]))
    """
    indices = np.asarray(indices, dtype=np.int64)
    volumes = np.unique(indices // depth)
    rank = np.searchsorted(volumes, indices // depth)
    return volumes, rank * depth + indices % depth


def as_slices(array: np.ndarray | None, leading: int) -> np.ndarray | None:
    """``array`` (volume, *middle, z, y, x) as (volume·z, *middle, y, x): the z axis moved next
    to the volume axis and merged with it; ``leading`` counts the axes of ``middle``."""
    if array is None:
        return None
    moved = np.moveaxis(array, 1 + leading, 1)
    return moved.reshape(moved.shape[0] * moved.shape[1], *moved.shape[2:])


def slices_of(loaded: Loaded, picks: np.ndarray) -> Loaded:
    """The slices ``picks`` (positions among the batch's volumes' slices) of a batch of volumes."""
    cubes = as_slices(loaded.cubes, 3)  # eu, au, class
    labels = as_slices(loaded.labels, 1)  # rater
    maps = None
    if loaded.maps is not None:
        maps = {name: as_slices(array, 1 if name == "mean" else 0)[picks] for name, array in loaded.maps.items()}
    return Loaded(
        None if cubes is None else np.ascontiguousarray(cubes[picks]),
        None if labels is None else np.ascontiguousarray(labels[picks]),
        maps,
    )


def slice_reader(read: Reader, depth: int) -> Reader:
    """A reader of slices from a reader of volumes."""

    def load(indices: np.ndarray, slot: int = 0) -> Loaded:
        volumes, picks = volumes_of(indices, depth)
        return slices_of(read(volumes, slot), picks)

    return load


def slice_source(source: Source) -> Source:
    """``source`` with every z-slice of its volumes as an image; a 2D source as it is."""
    if source.depth is None:
        return source
    depth = source.depth
    n_volumes = source.n_images

    def per_slice(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, depth)

    def reader():
        return slice_reader(source.reader(), depth)

    def sliced(read):
        """A reader of (image, channel or rater, …) arrays of slices from one of volumes."""
        if read is None:
            return None

        def load(positions: np.ndarray) -> np.ndarray:
            volumes, picks = volumes_of(positions, depth)
            return as_slices(read(volumes), 1)[picks]

        return load

    return dataclasses.replace(
        source,
        ids=per_slice(source.ids),
        domains=per_slice(source.domains),
        roles=per_slice(source.roles),
        reader=reader,
        chunk_sizes=[size * depth for size in source.chunk_sizes],
        bytes_per_image=max(1, source.bytes_per_image // depth),
        read_input=sliced(source.read_input),
        read_labels=sliced(source.read_labels),
        slice_z=np.tile(np.arange(depth), n_volumes),
        depth=None,
        slice_depth=depth,
    )
