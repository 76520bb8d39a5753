"""Every z-slice of a volume scored as an image of its own (``uqeval score --unit slice``).

A store of ``n`` volumes of depth ``Z`` becomes a source of ``n·Z`` images: slice ``z`` of
volume ``v`` is image ``v·Z + z``, with the volume's id, domain and role. The engine then
scores them as it scores 2D images, so every per-image statistic (aggregations, NCC,
failure risk, OOD AUROC) is per slice, while the pooled ones (Platt scaling, ``τ``,
the EU scale, pooled calibration) see the same voxels as per volume. Batches read whole
chunks, along ``z`` too: a batch's slices are cut from the planes it read, so memory
holds a batch of slices, not whole volumes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from uqeval.names import UNITS
from uqeval.scoring.sources import Loaded, Reader, SlabReader, Source

__all__ = [
    "UNITS",
    "as_slices",
    "read_slices",
    "slice_chunks",
    "slice_reader",
    "slice_source",
    "slices_of",
    "volumes_of",
]


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


def slice_reader(read: Reader, depth: int, read_slab: SlabReader | None = None) -> Reader:
    """A reader of slices from a reader of volumes, or, given one, from a reader of
    z-slabs: then only the planes a batch holds are read (:func:`read_slices`)."""

    def load(indices: np.ndarray, slot: int = 0) -> Loaded:
        if read_slab is not None:
            return read_slices(read_slab, indices, depth, slot)
        volumes, picks = volumes_of(indices, depth)
        return slices_of(read(volumes, slot), picks)

    return load


def read_slices(read_slab: SlabReader, indices: np.ndarray, depth: int, slot: int = 0) -> Loaded:
    """The slices ``indices`` (positions ``v·depth + z``, sorted), each volume's read as the
    one slab of planes from its first slice to its last, so that memory holds the batch's
    planes, not its volumes."""
    indices = np.asarray(indices, dtype=np.int64)
    volumes = indices // depth
    parts = []
    for volume in np.unique(volumes).tolist():
        planes = indices[volumes == volume] % depth
        first, last = int(planes[0]), int(planes[-1])
        parts.append(slices_of(read_slab(volume, first, last + 1, slot).in_planes(), planes - first))
    cubes = [part.cubes for part in parts if part.cubes is not None]
    labels = [part.labels for part in parts if part.labels is not None]
    return Loaded(
        np.concatenate(cubes) if len(cubes) > 1 else (cubes[0] if cubes else None),
        np.concatenate(labels) if len(labels) > 1 else (labels[0] if labels else None),
    )


def slice_chunks(chunk_sizes: list[int], depth: int, chunk_depth: int | None) -> list[int]:
    """Slices per chunk of a source of slices: a chunk of one volume split along ``z`` in
    chunks of ``chunk_depth`` planes gives one chunk of slices per z-chunk; any other
    chunk of volumes, all its slices.

    >>> slice_chunks([1, 1], depth=5, chunk_depth=2)
    [2, 2, 1, 2, 2, 1]
    >>> slice_chunks([2], depth=5, chunk_depth=5)
    [10]
    """
    sizes: list[int] = []
    for size in chunk_sizes:
        if size == 1 and chunk_depth and chunk_depth < depth:
            sizes += [min(chunk_depth, depth - start) for start in range(0, depth, chunk_depth)]
        else:
            sizes.append(size * depth)
    return sizes


def slice_source(source: Source) -> Source:
    """``source`` with every z-slice of its volumes as an image; a 2D source as it is."""
    if source.depth is None:
        return source
    depth = source.depth
    n_volumes = source.n_images

    def per_slice(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, depth)

    def reader():
        return slice_reader(source.reader(), depth, None if source.slab_reader is None else source.slab_reader())

    def sliced(read):
        """A reader of (image, channel or rater, …) arrays of slices from one of volumes."""
        if read is None:
            return None

        def load(positions: np.ndarray, z: None = None) -> np.ndarray:
            volumes, picks = volumes_of(positions, depth)
            return as_slices(read(volumes), 1)[picks]

        return load

    return dataclasses.replace(
        source,
        ids=per_slice(source.ids),
        domains=per_slice(source.domains),
        roles=per_slice(source.roles),
        reader=reader,
        chunk_sizes=slice_chunks(source.chunk_sizes, depth, source.chunk_depth),
        bytes_per_image=max(1, source.bytes_per_image // depth),
        read_input=sliced(source.read_input),
        read_labels=sliced(source.read_labels),
        slice_z=np.tile(np.arange(depth), n_volumes),
        depth=None,
        slice_depth=depth,
    )
