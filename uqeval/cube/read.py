"""Reading a cube store: open it, check it against the contract, normalise it.

:func:`open_cube` reads zarr v3 (what :class:`~uqeval.cube.write.CubeWriter` writes) and
zarr v2 stores; :func:`validate_cube` checks a Dataset however it was made. Every rule
comes from :mod:`uqeval.cube.contract`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
import zarr.errors

from uqeval.checks import (
    check_decomposable,
    image_name,
    raise_for_value_stats,
    value_stats,
)
from uqeval.cube.contract import (
    CLASS_AXIS,
    DEFAULT_BACKGROUND,
    EXTRAS,
    IMAGE_DIM,
    LABELS,
    MAP_MEASURES,
    MAPS,
    MAPS_VARIABLE,
    MEAN,
    SCHEMA,
    SPACING_ATTR,
    STRINGS,
    VALUES,
    VOLUME_DIMS,
    VOLUME_SHARED_DIMS,
    StringVariable,
    Variable,
    WriteProgress,
    are_class_names,
    check_domains,
    check_spacing,
    first_invalid_label,
    is_class_index,
    is_maps_store,
    maps_spatial_dims_for,
    pixel_text,
    spatial_dims_for,
)
from uqeval.errors import UQEvalError
from uqeval.names import IGNORE_LABEL
from uqeval.text import shortened

#: Deepest nesting of lists and objects in a store attribute that :func:`open_cube` reads.
MAX_ATTRIBUTE_DEPTH = 32


def open_cube(path: str | os.PathLike[str], *, check_values: bool = False) -> xr.Dataset:
    """Open and validate a cube store.

    Validation up front is cheap: it reads metadata, the image ids, ``domain`` and
    ``role``, never the probabilities. It checks the variables, their dims and their
    order, dtypes, sizes, attributes, and that the store was completely written.
    Stores in zarr v3 (what :class:`CubeWriter` writes) and zarr v2 are both read.

    A store holds images, every variable ending in ``(y, x)``, or volumes, every
    variable ending in ``(z, y, x)``; its probabilities say which, and the other
    variables must agree. A store of volumes keeps its chunks along ``z`` (slabs), so
    that nothing here or downstream needs a whole volume in memory.

    Parameters
    ----------
    path : path of the zarr store.
    check_values : also read every chunk once and check that probabilities are finite,
        non-negative and sum to 1, and that labels are valid classes or 255
        (see :func:`check_cube_values`).

    Returns
    -------
    xarray.Dataset
        Lazy, dask-backed: ``probs`` (image, eu, au, class, [z,] y, x), ``domain``
        and ``role`` (image, str, loaded), ``labels`` (image, rater, [z,] y, x) and
        ``input`` (image, channel, [z,] y, x) when present; ``image`` is the
        coordinate of image ids. ``probs`` is chunked along ``image`` as stored and,
        for volumes, along ``z`` as stored, and whole in every other dim. A store with
        ``logits`` instead of ``probs`` gets a lazy ``probs = softmax(logits)`` over
        ``class`` (``attrs["source_variable"] == "logits"``). ``role`` defaults to
        ``"test"``. The attribute ``spacing``, when present, is a list of floats (mm).

    Raises
    ------
    UQEvalError
        Naming the variable, dim, attribute or image that is wrong; also for metadata
        nested too deeply to read, or attributes nested deeper than
        :data:`MAX_ATTRIBUTE_DEPTH`.
    """
    try:
        dataset = _open_cube(Path(path), check_values=check_values)
    except RecursionError:
        raise UQEvalError(f"{path}: its zarr metadata is nested too deeply to read") from None
    _check_attribute_depth(str(path), dataset.attrs)
    return dataset


def _open_cube(path: Path, *, check_values: bool) -> xr.Dataset:
    """:func:`open_cube` without the guard against metadata nested too deeply."""
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
    _check_members_open(path, group)
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
    present = [spec for spec in VALUES if spec.name in dataset]
    if not present and MEAN.name in dataset:
        return _validate_maps(dataset, where, check_values)
    if len(present) != 1:
        names = [f"`{spec.name}`" for spec in VALUES]
        what = f"both {' and '.join(names)}" if present else f"neither {' nor '.join(names)}"
        maps = "" if present else " (a maps store holds `mean` and `au`, `eu` or `tu` instead)"
        raise UQEvalError(f"{where}: has {what}; a cube holds exactly one of them{maps}")
    variable = present[0].name
    values = dataset[variable]
    spatial = spatial_dims_for(values.ndim)
    _check_array(where, present[0].with_spatial(spatial), values)
    sizes = dict(values.sizes)
    check_decomposable(sizes["eu"], sizes["au"], sizes["class"], where)

    dataset = _normalise_image_coordinate(dataset, where)
    for spec in STRINGS:
        dataset = dataset.assign({spec.name: _string_variable(dataset, spec, where)})
        if spec.name == "domain":
            check_domains(dataset[spec.name].values, where)

    for spec in EXTRAS:
        if spec.name in dataset:
            _check_array(where, spec.with_spatial(spatial), dataset[spec.name], values_name=variable)
            _check_image_size(where, spec.name, dataset[spec.name], variable, sizes, spatial)

    _check_attributes(where, dataset, attrs, sizes["class"], spatial)

    # Whole in every dim but `image` and, for volumes, `z`: their chunks are kept as stored.
    whole = {dim: -1 for dim in values.dims[1:] if dim != VOLUME_DIMS[0]}
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


def _check_attributes(where: str, dataset: xr.Dataset, attrs: dict, n_classes: int, spatial: tuple[str, ...]) -> None:
    """``class_names``, ``background`` and ``spacing`` (normalised into ``dataset.attrs``)."""
    class_names = attrs.get("class_names")
    if class_names is not None and not are_class_names(class_names):
        raise UQEvalError(f"{where}: attribute `class_names` is {class_names!r}; expected a list of strings")
    if class_names is not None and len(class_names) != n_classes:
        raise UQEvalError(f"{where}: attribute `class_names` lists {len(class_names)} names for {n_classes} classes")
    background = attrs.get("background", DEFAULT_BACKGROUND)
    if not is_class_index(background, n_classes):
        raise UQEvalError(
            f"{where}: attribute `background` is {background!r}; expected a class index in [0, {n_classes})"
        )
    if SPACING_ATTR in attrs:
        dataset.attrs[SPACING_ATTR] = check_spacing(attrs[SPACING_ATTR], spatial, where)


def _validate_maps(dataset: xr.Dataset, where: str, check_values: bool) -> xr.Dataset:
    """:func:`validate_cube` of a maps store: ``mean`` and any of ``au``, ``eu``, ``tu``
    instead of probabilities (docs/cube.md); ``attrs["source_variable"] == "maps"``."""
    attrs = dict(dataset.attrs)
    mean = dataset[MEAN.name]
    spatial = maps_spatial_dims_for(mean.ndim)
    _check_array(where, MEAN.with_spatial(spatial), mean)
    sizes = dict(mean.sizes)
    if sizes["class"] < 2:
        raise UQEvalError(f"{where}: `mean` has {sizes['class']} class; a segmentation has at least 2")
    measures = [name for name in MAP_MEASURES if name in dataset]
    if not measures:
        raise UQEvalError(f"{where}: has `mean` but none of `au`, `eu` and `tu`; a maps store gives at least one")
    for spec in (*(spec for spec in MAPS if spec.name in dataset), *(spec for spec in EXTRAS if spec.name in dataset)):
        _check_array(where, spec.with_spatial(spatial), dataset[spec.name], values_name=MEAN.name)
        _check_image_size(where, spec.name, dataset[spec.name], MEAN.name, sizes, spatial)
        if dataset[spec.name].sizes[IMAGE_DIM] != sizes[IMAGE_DIM]:
            raise UQEvalError(
                f"{where}: `{spec.name}` holds {dataset[spec.name].sizes[IMAGE_DIM]} image(s) but `mean` holds "
                f"{sizes[IMAGE_DIM]}"
            )
    dataset = _normalise_image_coordinate(dataset, where)
    for spec in STRINGS:
        dataset = dataset.assign({spec.name: _string_variable(dataset, spec, where)})
        if spec.name == "domain":
            check_domains(dataset[spec.name].values, where)
    _check_attributes(where, dataset, attrs, sizes["class"], spatial)
    if mean.chunks is not None:
        whole = {dim: -1 for dim in mean.dims[1:] if dim != VOLUME_DIMS[0]}
        dataset = dataset.assign(mean=mean.chunk(whole))
    dataset.attrs["source_variable"] = MAPS_VARIABLE
    if check_values:
        check_cube_values(dataset, where=where)
    return dataset


def _check_maps_values(dataset: xr.Dataset, where: str) -> None:
    """Every chunk of a maps store once: ``mean`` sums to 1 over ``class``; the maps are
    finite and non-negative."""
    ids = dataset[IMAGE_DIM].values
    mean = dataset[MEAN.name]
    for start, stop in _image_blocks(mean):
        stats = None
        for slab in z_slabs(mean):
            block = np.asarray(mean[start:stop].isel(slab).values)
            stats = _merged_stats(stats, value_stats(block, class_axis=1))
        try:
            raise_for_value_stats(stats, ids[start:stop], variable="mean")
        except UQEvalError as error:
            raise UQEvalError(f"{where}: {error}") from None
    for name in (name for name in MAP_MEASURES if name in dataset):
        values = dataset[name]
        for start, stop in _image_blocks(values):
            block = np.asarray(values[start:stop].values)
            bad = ~(np.isfinite(block) & (block >= 0)).reshape(len(block), -1).all(axis=1)
            if bad.any():
                raise UQEvalError(
                    f"{where}: `{name}` of image {image_name(ids[start + int(np.flatnonzero(bad)[0])])} has values "
                    "that are negative, NaN or infinite; uncertainty maps are non-negative nats"
                )


def softmax(logits: xr.DataArray) -> xr.DataArray:
    """Softmax over ``class`` in float32, lazily for dask-backed input."""
    data = logits.data
    if hasattr(data, "map_blocks"):
        result = data.map_blocks(softmax_array, dtype=np.float32)
    else:
        result = softmax_array(np.asarray(data))
    return logits.copy(data=result).rename("probs")


def softmax_array(logits: np.ndarray) -> np.ndarray:
    """Softmax over the ``class`` axis of ``(image, eu, au, class, [z,] y, x)`` logits, in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = np.exp(logits - logits.max(axis=CLASS_AXIS, keepdims=True))
    return shifted / shifted.sum(axis=CLASS_AXIS, keepdims=True)


