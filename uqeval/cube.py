"""The sample-cube store: a validated reader and a resumable, atomic writer.

A cube store is a zarr group holding, per image, the softmax probabilities of every
member (``eu``) and sample (``au``) of a model, optionally the raters' label maps and the
input image, and the image's domain and role (docs/cube.md, schema 1). The writer writes
zarr v3; the reader reads zarr v3 and v2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
import zarr.codecs
import zarr.errors

from uqeval.checks import (
    check_decomposable,
    check_domain_spelling,
    image_name,
    raise_for_value_stats,
    value_stats,
)
from uqeval.errors import UQEvalError
from uqeval.names import IGNORE_LABEL, ROLES

SCHEMA = 1
PROBS_DIMS = ("image", "eu", "au", "class", "y", "x")
LABELS_DIMS = ("image", "rater", "y", "x")
INPUT_DIMS = ("image", "channel", "y", "x")
#: Storage dtypes of the probabilities (or logits) that a store may hold. Every value is
#: computed on in float32, so float64 gains nothing over float32 but size.
FLOAT_DTYPES = ("float16", "float32", "float64")
#: Group attribute where the writer records its progress; absent on stores written
#: by other tools, which then read as complete.
PROGRESS_ATTR = "uqeval_writer"
#: Uncompressed bytes per chunk that the writer aims for.
CHUNK_BYTES = 8 * 2**20


def default_compressor() -> zarr.codecs.BloscCodec:
    """The writer's codec: Blosc LZ4 with byte shuffle.

    Chosen by ``benchmarks/bench_store.py``: on float16 probabilities it reads back
    several times faster than zarr's default (Zstandard on float32) at a similar
    size; shuffling the two bytes of each half float groups the slowly varying
    exponent bytes, which is most of what compresses.
    """
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


# --------------------------------------------------------------------------- reading


def open_cube(path: str | os.PathLike[str], *, check_values: bool = False) -> xr.Dataset:
    """Open and validate a cube store.

    Validation up front is cheap: it reads metadata, the image ids, ``domain`` and
    ``role``, never the probabilities. It checks the variables, their dims and their
    order, dtypes, sizes, attributes, and that the store was completely written.
    Stores in zarr v3 (what :class:`CubeWriter` writes) and zarr v2 are both read.

    Parameters
    ----------
    path : path of the zarr store.
    check_values : also read every chunk once and check that probabilities are finite,
        non-negative and sum to 1, and that labels are valid classes or 255
        (see :func:`check_cube_values`).

    Returns
    -------
    xarray.Dataset
        Lazy, dask-backed: ``probs`` (image, eu, au, class, y, x), ``domain`` and
        ``role`` (image, str, loaded), ``labels`` (image, rater, y, x) and ``input``
        (image, channel, y, x) when present; ``image`` is the coordinate of image
        ids. A store with ``logits`` instead of ``probs`` gets a lazy
        ``probs = softmax(logits)`` over ``class`` (``attrs["source_variable"] ==
        "logits"``). ``role`` defaults to ``"test"``.

    Raises
    ------
    UQEvalError
        Naming the variable, dim, attribute or image that is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise UQEvalError(f"{path}: no such file or directory")
    try:
        group = zarr.open_group(path, mode="r")
    except zarr.errors.ContainsArrayError:
        raise UQEvalError(f"{path}: is a single zarr array; a cube store is a zarr group of variables") from None
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, ValueError, KeyError) as error:
        if path.is_file():
            raise UQEvalError(f"{path}: is a file, not a zarr store (a cube store is a zarr folder)") from None
        if isinstance(error, zarr.errors.GroupNotFoundError):
            raise UQEvalError(
                f"{path}: not a zarr store (no group metadata found: zarr.json for zarr v3, .zgroup for v2)"
            ) from None
        raise UQEvalError(f"{path}: not a zarr store ({error.__class__.__name__}: {error})") from None
    _check_complete(str(path), dict(group.attrs))
    _check_chunks_written(path, group)
    _check_shared_sizes(path, group)
    try:
        consolidated = getattr(group.metadata, "consolidated_metadata", None) is not None
        dataset = xr.open_zarr(path, chunks={}, consolidated=consolidated)
    except Exception as error:
        raise UQEvalError(f"{path}: cannot be read as an xarray Dataset ({error})") from None
    return validate_cube(dataset, where=str(path), check_values=check_values)


