"""Decoding a local zarr v3 array's chunk files straight into the caller's buffer.

zarr's own read path decodes each chunk into a fresh array and copies it into the
output; for multi-megabyte chunks the page faults of that fresh array and the copy
cost more than Blosc's decoding itself. The arrays :class:`uqeval.CubeWriter` writes
have one simple layout, which this module reads directly:

- zarr v3, a local directory store, a regular chunk grid that splits only the first
  (``image``) dim, or for volumes one per chunk in z-slabs, the first and ``z``
  (:meth:`ChunkFiles.read_planes`); the default chunk key encoding (``c/3/0/0/...`` or
  ``c.3.0.0...``);
- codecs ``bytes`` (little endian, as this machine) and optionally ``blosc``, whose
  frames are self-describing, so decoding needs none of their settings.

:func:`open_chunk_files` returns None for any other array (sharding, other codecs,
remote stores, zarr v2), and callers read it through zarr as before. :data:`READS`
counts the images read each way, so that a benchmark or a test can tell when the
direct path is not taken.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numcodecs import Blosc

from uqeval.errors import UQEvalError


@dataclass(frozen=True)
class ChunkFiles:
    """A zarr v3 array of one of the layouts above, chunked along its first dim only.

    Attributes
    ----------
    folder : Path
        The array's directory (holding ``zarr.json``).
    shape : tuple of int
    dtype : numpy dtype
    chunk : int
        Images (entries of the first dim) per chunk.
    z_chunk : int or None
        Planes per chunk along ``z`` (the third dim from the end) of an array of
        volumes chunked in z-slabs, one volume per chunk; None when ``z`` is whole.
    compressed : bool
        Whether the chunks are Blosc frames (else raw little-endian bytes).
    separator : str
        ``/`` or ``.`` in chunk keys.
    """

    folder: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk: int
    compressed: bool
    separator: str
    z_chunk: int | None = None

    def chunk_path(self, number: int, z_number: int = 0) -> Path:
        """The file of chunk ``number`` along the first dim (and ``z_number`` along ``z``)."""
        indices = ["0"] * (len(self.shape) - 1)
        indices[-3 if len(indices) >= 3 else 0] = str(z_number)
        key = self.separator.join(["c", str(number), *indices])
        return self.folder / key

    def read_planes(self, position: int, z_start: int, z_stop: int, out: np.ndarray) -> bool:
        """Decode planes ``[z_start, z_stop)`` of entry ``position`` of an array chunked
        in z-slabs into ``out``, a C-contiguous ``(1, ..., z_stop - z_start, y, x)``;
        ``z_start`` must start a chunk. False if a chunk file is missing.

        A slab of one whole chunk is decoded straight into ``out``; otherwise each chunk
        goes through a scratch chunk, reused by the thread, from which its planes are copied.
        """
        depth, planes = self.shape[-3], self.z_chunk
        if z_start % planes:
            raise ValueError(f"planes from {z_start} do not start a chunk of {planes}")
        for z_number in range(z_start // planes, -(-z_stop // planes)):
            first = z_number * planes
            count = min(first + planes, depth, z_stop) - first
            target = out[..., first - z_start : first - z_start + count, :, :]
            try:
                if count == planes and target.flags.c_contiguous:
                    self._decode(position, target, z_number)
                else:
                    scratch = _chunk_scratch((1, *self.shape[1:-3], planes, *self.shape[-2:]), self.dtype)
                    self._decode(position, scratch, z_number)
                    target[...] = scratch[..., :count, :, :]
            except FileNotFoundError:
                return False
        return True

    def read_chunks(self, position: int, z_start: int, z_stop: int, out: np.ndarray) -> bool:
        """Decode the z-chunks that make up planes ``[z_start, z_stop)`` of entry
        ``position``, each whole, straight into ``out[k]``, a C-contiguous ``(chunks, ...,
        z_chunk, y, x)``: no copy, where :meth:`read_planes` copies each chunk's planes
        into place when a slab holds several. False if a chunk file is missing."""
        planes = self.z_chunk
        if z_start % planes or (z_stop - z_start) % planes or z_stop > self.shape[-3]:
            raise ValueError(f"planes {z_start} to {z_stop} are not whole chunks of {planes}")
        try:
            for k, z_number in enumerate(range(z_start // planes, z_stop // planes)):
                self._decode(position, out[k : k + 1], z_number)
        except FileNotFoundError:
            return False
        return True

    def read_into(self, start: int, stop: int, out: np.ndarray) -> bool:
        """Decode entries ``[start, stop)`` into ``out``, a C-contiguous array of shape
        ``(stop - start, *shape[1:])``; False if a chunk file is missing (zarr then gives
        its fill value), with ``out`` partly written.

        Chunks that ``[start, stop)`` covers whole are decoded straight into ``out``; the
        others into a scratch chunk, from which the overlap is copied.
        """
        for number in range(start // self.chunk, -(-stop // self.chunk)):
            first = number * self.chunk
            last = min(first + self.chunk, self.shape[0])
            low, high = max(first, start), min(last, stop)
            target = out[low - start : high - start]
            try:
                if low == first and high == first + self.chunk:
                    self._decode(number, target)
                else:  # partly wanted, or the array's last chunk (stored whole, padded)
                    whole = np.empty((self.chunk, *self.shape[1:]), dtype=self.dtype)
                    self._decode(number, whole)
                    target[...] = whole[low - first : high - first]
            except FileNotFoundError:
                return False
        return True

    def _named(self, path: Path) -> Path:
        """A chunk file as messages name it, ``probs/c/3/0/...``: the engine adds the store."""
        return path.relative_to(self.folder.parent)

    def _decode(self, number: int, target: np.ndarray, z_number: int = 0) -> None:
        """Decode chunk ``number`` (``z_number`` along ``z``) into ``target``, which holds one whole chunk."""
        path = self.chunk_path(number, z_number)
        with open(path, "rb") as file:
            if not self.compressed:
                view = memoryview(target.reshape(-1).view(np.uint8))
                if file.readinto(view) != view.nbytes:
                    raise UQEvalError(
                        f"{self._named(path)}: the chunk file is shorter than its chunk ({view.nbytes} bytes)"
                    )
                return
            frame = _frame_buffer(os.fstat(file.fileno()).st_size)
            size = file.readinto(frame)
        try:
            # A Blosc frame's 16-byte header gives its decoded size (bytes 4-7) and its
            # own length (bytes 12-15); Blosc itself does not check the latter.
            if size < 16:
                raise ValueError(f"{size} bytes are too few for a Blosc frame")
            held, length = int.from_bytes(frame[4:8], "little"), int.from_bytes(frame[12:16], "little")
            if length != size:
                raise ValueError(f"the file has {size} bytes, its Blosc header says {length}")
            if held != target.nbytes:
                raise ValueError(f"it holds {held} bytes, not the chunk's {target.nbytes}")
            _BLOSC.decode(frame[:size], out=target)
        except (RuntimeError, ValueError) as error:
            raise UQEvalError(
                f"{self._named(path)}: the chunk cannot be decoded ({error}); "
                "the file is damaged or was not written completely"
            ) from None


#: Decodes any Blosc frame: a frame's header holds every setting decoding needs, so
#: this codec's own settings (used only to encode) do not matter.
_BLOSC = Blosc()

#: Per thread, a reused buffer for the compressed bytes of one chunk file: a fresh
#: multi-megabyte ``bytes`` per chunk would cost a page fault per 4 KiB.
_FRAMES = threading.local()


def _chunk_scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reused array of ``shape`` for the calling thread: one decoded chunk."""
    held = getattr(_FRAMES, "chunk", None)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if held is None or held.nbytes < size:
        held = np.empty(max(size, 1), dtype=np.uint8)
        _FRAMES.chunk = held
    return held[:size].view(dtype).reshape(shape)


