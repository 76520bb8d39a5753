"""Reading images of a cube store straight through zarr, into buffers that are reused.

No dask graph is built: each run of consecutive positions is one zarr read.
"""

from __future__ import annotations

import functools

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from uqeval.cube import softmax_array
from uqeval.scoring.batches import runs


@functools.lru_cache(maxsize=8)
def open_group(path: str) -> zarr.Group:
    """The store's root group, opened once per process and path."""
    return zarr.open_group(path, mode="r")


def read_store(
    path: str,
    variable: str,
    has_labels: bool,
    indices: np.ndarray,
    out: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the images at sorted positions ``indices`` of a cube store.

    ``variable`` is ``probs`` or ``logits`` (softmax applied here). ``out`` may give
    arrays (by variable name) of the right shape to decode into.

    Returns
    -------
    (probabilities (image, eu, au, class, y, x), labels (image, rater, y, x) or None)
    """
    group = open_group(path)
    prototype = default_buffer_prototype()

    def read(name: str) -> np.ndarray:
        array = group[name]
        target = (out or {}).get(name)
        if target is None:
            target = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
        for offset, start, stop in runs(indices):
            view = target[offset : offset + stop - start]
            array.get_basic_selection(slice(start, stop), out=prototype.nd_buffer.from_numpy_array(view))
        return target

    values = read(variable)
    if variable == "logits":
        values = softmax_array(values)
    return values, read("labels") if has_labels else None


def read_input(path: str, positions: np.ndarray) -> np.ndarray:
    """The ``input`` images (image, channel, y, x) at ``positions`` of a cube store."""
    array = open_group(path)["input"]
    return np.asarray(array.get_orthogonal_selection((np.asarray(positions, dtype=np.int64),)))


class StoreReader:
    """Reads batches of a store into two reused buffers (``slot`` 0 or 1).

    Decoding into memory that is already mapped avoids the page faults of a fresh
    multi-megabyte array per batch, which cost more than the decoding itself. Two
    slots let one batch be read while the previous one is computed on.
    """

    def __init__(self, path: str, variable: str, has_labels: bool) -> None:
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self._buffers: dict[tuple[str, int], np.ndarray] = {}

    def __call__(self, indices: np.ndarray, slot: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        def buffer(name: str) -> np.ndarray:
            array = open_group(self.path)[name]
            held = self._buffers.get((name, slot))
            if held is None or held.shape[0] < len(indices):
                held = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
                self._buffers[(name, slot)] = held
            return held[: len(indices)]

        out = {self.variable: buffer(self.variable)}
        if self.has_labels:
            out["labels"] = buffer("labels")
        return read_store(self.path, self.variable, self.has_labels, indices, out=out)