def validate_cube(dataset: xr.Dataset, *, where: str = "dataset", check_values: bool = False) -> xr.Dataset:
    """Validate an in-memory or lazily opened Dataset against the contract.

    Returns the normalised Dataset described in :func:`open_cube`.
    """
    attrs = dict(dataset.attrs)
    _check_complete(where, attrs)
    schema = attrs.get("schema")
    if schema is None:
        raise UQEvalError(f"{where}: attribute `schema` is missing (a uqeval cube has schema = {SCHEMA})")
    if schema != SCHEMA or isinstance(schema, bool):
        expected = f"the integer {SCHEMA}" if str(schema).strip() == str(SCHEMA) else f"schema {SCHEMA}"
        raise UQEvalError(f"{where}: attribute `schema` is {schema!r}; this uqeval reads {expected}")
    has_probs, has_logits = "probs" in dataset, "logits" in dataset
    if has_probs == has_logits:
        what = "both `probs` and `logits`" if has_probs else "neither `probs` nor `logits`"
        raise UQEvalError(f"{where}: has {what}; a cube holds exactly one of them")
    variable = "probs" if has_probs else "logits"
    values = dataset[variable]
    _check_dims(where, variable, values.dims, PROBS_DIMS)
    if values.dtype.kind != "f":
        raise UQEvalError(
            f"{where}: variable `{variable}` has dtype {values.dtype}; expected floats ({', '.join(FLOAT_DTYPES)})"
        )
    sizes = dict(values.sizes)
    for dim in PROBS_DIMS:
        if sizes[dim] == 0:
            raise UQEvalError(f"{where}: dim `{dim}` of `{variable}` is empty")
    check_decomposable(sizes["eu"], sizes["au"], sizes["class"], where)

    dataset = _normalise_image_coordinate(dataset, where)
    domain = _string_variable(dataset, "domain", where, default=None)
    check_domain_spelling(domain.values, where)
    dataset = dataset.assign(domain=domain)
    role = _string_variable(dataset, "role", where, default="test")
    unknown = sorted(set(role.values.tolist()) - set(ROLES))
    if unknown:
        index = int(np.flatnonzero(~np.isin(role.values, ROLES))[0])
        raise UQEvalError(
            f"{where}: variable `role` has value {unknown[0]!r} for image "
            f"{_image_id_at(dataset, index)}; roles are {ROLES}"
        )
    dataset = dataset.assign(role=role)

    if "labels" in dataset:
        labels = dataset["labels"]
        _check_dims(where, "labels", labels.dims, LABELS_DIMS)
        if labels.dtype.kind not in "iu":
            raise UQEvalError(f"{where}: variable `labels` has dtype {labels.dtype}; expected an integer type")
        _check_image_size(where, "labels", labels, variable, sizes)
        if labels.sizes["rater"] == 0:
            raise UQEvalError(f"{where}: dim `rater` of `labels` is empty; leave `labels` out when there are none")
    if "input" in dataset:
        pixels = dataset["input"]
        _check_dims(where, "input", pixels.dims, INPUT_DIMS)
        if pixels.dtype.kind != "f":
            raise UQEvalError(
                f"{where}: variable `input` has dtype {pixels.dtype}; expected floats (the input image's pixels, "
                "e.g. float32)"
            )
        if pixels.sizes["channel"] == 0:
            raise UQEvalError(f"{where}: dim `channel` of `input` is empty")
        _check_image_size(where, "input", pixels, variable, sizes)

    class_names = attrs.get("class_names")
    if class_names is not None and (
        not isinstance(class_names, list | tuple | np.ndarray)
        or not all(isinstance(name, str) for name in np.asarray(class_names, dtype=object).tolist())
    ):
        raise UQEvalError(f"{where}: attribute `class_names` is {class_names!r}; expected a list of strings")
    if class_names is not None and len(class_names) != sizes["class"]:
        raise UQEvalError(
            f"{where}: attribute `class_names` lists {len(class_names)} names for {sizes['class']} classes"
        )
    background = attrs.get("background", 0)
    if not isinstance(background, int | np.integer) or not 0 <= background < sizes["class"]:
        raise UQEvalError(
            f"{where}: attribute `background` is {background!r}; expected a class index in [0, {sizes['class']})"
        )

    whole = dict.fromkeys(PROBS_DIMS[1:], -1)
    if values.chunks is not None:
        values = values.chunk(whole)
    if variable == "logits":
        dataset = dataset.drop_vars("logits").assign(probs=softmax(values))
        dataset.attrs["source_variable"] = "logits"
    else:
        dataset = dataset.assign(probs=values)
        dataset.attrs["source_variable"] = "probs"
    if check_values:
        check_cube_values(dataset, where=where)
    return dataset