def _frame_buffer(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes, reused by the calling thread."""
    held = getattr(_FRAMES, "buffer", None)
    if held is None or len(held) < size:
        held = bytearray(max(size, 1))
        _FRAMES.buffer = held
    return memoryview(held)[:size]


def open_chunk_files(store: str | Path, name: str) -> ChunkFiles | None:
    """The array ``name`` of the zarr store at ``store``, when its layout is one this
    module decodes; None otherwise (read it through zarr)."""
    folder = Path(store) / name
    try:
        metadata = json.loads((folder / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        return _layout(folder, metadata)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _layout(folder: Path, metadata: dict) -> ChunkFiles | None:
    if metadata.get("zarr_format") != 3 or metadata.get("node_type") != "array":
        return None
    if metadata.get("storage_transformers") or sys.byteorder != "little":
        return None
    shape = tuple(int(size) for size in metadata["shape"])
    dtype = np.dtype(metadata["data_type"])
    grid = metadata["chunk_grid"]
    if grid["name"] != "regular" or not shape:
        return None
    chunk_shape = tuple(int(size) for size in grid["configuration"]["chunk_shape"])
    if len(chunk_shape) != len(shape) or chunk_shape[0] < 1:
        return None
    z_chunk = None
    if chunk_shape[1:] != shape[1:]:
        # Volumes in z-slabs: one volume per chunk, split along z alone.
        split_z = len(shape) >= 5 and chunk_shape[0] == 1 and chunk_shape[-3] < shape[-3]
        if not split_z or chunk_shape[1:-3] != shape[1:-3] or chunk_shape[-2:] != shape[-2:]:
            return None
        z_chunk = chunk_shape[-3]
    encoding = metadata["chunk_key_encoding"]
    if encoding["name"] != "default":
        return None
    separator = encoding.get("configuration", {}).get("separator", "/")
    codecs = metadata["codecs"]
    if codecs[0]["name"] != "bytes" or codecs[0].get("configuration", {}).get("endian", "little") != "little":
        return None
    if len(codecs) == 1:
        compressed = False
    elif len(codecs) == 2 and codecs[1]["name"] == "blosc":
        compressed = True
    else:
        return None
    return ChunkFiles(folder, shape, dtype, chunk_shape[0], compressed, separator, z_chunk)


class ArrayReads(NamedTuple):
    """Images of one array read straight from its chunk files, and through zarr; and the
    planes of volumes read in z-slabs each way."""

    direct: int
    through_zarr: int
    direct_planes: int = 0
    planes_through_zarr: int = 0


class ReadTally:
    """Images read per array in this process: decoded straight from chunk files, or through zarr.

    The reader takes the direct path wherever an array's layout allows and falls back
    to zarr without a word where it does not (or where a chunk file is missing); this
    tally is how ``benchmarks/bench_score.py --check`` and the tests see which it took.
    Safe to update from the reading threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: Counter[tuple[str, bool]] = Counter()
        self._planes: Counter[tuple[str, bool]] = Counter()

    def add(self, array: str, *, direct: bool, images: int = 0, planes: int = 0) -> None:
        """Count ``images`` (or ``planes`` of a volume) of ``array`` read directly (``direct``) or through zarr."""
        with self._lock:
            if images:
                self._images[array, direct] += images
            if planes:
                self._planes[array, direct] += planes

    def by_array(self) -> dict[str, ArrayReads]:
        """Array name → its images (and planes) read each way since the last :meth:`reset`."""
        with self._lock:
            names = sorted({name for name, _ in self._images} | {name for name, _ in self._planes})
            return {
                name: ArrayReads(
                    self._images[name, True],
                    self._images[name, False],
                    self._planes[name, True],
                    self._planes[name, False],
                )
                for name in names
            }

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._images.clear()
            self._planes.clear()


#: Every read of :class:`uqeval.scoring.store_reader.StoreArrays` in this process.
READS = ReadTally()
