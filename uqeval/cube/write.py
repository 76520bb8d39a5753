"""Writing a cube store: :class:`CubeWriter`, resumable and never half-done.

The writer writes zarr v3 with the variables, dims, dtypes and attributes that
:mod:`uqeval.cube.contract` declares, and checks each batch against the same rules the
reader applies.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from uqeval.checks import check_decomposable, raise_for_value_stats, value_stats
from uqeval.cube.contract import (
    ATTRIBUTES,
    DOMAIN,
    IMAGE_DIM,
    INPUT,
    LABELS,
    MAP_MEASURES,
    MAPS,
    MAPS_VARIABLE,
    MAX_LABELLED_CLASSES,
    MEAN,
    PROGRESS_ATTR,
    ROLE,
    SCHEMA,
    SPACING_ATTR,
    SPATIAL_DIMS,
    STRINGS,
    VALUES,
    VOLUME_DIMS,
    WRITTEN_FLOAT_DTYPES,
    Variable,
    WriteProgress,
    are_class_names,
    check_domains,
    check_spacing,
    default_class_names,
    first_invalid_label,
    is_class_index,
    pixel_text,
)
from uqeval.errors import UQEvalError
from uqeval.names import IGNORE_LABEL

#: Uncompressed bytes per chunk that the writer aims for: images per chunk for images,
#: and for a volume larger than this, slices per z-slab. Measured on a float16 volume
#: (eu 4 × au 2 × class 2 × 128³, Blosc LZ4, one zarr thread, two busy cores), reading
#: and decoding it slab by slab ran at 180–310 MiB/s with 0.5 MiB chunks, 470–600 MiB/s
#: with 2–4 MiB, 830–970 MiB/s with 8–16 MiB and 490–520 MiB/s with 32 MiB (a chunk
#: that no longer fits the caches). Per-chunk overhead dominates below a few MiB, and a
#: reader holds a few chunks and their maps at once, so memory grows with the chunk:
#: 8 MiB is the smallest size at the top of that curve.
CHUNK_BYTES = 8 * 2**20


def default_compressor() -> zarr.codecs.BloscCodec:
    """The writer's codec: Blosc LZ4 with byte shuffle.

    Chosen by ``benchmarks/bench_store.py``: on float16 probabilities it reads back
    several times faster than zarr's default (Zstandard on float32) at a similar
    size; shuffling the two bytes of each half float groups the slowly varying
    exponent bytes, which is most of what compresses.
    """
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class CubeWriter:
    """Write a cube store image batch by image batch; resumable and never half-done.

    Images are buffered and written a whole chunk at a time. After each chunk the
    writer records how many images are complete; the store reads as complete only
    after :meth:`close` (or leaving the ``with`` block without an error). After a
    crash, ``CubeWriter(path, ..., resume=True)`` truncates to the last complete image
    and :attr:`n_images` says how many to skip.

    Volumes: with ``depth`` the store holds volumes, every variable ending in
    ``(z, y, x)``. :meth:`append` takes whole volumes; :meth:`volume` writes one volume
    member by member (:meth:`VolumeWriter.write_member`) or slab by slab
    (:meth:`VolumeWriter.write_slab`), so that memory holds one member's samples, or
    one slab, rather than the whole ``eu × au`` cube of a volume. A volume larger than
    :data:`CHUNK_BYTES` is chunked in z-slabs of ``chunk_depth`` slices (one volume per
    chunk, whole in every other dim); a smaller one whole, several volumes per chunk.

    Parameters
    ----------
    path : where the zarr v3 store goes.
    n_classes, eu, au, height, width : sizes of each image's cube.
    depth : slices per volume along ``z``; None (default) for a store of 2D images.
    raters : label maps per image (0: the store has no labels).
    channels : channels of the input image, stored as ``input`` (image, channel, [z,] y, x)
        float32 (0: the store has no input images).
    variable : ``"probs"`` (default) or ``"logits"``.
    dtype : storage dtype of the probabilities, ``"float16"`` (default) or ``"float32"``.
    chunk_images : images per chunk; default aims at :data:`CHUNK_BYTES` (8 MiB)
        uncompressed chunks. A volume chunked in slabs has one volume per chunk.
    chunk_depth : slices per z-slab chunk of a store of volumes; default: the whole
        volume when it holds at most :data:`CHUNK_BYTES` of probabilities, otherwise
        as many slices as fit in :data:`CHUNK_BYTES` (at least one). 8 MiB chunks read
        and decode about 3× faster than 0.5 MiB ones and as fast as 16 MiB ones (see
        :data:`CHUNK_BYTES`), and keep a reader's memory at a few chunks.
    spacing : the size of a voxel (z, y, x) or pixel (y, x) in mm, positive and
        finite; recorded as the attribute ``spacing`` (left out when None).
    compressor : a zarr v3 bytes-to-bytes codec, ``None`` for none, or ``"default"``
        (:func:`default_compressor`).
    au_method, eu_method, model, dataset, seed, class_names, background : store
        attributes (docs/cube.md); ``attrs`` adds any others.
    overwrite : replace an existing store at ``path``: only a store written by a
        ``CubeWriter`` or an empty folder; anything else is refused
        (:func:`uqeval.check_replaceable`).
    resume : continue an existing store written by a ``CubeWriter``.

    Examples
    --------
    >>> import numpy as np, tempfile, uqeval
    >>> probs = np.full((4, 2, 3, 2, 8, 8), 0.5, dtype=np.float32)
    >>> path = tempfile.mkdtemp() + "/cube.zarr"
    >>> with uqeval.CubeWriter(path, n_classes=2, eu=2, au=3, height=8, width=8) as writer:
    ...     writer.append(probs, domain=["id", "id", "blur", "blur"])
    >>> uqeval.open_cube(path).sizes["image"]
    4
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_classes: int,
        eu: int | None = None,
        au: int | None = None,
        height: int,
        width: int,
        depth: int | None = None,
        raters: int = 0,
        channels: int = 0,
        variable: str = "probs",
        dtype: str | np.dtype | None = None,
        measures: Sequence[str] = MAP_MEASURES,
        chunk_images: int | None = None,
        chunk_depth: int | None = None,
        spacing: Sequence[float] | None = None,
        compressor: Any = "default",
        au_method: str = "",
        eu_method: str = "",
        model: str = "",
        dataset: str = "",
        seed: int | None = None,
        class_names: Sequence[str] | None = None,
        background: int = 0,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        maps = variable == MAPS_VARIABLE
        if maps:
            eu = au = 1  # no members nor samples: the maps are given as they are
            if dtype is None:
                dtype = "float32"
        elif eu is None or au is None:
            raise UQEvalError("CubeWriter: give `eu` and `au` (members and samples per image)")
        positive = {"n_classes": n_classes, "eu": eu, "au": au, "height": height, "width": width}
        if depth is not None:
            positive["depth"] = depth
        elif chunk_depth is not None:
            raise UQEvalError("CubeWriter: `chunk_depth` given for a store of images; pass `depth` for volumes")
        if chunk_depth is not None:
            positive["chunk_depth"] = chunk_depth
        for name, value in positive.items():
            if not _is_integer(value) or value < 1:
                raise UQEvalError(f"CubeWriter: `{name}` must be a positive integer, got {value!r}")
        for name, value in {"raters": raters, "channels": channels}.items():
            if not _is_integer(value) or value < 0:
                raise UQEvalError(f"CubeWriter: `{name}` must be an integer >= 0, got {value!r}")
        if chunk_images is not None and (not _is_integer(chunk_images) or chunk_images < 1):
            raise UQEvalError(f"CubeWriter: `chunk_images` must be a positive integer, got {chunk_images!r}")
        if maps:
            unknown = [name for name in measures if name not in MAP_MEASURES]
            if unknown or not measures or len(set(measures)) != len(measures):
                raise UQEvalError(
                    f"CubeWriter: `measures` is {list(measures)!r}; expected some of "
                    f"{', '.join(MAP_MEASURES)}, each once"
                )
            if n_classes < 2:
                raise UQEvalError(f"CubeWriter: n_classes={n_classes}; a segmentation has at least 2 classes")
        else:
            check_decomposable(eu, au, n_classes, "CubeWriter")
        if n_classes > MAX_LABELLED_CLASSES and raters:
            raise UQEvalError(
                f"CubeWriter: labels are uint8 with {IGNORE_LABEL} = ignore; at most {MAX_LABELLED_CLASSES} classes"
            )
        specs = {spec.name: spec for spec in VALUES} | {MAPS_VARIABLE: MEAN}
        if variable not in specs:
            raise UQEvalError(f"CubeWriter: `variable` is {variable!r}; expected {' or '.join(map(repr, specs))}")
        if dtype is None:
            dtype = "float16"
        float_dtypes = " or ".join(WRITTEN_FLOAT_DTYPES)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise UQEvalError(f"CubeWriter: `dtype` is {dtype!r}; expected {float_dtypes}") from None
        if self.dtype not in [np.dtype(name) for name in WRITTEN_FLOAT_DTYPES]:
            raise UQEvalError(f"CubeWriter: `dtype` is {self.dtype}; expected {float_dtypes}")
        if class_names is not None and not are_class_names(class_names):
            raise UQEvalError(f"CubeWriter: `class_names` is {class_names!r}; expected one string per class")
        if class_names is not None and len(class_names) != n_classes:
            raise UQEvalError(f"CubeWriter: {len(class_names)} class_names for {n_classes} classes")
        if not is_class_index(background, n_classes):
            raise UQEvalError(f"CubeWriter: `background` is {background!r}; expected a class in [0, {n_classes})")
        self.variable = variable
        #: The spatial dims of every variable: ``("y", "x")``, or ``("z", "y", "x")`` with ``depth``.
        self.spatial_dims = SPATIAL_DIMS if depth is None else VOLUME_DIMS
        if spacing is None:
            spacing = (attrs or {}).get(SPACING_ATTR)
        spacing_attr = None if spacing is None else check_spacing(spacing, self.spatial_dims, "CubeWriter")
        self._spec = specs[variable].with_spatial(self.spatial_dims)
        #: The maps a maps store holds beside ``mean`` (none for probabilities or logits).
        self.measures = tuple(name for name in MAP_MEASURES if name in measures) if maps else ()
        self._map_specs = [spec.with_spatial(self.spatial_dims) for spec in MAPS if spec.name in self.measures]
        self._labels_spec = LABELS.with_spatial(self.spatial_dims)
        self._input_spec = INPUT.with_spatial(self.spatial_dims)
        shape = (height, width) if depth is None else (depth, height, width)
        pixels = dict(zip(self.spatial_dims, (int(size) for size in shape), strict=True))
        #: Dim name → size, for every dim but ``image`` of the variables this writer writes.
        self.sizes = {"eu": eu, "au": au, "class": n_classes, **pixels, "rater": raters, "channel": channels}
        self.cube_shape = self._spec.image_shape(self.sizes)
        self.raters = int(raters)
        self.channels = int(channels)
        self.depth = None if depth is None else int(depth)
        image_bytes = math.prod(self.cube_shape) * self.dtype.itemsize
        if self.depth is not None and chunk_depth is None:
            fits = image_bytes <= CHUNK_BYTES
            chunk_depth = self.depth if fits else max(1, CHUNK_BYTES // (image_bytes // self.depth))
        #: Slices per z-slab chunk (None for images).
        self.chunk_depth = None if chunk_depth is None else min(int(chunk_depth), self.depth)
        in_slabs = self.chunk_depth is not None and self.chunk_depth < self.depth
        if in_slabs and chunk_images not in (None, 1):
            raise UQEvalError(
                f"CubeWriter: chunk_images={chunk_images} with z-slabs of chunk_depth={self.chunk_depth} < "
                f"depth={self.depth}; a chunk in slabs holds one volume"
            )
        if chunk_images is None:
            chunk_images = 1 if in_slabs else max(1, min(64, CHUNK_BYTES // image_bytes))
        self.chunk_images = int(chunk_images)
        self._volume: VolumeWriter | None = None
        self._compressor = default_compressor() if compressor == "default" else compressor
        self._buffer: list[dict[str, Any]] = []
        self._closed = False
        self._id_kind: str | None = None
        self._seen_ids: set[object] = set()
        given = {
            "au_method": au_method,
            "eu_method": eu_method,
            "model": model,
            "dataset": dataset,
            "seed": seed,
            "class_names": list(class_names) if class_names is not None else default_class_names(n_classes),
            "background": int(background),
        }
        store_attrs = {"schema": SCHEMA, **{name: given[name] for name in ATTRIBUTES}, **(attrs or {})}
        if spacing_attr is not None:
            store_attrs[SPACING_ATTR] = spacing_attr
        exists = self.path.exists()
        if resume and exists:
            self._open_for_resume()
        elif exists and not overwrite:
            raise UQEvalError(
                f"{self.path}: already exists; pass overwrite=True to replace it or resume=True to continue it"
            )
        else:
            if overwrite:
                from uqeval.ownership import check_replaceable  # it reads the contract, in this package

                check_replaceable(self.path, "cube")
            self._create(store_attrs)

    # -- public -----------------------------------------------------------------------

    @staticmethod
    def progress(path: str | os.PathLike[str]) -> WriteProgress | None:
        """How far a writer got with the store at ``path``.

        Returns ``None`` when ``path`` holds no store written by :class:`CubeWriter`;
        otherwise the number of whole images written and whether :meth:`close` was
        reached. A plugin that resumes an interrupted job starts at ``n_images``.
        """
        path = Path(path)
        if not (path / "zarr.json").is_file():
            return None
        return WriteProgress.recorded(dict(zarr.open_group(path, mode="r").attrs))

    @staticmethod
    def check_domains(domains: Sequence[str], where: str = "CubeWriter") -> None:
        """Refuse the domains that :meth:`append` would refuse, before any image is made.

        For a caller that knows its domains up front (a dataset's list of domains), so
        that a reserved name (``ood``, ``all``) or a look-alike of ``id`` stops it before
        hours of prediction rather than at the first image of that domain. The rule is
        :func:`uqeval.cube.contract.check_domains` (docs/cube.md).

        Raises
        ------
        UQEvalError
            Naming the domain and what it is taken for, prefixed with ``where``.
        """
        check_domains(domains, where)

    @property
    def n_images(self) -> int:
        """Images accepted so far (written or buffered), including those of earlier runs."""
        return self._n_written + sum(len(part[IMAGE_DIM]) for part in self._buffer)

    def append(
        self,
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        domain: str | Sequence[str] = "id",
        role: str | Sequence[str] = "test",
        image_ids: Sequence[object] | object | None = None,
        *,
        logits: np.ndarray | None = None,
        input: np.ndarray | None = None,
        maps: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Add a batch of images, or one image.

        Parameters
        ----------
        probs : (image, eu, au, class, y, x), or one image's (eu, au, class, y, x); for a
            writer with ``depth``, whole volumes (image, eu, au, class, z, y, x) or one
            volume's (eu, au, class, z, y, x) (see :meth:`volume` to write less at a time).
            Checked: finite, non-negative, summing to 1 over ``class``.
        labels : (image, rater, [z,] y, x) integers, classes or 255 (required when the
            writer has ``raters``); one image's (rater, [z,] y, x) with one image's ``probs``.
        domain, role : one string for the batch or one per image. ``domain`` is
            ``"id"`` for in-distribution images; the reserved ``"ood"`` and ``"all"``
            and look-alikes of ``"id"``, ``"ood"`` and ``"all"`` (``"ID"``, ``" id"``,
            ``id`` with a zero-width space, fullwidth or Cyrillic letters) are refused (docs/cube.md).
        image_ids : strings or integers, unique in the store; default the running
            image number. One image's id may be given on its own.
        logits : instead of ``probs`` for a writer with ``variable="logits"``.
        input : (image, channel, [z,] y, x) numbers, or one image's (channel, [z,] y, x):
            the input images, stored as float32 (required when the writer has ``channels``).
        maps : for a writer with ``variable="maps"`` (a maps store): ``mean`` (image, class,
            [z,] y, x), the mean prediction, summing to 1 over ``class``, and each of the
            writer's ``measures`` (image, [z,] y, x), non-negative nats; or one image's
            without the leading dim.
        """
        self._check_open("append")
        if self.variable == MAPS_VARIABLE:
            if probs is not None or logits is not None:
                raise UQEvalError("CubeWriter.append: this writer stores a maps store; pass maps={'mean': ..., ...}")
            values, single, measure_values = self._take_maps(maps)
        else:
            if maps is not None:
                raise UQEvalError(f"CubeWriter.append: this writer stores `{self.variable}`, not maps")
            values, single = self._take_values(probs, logits)
            measure_values = {}
        n = values.shape[0]
        ids = self._take_ids(image_ids, n)
        for name, array in measure_values.items():
            bad = ~(np.isfinite(array) & (array >= 0)).reshape(n, -1).all(axis=1)
            if bad.any():
                raise UQEvalError(
                    f"CubeWriter.append: `{name}` of image {ids[int(np.flatnonzero(bad)[0])]!r} has values that are "
                    "negative, NaN or infinite; uncertainty maps are non-negative nats"
                )
        labels_array = self._take_labels(labels, ids, single)
        input_array = self._take_input(input, n, single)
        domains, roles = self._take_strings(domain, role, n)
        with np.errstate(over="ignore"):
            stored = values.astype(self.dtype)
        self._check_values(values, stored, ids)
        self._seen_ids.update(ids)
        # One entry per variable written, in the order they are written; the ids last.
        part: dict[str, np.ndarray | list[Any]] = {self._spec.name: stored}
        part.update(measure_values)
        if labels_array is not None:
            part[LABELS.name] = labels_array
        if input_array is not None:
            part[INPUT.name] = input_array
        part.update({DOMAIN.name: domains, ROLE.name: roles, IMAGE_DIM: ids})
        self._buffer.append(part)
        if sum(len(part[IMAGE_DIM]) for part in self._buffer) >= self.chunk_images:
            self._flush(whole_chunks_only=True)

    def volume(
        self,
        image_id: object | None = None,
        *,
        domain: str = "id",
        role: str = "test",
        labels: np.ndarray | None = None,
        input: np.ndarray | None = None,
    ) -> VolumeWriter:
        """Start writing one volume piece by piece; use it as a context manager.

        ``with writer.volume("case-7", domain="id", labels=labels) as volume:`` then
        :meth:`VolumeWriter.write_member` for each member ``e`` (its ``(au, class, z, y,
        x)`` samples) and/or :meth:`VolumeWriter.write_slab` for z-ranges of every
        member (``(eu, au, class, dz, y, x)``). Memory holds one piece at a time and the
        chunks it touches, never the whole ``eu × au`` cube. Each piece gets the value
        checks of :meth:`append`. The volume counts as written (and :attr:`n_images`
        grows) when the block ends with every member and slice written; a block left
        by an error, or with a piece missing, leaves the store as it was before it.
        After a crash, ``resume=True`` truncates to the last whole volume as for images.

        Parameters
        ----------
        image_id : the volume's id (a string or an integer, unique in the store);
            default the running image number.
        domain, role : the volume's domain and role, as for :meth:`append`.
        labels : (rater, z, y, x) integers, the raters' label maps (required when the
            writer has ``raters``).
        input : (channel, z, y, x) numbers, the input volume (required when the writer
            has ``channels``).

        Raises
        ------
        UQEvalError
            For a writer without ``depth``, a volume already open, or any value that
            :meth:`append` would refuse.
        """
        self._check_open("volume")
        if self.variable == MAPS_VARIABLE:
            raise UQEvalError("CubeWriter.volume: a maps store is written with append(maps=...)")
        if self.depth is None:
            raise UQEvalError("CubeWriter.volume: this writer writes 2D images; make it with depth=... for volumes")
        ids = self._take_ids(image_id, 1)
        labels_array = self._take_labels(labels, ids, single=True)
        input_array = self._take_input(input, 1, single=True)
        domains, roles = self._take_strings(domain, role, 1)
        self._flush(whole_chunks_only=False)
        index = self._n_written
        self._ensure_image_array()
        self._resize(index + 1)
        written = {DOMAIN.name: domains, ROLE.name: roles, IMAGE_DIM: ids}
        if labels_array is not None:
            written[LABELS.name] = labels_array
        if input_array is not None:
            written[INPUT.name] = input_array
        self._write_rows(index, written)
        self._seen_ids.update(ids)
        self._volume = VolumeWriter(self, index, ids[0])
        return self._volume

    def set_attribute(self, name: str, value: Any) -> None:
        """Record the store attribute ``name`` (a JSON value) now, as the store is written.

        For what is known only while writing, such as where each image came from (the
        importers' ``import`` record). ``schema`` and the writer's progress record are
        the writer's own and are refused.
        """
        self._check_open("set_attribute")
        if name in ("schema", PROGRESS_ATTR):
            raise UQEvalError(f"CubeWriter.set_attribute: {name!r} is the writer's own attribute")
        self._group.attrs[name] = value

    def attribute(self, name: str, default: Any = None) -> Any:
        """The store attribute ``name`` as recorded so far (``default`` when absent); on
        ``resume=True``, as the earlier run left it."""
        return self._group.attrs.get(name, default)

    def close(self) -> None:
        """Write what is buffered and mark the store complete."""
        if self._closed:
            return
        if self._volume is not None:
            raise UQEvalError(f"CubeWriter.close: volume {self._volume.image_id!r} is still being written")
        self._flush(whole_chunks_only=False)
        self._record_progress(complete=True)
        self._closed = True

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep the whole images already accepted; the store stays incomplete.
            if self._volume is not None:
                self._volume.discard()
            self._flush(whole_chunks_only=False)
            self._closed = True

    # -- internals --------------------------------------------------------------------

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise UQEvalError(f"{self.path}: CubeWriter is closed")
        if self._volume is not None:
            raise UQEvalError(
                f"CubeWriter.{method}: volume {self._volume.image_id!r} is still being written; "
                "finish its `with writer.volume(...)` block first"
            )

    def _take_strings(self, domain: str | Sequence[str], role: str | Sequence[str], n: int) -> tuple[list, list]:
        domains = _per_image("domain", domain, n)
        check_domains(domains, "CubeWriter.append")
        roles = _per_image("role", role, n)
        bad_roles = [value for value in roles if value not in ROLE.allowed]
        if bad_roles:
            raise UQEvalError(f"CubeWriter.append: role {bad_roles[0]!r}; roles are {ROLE.allowed}")
        return domains, roles

    def _resize(self, n_images: int) -> None:
        """Every variable's ``image`` dim to ``n_images``."""
        for name in self._names():
            array = self._group[name]
            if array.shape[0] != n_images:
                array.resize((n_images, *array.shape[1:]))

    def _write_rows(self, start: int, batch: dict[str, Any]) -> None:
        """Write ``batch`` (variable name → rows) into the images from ``start`` on."""
        for name, data in batch.items():
            stop = start + len(data)
            if isinstance(data, np.ndarray):
                # Every chunk is written, even one that holds only the fill value (labels
                # that are all 255), so that an absent chunk always means a missing file.
                array = self._group[name].with_config({"write_empty_chunks": True})
                array[start:stop] = data
            else:
                dtype = np.int64 if name == IMAGE_DIM and self._id_kind == "int" else object
                self._group[name][start:stop] = np.asarray(data, dtype=dtype)

    def _create(self, attrs: dict[str, Any]) -> None:
        self._group = zarr.open_group(self.path, mode="w", zarr_format=3)
        self._n_written = 0
        self._group.attrs.update({**attrs, PROGRESS_ATTR: self._progress(complete=False).record()})
        arrays = [(spec, self.dtype, self._compressor, self.chunk_images) for spec in (self._spec, *self._map_specs)]
        # Label maps are small beside the cubes: more images per chunk, but one volume's slabs alike.
        label_images = self.chunk_images if self.depth is not None else max(self.chunk_images, 16)
        if self.raters:
            arrays.append((self._labels_spec, LABELS.stored_dtype, default_compressor(), label_images))
        if self.channels:
            arrays.append((self._input_spec, INPUT.stored_dtype, default_compressor(), self.chunk_images))
        for spec, dtype, compressors, chunk_images in arrays:
            image_shape = spec.image_shape(self.sizes)
            chunk_shape = tuple(
                self.chunk_depth if dim == VOLUME_DIMS[0] else size
                for dim, size in zip(spec.dims[1:], image_shape, strict=True)
            )
            self._group.create_array(
                spec.name,
                shape=(0, *image_shape),
                chunks=(chunk_images, *chunk_shape),
                dtype=dtype,
                compressors=compressors,
                fill_value=spec.fill_value,
                dimension_names=spec.dims,
            )
        for spec in STRINGS:
            self._group.create_array(spec.name, shape=(0,), chunks=(4096,), dtype=str, dimension_names=spec.dims)

    def _open_for_resume(self) -> None:
        try:
            self._group = zarr.open_group(self.path, mode="r+")
        except Exception as error:
            raise UQEvalError(f"{self.path}: cannot resume, not a zarr store ({error})") from None
        progress = WriteProgress.recorded(self._group.attrs)
        if progress is None:
            raise UQEvalError(f"{self.path}: cannot resume: the store was not written by a CubeWriter")
        name = self._spec.name
        missing = [spec.name for spec in (self._spec, *self._map_specs) if spec.name not in self._group]
        if missing:
            raise UQEvalError(f"{self.path}: cannot resume: the store has no `{missing[0]}` variable")
        values = self._group[name]
        if tuple(values.shape[1:]) != self.cube_shape:
            raise UQEvalError(
                f"{self.path}: cannot resume: `{name}` holds cubes of shape {tuple(values.shape[1:])}, "
                f"not {self.cube_shape}"
            )
        if not self._matches(self._labels_spec, "rater"):
            raise UQEvalError(f"{self.path}: cannot resume: the store's raters differ from raters={self.raters}")
        if not self._matches(self._input_spec, "channel"):
            raise UQEvalError(
                f"{self.path}: cannot resume: the store's input channels differ from channels={self.channels}"
            )
        self.dtype = values.dtype
        self.chunk_images = values.chunks[0]
        if self.depth is not None:
            self.chunk_depth = values.chunks[self._spec.axis[VOLUME_DIMS[0]]]
        self._n_written = progress.n_images
        self._record_progress(complete=False)
        self._truncate(self._n_written)
        if IMAGE_DIM in self._group and self._n_written:
            ids = self._group[IMAGE_DIM][:].tolist()
            self._id_kind = "int" if self._group[IMAGE_DIM].dtype.kind in "iu" else "str"
            self._seen_ids = set(ids)

    def _matches(self, spec: Variable, dim: str) -> bool:
        """Whether the store resumed has ``spec`` exactly when this writer writes it, with as many ``dim``."""
        wanted = self.sizes[dim]
        if spec.name not in self._group:
            return not wanted
        return bool(wanted) and self._group[spec.name].shape[spec.axis[dim]] == wanted

    def _progress(self, *, complete: bool) -> WriteProgress:
        return WriteProgress(n_images=self._n_written, complete=complete)

    def _record_progress(self, *, complete: bool) -> None:
        self._group.attrs[PROGRESS_ATTR] = self._progress(complete=complete).record()

    def _names(self) -> list[str]:
        names = [self._spec.name, *(spec.name for spec in self._map_specs), *(spec.name for spec in STRINGS)]
        if self.raters:
            names.append(LABELS.name)
        if self.channels:
            names.append(INPUT.name)
        if IMAGE_DIM in self._group:
            names.append(IMAGE_DIM)
        return names

    def _truncate(self, n_images: int) -> None:
        self._resize(n_images)

    def _flush(self, *, whole_chunks_only: bool) -> None:
        if not self._buffer:
            return
        batch = {name: _joined([part[name] for part in self._buffer]) for name in self._buffer[0]}
        n_total = len(batch[IMAGE_DIM])
        # Keep chunk boundaries aligned to the store so every chunk is written once.
        chunk_offset = self._n_written % self.chunk_images
        n_take = n_total
        if whole_chunks_only:
            n_take = ((chunk_offset + n_total) // self.chunk_images) * self.chunk_images - chunk_offset
            if n_take <= 0:
                return
        start, stop = self._n_written, self._n_written + n_take
        self._ensure_image_array()
        self._resize(stop)
        self._write_rows(start, {name: data[:n_take] for name, data in batch.items()})
        self._n_written = stop
        self._record_progress(complete=False)
        self._buffer = [] if n_take == n_total else [{name: data[n_take:] for name, data in batch.items()}]

    def _ensure_image_array(self) -> None:
        if IMAGE_DIM in self._group:
            return
        dtype = np.int64 if self._id_kind == "int" else str
        self._group.create_array(
            IMAGE_DIM, shape=(self._n_written,), chunks=(4096,), dtype=dtype, dimension_names=(IMAGE_DIM,)
        )

    def _take_values(self, probs: np.ndarray | None, logits: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """The batch's values as (image, eu, au, class, y, x), and whether one image came without its leading dim."""
        given = {"probs": probs, "logits": logits}
        supplied = [name for name, value in given.items() if value is not None]
        if supplied != [self.variable]:
            raise UQEvalError(
                f"CubeWriter.append: this writer stores `{self.variable}`; pass {self.variable}=... "
                f"(got {', '.join(supplied) or 'nothing'})"
            )
        values = _as_array(self.variable, given[self.variable])
        single = values.ndim == len(self.cube_shape)
        if single:
            values = values[None]
        if values.ndim != len(self.cube_shape) + 1 or tuple(values.shape[1:]) != self.cube_shape:
            raise UQEvalError(
                f"CubeWriter.append: `{self.variable}` has shape {values.shape}; expected "
                f"({', '.join(self._spec.dims)}) = (n, {', '.join(map(str, self.cube_shape))}), "
                f"or one image's ({', '.join(self._spec.dims[1:])})"
            )
        if values.dtype.kind != "f":
            raise UQEvalError(f"CubeWriter.append: `{self.variable}` has dtype {values.dtype}; expected floats")
        return values, single

    def _take_maps(self, maps: dict[str, np.ndarray] | None) -> tuple[np.ndarray, bool, dict[str, np.ndarray]]:
        """A maps store's batch: ``mean`` as (image, class, *spatial), whether one image came
        without its leading dim, and each measure (image, *spatial) checked and stored as float32."""
        if not isinstance(maps, dict):
            raise UQEvalError(
                f"CubeWriter.append: this writer stores a maps store; pass maps={{'mean': ..., "
                f"{', '.join(repr(name) + ': ...' for name in self.measures)}}}"
            )
        wanted = ("mean", *self.measures)
        if sorted(maps) != sorted(wanted):
            raise UQEvalError(f"CubeWriter.append: maps has {sorted(maps)}; expected {list(wanted)}")
        mean = _as_array("mean", maps["mean"])
        single = mean.ndim == len(self.cube_shape)
        if single:
            mean = mean[None]
        if mean.ndim != len(self.cube_shape) + 1 or tuple(mean.shape[1:]) != self.cube_shape:
            raise UQEvalError(
                f"CubeWriter.append: `mean` has shape {mean.shape}; expected ({', '.join(self._spec.dims)}) = "
                f"(n, {', '.join(map(str, self.cube_shape))})"
            )
        if mean.dtype.kind != "f":
            raise UQEvalError(f"CubeWriter.append: `mean` has dtype {mean.dtype}; expected floats")
        measures = {}
        for spec in self._map_specs:
            values = _as_array(spec.name, maps[spec.name])
            values = values[None] if single else values
            expected = (len(mean), *self.cube_shape[1:])
            if values.shape != expected or values.dtype.kind != "f":
                raise UQEvalError(
                    f"CubeWriter.append: `{spec.name}` has shape {values.shape} and dtype {values.dtype}; expected "
                    f"floats of ({', '.join(spec.dims)}) = ({', '.join(map(str, expected))})"
                )
            measures[spec.name] = values.astype(self.dtype)
        return mean, single, measures

    def _check_values(
        self, values: np.ndarray, stored: np.ndarray, ids: list[object], where: str = "CubeWriter.append"
    ) -> None:
        """The value checks of :meth:`append` on ``(image, ..., class, *spatial)`` values."""
        if self.variable in ("probs", MAPS_VARIABLE):
            class_axis = values.ndim - len(self.spatial_dims) - 1
            name = "probs" if self.variable == "probs" else "mean"
            raise_for_value_stats(value_stats(values, class_axis=class_axis), ids, variable=f"{where}: {name}")
        else:
            finite = np.isfinite(values).reshape(len(values), -1).all(1)
            stored_finite = np.isfinite(stored).reshape(len(values), -1).all(1)
            if not finite.all():
                index = int(np.flatnonzero(~finite)[0])
                raise UQEvalError(f"{where}: logits of image {ids[index]!r} have NaN or inf values")
            if not stored_finite.all():
                index = int(np.flatnonzero(~stored_finite)[0])
                raise UQEvalError(
                    f"{where}: logits of image {ids[index]!r} overflow {self.dtype} (largest magnitude "
                    f"{np.abs(values[index]).max():.4g}); store them with dtype='float32'"
                )

    def _take_labels(self, labels: np.ndarray | None, ids: list[object], single: bool) -> np.ndarray | None:
        n = len(ids)
        if not _given_as_declared("labels", labels, "raters", self.raters):
            return None
        labels = self._take_per_image(self._labels_spec, labels, n, single)
        if labels.dtype.kind not in "iu":
            raise UQEvalError(f"CubeWriter.append: `labels` has dtype {labels.dtype}; expected integers")
        n_classes = self.sizes["class"]
        found = first_invalid_label(labels, n_classes)
        if found is not None:
            (image, rater, *pixel), value = found
            raise UQEvalError(
                f"CubeWriter.append: label {value} of image {ids[image]!r} (rater {rater}, {pixel_text(pixel)}) "
                f"is not a class in 0..{n_classes - 1} or {IGNORE_LABEL}"
            )
        return labels.astype(LABELS.stored_dtype)

    def _take_input(self, pixels: np.ndarray | None, n: int, single: bool) -> np.ndarray | None:
        if not _given_as_declared("input", pixels, "channels", self.channels):
            return None
        pixels = self._take_per_image(self._input_spec, pixels, n, single)
        if pixels.dtype.kind not in "iuf":
            raise UQEvalError(f"CubeWriter.append: `input` has dtype {pixels.dtype}; expected numbers")
        return pixels.astype(INPUT.stored_dtype)

    def _take_per_image(self, spec: Variable, value: object, n: int, single: bool) -> np.ndarray:
        """A per-image array as ``(image, *dims)``; one image's ``dims`` alone when the
        probabilities came as one image."""
        array = _as_array(spec.name, value)
        dims, sizes = spec.dims[1:], spec.image_shape(self.sizes)
        if single and array.shape == sizes:
            return array[None]
        if array.shape == (n, *sizes):
            return array
        expected = f"({', '.join(spec.dims)}) = ({', '.join(map(str, (n, *sizes)))})"
        if single:
            expected += f", or one image's ({', '.join(dims)}) = ({', '.join(map(str, sizes))})"
        raise UQEvalError(f"CubeWriter.append: `{spec.name}` has shape {array.shape}; expected {expected}")

    def _take_ids(self, image_ids: Sequence[object] | object | None, n: int) -> list[object]:
        if isinstance(image_ids, str | int | np.generic):
            image_ids = [image_ids]
        if image_ids is None:
            ids: list[object] = list(range(self.n_images, self.n_images + n))
            kind = "int"
        else:
            ids = [value.item() if isinstance(value, np.generic) else value for value in image_ids]
            if len(ids) != n:
                raise UQEvalError(f"CubeWriter.append: {len(ids)} image_ids for {n} images")
            if all(isinstance(value, int) and not isinstance(value, bool) for value in ids):
                kind = "int"
            elif all(isinstance(value, str) and value for value in ids):
                kind = "str"
            else:
                raise UQEvalError("CubeWriter.append: image_ids must be all non-empty strings or all integers")
        if self._id_kind is None:
            self._id_kind = kind
        elif kind != self._id_kind:
            raise UQEvalError(
                f"CubeWriter.append: image_ids are {kind}s but earlier ones were {self._id_kind}s; "
                "keep one kind per store"
            )
        # Buffered ids are already in `_seen_ids`; repeats within the batch come first.
        repeated = [value for value in ids if ids.count(value) > 1 or value in self._seen_ids]
        if repeated:
            raise UQEvalError(f"CubeWriter.append: image id {repeated[0]!r} is already in the store")
        return ids


class VolumeWriter:
    """One volume of a :class:`CubeWriter` being written piece by piece (:meth:`CubeWriter.volume`).

    Pieces go straight to the store: a member's samples, or a slab of every member,
    each checked as :meth:`CubeWriter.append` checks a whole volume. A piece that
    covers part of a chunk makes zarr read, merge and rewrite that chunk, so writing
    member by member costs ``eu`` passes over the volume's chunks; memory stays at one
    piece and one chunk. Pieces may overlap (the last write wins) and come in any order.

    Attributes
    ----------
    image_id : the volume's id.
    index : its position along ``image``.
    """

    def __init__(self, writer: CubeWriter, index: int, image_id: object) -> None:
        self._writer = writer
        self.index = index
        self.image_id = image_id
        sizes = writer.sizes
        self._written = np.zeros((sizes["eu"], sizes[VOLUME_DIMS[0]]), dtype=bool)
        self._open = True

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.discard()
            return
        self.finish()

    @property
    def complete(self) -> bool:
        """Whether every member and slice has been written."""
        return bool(self._written.all())

    def write_member(self, member: int, values: np.ndarray) -> None:
        """Write member ``member``'s samples: ``(au, class, z, y, x)`` probabilities
        (or logits, for a writer with ``variable="logits"``)."""
        writer = self._writer
        n_members = writer.sizes["eu"]
        where = f"VolumeWriter.write_member({member!r})"
        self._check_open(where)
        if not _is_integer(member) or not 0 <= member < n_members:
            raise UQEvalError(f"{where}: `member` must be an integer in [0, {n_members}), got {member!r}")
        expected = writer.cube_shape[1:]
        values = self._take(where, values, expected, f"({', '.join(writer._spec.dims[2:])})")
        stored = self._checked(where, values[None, None])[0, 0]
        self._store(int(member), 0, stored)
        self._written[member] = True

    def write_slab(self, z_start: int, values: np.ndarray) -> None:
        """Write slices ``z_start`` to ``z_start + dz`` of every member: ``(eu, au, class,
        dz, y, x)`` probabilities (or logits). Slabs aligned with the store's
        :attr:`CubeWriter.chunk_depth` write each chunk once."""
        writer = self._writer
        depth = writer.sizes[VOLUME_DIMS[0]]
        where = f"VolumeWriter.write_slab({z_start!r})"
        self._check_open(where)
        if not _is_integer(z_start) or not 0 <= z_start < depth:
            raise UQEvalError(f"{where}: `z_start` must be an integer in [0, {depth}), got {z_start!r}")
        array = _as_array(writer.variable, values)
        thickness = array.shape[3] if array.ndim == len(writer.cube_shape) else depth - z_start
        if thickness < 1 or z_start + thickness > depth:
            raise UQEvalError(
                f"{where}: a slab of {thickness} slice(s) from z={z_start} does not fit in a volume of depth {depth}"
            )
        expected = (*writer.cube_shape[:3], thickness, *writer.cube_shape[4:])
        dims = f"({', '.join(writer._spec.dims[1:4])}, dz, {', '.join(writer._spec.dims[5:])})"
        values = self._take(where, array, expected, dims)
        stored = self._checked(where, values[None])[0]
        self._store(None, z_start, stored)
        self._written[:, z_start : z_start + thickness] = True

    def finish(self) -> None:
        """Count the volume as written (what leaving the ``with`` block does; once is enough)."""
        writer = self._writer
        if not self._open:
            return
        if not self.complete:
            missing = self._missing()
            self.discard()
            raise UQEvalError(
                f"CubeWriter.volume: volume {self.image_id!r} was left with {missing} not written; "
                "a volume counts only when every member (or every slice) is written, so it was dropped"
            )
        self._open = False
        writer._volume = None
        writer._n_written = self.index + 1
        writer._record_progress(complete=False)

    def discard(self) -> None:
        """Drop the volume: the store goes back to the images written before it."""
        if not self._open:
            return
        writer = self._writer
        self._open = False
        writer._volume = None
        writer._truncate(self.index)
        writer._seen_ids.discard(self.image_id)

    def _missing(self) -> str:
        members = np.flatnonzero(~self._written.all(axis=1)).tolist()
        slices = np.flatnonzero(~self._written.all(axis=0)).tolist()
        return f"member(s) {_listed(members)} at slice(s) z={_listed(slices)}"

    def _check_open(self, where: str) -> None:
        if not self._open:
            raise UQEvalError(f"{where}: volume {self.image_id!r} is already finished or dropped")

    def _take(self, where: str, value: object, expected: tuple[int, ...], dims: str) -> np.ndarray:
        writer = self._writer
        array = _as_array(writer.variable, value)
        if array.shape != expected:
            raise UQEvalError(
                f"{where}: `{writer.variable}` has shape {array.shape}; expected {dims} = "
                f"({', '.join(map(str, expected))})"
            )
        if array.dtype.kind != "f":
            raise UQEvalError(f"{where}: `{writer.variable}` has dtype {array.dtype}; expected floats")
        return array

    def _checked(self, where: str, values: np.ndarray) -> np.ndarray:
        """``values`` (1, eu, au, class, z, y, x) checked as :meth:`CubeWriter.append` does; stored dtype."""
        writer = self._writer
        with np.errstate(over="ignore"):
            stored = values.astype(writer.dtype)
        writer._check_values(values, stored, [self.image_id], where=where)
        return stored

    def _store(self, member: int | None, z_start: int, stored: np.ndarray) -> None:
        """Write ``stored`` — one member's ``(au, class, dz, y, x)``, or every member's
        ``(eu, au, class, dz, y, x)`` when ``member`` is None — from slice ``z_start`` on,
        one z-chunk at a time: zarr would otherwise read, merge and re-encode every chunk
        of the piece at once, holding many decoded chunks beside the piece."""
        writer = self._writer
        array = writer._group[writer.variable].with_config({"write_empty_chunks": True})
        lead = (self.index,) if member is None else (self.index, member)
        between = (slice(None),) * (stored.ndim - 3)
        z_stop = z_start + stored.shape[-3]
        step = writer.chunk_depth
        edges = [z_start, *range((z_start // step + 1) * step, z_stop, step), z_stop]
        for begin, end in itertools.pairwise(edges):
            array[(*lead, *between, slice(begin, end))] = stored[..., begin - z_start : end - z_start, :, :]


def _listed(numbers: list[int], limit: int = 8) -> str:
    """``0, 2, 5`` or ``0, 1, 2, … (20 in all)``."""
    shown = ", ".join(map(str, numbers[:limit]))
    return shown if len(numbers) <= limit else f"{shown}, … ({len(numbers)} in all)"


def _is_integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_array(name: str, value: object) -> np.ndarray:
    """``value`` as a numpy array; a :class:`UQEvalError` for what numpy cannot read as one."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise UQEvalError(f"CubeWriter.append: `{name}` cannot be read as an array ({error})") from None


def _joined(parts: list[np.ndarray] | list[list[Any]]) -> np.ndarray | list[Any]:
    """Buffered parts of one variable as one array, or one list (strings and ids)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [item for part in parts for item in part]


def _per_image(name: str, value: str | Sequence[str], n: int) -> list[str]:
    if isinstance(value, str):
        values = [value] * n
    elif isinstance(value, Sequence | np.ndarray):
        values = [item.item() if isinstance(item, np.generic) else item for item in value]
    else:
        raise UQEvalError(f"CubeWriter.append: `{name}` is {value!r}; expected one string or one per image")
    if len(values) != n:
        raise UQEvalError(f"CubeWriter.append: {len(values)} values of `{name}` for {n} images")
    for item in values:
        if not isinstance(item, str) or not item:
            raise UQEvalError(f"CubeWriter.append: `{name}` {item!r} is not a non-empty string")
    return values


def _given_as_declared(name: str, value: object, size_name: str, size: int) -> bool:
    """Whether an optional variable is to be written: given exactly when the writer was
    made with a non-zero ``size`` of it (``raters`` for labels, ``channels`` for input)."""
    if not size:
        if value is not None:
            raise UQEvalError(f"CubeWriter.append: {name} given but the writer was made with {size_name}=0")
        return False
    if value is None:
        raise UQEvalError(f"CubeWriter.append: the writer has {size_name}={size}; pass {name}")
    return True