def softmax(logits: xr.DataArray) -> xr.DataArray:
    """Softmax over ``class`` in float32, lazily for dask-backed input."""
    data = logits.data
    if hasattr(data, "map_blocks"):
        result = data.map_blocks(softmax_array, dtype=np.float32)
    else:
        result = softmax_array(np.asarray(data))
    return logits.copy(data=result).rename("probs")


def softmax_array(logits: np.ndarray) -> np.ndarray:
    """Softmax over the ``class`` axis (axis 3) of ``(image, eu, au, class, y, x)`` logits, in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = np.exp(logits - logits.max(axis=3, keepdims=True))
    return shifted / shifted.sum(axis=3, keepdims=True)


def check_cube_values(dataset: xr.Dataset, *, where: str = "dataset") -> None:
    """Read every chunk once; raise :class:`UQEvalError` naming the first bad image.

    Probabilities must be finite, non-negative and sum to 1 over ``class`` (within
    :data:`uqeval.checks.SUM_TOLERANCE`); labels must be a class index or 255.
    """
    ids = dataset["image"].values
    probs = dataset["probs"]
    variable = dataset.attrs.get("source_variable", "probs")
    n_classes = probs.sizes["class"]
    for start, stop in _image_blocks(probs):
        block = np.asarray(probs[start:stop].values)
        try:
            raise_for_value_stats(value_stats(block), ids[start:stop], variable="probs")
        except UQEvalError as error:
            raise UQEvalError(f"{where}: {error}" if variable == "probs" else f"{where}: logits give {error}") from None
    if "labels" in dataset:
        labels = dataset["labels"]
        for start, stop in _image_blocks(labels):
            block = np.asarray(labels[start:stop].values)
            bad = (block >= n_classes) & (block != IGNORE_LABEL) | (block < 0)
            if bad.any():
                image, rater, y, x = np.argwhere(bad)[0]
                raise UQEvalError(
                    f"{where}: `labels` of image {image_name(ids[start + image])} (rater {rater}, pixel y={y}, "
                    f"x={x}) is {int(block[image, rater, y, x])}; classes are 0..{n_classes - 1} "
                    f"and {IGNORE_LABEL} means ignore"
                )


def _image_blocks(array: xr.DataArray) -> list[tuple[int, int]]:
    sizes = [array.sizes["image"]] if array.chunks is None else list(array.chunks[0])
    edges = np.cumsum([0, *sizes])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _check_complete(where: str, attrs: dict[str, Any]) -> None:
    progress = attrs.get(PROGRESS_ATTR)
    if progress is not None and not progress.get("complete", False):
        raise UQEvalError(
            f"{where}: the store is incomplete: writing stopped after {progress.get('n_images', 0)} "
            "complete image(s) and close() was never reached; continue it with "
            "CubeWriter(path, ..., resume=True)"
        )


def _check_chunks_written(path: Path, group: zarr.Group) -> None:
    """Refuse a store whose probabilities lack chunks (copied or written only in part).

    Valid probabilities never equal a fill value everywhere in a chunk, so every chunk
    of ``probs`` (or ``logits``) must be stored; a missing one would read as fill values.
    ``labels`` chunks may legitimately be absent (all-ignore chunks are not stored).
    """
    for name in ("probs", "logits"):
        if name in group and isinstance(group[name], zarr.Array):
            array = group[name]
            written, expected = array.nchunks_initialized, array.nchunks
            if written < expected:
                raise UQEvalError(
                    f"{path}: variable `{name}` has {written} of its {expected} chunks on disk; the store is "
                    "truncated (copied or written only in part)"
                )


def _dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    """An array's dim names: zarr v3 metadata, or xarray's ``_ARRAY_DIMENSIONS`` in zarr v2."""
    names = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names is not None else None


def _check_shared_sizes(path: Path, group: zarr.Group) -> None:
    """Refuse variables whose ``image``, ``y`` or ``x`` size differs from the probabilities'.

    xarray would refuse them too, with a message about conflicting dim sizes; this one
    names the variable, the dim and both sizes.
    """
    arrays = {name: array for name, array in group.arrays() if _dimension_names(array) is not None}
    reference = next((name for name in ("probs", "logits") if name in arrays), None)
    if reference is None:
        return
    reference_sizes = dict(zip(_dimension_names(arrays[reference]), arrays[reference].shape, strict=False))
    for name, array in sorted(arrays.items()):
        sizes = dict(zip(_dimension_names(array), array.shape, strict=False))
        for dim in ("image", "y", "x"):
            if dim in sizes and dim in reference_sizes and sizes[dim] != reference_sizes[dim]:
                what = "image(s)" if dim == "image" else f"pixels along `{dim}`"
                raise UQEvalError(
                    f"{path}: variable `{name}` holds {sizes[dim]} {what} but `{reference}` holds "
                    f"{reference_sizes[dim]}; they must match"
                )


def _check_image_size(where: str, name: str, array: xr.DataArray, variable: str, sizes: dict) -> None:
    for dim in ("y", "x"):
        if array.sizes[dim] != sizes[dim]:
            raise UQEvalError(
                f"{where}: dim `{dim}` of `{name}` has size {array.sizes[dim]} but `{variable}` has {sizes[dim]}"
            )


def _check_dims(where: str, variable: str, dims: tuple, expected: tuple) -> None:
    if tuple(dims) != expected:
        missing = [dim for dim in expected if dim not in dims]
        extra = [dim for dim in dims if dim not in expected]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not detail:
            detail.append("wrong order")
        raise UQEvalError(
            f"{where}: variable `{variable}` has dims {tuple(dims)}; expected {expected} ({', '.join(detail)})"
        )


def _normalise_image_coordinate(dataset: xr.Dataset, where: str) -> xr.Dataset:
    n_images = dataset.sizes["image"]
    if "image" not in dataset.coords:
        return dataset.assign_coords(image=np.arange(n_images))
    ids = dataset["image"].values
    if ids.dtype.kind in "OUST":
        ids = np.asarray([str(value) for value in ids.tolist()], dtype=object)
    elif ids.dtype.kind not in "iu":
        raise UQEvalError(f"{where}: coordinate `image` has dtype {ids.dtype}; image ids are strings or integers")
    unique, counts = np.unique(ids.astype(str) if ids.dtype == object else ids, return_counts=True)
    if (counts > 1).any():
        raise UQEvalError(f"{where}: coordinate `image` repeats the id {image_name(unique[counts > 1][0])}")
    return dataset.assign_coords(image=ids)


def _string_variable(dataset: xr.Dataset, name: str, where: str, default: str | None) -> xr.DataArray:
    if name not in dataset:
        if default is None:
            raise UQEvalError(f"{where}: variable `{name}` is missing (one string per image)")
        return xr.DataArray(np.full(dataset.sizes["image"], default, dtype=object), dims=("image",))
    variable = dataset[name]
    if variable.dims != ("image",):
        raise UQEvalError(f"{where}: variable `{name}` has dims {variable.dims}; expected ('image',)")
    values = variable.values
    if values.dtype.kind not in "OUST":
        raise UQEvalError(f"{where}: variable `{name}` has dtype {values.dtype}; expected strings")
    strings = [value.decode() if isinstance(value, bytes) else value for value in values.tolist()]
    for index, value in enumerate(strings):
        if not isinstance(value, str) or not value:
            raise UQEvalError(
                f"{where}: variable `{name}` of image {_image_id_at(dataset, index)} is {value!r}; "
                "expected a non-empty string"
            )
    return xr.DataArray(np.asarray(strings, dtype=object), dims=("image",))


def _image_id_at(dataset: xr.Dataset, index: int) -> str:
    return image_name(dataset["image"].values[index])


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WriteProgress:
    """A store's write progress: whole images written, and whether the writer closed it."""

    n_images: int
    complete: bool


