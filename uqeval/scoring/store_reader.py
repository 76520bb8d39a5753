"""Reading images of a cube store into buffers that are reused.

No dask graph is built. Each run of consecutive positions is decoded from its chunk
files straight into the buffer when the array's layout allows
(:mod:`uqeval.scoring.chunk_files`), else read through zarr.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import zarr
import zarr.abc.store
import zarr.core.sync
from zarr.core.buffer import default_buffer_prototype

from uqeval.cube import softmax_array
from uqeval.cube.contract import MAP_MEASURES, MAPS_VARIABLE
from uqeval.errors import UQEvalError
from uqeval.scoring.batches import runs
from uqeval.scoring.chunk_files import READS, ChunkFiles, open_chunk_files
from uqeval.scoring.given_measures import with_stand_ins


@functools.lru_cache(maxsize=8)
def open_group(path: str) -> zarr.Group:
    """The store's root group, opened once per process and path."""
    return zarr.open_group(path, mode="r")


def open_array(path: str, name: str) -> zarr.Array:
    """The array ``name`` of the store at ``path``.

    Raises
    ------
    UQEvalError
        When the array is gone: the store was removed or replaced after it was opened.
    """
    try:
        return open_group(path)[name]
    except (KeyError, FileNotFoundError) as error:
        raise UQEvalError(
            f"`{name}` cannot be opened any more ({type(error).__name__}: {error}): the store was removed or "
            "replaced while it was read"
        ) from None