def check_cube_values(dataset: xr.Dataset, *, where: str = "dataset") -> None:
    """Read every chunk once; raise :class:`UQEvalError` naming the first bad image.

    Probabilities must be finite, non-negative and sum to 1 over ``class`` (within
    :data:`uqeval.checks.SUM_TOLERANCE`); labels must be a class index or 255. Volumes
    are read one z-slab (one chunk) at a time.
    """
    ids = dataset[IMAGE_DIM].values
    if is_maps_store(dataset):
        _check_maps_values(dataset, where)
        _check_label_values(dataset, where, dataset[MEAN.name].sizes["class"])
        return
    probs = dataset["probs"]
    variable = dataset.attrs.get("source_variable", "probs")
    n_classes = probs.sizes["class"]
    for start, stop in _image_blocks(probs):
        stats = None
        for slab in z_slabs(probs):
            block = np.asarray(probs[start:stop].isel(slab).values)
            stats = _merged_stats(stats, value_stats(block, class_axis=CLASS_AXIS))
        try:
            raise_for_value_stats(stats, ids[start:stop], variable="probs")
        except UQEvalError as error:
            raise UQEvalError(f"{where}: {error}" if variable == "probs" else f"{where}: logits give {error}") from None
    _check_label_values(dataset, where, n_classes)