class CubeWriter:
    """Write a cube store image batch by image batch; resumable and never half-done.

    Images are buffered and written a whole chunk at a time. After each chunk the
    writer records how many images are complete; the store reads as complete only
    after :meth:`close` (or leaving the ``with`` block without an error). After a
    crash, ``CubeWriter(path, ..., resume=True)`` truncates to the last complete image
    and :attr:`n_images` says how many to skip.

    Parameters
    ----------
    path : where the zarr v3 store goes.
    n_classes, eu, au, height, width : sizes of each image's cube.
    raters : label maps per image (0: the store has no labels).
    channels : channels of the input image, stored as ``input`` (image, channel, y, x)
        float32 (0: the store has no input images).
    variable : ``"probs"`` (default) or ``"logits"``.
    dtype : storage dtype of the probabilities, ``"float16"`` (default) or ``"float32"``.
    chunk_images : images per chunk; default aims at 8 MiB uncompressed chunks.
    compressor : a zarr v3 bytes-to-bytes codec, ``None`` for none, or ``"default"``
        (:func:`default_compressor`).
    au_method, eu_method, model, dataset, seed, class_names, background : store
        attributes (docs/cube.md); ``attrs`` adds any others.
    overwrite : replace an existing store at ``path``.
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
        eu: int,
        au: int,
        height: int,
        width: int,
        raters: int = 0,
        channels: int = 0,
        variable: str = "probs",
        dtype: str | np.dtype = "float16",
        chunk_images: int | None = None,
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
        for name, value in {"n_classes": n_classes, "eu": eu, "au": au, "height": height, "width": width}.items():
            if not _is_integer(value) or value < 1:
                raise UQEvalError(f"CubeWriter: `{name}` must be a positive integer, got {value!r}")
        for name, value in {"raters": raters, "channels": channels}.items():
            if not _is_integer(value) or value < 0:
                raise UQEvalError(f"CubeWriter: `{name}` must be an integer >= 0, got {value!r}")
        if chunk_images is not None and (not _is_integer(chunk_images) or chunk_images < 1):
            raise UQEvalError(f"CubeWriter: `chunk_images` must be a positive integer, got {chunk_images!r}")
        check_decomposable(eu, au, n_classes, "CubeWriter")
        if n_classes > IGNORE_LABEL and raters:
            raise UQEvalError(f"CubeWriter: labels are uint8 with {IGNORE_LABEL} = ignore; at most 255 classes")
        if variable not in ("probs", "logits"):
            raise UQEvalError(f"CubeWriter: `variable` is {variable!r}; expected 'probs' or 'logits'")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise UQEvalError(f"CubeWriter: `dtype` is {dtype!r}; expected float16 or float32") from None
        if self.dtype not in (np.float16, np.float32):
            raise UQEvalError(f"CubeWriter: `dtype` is {self.dtype}; expected float16 or float32")
        if class_names is not None and (
            isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names)
        ):
            raise UQEvalError(f"CubeWriter: `class_names` is {class_names!r}; expected one string per class")
        if class_names is not None and len(class_names) != n_classes:
            raise UQEvalError(f"CubeWriter: {len(class_names)} class_names for {n_classes} classes")
        if not _is_integer(background) or not 0 <= background < n_classes:
            raise UQEvalError(f"CubeWriter: `background` is {background!r}; expected a class in [0, {n_classes})")
        self.variable = variable
        self.cube_shape = (eu, au, n_classes, height, width)
        self.raters = int(raters)
        self.channels = int(channels)
        if chunk_images is None:
            image_bytes = math.prod(self.cube_shape) * self.dtype.itemsize
            chunk_images = max(1, min(64, CHUNK_BYTES // image_bytes))
        self.chunk_images = int(chunk_images)
        self._compressor = default_compressor() if compressor == "default" else compressor
        self._buffer: list[dict[str, Any]] = []
        self._closed = False
        self._id_kind: str | None = None
        self._seen_ids: set[object] = set()
        store_attrs = {
            "schema": SCHEMA,
            "au_method": au_method,
            "eu_method": eu_method,
            "model": model,
            "dataset": dataset,
            "seed": seed,
            "class_names": list(class_names) if class_names is not None else [f"class_{c}" for c in range(n_classes)],
            "background": int(background),
            **(attrs or {}),
        }
        exists = self.path.exists()
        if resume and exists:
            self._open_for_resume()
        elif exists and not overwrite:
            raise UQEvalError(
                f"{self.path}: already exists; pass overwrite=True to replace it or resume=True to continue it"
            )
        else:
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
        recorded = dict(zarr.open_group(path, mode="r").attrs).get(PROGRESS_ATTR)
        if not isinstance(recorded, dict):
            return None
        return WriteProgress(n_images=int(recorded.get("n_images", 0)), complete=bool(recorded.get("complete", False)))

    @property
    def n_images(self) -> int:
        """Images accepted so far (written or buffered), including those of earlier runs."""
        return self._n_written + sum(len(batch["ids"]) for batch in self._buffer)

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
    ) -> None:
        """Add a batch of images, or one image.

        Parameters
        ----------
        probs : (image, eu, au, class, y, x), or one image's (eu, au, class, y, x).
            Checked: finite, non-negative, summing to 1 over ``class``.
        labels : (image, rater, y, x) integers, classes or 255 (required when the
            writer has ``raters``); one image's (rater, y, x) with one image's ``probs``.
        domain, role : one string for the batch or one per image. ``domain`` is
            ``"id"`` for in-distribution images (``"ID"`` or ``" id"`` are refused).
        image_ids : strings or integers, unique in the store; default the running
            image number. One image's id may be given on its own.
        logits : instead of ``probs`` for a writer with ``variable="logits"``.
        input : (image, channel, y, x) numbers, or one image's (channel, y, x): the
            input images, stored as float32 (required when the writer has ``channels``).
        """
        if self._closed:
            raise UQEvalError(f"{self.path}: CubeWriter is closed")
        values, single = self._take_values(probs, logits)
        n = values.shape[0]
        ids = self._take_ids(image_ids, n)
        labels_array = self._take_labels(labels, ids, single)
        input_array = self._take_input(input, n, single)
        domains = _per_image("domain", domain, n)
        check_domain_spelling(domains, "CubeWriter.append")
        roles = _per_image("role", role, n)
        bad_roles = [value for value in roles if value not in ROLES]
        if bad_roles:
            raise UQEvalError(f"CubeWriter.append: role {bad_roles[0]!r}; roles are {ROLES}")
        with np.errstate(over="ignore"):
            stored = values.astype(self.dtype)
        self._check_values(values, stored, ids)
        self._seen_ids.update(ids)
        self._buffer.append(
            {
                "values": stored,
                "labels": labels_array,
                "input": input_array,
                "ids": ids,
                "domain": domains,
                "role": roles,
            }
        )
        if sum(len(batch["ids"]) for batch in self._buffer) >= self.chunk_images:
            self._flush(whole_chunks_only=True)

    def close(self) -> None:
        """Write what is buffered and mark the store complete."""
        if self._closed:
            return
        self._flush(whole_chunks_only=False)
        self._group.attrs[PROGRESS_ATTR] = {"n_images": self._n_written, "complete": True}
        self._closed = True

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep the whole images already accepted; the store stays incomplete.
            self._flush(whole_chunks_only=False)
            self._closed = True

    # -- internals --------------------------------------------------------------------

    def _create(self, attrs: dict[str, Any]) -> None:
        self._group = zarr.open_group(self.path, mode="w", zarr_format=3)
        self._group.attrs.update({**attrs, PROGRESS_ATTR: {"n_images": 0, "complete": False}})
        self._n_written = 0
        shape = (0, *self.cube_shape)
        self._group.create_array(
            self.variable,
            shape=shape,
            chunks=(self.chunk_images, *self.cube_shape),
            dtype=self.dtype,
            compressors=self._compressor,
            fill_value=np.nan,
            dimension_names=PROBS_DIMS,
        )
        if self.raters:
            height, width = self.cube_shape[-2:]
            self._group.create_array(
                "labels",
                shape=(0, self.raters, height, width),
                chunks=(max(self.chunk_images, 16), self.raters, height, width),
                dtype=np.uint8,
                compressors=default_compressor(),
                fill_value=IGNORE_LABEL,
                dimension_names=LABELS_DIMS,
            )
        if self.channels:
            height, width = self.cube_shape[-2:]
            self._group.create_array(
                "input",
                shape=(0, self.channels, height, width),
                chunks=(self.chunk_images, self.channels, height, width),
                dtype=np.float32,
                compressors=default_compressor(),
                fill_value=np.nan,
                dimension_names=INPUT_DIMS,
            )
        for name in ("domain", "role"):
            self._group.create_array(name, shape=(0,), chunks=(4096,), dtype=str, dimension_names=("image",))

    def _open_for_resume(self) -> None:
        try:
            self._group = zarr.open_group(self.path, mode="r+")
        except Exception as error:
            raise UQEvalError(f"{self.path}: cannot resume, not a zarr store ({error})") from None
        progress = self._group.attrs.get(PROGRESS_ATTR)
        if progress is None:
            raise UQEvalError(f"{self.path}: cannot resume: the store was not written by a CubeWriter")
        if self.variable not in self._group:
            raise UQEvalError(f"{self.path}: cannot resume: the store has no `{self.variable}` variable")
        values = self._group[self.variable]
        if tuple(values.shape[1:]) != self.cube_shape:
            raise UQEvalError(
                f"{self.path}: cannot resume: `{self.variable}` holds cubes of shape {tuple(values.shape[1:])}, "
                f"not {self.cube_shape}"
            )
        has_labels = "labels" in self._group
        if has_labels != bool(self.raters) or (has_labels and self._group["labels"].shape[1] != self.raters):
            raise UQEvalError(f"{self.path}: cannot resume: the store's raters differ from raters={self.raters}")
        has_input = "input" in self._group
        if has_input != bool(self.channels) or (has_input and self._group["input"].shape[1] != self.channels):
            raise UQEvalError(
                f"{self.path}: cannot resume: the store's input channels differ from channels={self.channels}"
            )
        self.dtype = values.dtype
        self.chunk_images = values.chunks[0]
        self._n_written = int(progress["n_images"])
        self._group.attrs[PROGRESS_ATTR] = {"n_images": self._n_written, "complete": False}
        self._truncate(self._n_written)
        if "image" in self._group and self._n_written:
            ids = self._group["image"][:].tolist()
            self._id_kind = "int" if self._group["image"].dtype.kind in "iu" else "str"
            self._seen_ids = set(ids)

    def _names(self) -> list[str]:
        names = [self.variable, "domain", "role"]
        if self.raters:
            names.append("labels")
        if self.channels:
            names.append("input")
        if "image" in self._group:
            names.append("image")
        return names

    def _truncate(self, n_images: int) -> None:
        for name in self._names():
            array = self._group[name]
            if array.shape[0] != n_images:
                array.resize((n_images, *array.shape[1:]))

    def _flush(self, *, whole_chunks_only: bool) -> None:
        if not self._buffer:
            return
        batch = {key: [part[key] for part in self._buffer] for key in self._buffer[0]}
        values = np.concatenate(batch["values"])
        n_total = values.shape[0]
        # Keep chunk boundaries aligned to the store so every chunk is written once.
        chunk_offset = self._n_written % self.chunk_images
        n_take = n_total
        if whole_chunks_only:
            n_take = ((chunk_offset + n_total) // self.chunk_images) * self.chunk_images - chunk_offset
            if n_take <= 0:
                return
        ids = [i for part in batch["ids"] for i in part]
        domains = [d for part in batch["domain"] for d in part]
        roles = [r for part in batch["role"] for r in part]
        labels = np.concatenate(batch["labels"]) if self.raters else None
        pixels = np.concatenate(batch["input"]) if self.channels else None
        start, stop = self._n_written, self._n_written + n_take
        self._ensure_image_array(ids)
        for name in self._names():
            array = self._group[name]
            array.resize((stop, *array.shape[1:]))
        self._group[self.variable][start:stop] = values[:n_take]
        if labels is not None:
            self._group["labels"][start:stop] = labels[:n_take]
        if pixels is not None:
            self._group["input"][start:stop] = pixels[:n_take]
        self._group["domain"][start:stop] = np.asarray(domains[:n_take], dtype=object)
        self._group["role"][start:stop] = np.asarray(roles[:n_take], dtype=object)
        id_values = np.asarray(ids[:n_take], dtype=np.int64 if self._id_kind == "int" else object)
        self._group["image"][start:stop] = id_values
        self._n_written = stop
        self._group.attrs[PROGRESS_ATTR] = {"n_images": stop, "complete": False}
        self._buffer = []
        if n_take < n_total:
            self._buffer.append(
                {
                    "values": values[n_take:],
                    "labels": labels[n_take:] if labels is not None else None,
                    "input": pixels[n_take:] if pixels is not None else None,
                    "ids": ids[n_take:],
                    "domain": domains[n_take:],
                    "role": roles[n_take:],
                }
            )

    def _ensure_image_array(self, ids: list[object]) -> None:
        if "image" in self._group:
            return
        dtype = np.int64 if self._id_kind == "int" else str
        self._group.create_array(
            "image", shape=(self._n_written,), chunks=(4096,), dtype=dtype, dimension_names=("image",)
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
                f"CubeWriter.append: `{self.variable}` has shape {values.shape}; expected (image, eu, au, class, "
                f"y, x) = (n, {', '.join(map(str, self.cube_shape))}), or one image's (eu, au, class, y, x)"
            )
        if values.dtype.kind != "f":
            raise UQEvalError(f"CubeWriter.append: `{self.variable}` has dtype {values.dtype}; expected floats")
        return values, single

    def _check_values(self, values: np.ndarray, stored: np.ndarray, ids: list[object]) -> None:
        if self.variable == "probs":
            raise_for_value_stats(value_stats(values), ids, variable="CubeWriter.append: probs")
        else:
            finite = np.isfinite(values).reshape(len(values), -1).all(1)
            stored_finite = np.isfinite(stored).reshape(len(values), -1).all(1)
            if not finite.all():
                index = int(np.flatnonzero(~finite)[0])
                raise UQEvalError(f"CubeWriter.append: logits of image {ids[index]!r} have NaN or inf values")
            if not stored_finite.all():
                index = int(np.flatnonzero(~stored_finite)[0])
                raise UQEvalError(
                    f"CubeWriter.append: logits of image {ids[index]!r} overflow {self.dtype} (largest magnitude "
                    f"{np.abs(values[index]).max():.4g}); store them with dtype='float32'"
                )

    def _take_labels(self, labels: np.ndarray | None, ids: list[object], single: bool) -> np.ndarray | None:
        n = len(ids)
        if not self.raters:
            if labels is not None:
                raise UQEvalError("CubeWriter.append: labels given but the writer was made with raters=0")
            return None
        if labels is None:
            raise UQEvalError(f"CubeWriter.append: the writer has raters={self.raters}; pass labels")
        labels = _take_per_image(
            "labels", _as_array("labels", labels), n, single, ("rater", "y", "x"), (self.raters, *self.cube_shape[-2:])
        )
        if labels.dtype.kind not in "iu":
            raise UQEvalError(f"CubeWriter.append: `labels` has dtype {labels.dtype}; expected integers")
        n_classes = self.cube_shape[2]
        bad = ((labels < 0) | (labels >= n_classes)) & (labels != IGNORE_LABEL)
        if bad.any():
            image, rater, y, x = np.argwhere(bad)[0]
            raise UQEvalError(
                f"CubeWriter.append: label {int(labels[image, rater, y, x])} of image {ids[image]!r} "
                f"(rater {rater}, y={y}, x={x}) is not a class in 0..{n_classes - 1} or {IGNORE_LABEL}"
            )
        return labels.astype(np.uint8)

    def _take_input(self, pixels: np.ndarray | None, n: int, single: bool) -> np.ndarray | None:
        if not self.channels:
            if pixels is not None:
                raise UQEvalError("CubeWriter.append: input given but the writer was made with channels=0")
            return None
        if pixels is None:
            raise UQEvalError(f"CubeWriter.append: the writer has channels={self.channels}; pass input")
        pixels = _take_per_image(
            "input",
            _as_array("input", pixels),
            n,
            single,
            ("channel", "y", "x"),
            (self.channels, *self.cube_shape[-2:]),
        )
        if pixels.dtype.kind not in "iuf":
            raise UQEvalError(f"CubeWriter.append: `input` has dtype {pixels.dtype}; expected numbers")
        return pixels.astype(np.float32)

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


def _is_integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_array(name: str, value: object) -> np.ndarray:
    """``value`` as a numpy array; a :class:`UQEvalError` for what numpy cannot read as one."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise UQEvalError(f"CubeWriter.append: `{name}` cannot be read as an array ({error})") from None


def _take_per_image(
    name: str, array: np.ndarray, n: int, single: bool, dims: tuple[str, ...], sizes: tuple[int, ...]
) -> np.ndarray:
    """A per-image array as ``(image, *dims)``; one image's ``dims`` alone when the
    probabilities came as one image."""
    if single and array.shape == sizes:
        return array[None]
    if array.shape == (n, *sizes):
        return array
    expected = f"({', '.join(('image', *dims))}) = ({', '.join(map(str, (n, *sizes)))})"
    if single:
        expected += f", or one image's ({', '.join(dims)}) = ({', '.join(map(str, sizes))})"
    raise UQEvalError(f"CubeWriter.append: `{name}` has shape {array.shape}; expected {expected}")


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
