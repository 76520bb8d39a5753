"""Where the images come from: a cube store, a cube Dataset in memory, or decomposed maps.

Every source says what the engine needs before reading a pixel (ids, domains, roles,
labels or not, chunking) and hands out a reader of batches. The engine does the same
with each; only a store can also be read by the workers of a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from uqeval.cube.contract import MAP_MEASURES, MAPS_VARIABLE, MEAN, check_domains, is_maps_store
from uqeval.errors import UQEvalError
from uqeval.names import ID_DOMAIN, IGNORE_LABEL, TEST
from uqeval.notes import Note, literal
from uqeval.scoring.given_measures import absent_measures, with_stand_ins
from uqeval.scoring.store_reader import StoreReader, images_without_chunks, open_array, read_images, read_input


@dataclass
class Loaded:
    """One batch as read: probabilities, decomposed maps, or both; and the raters' labels.

    Attributes
    ----------
    cubes : (image, eu, au, class, [z,] y, x) or None
    labels : (image, rater, [z,] y, x) or None
    maps : dict or None
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x) and maybe ``mean`` (image, class,
        y, x), when the source holds them decomposed already.
    """

    cubes: np.ndarray | None
    labels: np.ndarray | None
    maps: dict[str, np.ndarray] | None = None
    chunk_planes: int | None = None

    def in_planes(self) -> Loaded:
        """This batch with ``cubes`` in the layout above: a slab of a volume that came
        chunk by chunk (``chunk_planes`` set: ``cubes`` is (chunk, eu, au, class,
        chunk_planes, y, x), the slab's z-chunks as decoded, in ``z`` order) is copied
        into (1, eu, au, class, z, y, x)."""
        if self.chunk_planes is None or self.cubes is None:
            return self
        chunks = self.cubes
        planes = np.ascontiguousarray(np.moveaxis(chunks, 0, 3))
        shape = (1, *chunks.shape[1:4], chunks.shape[0] * chunks.shape[4], *chunks.shape[5:])
        return Loaded(planes.reshape(shape), self.labels, self.maps)


#: ``reader(indices, slot) -> Loaded``: reads the images at sorted positions ``indices``;
#: ``slot`` picks a set of reused buffers, one per batch in flight.
Reader = Callable[[np.ndarray, int], Loaded]
#: ``slab_reader(position, z_start, z_stop, slot) -> Loaded``: planes ``[z_start, z_stop)``
#: of the volume at ``position`` (an image axis of 1).
SlabReader = Callable[[int, int, int, int], Loaded]


@dataclass
class Source:
    """What the engine knows of the images before reading them.

    Attributes
    ----------
    where : str
        How messages name the source (a store's path, ``dataset``, ``evaluate``).
    ids, domains, roles : (image,) arrays
        Image ids; domains and roles as ``str`` objects.
    has_labels : bool
    n_raters : int or None
        Raters per image, when labels exist.
    n_classes, background : int
    has_probabilities : bool
        The batches carry probabilities (segmentation quality needs them).
    in_memory : bool
        The source holds all its data in memory already, so the maps of the batches
        fitted on are kept there too instead of being spilled to disk.
    chunk_sizes : list of int
        Images per chunk, in order; a batch never splits one.
    bytes_per_image : int
        Decoded bytes of one image's probabilities.
    attrs : dict
        The store's attributes.
    store : str or None
        Absolute path of a store.
    variable : str
        ``probs`` or ``logits``: what a store holds.
    eu_convention : str
    read_input : callable or None
        ``read_input(positions, z=None) -> (image, channel, [z,] y, x)``: the input images
        at those positions (of volumes, only plane ``z`` when given), for a source that
        holds them (the cube's optional ``input``).
    read_labels : callable or None
        ``read_labels(positions, z=None) -> (image, rater, [z,] y, x)``: the raters'
        labels at those positions (plane ``z`` alone when given), for a source that has them.
    notes : tuple of Note
        What the source itself says of its data before it is read (``labels-absent``).
    depth : int or None
        ``z`` size of the source's volumes; None for 2D images.
    slice_z : (image,) int or None
        For a source of slices (:func:`uqeval.scoring.slices.slice_source`), the ``z``
        of each image in its volume (``ids`` then repeat the volume's id).
    slice_depth : int or None
        For a source of slices, the depth of the volumes they are cut from; a cluster's
        workers cut the slices from the volumes they read.
    slab_reader : callable or None
        A maker of a :data:`SlabReader`, for a source of volumes that can be read in
        z-slabs (:mod:`uqeval.scoring.streaming`).
    chunk_depth : int or None
        Planes per store chunk along ``z`` (a slab holds whole chunks).
    volume_shape : (z, y, x) or None
        The shape of the source's volumes.
    absent_measures : tuple of str
        The measures (``au``, ``eu``, ``tu``) a maps store lacks: its batches carry a
        stand-in for each, whose results are left out
        (:mod:`uqeval.scoring.given_measures`).
    has_mean : bool
        The batches carry the mean prediction ``mean`` (``pq`` needs it): false only for
        maps passed to :func:`uqeval.evaluate` without it.
    """

    where: str
    ids: np.ndarray
    domains: np.ndarray
    roles: np.ndarray
    has_labels: bool
    n_classes: int
    background: int
    reader: Callable[[], Reader] = field(repr=False)
    has_probabilities: bool = True
    in_memory: bool = False
    chunk_sizes: list[int] = field(default_factory=list)
    bytes_per_image: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)
    store: str | None = None
    variable: str = "probs"
    eu_convention: str = "members"
    read_input: Callable[..., np.ndarray] | None = field(default=None, repr=False)
    read_labels: Callable[..., np.ndarray] | None = field(default=None, repr=False)
    notes: tuple[Note, ...] = ()
    depth: int | None = None
    slice_z: np.ndarray | None = None
    slice_depth: int | None = None
    slab_reader: Callable[[], SlabReader] | None = field(default=None, repr=False)
    chunk_depth: int | None = None
    volume_shape: tuple[int, int, int] | None = None
    n_raters: int | None = None
    absent_measures: tuple[str, ...] = ()
    has_mean: bool = True

    @property
    def n_images(self) -> int:
        return len(self.ids)

    @property
    def has_input(self) -> bool:
        """Whether the source holds the input images (``input``)."""
        return self.read_input is not None

    def input_of(self, position: int, z: int | None = None) -> np.ndarray | None:
        """The input image (channel, y, x) of the image at ``position`` (of a volume, its
        plane ``z`` when given), or None when the source holds no input images."""
        if self.read_input is None:
            return None
        return self.read_input(np.asarray([position]), z)[0]

    def labels_of(self, position: int, z: int | None = None) -> np.ndarray | None:
        """The raters' labels (rater, y, x) of the image at ``position`` (of a volume, its
        plane ``z`` when given), or None when the source has no labels."""
        if self.read_labels is None:
            return None
        return self.read_labels(np.asarray([position]), z)[0]


def cube_source(dataset: xr.Dataset, path: Path | None = None) -> Source:
    """A validated cube (:func:`uqeval.open_cube`), read from its store at ``path`` when
    given, else from the Dataset (numpy- or dask-backed). A maps store gives its maps
    as they are (:func:`maps_store_source`)."""
    if is_maps_store(dataset):
        return maps_store_source(dataset, path)
    probs = dataset["probs"]
    has_labels = "labels" in dataset
    variable = dataset.attrs.get("source_variable", "probs")

    def in_memory(selection: dict) -> Loaded:
        cubes = np.ascontiguousarray(probs.isel(selection).values)
        labels = np.ascontiguousarray(dataset["labels"].isel(selection).values) if has_labels else None
        return Loaded(cubes, labels)

    access = _readers(dataset, path, variable, has_labels, in_memory)
    depth = int(probs.sizes["z"]) if "z" in probs.dims else None
    chunk_depth = None if depth is None else _chunk_depth(probs, depth)
    return Source(
        where=str(path) if path is not None else "dataset",
        ids=dataset["image"].values,
        domains=_strings(dataset["domain"].values),
        roles=_strings(dataset["role"].values),
        has_labels=has_labels,
        n_raters=int(dataset.sizes["rater"]) if has_labels else None,
        n_classes=int(probs.sizes["class"]),
        background=int(dataset.attrs.get("background", 0)),
        reader=access.reader,
        chunk_sizes=[1] * probs.sizes["image"] if probs.chunks is None else [int(size) for size in probs.chunks[0]],
        bytes_per_image=int(np.prod([probs.sizes[dim] for dim in probs.dims[1:]])) * probs.dtype.itemsize,
        attrs=dict(dataset.attrs),
        store=access.store,
        variable=variable,
        eu_convention="members" if probs.sizes["eu"] > 1 else "samples-as-members",
        read_input=access.read_input,
        read_labels=access.read_labels,
        notes=access.notes,
        depth=depth,
        slab_reader=access.slab_reader if depth is not None else None,
        chunk_depth=chunk_depth,
        volume_shape=tuple(int(probs.sizes[dim]) for dim in ("z", "y", "x")) if depth is not None else None,
    )


def _planes(array: xr.DataArray | np.ndarray, positions: np.ndarray | None = None, z: int | None = None) -> np.ndarray:
    """``array`` (image, channel or rater, [z,] y, x) at ``positions`` (all when None), and
    at plane ``z`` alone when given."""
    if isinstance(array, xr.DataArray):
        return np.asarray((array if z is None else array.isel(z=int(z))).values)
    chosen = array if positions is None else array[positions]
    return chosen if z is None else chosen[:, :, int(z)]


#: The note of every score of a maps store.
MAPS_GIVEN = "the uncertainty maps were taken as given (a maps store): nothing was decomposed and no EU floor applied"


def maps_store_source(dataset: xr.Dataset, path: Path | None = None) -> Source:
    """A validated maps store (``mean`` with any of ``au``, ``eu`` and ``tu``): its batches
    carry the maps as they are, ``pred`` = argmax of ``mean``; nothing is decomposed. A
    measure the store lacks is stood in by one it has and left out of the results
    (:mod:`uqeval.scoring.given_measures`)."""
    mean = dataset[MEAN.name]
    has_labels = "labels" in dataset
    names = ("mean", *(name for name in MAP_MEASURES if name in dataset))

    def in_memory(selection: dict) -> Loaded:
        maps = {name: np.asarray(dataset[name].isel(selection).values, dtype=np.float32) for name in names}
        maps["pred"] = maps["mean"].argmax(axis=1).astype(np.uint8 if mean.sizes["class"] <= 256 else np.int32)
        labels = np.ascontiguousarray(dataset["labels"].isel(selection).values) if has_labels else None
        return Loaded(None, labels, with_stand_ins(maps))

    access = _readers(dataset, path, MAPS_VARIABLE, has_labels, in_memory)
    per_image = sum(int(np.prod([dataset[name].sizes[dim] for dim in dataset[name].dims[1:]])) for name in names)
    depth = int(mean.sizes["z"]) if "z" in mean.dims else None
    return Source(
        where=str(path) if path is not None else "dataset",
        ids=dataset["image"].values,
        domains=_strings(dataset["domain"].values),
        roles=_strings(dataset["role"].values),
        has_labels=has_labels,
        n_raters=int(dataset.sizes["rater"]) if has_labels else None,
        n_classes=int(mean.sizes["class"]),
        background=int(dataset.attrs.get("background", 0)),
        reader=access.reader,
        has_probabilities=False,
        chunk_sizes=[1] * mean.sizes["image"] if mean.chunks is None else [int(size) for size in mean.chunks[0]],
        bytes_per_image=per_image * 4,
        attrs=dict(dataset.attrs),
        store=access.store,
        variable=MAPS_VARIABLE,
        eu_convention="maps-as-given",
        read_input=access.read_input,
        read_labels=access.read_labels,
        notes=(Note("maps-given", MAPS_GIVEN), *access.notes),
        absent_measures=absent_measures(names),
        depth=depth,
        slab_reader=access.slab_reader if depth is not None else None,
        chunk_depth=None if depth is None else _chunk_depth(mean, depth),
        volume_shape=None if depth is None else (depth, int(mean.sizes["y"]), int(mean.sizes["x"])),
    )


@dataclass(frozen=True)
class _Readers:
    """How a source's images are read: from its store, or from the Dataset in memory."""

    store: str | None
    reader: Callable[[], Reader]
    slab_reader: Callable[[], SlabReader]
    read_input: Callable[..., np.ndarray] | None
    read_labels: Callable[..., np.ndarray] | None
    notes: tuple[Note, ...]


def _readers(
    dataset: xr.Dataset, path: Path | None, variable: str, has_labels: bool, in_memory: Callable[[dict], Loaded]
) -> _Readers:
    """The readers of a store at ``path`` (its ``variable`` through :class:`StoreReader`), or
    without a path of ``dataset`` itself, whose ``isel`` selection ``in_memory`` loads."""
    if path is not None:

        def reader() -> Reader:
            read = StoreReader(str(path), variable, has_labels)
            return lambda indices, slot=0: Loaded(*read(indices, slot))

        def slab_reader() -> SlabReader:
            read = StoreReader(str(path), variable, has_labels)
            return lambda position, z_start, z_stop, slot=0: Loaded(
                *read.slab(position, z_start, z_stop, slot, by_chunk=True)
            )

        return _Readers(
            str(path.resolve()),
            reader,
            slab_reader,
            functools.partial(read_input, str(path)) if "input" in dataset else None,
            functools.partial(read_images, str(path), "labels") if has_labels else None,
            _absent_labels_notes(str(path), dataset["image"].values) if has_labels else (),
        )

    def planes_of(name: str) -> Callable[..., np.ndarray]:
        return lambda positions, z=None: _planes(dataset[name][positions], z=z)

    def memory_reader() -> Reader:
        return lambda indices, slot=0: in_memory({"image": indices})

    def memory_slab_reader() -> SlabReader:
        return lambda position, z_start, z_stop, slot=0: in_memory(
            {"image": slice(position, position + 1), "z": slice(z_start, z_stop)}
        )

    return _Readers(
        None,
        memory_reader,
        memory_slab_reader,
        planes_of("input") if "input" in dataset else None,
        planes_of("labels") if has_labels else None,
        (),
    )


def _chunk_depth(array: xr.DataArray, depth: int) -> int:
    """Planes per chunk along ``z`` of a variable of volumes (``depth`` when not chunked)."""
    return depth if array.chunks is None else int(array.chunks[array.get_axis_num("z")][0])


#: How many image ids a note names before it counts the rest.
NAMED_IMAGES = 5


def _absent_labels_notes(path: str, ids: np.ndarray) -> tuple[Note, ...]:
    """A ``labels-absent`` note when chunks of the store's ``labels`` are missing.

    zarr reads a missing chunk as the array's fill value, so the images in it read as
    unlabelled (255, ignored) without a word: a deleted chunk file, or a store whose
    writer skipped chunks that held nothing but the fill value.
    """
    positions = images_without_chunks(path, "labels")
    if not len(positions):
        return ()
    fill = open_array(path, "labels").fill_value
    reads_as = "ignored" if fill == IGNORE_LABEL else "class " + str(fill)
    named = ", ".join(repr(item) for item in ids[positions[:NAMED_IMAGES]].tolist())
    if len(positions) > NAMED_IMAGES:
        named += f" and {len(positions) - NAMED_IMAGES} more"
    text = (
        "{count} image(s) have no `labels` chunk in the store, so every label of theirs reads as the fill value "
        + literal(f"{fill} ({reads_as}): {named}")
        + ". If these images were labelled, chunk files of `labels` are missing"
    )
    return (Note("labels-absent", text, count=len(positions)),)


def maps_source(
    maps: xr.Dataset | Mapping[str, np.ndarray],
    domain: Sequence[str] | np.ndarray | None,
    role: Sequence[str] | np.ndarray | None,
    labels: np.ndarray | None,
    *,
    background: int = 0,
    n_classes: int | None = None,
    cubes: np.ndarray | None = None,
) -> Source:
    """Decomposed maps held in memory (the arguments of :func:`uqeval.evaluate`), as one batch.

    Raises
    ------
    UQEvalError
        When a map, ``domain``, ``role``, ``labels`` or ``cubes`` has the wrong shape,
        or the labels cannot be read without ``n_classes``.
    """
    arrays = {}
    for name in ("au", "eu", "tu", "pred"):
        if name not in maps:
            raise UQEvalError(f"maps lack {name!r}; pass the output of uqeval.decompose", parameter="maps")
        arrays[name] = np.asarray(maps[name])
    shape = arrays["au"].shape
    if len(shape) not in (3, 4) or any(array.shape != shape for array in arrays.values()):
        raise UQEvalError(
            "au, eu, tu and pred must all be (image, y, x), or (image, z, y, x) for volumes; got "
            + ", ".join(f"{name} {array.shape}" for name, array in arrays.items()),
            parameter="maps",
        )
    spatial = "z, y, x" if len(shape) == 4 else "y, x"
    if "mean" in maps:
        arrays["mean"] = np.asarray(maps["mean"])
        n_classes = n_classes or arrays["mean"].shape[1]
    n_images = shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != len(shape) + 1 or labels.shape[0] != n_images or labels.shape[2:] != shape[1:]:
            raise UQEvalError(
                f"labels have shape {labels.shape}; expected (image, rater, {spatial}) = "
                f"({n_images}, rater, {', '.join(map(str, shape[1:]))})",
                parameter="labels",
            )
        if n_classes is None:
            raise UQEvalError("pass n_classes (or maps with `mean`) to read the labels", parameter="n_classes")
    if cubes is not None:
        cubes = np.asarray(cubes)
        if cubes.ndim != len(shape) + 3 or cubes.shape[0] != n_images or cubes.shape[4:] != shape[1:]:
            raise UQEvalError(
                f"cubes have shape {cubes.shape}; expected (image, eu, au, class, {spatial}) with "
                f"image = {n_images} and ({spatial}) = {shape[1:]}",
                parameter="cubes",
            )

    domains = _strings(domain, n_images, ID_DOMAIN, "domain")
    try:
        check_domains(domains, "")
    except UQEvalError as error:
        raise UQEvalError(f"`domain`: {error}", parameter="domain") from None

    def reader() -> Reader:
        def load(indices: np.ndarray, slot: int = 0) -> Loaded:
            whole = len(indices) == n_images

            def take(array: np.ndarray | None) -> np.ndarray | None:
                return array if array is None or whole else array[indices]

            return Loaded(take(cubes), take(labels), {name: take(array) for name, array in arrays.items()})

        return load

    return Source(
        where="evaluate",
        ids=np.arange(n_images),
        domains=domains,
        roles=_strings(role, n_images, TEST, "role"),
        has_labels=labels is not None,
        n_raters=None if labels is None else int(np.shape(labels)[1]),
        n_classes=int(n_classes or 0),
        background=background,
        reader=reader,
        has_probabilities=cubes is not None,
        in_memory=True,
        read_labels=None if labels is None else functools.partial(_planes, labels),
        chunk_sizes=[n_images] if n_images else [],
        depth=shape[1] if len(shape) == 4 else None,
        has_mean="mean" in arrays,
    )


def _strings(
    values: Sequence[str] | np.ndarray | None, n_images: int | None = None, default: str = "", name: str = ""
) -> np.ndarray:
    if values is None:
        return np.full(n_images, default, dtype=object)
    # One str object per distinct value, shared by the images that have it: 8 bytes per
    # image rather than a string each.
    distinct, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    array = distinct.astype(object)[inverse.reshape(np.shape(values))]
    if n_images is not None and array.shape != (n_images,):
        raise UQEvalError(f"`{name}` has shape {array.shape}; expected ({n_images},), one per image", parameter=name)
    return array