def _check_label_values(dataset: xr.Dataset, where: str, n_classes: int) -> None:
    """Every label is a class index or 255, read one chunk (slab) at a time."""
    ids = dataset[IMAGE_DIM].values
    if LABELS.name in dataset:
        labels = dataset[LABELS.name]
        for start, stop in _image_blocks(labels):
            found = None
            for slab in z_slabs(labels):
                found = first_invalid_label(np.asarray(labels[start:stop].isel(slab).values), n_classes)
                if found is not None:
                    if slab:
                        (image, rater, z, *rest), value = found
                        found = (image, rater, z + slab[VOLUME_DIMS[0]].start, *rest), value
                    break
            if found is not None:
                (image, rater, *pixel), value = found
                raise UQEvalError(
                    f"{where}: `labels` of image {image_name(ids[start + image])} (rater {rater}, pixel "
                    f"{pixel_text(pixel)}) is {value}; classes are 0..{n_classes - 1} and {IGNORE_LABEL} means ignore"
                )


def z_slabs(array: xr.DataArray) -> list[dict[str, slice]]:
    """``isel`` selections of the chunks of a volume along ``z``, to read it one slab at a
    time; one empty selection for images."""
    z = VOLUME_DIMS[0]
    if z not in array.dims:
        return [{}]
    sizes = [array.sizes[z]] if array.chunks is None else list(array.chunks[array.get_axis_num(z)])
    edges = np.cumsum([0, *sizes]).tolist()
    return [{z: slice(begin, end)} for begin, end in itertools.pairwise(edges)]


