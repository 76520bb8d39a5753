"""Which images are read together: batches of whole store chunks, fitting chunks first."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from uqeval.names import ID_DOMAIN, TEST

#: Decoded bytes of probabilities read per batch (whole store chunks, at least one).
BATCH_BYTES = 64 * 2**20
#: Images per batch at most (whole store chunks, at least one): what a batch keeps of
#: each image besides its probabilities (maps, calibration tables, about 2 KB for
#: tiny images) would otherwise make a batch of tiny images as large as the store.
BATCH_IMAGES = 4096
#: Images whose maps are kept for the report's map panel: this many ID and OOD test images.
EXAMPLES_PER_KIND = 2


def plan_batches(
    chunk_sizes: Sequence[int],
    bytes_per_image: int,
    batch_bytes: int,
    fitting: np.ndarray,
    needs_fit: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Group the store's chunks into batches of image positions, fitting chunks first.

    A chunk that holds an image fitted on is a *fitting* chunk (when anything is
    fitted). Chunks of each kind are grouped, in store order, into batches of about
    ``batch_bytes`` decoded bytes or :data:`BATCH_IMAGES` images, whichever comes
    first; a batch never splits a chunk, so each chunk is decoded exactly once.

    Returns
    -------
    (fitting batches, other batches), each a list of sorted int64 position arrays.
    """
    edges = np.cumsum([0, *chunk_sizes])
    groups: dict[bool, list[np.ndarray]] = {True: [], False: []}
    pending: dict[bool, list[np.ndarray]] = {True: [], False: []}
    sizes = {True: 0, False: 0}
    for start, stop in itertools.pairwise(edges.tolist()):
        kind = bool(needs_fit and fitting[start:stop].any())
        pending[kind].append(np.arange(start, stop))
        sizes[kind] += stop - start
        if sizes[kind] * bytes_per_image >= batch_bytes or sizes[kind] >= BATCH_IMAGES:
            groups[kind].append(np.concatenate(pending[kind]))
            pending[kind], sizes[kind] = [], 0
    for kind in (True, False):
        if pending[kind]:
            groups[kind].append(np.concatenate(pending[kind]))
    return groups[True], groups[False]


def batch_ranges(chunk_sizes: Sequence[int], bytes_per_image: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Consecutive chunks grouped into ``[start, stop)`` ranges of about ``batch_bytes`` decoded bytes
    (at most :data:`BATCH_IMAGES` images)."""
    _, batches = plan_batches(chunk_sizes, bytes_per_image, batch_bytes, np.zeros(sum(chunk_sizes), bool), False)
    return [(int(batch[0]), int(batch[-1]) + 1) for batch in batches]


def runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """``(offset, start, stop)`` of each run of consecutive positions in sorted ``indices``."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(indices)]
    return [(int(i), int(indices[i]), int(indices[j - 1]) + 1) for i, j in zip(starts, stops, strict=True)]


def example_images(domains: np.ndarray, roles: np.ndarray, per_kind: int = EXAMPLES_PER_KIND) -> list[int]:
    """Positions of the images shown in the map panel: the first ID test images, then
    OOD test images from as many domains as possible."""
    test = roles == TEST
    chosen = [int(i) for i in np.flatnonzero(test & (domains == ID_DOMAIN))[:per_kind]]
    ood_domains = sorted(set(domains[test & (domains != ID_DOMAIN)]))
    firsts = [int(np.flatnonzero(test & (domains == name))[0]) for name in ood_domains]
    chosen += firsts[:per_kind]
    if len(firsts) < per_kind:
        rest = [int(i) for i in np.flatnonzero(test & (domains != ID_DOMAIN)) if int(i) not in firsts]
        chosen += rest[: per_kind - len(firsts)]
    return chosen