def images_without_chunks(path: str, name: str) -> np.ndarray:
    """Positions along ``image`` whose chunk (or shard) of array ``name`` the store lacks.

    zarr reads an absent chunk as the array's fill value without a word, so that a
    deleted chunk file of ``labels`` would read as unlabelled images. One listing of the
    array's folder answers for every chunk.

    Returns
    -------
    (n,) int64, sorted.
    """
    array = open_array(path, name)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    store_path = array.store_path
    prefix = f"{store_path.path}/" if store_path.path else ""
    keys = {key.removeprefix(prefix) for key in sync_list(store_path.store, prefix)}
    block = array.shards or array.chunks
    grid = [range(-(-size // length)) for size, length in zip(array.shape, block, strict=True)]
    missing = np.zeros(grid[0].stop, dtype=bool)
    for coords in itertools.product(*grid):
        if not missing[coords[0]] and array.metadata.encode_chunk_key(coords) not in keys:
            missing[coords[0]] = True
    starts = np.flatnonzero(missing) * block[0]
    if not len(starts):
        return np.empty(0, dtype=np.int64)
    positions = np.concatenate([np.arange(start, min(start + block[0], array.shape[0])) for start in starts])
    return positions.astype(np.int64)


def sync_list(store: zarr.abc.store.Store, prefix: str) -> list[str]:
    """Every key of ``store`` under ``prefix``."""

    async def listed() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    return zarr.core.sync.sync(listed())


class StoreArrays:
    """The arrays of one cube store, each opened once: its zarr array and, where the
    layout allows, its :class:`~uqeval.scoring.chunk_files.ChunkFiles`.

    Opening a zarr array parses its metadata, a few milliseconds that would otherwise
    be spent again for every batch.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._arrays: dict[str, zarr.Array] = {}
        self._files: dict[str, ChunkFiles | None] = {}

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = open_array(self.path, name)
        return self._arrays[name]

    def files(self, name: str, *, planes: bool = False) -> ChunkFiles | None:
        """The array's chunk files when its layout allows reading them directly: whole
        images, or with ``planes`` z-slabs of volumes chunked along ``z``."""
        if name not in self._files:
            array = self.array(name)
            files = open_chunk_files(self.path, name)
            matches = files is not None and files.shape == array.shape and files.dtype == array.dtype
            self._files[name] = files if matches else None
        files = self._files[name]
        if files is None or (files.z_chunk is not None) != planes:
            return None
        return files

    def read(self, name: str, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The entries at sorted positions ``indices`` of array ``name``, into ``out`` if given."""
        array = self.array(name)
        target = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype) if out is None else out
        files = self.files(name)
        slabs = None if files is not None else self.files(name, planes=True)
        prototype = default_buffer_prototype()
        for offset, start, stop in runs(indices):
            view = target[offset : offset + stop - start]
            if files is not None and view.flags.c_contiguous and files.read_into(start, stop, view):
                READS.add(name, direct=True, images=stop - start)
                continue
            if slabs is not None and view.flags.c_contiguous and _read_whole_volumes(slabs, start, stop, view):
                READS.add(name, direct=True, images=stop - start)
                continue
            READS.add(name, direct=False, images=stop - start)
            try:
                array.get_basic_selection(slice(start, stop), out=prototype.nd_buffer.from_numpy_array(view))
            except Exception as error:  # a damaged chunk: zarr and its codecs raise many kinds
                raise UQEvalError(
                    f"{name}: images {start} to {stop - 1} cannot be read ({type(error).__name__}: {error}); "
                    "a chunk file is damaged or was not written completely"
                ) from None
        return target


def _read_whole_volumes(slabs: ChunkFiles, start: int, stop: int, out: np.ndarray) -> bool:
    """Volumes ``[start, stop)`` of an array chunked in z-slabs, each decoded chunk by chunk
    into ``out``; False if a chunk file is missing."""
    depth = slabs.shape[-3]
    return all(slabs.read_planes(position, 0, depth, out[i : i + 1]) for i, position in enumerate(range(start, stop)))


def read_store(
    path: str,
    variable: str,
    has_labels: bool,
    indices: np.ndarray,
    out: dict[str, np.ndarray] | None = None,
    arrays: StoreArrays | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the images at sorted positions ``indices`` of a cube store.

    ``variable`` is ``probs`` or ``logits`` (softmax applied here). ``out`` may give
    arrays (by variable name) of the right shape to decode into; ``arrays`` the store's
    arrays opened already.

    Returns
    -------
    (probabilities (image, eu, au, class, y, x), labels (image, rater, y, x) or None)
    """
    arrays = arrays or StoreArrays(path)
    out = out or {}
    values = arrays.read(variable, indices, out.get(variable))
    if variable == "logits":
        values = softmax_array(values)
    return values, arrays.read("labels", indices, out.get("labels")) if has_labels else None


def read_input(path: str, positions: np.ndarray, z: int | None = None) -> np.ndarray:
    """The ``input`` images (image, channel, y, x) at ``positions`` of a cube store
    (of volumes, their plane ``z`` when given)."""
    return read_images(path, "input", positions, z)


def read_images(path: str, name: str, positions: np.ndarray, z: int | None = None) -> np.ndarray:
    """The images at ``positions`` of the cube store's array ``name`` (``input``, ``labels``):
    (image, channel or rater, [z,] y, x), or of volumes only their plane ``z`` when given."""
    array = open_array(path, name)
    selection: tuple = (np.asarray(positions, dtype=np.int64),)
    if z is not None:
        selection = (*selection, slice(None), int(z))
    return np.asarray(array.get_orthogonal_selection(selection))


def read_maps(arrays: StoreArrays, indices: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The maps of a maps store at sorted positions ``indices``: ``mean`` and whichever of
    ``au``, ``eu``, ``tu`` it holds, as float32 (a stand-in for each it lacks), with
    ``pred`` = argmax of ``mean`` over ``class`` (the first class of a tie, as the
    decomposition picks)."""
    return _maps_of({name: arrays.read(name, indices, out[name]) for name in ("mean", *MAP_MEASURES) if name in out})


def _maps_of(buffers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps read into reused ``buffers`` as float32 copies, with ``pred`` = argmax of ``mean``
    and a stand-in for each measure the store lacks (:func:`with_stand_ins`)."""
    # Copies: the batch keeps its maps (spilled or scored later) while the buffers are reused.
    maps = {name: values.astype(np.float32) for name, values in buffers.items()}
    n_classes = maps["mean"].shape[1]
    maps["pred"] = maps["mean"].argmax(axis=1).astype(np.uint8 if n_classes <= 256 else np.int32)
    return with_stand_ins(maps)


class StoreReader:
    """Reads batches of a store into reused buffers, one set per ``slot``.

    Decoding into memory that is already mapped avoids the page faults of a fresh
    multi-megabyte array per batch, which cost more than the decoding itself. Each
    batch in flight has its own slot. A maps store (``variable="maps"``) gives its maps
    instead of probabilities: ``(None, labels, maps)``.
    """

    def __init__(self, path: str, variable: str, has_labels: bool) -> None:
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self._arrays = StoreArrays(path)
        self._buffers: dict[tuple[str, int], np.ndarray] = {}

    def __call__(
        self, indices: np.ndarray, slot: int = 0
    ) -> tuple[np.ndarray | None, np.ndarray | None] | tuple[None, np.ndarray | None, dict[str, np.ndarray]]:
        def buffer(name: str) -> np.ndarray:
            array = self._arrays.array(name)
            held = self._buffers.get((name, slot))
            if held is None or held.shape[0] < len(indices):
                held = np.empty((len(indices), *array.shape[1:]), dtype=array.dtype)
                self._buffers[(name, slot)] = held
            return held[: len(indices)]

        if self.variable == MAPS_VARIABLE:
            group = open_group(self.path)
            present = [name for name in ("mean", *MAP_MEASURES) if name in group]
            maps = read_maps(self._arrays, indices, {name: buffer(name) for name in present})
            labels = self._arrays.read("labels", indices, buffer("labels")) if self.has_labels else None
            return None, labels, maps
        out = {self.variable: buffer(self.variable)}
        if self.has_labels:
            out["labels"] = buffer("labels")
        return read_store(self.path, self.variable, self.has_labels, indices, out=out, arrays=self._arrays)

    def slab(self, position: int, z_start: int, z_stop: int, slot: int = 0, *, by_chunk: bool = False) -> tuple:
        """Planes ``[z_start, z_stop)`` of the volume at ``position``: probabilities
        (1, eu, au, class, planes, y, x) and labels (1, rater, planes, y, x) or None,
        into reused buffers (one set per ``slot``); of a maps store, ``(None, labels, maps)``.

        With ``by_chunk``, a slab of several whole z-chunks of probabilities read from
        their chunk files comes as (chunk, eu, au, class, z_chunk, y, x), each chunk
        decoded in place, with ``z_chunk`` as a fourth item
        (:attr:`~uqeval.scoring.sources.Loaded.chunk_planes`): the planes of a chunk are
        not contiguous in the slab's own layout, and copying them there costs a fifth of
        the decoding.
        """
        planes = z_stop - z_start

        def buffer(name: str, shape: list[int]) -> np.ndarray:
            held = self._buffers.get((f"{name}-slab", slot))
            if held is None or held.size < np.prod(shape):
                held = np.empty(int(np.prod(shape)), dtype=self._arrays.array(name).dtype)
                self._buffers[(f"{name}-slab", slot)] = held
            return held[: int(np.prod(shape))].reshape(shape)

        def by_chunks(name: str) -> np.ndarray | None:
            files = self._arrays.files(name, planes=True)
            if files is None or files.z_chunk >= planes or planes % files.z_chunk or z_stop > files.shape[-3]:
                return None
            shape = [planes // files.z_chunk, *files.shape[1:-3], files.z_chunk, *files.shape[-2:]]
            out = buffer(name, shape)
            if not files.read_chunks(position, z_start, z_stop, out):
                return None
            READS.add(name, direct=True, images=0, planes=planes)
            return out

        def read(name: str, z_axis: int) -> np.ndarray:
            array = self._arrays.array(name)
            shape = list(array.shape)
            shape[0], shape[z_axis] = 1, planes
            out = buffer(name, shape)
            files = self._arrays.files(name, planes=True)
            if files is not None and files.read_planes(position, z_start, z_stop, out):
                READS.add(name, direct=True, images=0, planes=planes)
                return out
            READS.add(name, direct=False, images=0, planes=planes)
            selection = [slice(None)] * array.ndim
            selection[0] = slice(position, position + 1)
            selection[z_axis] = slice(z_start, z_stop)
            try:
                array.get_basic_selection(
                    tuple(selection), out=default_buffer_prototype().nd_buffer.from_numpy_array(out)
                )
            except Exception as error:  # a damaged chunk: zarr and its codecs raise many kinds
                raise UQEvalError(
                    f"{name}: planes {z_start} to {z_stop - 1} of image {position} cannot be read "
                    f"({type(error).__name__}: {error}); a chunk file is damaged or was not written completely"
                ) from None
            return out

        labels = read("labels", -3) if self.has_labels else None
        if self.variable == MAPS_VARIABLE:
            group = open_group(self.path)
            buffers = {name: read(name, -3) for name in ("mean", *MAP_MEASURES) if name in group}
            return None, labels, _maps_of(buffers)
        chunks = by_chunks(self.variable) if by_chunk else None
        values = read(self.variable, -3) if chunks is None else chunks
        if self.variable == "logits":
            values = softmax_array(values)
        if chunks is not None:
            return values, labels, None, values.shape[-3]
        return values, labels