def _merged_stats(stats: np.ndarray | None, more: np.ndarray) -> np.ndarray:
    """Per-image :func:`~uqeval.checks.value_stats` of two parts of the same images, as one."""
    if stats is None:
        return more
    return np.stack(
        [
            stats[:, 0] + more[:, 0],
            np.minimum(stats[:, 1], more[:, 1]),
            np.minimum(stats[:, 2], more[:, 2]),
            np.maximum(stats[:, 3], more[:, 3]),
        ],
        axis=1,
    )


def _image_blocks(array: xr.DataArray) -> list[tuple[int, int]]:
    sizes = [array.sizes[IMAGE_DIM]] if array.chunks is None else list(array.chunks[0])
    edges = np.cumsum([0, *sizes])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _check_attribute_depth(where: str, attrs: Mapping[str, Any]) -> None:
    """Refuse an attribute nested deeper than :data:`MAX_ATTRIBUTE_DEPTH` (lists and
    objects within each other): the report copies attributes into ``scores.json``, and
    no model's identity needs more."""
    for name, value in attrs.items():
        pending = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            children = item.values() if isinstance(item, Mapping) else item if isinstance(item, list | tuple) else None
            if children is None:
                continue
            if depth > MAX_ATTRIBUTE_DEPTH:
                raise UQEvalError(
                    f"{where}: attribute {shortened(name)!r} is nested more than {MAX_ATTRIBUTE_DEPTH} levels deep; "
                    "a cube store's attributes are names, numbers and short lists"
                )
            pending.extend((child, depth + 1) for child in children)


def _check_complete(where: str, attrs: dict[str, Any]) -> None:
    progress = WriteProgress.recorded(attrs)
    if progress is not None and not progress.complete:
        raise UQEvalError(
            f"{where}: the store is incomplete: writing stopped after {progress.n_images} "
            "complete image(s) and close() was never reached; continue it with "
            "CubeWriter(path, ..., resume=True)"
        )


def _check_members_open(path: Path, group: zarr.Group) -> None:
    """Refuse a store with a variable whose metadata zarr cannot parse (a dtype it does not
    know, a broken ``.zarray``), naming the variable.

    zarr parses a member's metadata whenever the group lists its members; each folder of
    the store is opened on its own first, so that the message names the one at fault.
    """
    for folder in sorted(path.iterdir()) if path.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            _opened_member(path, group, folder.name)
    try:
        dict(group.members())
    except Exception as error:  # zarr raises many kinds for metadata it cannot parse
        raise UQEvalError(f"{path}: a variable's metadata cannot be read ({type(error).__name__}: {error})") from None


def _opened_member(path: Path, group: zarr.Group, name: str) -> None:
    try:
        group[name]
    except KeyError:
        pass  # a folder that is no member (zarr v3 metadata lists none there)
    except Exception as error:  # a dtype zarr cannot parse raises ValueError, others TypeError, …
        raise UQEvalError(
            f"{path}: variable `{name}` cannot be opened: its metadata is damaged or of a kind this zarr does not "
            f"read ({type(error).__name__}: {error})"
        ) from None


def _check_chunks_written(path: Path, group: zarr.Group) -> None:
    """Refuse a store whose probabilities lack chunks (copied or written only in part).

    Valid probabilities never equal a fill value everywhere in a chunk, so every chunk
    of ``probs`` (or ``logits``) must be stored; a missing one would read as fill values.
    ``labels`` chunks may legitimately be absent (all-ignore chunks are not stored).
    """
    for name in (*(spec.name for spec in VALUES), MEAN.name):
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
    """Refuse variables whose ``image`` or pixel dims' sizes differ from the probabilities'.

    xarray would refuse them too, with a message about conflicting dim sizes; this one
    names the variable, the dim and both sizes.
    """
    arrays = {name: array for name, array in group.arrays() if _dimension_names(array) is not None}
    reference = next((spec.name for spec in (*VALUES, MEAN) if spec.name in arrays), None)
    if reference is None:
        return
    reference_sizes = dict(zip(_dimension_names(arrays[reference]), arrays[reference].shape, strict=False))
    for name, array in sorted(arrays.items()):
        sizes = dict(zip(_dimension_names(array), array.shape, strict=False))
        for dim in VOLUME_SHARED_DIMS:
            if dim in sizes and dim in reference_sizes and sizes[dim] != reference_sizes[dim]:
                what = "image(s)" if dim == IMAGE_DIM else f"pixels along `{dim}`"
                raise UQEvalError(
                    f"{path}: variable `{name}` holds {sizes[dim]} {what} but `{reference}` holds "
                    f"{reference_sizes[dim]}; they must match"
                )


def _check_array(where: str, spec: Variable, array: xr.DataArray, values_name: str = "") -> None:
    """Dims in order, dtype kind, and no empty per-image dim, as ``spec`` declares.

    ``values_name`` names the probabilities (or logits) whose spatial dims ``spec``
    takes; a variable of another rank is told so."""
    hint = ""
    if values_name and (VOLUME_DIMS[0] in array.dims) != (VOLUME_DIMS[0] in spec.dims):
        hint = (
            f"; every variable of a store has the spatial dims of `{values_name}`, "
            f"({', '.join(spec.spatial_dims)}): a store holds images or volumes, not both"
        )
    _check_dims(where, spec.name, array.dims, spec.dims, hint)
    if array.dtype.kind not in spec.kinds:
        raise UQEvalError(f"{where}: variable `{spec.name}` has dtype {array.dtype}; expected {spec.expected}")
    for dim in spec.counted:
        if array.sizes[dim] == 0:
            raise UQEvalError(f"{where}: dim `{dim}` of `{spec.name}` is empty{spec.empty_hint}")


def _check_image_size(
    where: str, name: str, array: xr.DataArray, variable: str, sizes: dict, spatial: tuple[str, ...]
) -> None:
    for dim in spatial:
        if array.sizes[dim] != sizes[dim]:
            raise UQEvalError(
                f"{where}: dim `{dim}` of `{name}` has size {array.sizes[dim]} but `{variable}` has {sizes[dim]}"
            )


def _check_dims(where: str, variable: str, dims: tuple, expected: tuple, hint: str = "") -> None:
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
            f"{where}: variable `{variable}` has dims {tuple(dims)}; expected {expected} ({', '.join(detail)}){hint}"
        )


def _normalise_image_coordinate(dataset: xr.Dataset, where: str) -> xr.Dataset:
    n_images = dataset.sizes[IMAGE_DIM]
    if IMAGE_DIM not in dataset.coords:
        return dataset.assign_coords({IMAGE_DIM: np.arange(n_images)})
    ids = dataset[IMAGE_DIM].values
    if ids.dtype.kind in "OUST":
        ids = np.asarray([str(value) for value in ids.tolist()], dtype=object)
    elif ids.dtype.kind not in "iu":
        raise UQEvalError(f"{where}: coordinate `image` has dtype {ids.dtype}; image ids are strings or integers")
    unique, counts = np.unique(ids.astype(str) if ids.dtype == object else ids, return_counts=True)
    if (counts > 1).any():
        raise UQEvalError(f"{where}: coordinate `image` repeats the id {image_name(unique[counts > 1][0])}")
    return dataset.assign_coords({IMAGE_DIM: ids})


def _string_variable(dataset: xr.Dataset, spec: StringVariable, where: str) -> xr.DataArray:
    """``spec``'s variable as non-empty Python strings, its default where the store leaves it out."""
    name = spec.name
    if name not in dataset:
        if spec.default is None:
            raise UQEvalError(f"{where}: variable `{name}` is missing (one string per image)")
        return xr.DataArray(np.full(dataset.sizes[IMAGE_DIM], spec.default, dtype=object), dims=spec.dims)
    variable = dataset[name]
    if variable.dims != spec.dims:
        raise UQEvalError(f"{where}: variable `{name}` has dims {variable.dims}; expected {spec.dims}")
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
    if spec.allowed is not None:
        unknown = [value for value in strings if value not in spec.allowed]
        if unknown:
            raise UQEvalError(
                f"{where}: variable `{name}` has value {unknown[0]!r} for image "
                f"{_image_id_at(dataset, strings.index(unknown[0]))}; {name}s are {spec.allowed}"
            )
    return xr.DataArray(np.asarray(strings, dtype=object), dims=spec.dims)


def _image_id_at(dataset: xr.Dataset, index: int) -> str:
    return image_name(dataset[IMAGE_DIM].values[index])
