"""Tests of the cube store: :class:`CubeWriter`, :func:`open_cube` and :func:`validate_cube`."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import xarray as xr
import zarr

import uqeval
from uqeval import CubeWriter, UQEvalError, open_cube, validate_cube

# Hand-built stores use fixed-width unicode, which zarr flags as having no v3 spec yet.
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")

PROBS_DIMS = ("image", "eu", "au", "class", "y", "x")
LABELS_DIMS = ("image", "rater", "y", "x")
SHAPE = {"n_classes": 3, "eu": 2, "au": 2, "height": 4, "width": 5}


# --------------------------------------------------------------------------- helpers


def make_probs(n_images: int, seed: int = 0, n_classes: int = 3, eu: int = 2, au: int = 2, height=4, width=5):
    """Softmax-like float32 probabilities (image, eu, au, class, y, x)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=(n_images, eu, au, height, width))
    return np.moveaxis(probs, -1, 3).astype(np.float32)


def make_labels(n_images: int, raters: int = 2, seed: int = 1, n_classes: int = 3, height=4, width=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=(n_images, raters, height, width)).astype(np.uint8)
    labels[:, 0, 0, 0] = 255  # ignore
    return labels


def hand_dataset(
    n_images: int = 3,
    ids=("img-a", "img-b", "img-c"),
    *,
    labels: bool = True,
    seed: int = 0,
    **sizes,
) -> xr.Dataset:
    """A valid in-memory cube with fixed-width unicode strings, built without uqeval."""
    probs = make_probs(n_images, seed=seed, **sizes)
    n_classes, height, width = probs.shape[3:]
    data_vars = {
        "probs": (PROBS_DIMS, probs),
        "domain": (("image",), np.array(["id", "blur", "id", "noise"][:n_images] + ["id"] * (n_images - 4))),
        "role": (("image",), np.array(["calibration"] + ["test"] * (n_images - 1))),
    }
    if labels:
        data_vars["labels"] = (LABELS_DIMS, make_labels(n_images, n_classes=n_classes, height=height, width=width))
    attrs = {"schema": 1, "class_names": [f"c{c}" for c in range(n_classes)], "background": 0, "au_method": "ssn"}
    return xr.Dataset(data_vars, coords={"image": np.array(list(ids)[:n_images])}, attrs=attrs)


def save(dataset: xr.Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed-width unicode: no zarr v3 spec yet
        dataset.to_zarr(path, zarr_format=3, consolidated=False, mode="w")
    return path


def write_store(path: Path, probs: np.ndarray, batches=None, *, labels=None, ids=None, domain=None, **kwargs):
    """Write ``probs`` with a CubeWriter in the given batch sizes (default one batch)."""
    batches = batches or [len(probs)]
    n_classes, height, width = probs.shape[3:]
    options = {"n_classes": n_classes, "eu": probs.shape[1], "au": probs.shape[2], "height": height, "width": width}
    options |= kwargs
    if labels is not None:
        options.setdefault("raters", labels.shape[1])
    start = 0
    with CubeWriter(path, **options) as writer:
        for size in batches:
            part = slice(start, start + size)
            extra = {}
            if labels is not None:
                extra["labels"] = labels[part]
            if ids is not None:
                extra["image_ids"] = ids[part]
            if domain is not None:
                extra["domain"] = domain[part]
            writer.append(probs[part], **extra)
            start += size
    assert start == len(probs)
    return path


def assert_same_store(a: xr.Dataset, b: xr.Dataset) -> None:
    assert a.image.values.tolist() == b.image.values.tolist()
    for name in ("domain", "role"):
        assert a[name].values.tolist() == b[name].values.tolist()
    assert a.probs.dtype == b.probs.dtype
    np.testing.assert_array_equal(a.probs.values, b.probs.values)
    assert ("labels" in a) == ("labels" in b)
    if "labels" in a:
        np.testing.assert_array_equal(a.labels.values, b.labels.values)
    assert a.probs.chunks == b.probs.chunks
    assert a.attrs == b.attrs


def assert_raises(match: str, function, *args, **kwargs) -> str:
    with pytest.raises(UQEvalError, match=match) as info:
        function(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("id_kind", ["str", "int", "default"])
def test_round_trip(tmp_path, id_kind):
    n = 7
    probs, labels = make_probs(n), make_labels(n)
    ids = {"str": [f"case-{i:02d}" for i in range(n)], "int": [10 * i + 3 for i in range(n)], "default": None}[id_kind]
    domain = ["id", "id", "blur", "blur", "noise", "id", "id"]
    path = tmp_path / "cube.zarr"
    with CubeWriter(
        path,
        **SHAPE,
        raters=2,
        chunk_images=3,
        au_method="ssn",
        eu_method="ensemble",
        model="unet",
        dataset="lidc",
        seed=5,
        class_names=["bg", "lesion", "vessel"],
        background=0,
    ) as writer:
        writer.append(probs[:4], labels=labels[:4], domain=domain[:4], image_ids=None if ids is None else ids[:4])
        writer.append(
            probs[4:],
            labels=labels[4:],
            domain=domain[4:],
            role=["calibration", "test", "calibration"],
            image_ids=None if ids is None else ids[4:],
        )
        assert writer.n_images == n

    group = zarr.open_group(path, mode="r")
    assert group["probs"].dtype == np.float16
    assert group.attrs["uqeval_writer"] == {"n_images": n, "complete": True}

    ds = open_cube(path, check_values=True)
    assert ds.sizes["image"] == n
    assert ds.probs.dims == PROBS_DIMS
    assert ds.probs.dtype == np.float16
    np.testing.assert_allclose(ds.probs.values.astype(np.float32), probs, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(ds.probs.values, probs.astype(np.float16))
    assert ds.labels.dims == LABELS_DIMS
    np.testing.assert_array_equal(ds.labels.values, labels)
    expected_ids = list(range(n)) if ids is None else ids
    assert ds.image.values.tolist() == expected_ids
    if id_kind != "str":
        assert ds.image.dtype.kind in "iu"
    assert ds.domain.values.tolist() == domain
    assert ds.role.values.tolist() == ["test"] * 4 + ["calibration", "test", "calibration"]
    assert ds.attrs["schema"] == 1
    assert ds.attrs["au_method"] == "ssn"
    assert ds.attrs["eu_method"] == "ensemble"
    assert ds.attrs["model"] == "unet"
    assert ds.attrs["dataset"] == "lidc"
    assert ds.attrs["seed"] == 5
    assert list(ds.attrs["class_names"]) == ["bg", "lesion", "vessel"]
    assert ds.attrs["background"] == 0
    assert ds.attrs["source_variable"] == "probs"
    # Lazy, chunked over images only.
    assert ds.probs.chunks is not None
    assert ds.probs.chunks[0] == (3, 3, 1)
    assert all(len(chunks) == 1 for chunks in ds.probs.chunks[1:])


def test_default_attributes_and_single_image_append(tmp_path):
    probs = make_probs(2)
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, background=2) as writer:
        writer.append(probs[0])  # one image without the image dim
        writer.append(probs[1:])
    ds = open_cube(path)
    assert ds.image.values.tolist() == [0, 1]
    assert list(ds.attrs["class_names"]) == ["class_0", "class_1", "class_2"]
    assert ds.attrs["background"] == 2
    assert "labels" not in ds
    assert ds.domain.values.tolist() == ["id", "id"]
    assert ds.role.values.tolist() == ["test", "test"]
    np.testing.assert_array_equal(ds.probs.values, probs.astype(np.float16))


def test_single_image_append_with_its_labels_and_id(tmp_path):
    probs, labels = make_probs(3), make_labels(3)
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, raters=2, chunk_images=2) as writer:
        for index in range(3):
            # One image: (eu, au, class, y, x), (rater, y, x), and its id on its own.
            writer.append(probs[index], labels[index], domain="id" if index else "blur", image_ids=f"case-{index}")
    ds = open_cube(path)
    assert ds.image.values.tolist() == ["case-0", "case-1", "case-2"]
    assert ds.domain.values.tolist() == ["blur", "id", "id"]
    np.testing.assert_array_equal(ds.labels.values, labels)
    np.testing.assert_array_equal(ds.probs.values, probs.astype(np.float16))


def test_single_image_labels_must_match_a_single_image(writer):
    # A batch's labels need their image dim even for one image...
    message = assert_raises(
        r"`labels` has shape \(1, 4, 5\)", writer.append, make_probs(1), labels=make_labels(1, 1)[0]
    )
    assert "expected (image, rater, y, x) = (1, 1, 4, 5)" in message
    assert "one image's" not in message
    # ...and one image's labels keep their rater dim.
    message = assert_raises(
        r"`labels` has shape \(4, 5\)", writer.append, make_probs(1)[0], labels=make_labels(1, 1)[0, 0]
    )
    assert "or one image's (rater, y, x) = (1, 4, 5)" in message
    assert writer.n_images == 0


def test_uneven_batches_equal_one_batch(tmp_path):
    n = 9
    probs, labels = make_probs(n, seed=3), make_labels(n)
    ids = np.array([f"p{i}" for i in range(n)])
    domain = ["id"] * 4 + ["blur"] * 5
    one = write_store(tmp_path / "one.zarr", probs, labels=labels, ids=ids, domain=domain, chunk_images=4)
    many = write_store(tmp_path / "many.zarr", probs, [3, 5, 1], labels=labels, ids=ids, domain=domain, chunk_images=4)
    a, b = open_cube(one), open_cube(many)
    assert_same_store(a, b)
    assert b.probs.chunks[0] == (4, 4, 1)
    assert b.image.values.tolist() == ids.tolist()
    np.testing.assert_array_equal(b.probs.values, probs.astype(np.float16))


def test_float32_store(tmp_path):
    probs = make_probs(5, seed=4)
    path = write_store(tmp_path / "cube.zarr", probs, dtype="float32", chunk_images=2)
    assert zarr.open_group(path, mode="r")["probs"].dtype == np.float32
    ds = open_cube(path, check_values=True)
    assert ds.probs.dtype == np.float32
    np.testing.assert_array_equal(ds.probs.values, probs)
    assert ds.probs.chunks[0] == (2, 2, 1)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_logits_store_reads_as_softmax(tmp_path, dtype):
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=1.5, size=(5, 2, 2, 3, 4, 5)).astype(np.float32)
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, variable="logits", dtype=dtype, chunk_images=2) as writer:
        writer.append(logits=logits[:2], image_ids=["a", "b"])
        writer.append(logits=logits[2:], image_ids=["c", "d", "e"])
    group = zarr.open_group(path, mode="r")
    assert "logits" in group
    assert "probs" not in group
    ds = open_cube(path, check_values=True)
    assert ds.attrs["source_variable"] == "logits"
    assert "logits" not in ds
    assert ds.probs.dims == PROBS_DIMS
    assert ds.probs.dtype == np.float32
    assert ds.probs.chunks is not None
    expected = scipy.special.softmax(logits.astype(np.float64), axis=3)
    np.testing.assert_allclose(ds.probs.values, expected, rtol=0, atol=1e-3)
    stored = scipy.special.softmax(logits.astype(dtype).astype(np.float64), axis=3)
    np.testing.assert_allclose(ds.probs.values, stored, rtol=0, atol=1e-6)


def test_open_cube_probs_decompose_lazily(tmp_path):
    probs = make_probs(5, seed=8)
    path = write_store(tmp_path / "cube.zarr", probs, ids=[f"i{k}" for k in range(5)], chunk_images=2)
    ds = open_cube(path)
    maps = uqeval.decompose(ds.probs)
    assert maps.au.chunks is not None
    expected = uqeval.decompose(probs.astype(np.float16))
    computed = maps.compute()
    assert computed.image.values.tolist() == [f"i{k}" for k in range(5)]
    for name in ("au", "eu", "tu", "mean", "pred"):
        np.testing.assert_array_equal(computed[name].values, expected[name].values)


# --------------------------------------------------------------------------- resume


def test_resume_after_exception_in_with_block(tmp_path):
    n = 10
    probs, labels = make_probs(n, seed=9), make_labels(n)
    ids = [f"im{i}" for i in range(n)]
    kwargs = {**SHAPE, "raters": 2, "chunk_images": 4, "au_method": "ssn"}
    reference = write_store(tmp_path / "ref.zarr", probs, labels=labels, ids=ids, **kwargs)

    path = tmp_path / "cube.zarr"
    with pytest.raises(RuntimeError, match="crash"), CubeWriter(path, **kwargs) as writer:
        writer.append(probs[:3], labels=labels[:3], image_ids=ids[:3])
        writer.append(probs[3:6], labels=labels[3:6], image_ids=ids[3:6])
        raise RuntimeError("crash")

    message = assert_raises("incomplete", open_cube, path)
    assert "resume=True" in message
    assert "6 complete image" in message

    assert CubeWriter.progress(path) == uqeval.WriteProgress(n_images=6, complete=False)
    writer = CubeWriter(path, **kwargs, resume=True)
    assert writer.n_images == 6
    writer.append(probs[6:], labels=labels[6:], image_ids=ids[6:])
    writer.close()
    assert CubeWriter.progress(path) == uqeval.WriteProgress(n_images=n, complete=True)
    assert CubeWriter.progress(tmp_path / "absent.zarr") is None
    assert_same_store(open_cube(path, check_values=True), open_cube(reference))


def test_resume_after_abandoned_writer_loses_only_the_buffer(tmp_path):
    n = 10
    probs = make_probs(n, seed=10)
    ids = [f"im{i}" for i in range(n)]
    kwargs = {**SHAPE, "chunk_images": 4}
    reference = write_store(tmp_path / "ref.zarr", probs, ids=ids, **kwargs)

    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **kwargs)
    writer.append(probs[:3], image_ids=ids[:3])  # buffered
    writer.append(probs[3:5], image_ids=ids[3:5])  # 5 buffered: one chunk of 4 written
    writer.append(probs[5:7], image_ids=ids[5:7])  # 3 buffered
    assert writer.n_images == 7
    del writer  # a crash: no close, no __exit__
    gc.collect()

    assert_raises("incomplete", open_cube, path)
    writer = CubeWriter(path, **kwargs, resume=True)
    assert writer.n_images == 4
    writer.append(probs[4:], image_ids=ids[4:])
    writer.close()
    assert_same_store(open_cube(path, check_values=True), open_cube(reference))


def test_resume_truncates_a_half_written_chunk(tmp_path):
    """A crash between writing a chunk and recording it: resume drops the unrecorded images."""
    n = 9
    probs, labels = make_probs(n, seed=11), make_labels(n, raters=1)
    kwargs = {**SHAPE, "raters": 1, "chunk_images": 4}
    reference = write_store(tmp_path / "ref.zarr", probs, labels=labels, **kwargs)

    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **kwargs)
    writer.append(probs[:4], labels=labels[:4])
    del writer
    group = zarr.open_group(path, mode="r+")
    assert group.attrs["uqeval_writer"] == {"n_images": 4, "complete": False}
    for name in ("probs", "labels", "domain", "role", "image"):
        array = group[name]
        array.resize((6, *array.shape[1:]))
    group["probs"][4:6] = np.float16(0.9)  # garbage that must not survive
    group["labels"][4:6] = 7

    writer = CubeWriter(path, **kwargs, resume=True)
    assert writer.n_images == 4
    assert zarr.open_group(path, mode="r")["probs"].shape[0] == 4
    writer.append(probs[4:], labels=labels[4:])
    writer.close()
    assert_same_store(open_cube(path, check_values=True), open_cube(reference))


def test_resume_keeps_the_image_ids(tmp_path):
    probs = make_probs(6, seed=12)
    path = tmp_path / "cube.zarr"
    kwargs = {**SHAPE, "chunk_images": 2}
    with pytest.raises(KeyboardInterrupt), CubeWriter(path, **kwargs) as writer:
        writer.append(probs[:3], image_ids=["a", "b", "c"])
        raise KeyboardInterrupt
    writer = CubeWriter(path, **kwargs, resume=True)
    assert writer.n_images == 3
    assert_raises("already in the store", writer.append, probs[3:4], image_ids=["b"])
    assert_raises("one kind per store", writer.append, probs[3:4], image_ids=[3])
    writer.append(probs[3:], image_ids=["d", "e", "f"])
    writer.close()
    ds = open_cube(path)
    assert ds.image.values.tolist() == ["a", "b", "c", "d", "e", "f"]
    np.testing.assert_array_equal(ds.probs.values, probs.astype(np.float16))


def test_validate_cube_rejects_a_truncated_store_opened_by_xarray(tmp_path):
    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **SHAPE, chunk_images=2)
    writer.append(make_probs(3))
    del writer
    dataset = xr.open_zarr(path, consolidated=False)
    assert dataset.attrs["uqeval_writer"] == {"n_images": 2, "complete": False}
    assert_raises("incomplete", validate_cube, dataset)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"height": 6}, "cannot resume: `probs` holds cubes of shape"),
        ({"raters": 1}, "cannot resume: the store's raters differ"),
        ({"variable": "logits"}, "cannot resume: the store has no `logits` variable"),
    ],
)
def test_resume_refuses_a_different_store(tmp_path, kwargs, pattern):
    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **SHAPE, chunk_images=1)
    writer.append(make_probs(2))
    del writer
    assert_raises(pattern, CubeWriter, path, **{**SHAPE, **kwargs}, resume=True)


def test_resume_refuses_a_store_not_written_by_cubewriter(tmp_path):
    path = save(hand_dataset(), tmp_path / "cube.zarr")
    assert_raises("not written by a CubeWriter", CubeWriter, path, **SHAPE, resume=True)


# --------------------------------------------------------------------------- overwrite


def test_refuses_to_overwrite(tmp_path):
    path = write_store(tmp_path / "cube.zarr", make_probs(2, seed=1))
    assert_raises("already exists", CubeWriter, path, **SHAPE)
    np.testing.assert_array_equal(open_cube(path).probs.values, make_probs(2, seed=1).astype(np.float16))

    replacement = make_probs(3, seed=2)
    with CubeWriter(path, **SHAPE, overwrite=True) as writer:
        writer.append(replacement, image_ids=["x", "y", "z"])
    ds = open_cube(path)
    assert ds.image.values.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(ds.probs.values, replacement.astype(np.float16))


# --------------------------------------------------------------------------- fixed-width strings


def test_hand_built_fixed_width_unicode_store_opens(tmp_path):
    source = hand_dataset(4, ids=["img-a", "img-b", "img-c", "img-d"])
    for name in ("domain", "role", "image"):
        assert source[name].dtype.kind == "U"
    path = save(source, tmp_path / "cube.zarr")
    group = zarr.open_group(path, mode="r")
    for name in ("domain", "role", "image"):
        assert group[name].dtype.kind == "U"  # stored as fixed-width unicode
    ds = open_cube(path, check_values=True)
    assert ds.image.values.tolist() == ["img-a", "img-b", "img-c", "img-d"]
    assert ds.domain.values.tolist() == ["id", "blur", "id", "noise"]
    assert ds.role.values.tolist() == ["calibration", "test", "test", "test"]
    assert all(isinstance(value, str) for value in ds.domain.values.tolist())
    np.testing.assert_array_equal(ds.probs.values, source.probs.values)
    np.testing.assert_array_equal(ds.labels.values, source.labels.values)
    assert ds.probs.chunks is not None
    assert ds.attrs["source_variable"] == "probs"


def test_hand_built_store_with_consolidated_metadata_opens(tmp_path):
    source = hand_dataset(3)
    path = tmp_path / "cube.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata and fixed-width unicode in zarr v3
        source.to_zarr(path, zarr_format=3, consolidated=True)
    ds = open_cube(path, check_values=True)
    assert ds.image.values.tolist() == ["img-a", "img-b", "img-c"]
    np.testing.assert_array_equal(ds.probs.values, source.probs.values)


def test_validate_in_memory_dataset_defaults_role_and_ids():
    source = hand_dataset(3, labels=False).drop_vars(["role", "image"])
    ds = validate_cube(source, check_values=True)
    assert ds.role.values.tolist() == ["test"] * 3
    assert ds.image.values.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds.probs.values, source.probs.values)


def test_validate_in_memory_logits():
    source = hand_dataset(2, labels=False)
    logits = np.log(source.probs.values) + 3.0
    source = source.drop_vars("probs").assign(logits=(PROBS_DIMS, logits))
    ds = validate_cube(source, check_values=True)
    assert ds.attrs["source_variable"] == "logits"
    np.testing.assert_allclose(ds.probs.values, scipy.special.softmax(logits, axis=3), atol=1e-6)


# --------------------------------------------------------------------------- bad stores


def test_open_missing_path(tmp_path):
    assert_raises("no such file", open_cube, tmp_path / "nowhere.zarr")


def test_open_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    assert_raises("not a zarr store", open_cube, tmp_path / "plain")


def test_open_truncated_store(tmp_path):
    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **SHAPE, chunk_images=2)
    writer.append(make_probs(3))
    del writer
    message = assert_raises("incomplete", open_cube, path)
    assert "2 complete image" in message


def _drop_schema(ds):
    ds.attrs.pop("schema")
    return ds


def _set_attr(name, value):
    def mutate(ds):
        ds.attrs[name] = value
        return ds

    return mutate


def _set_probs_value(index, value):
    def mutate(ds):
        probs = ds.probs.values.copy()
        probs[index] = value
        return ds.assign(probs=(PROBS_DIMS, probs))

    return mutate


def _scale_image(image, factor):
    def mutate(ds):
        probs = ds.probs.values.copy()
        probs[image] *= factor
        return ds.assign(probs=(PROBS_DIMS, probs))

    return mutate


def _set_label(index, value):
    def mutate(ds):
        labels = ds.labels.values.astype(np.int16)
        labels[index] = value
        return ds.assign(labels=(LABELS_DIMS, labels))

    return mutate


BAD_STORES = {
    "no schema": (_drop_schema, False, [r"attribute `schema` is missing"]),
    "schema 2": (_set_attr("schema", 2), False, [r"attribute `schema` is 2"]),
    "no probs": (lambda ds: ds.drop_vars("probs"), False, [r"neither `probs` nor `logits`"]),
    "both probs and logits": (
        lambda ds: ds.assign(logits=ds.probs),
        False,
        [r"both `probs` and `logits`"],
    ),
    "wrong dim names": (
        lambda ds: ds.assign(probs=ds.probs.rename(eu="member")),
        False,
        [r"variable `probs` has dims", r"missing \['eu'\]", r"unexpected \['member'\]"],
    ),
    "wrong dim order": (
        lambda ds: ds.assign(probs=ds.probs.transpose("image", "au", "eu", "class", "y", "x")),
        False,
        [r"variable `probs` has dims", "wrong order"],
    ),
    "integer probs": (
        lambda ds: ds.assign(probs=(ds.probs > 0.5).astype(np.int32)),
        False,
        [r"`probs` has dtype int32"],
    ),
    "deterministic": (
        lambda ds: ds.isel(eu=[0], au=[0]),
        False,
        ["deterministic"],
    ),
    "one class": (lambda ds: ds.isel({"class": [0]}), False, [r"at least 2 classes"]),
    "unknown role": (
        lambda ds: ds.assign(role=("image", np.array(["test", "validation", "test"]))),
        False,
        [r"`role` has value 'validation' for image 'img-b'"],
    ),
    "missing domain": (lambda ds: ds.drop_vars("domain"), False, [r"variable `domain` is missing"]),
    "empty domain": (
        lambda ds: ds.assign(domain=("image", np.array(["id", "", "blur"]))),
        False,
        [r"`domain` of image 'img-b'", "non-empty"],
    ),
    "background out of range": (_set_attr("background", 3), False, [r"attribute `background` is 3"]),
    "negative background": (_set_attr("background", -1), False, [r"attribute `background` is -1"]),
    "class_names wrong length": (
        _set_attr("class_names", ["bg", "fg"]),
        False,
        [r"`class_names` lists 2 names for 3 classes"],
    ),
    "float labels": (
        lambda ds: ds.assign(labels=ds.labels.astype(np.float32)),
        False,
        [r"`labels` has dtype float32"],
    ),
    "labels without rater": (
        lambda ds: ds.assign(labels=ds.labels.isel(rater=0)),
        False,
        [r"variable `labels` has dims", r"missing \['rater'\]"],
    ),
    "domain ID": (
        lambda ds: ds.assign(domain=("image", np.array(["ID", "blur", "ID"]))),
        False,
        [r"domain 'ID' of 2 images looks like 'id' \(in-distribution\) but is spelled differently; write 'id'$"],
    ),
    "domain with a space": (
        lambda ds: ds.assign(domain=("image", np.array(["id", "blur", "id "]))),
        False,
        [r"domain 'id ' of 1 image looks like 'id'"],
    ),
    "schema as a string": (
        _set_attr("schema", "1"),
        False,
        [r"attribute `schema` is '1'; this uqeval reads the integer 1"],
    ),
    "class_names not a list": (_set_attr("class_names", "abc"), False, [r"`class_names` is 'abc'; expected a list"]),
    "labels of no rater": (
        lambda ds: ds.drop_vars("labels").assign(labels=ds.labels.isel(rater=slice(0, 0))),
        False,
        [r"dim `rater` of `labels` is empty"],
    ),
    "input without channel": (
        lambda ds: ds.assign(input=(("image", "y", "x"), np.zeros((3, 4, 5), np.float32))),
        False,
        [r"variable `input` has dims", r"missing \['channel'\]"],
    ),
    "integer input": (
        lambda ds: ds.assign(input=(("image", "channel", "y", "x"), np.zeros((3, 1, 4, 5), np.uint8))),
        False,
        [r"variable `input` has dtype uint8; expected floats"],
    ),
    "label out of range": (_set_label((1, 1, 2, 3), 3), True, [r"`labels` of image 'img-b'", r"is 3", "255"]),
    "negative label": (_set_label((2, 0, 1, 1), -1), True, [r"`labels` of image 'img-c'", r"is -1"]),
    "nan": (_set_probs_value((1, 0, 1, 2, 0, 0), np.nan), True, [r"image 'img-b' has NaN or inf"]),
    "inf": (_set_probs_value((2, 1, 0, 0, 3, 4), np.inf), True, [r"image 'img-c' has NaN or inf"]),
    "negative probs": (
        _set_probs_value((1, 0, 0, 1, 1, 1), -0.2),
        True,
        [r"image 'img-b' has negative probabilities", "logits"],
    ),
    "sum to five": (_scale_image(1, 5.0), True, [r"image 'img-b' does not sum to 1", "logits"]),
}


@pytest.mark.parametrize("case", list(BAD_STORES))
def test_open_bad_store(tmp_path, case):
    mutate, check_values, patterns = BAD_STORES[case]
    path = save(mutate(hand_dataset()), tmp_path / "cube.zarr")
    message = assert_raises(patterns[0], open_cube, path, check_values=check_values)
    for pattern in patterns[1:]:
        assert re.search(pattern, message), (pattern, message)
    assert str(path) in message
    if check_values:
        # The values are only read when asked: the lazy open itself succeeds.
        assert open_cube(path).sizes["image"] == 3


@pytest.mark.parametrize("case", list(BAD_STORES))
def test_validate_bad_dataset(case):
    mutate, check_values, patterns = BAD_STORES[case]
    message = assert_raises(patterns[0], validate_cube, mutate(hand_dataset()), check_values=check_values)
    assert message.startswith("dataset: ")


def test_open_zarr_group_without_schema(tmp_path):
    path = tmp_path / "cube.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["model"] = "unet"
    assert_raises(r"attribute `schema` is missing", open_cube, path)


def test_open_logits_nan_says_logits(tmp_path):
    source = hand_dataset(labels=False)
    logits = np.log(source.probs.values)
    logits[2, 0, 0, 0, 0, 0] = np.nan
    path = save(source.drop_vars("probs").assign(logits=(PROBS_DIMS, logits)), tmp_path / "cube.zarr")
    message = assert_raises("logits give", open_cube, path, check_values=True)
    assert "'img-c'" in message
    assert "NaN or inf" in message


def test_open_labels_of_other_height(tmp_path):
    path = write_store(tmp_path / "cube.zarr", make_probs(3), labels=make_labels(3, raters=1))
    group = zarr.open_group(path, mode="r+")
    del group["labels"]
    group.create_array("labels", shape=(3, 1, 3, 5), dtype=np.uint8, dimension_names=LABELS_DIMS)
    message = assert_raises("labels", open_cube, path)
    assert "'y'" in message or "`y`" in message


def test_open_duplicate_image_ids(tmp_path):
    path = save(hand_dataset(ids=["a", "b", "a"]), tmp_path / "cube.zarr")
    message = assert_raises("repeats the id", open_cube, path)
    assert "'a'" in message


@pytest.mark.parametrize(("ids", "shown"), [(["a", "b", "a"], "'a'"), ([3, 4, 3], "3")])
def test_duplicate_image_id_message_shows_the_plain_id(ids, shown):
    message = assert_raises("repeats the id", validate_cube, hand_dataset(ids=ids))
    assert message.endswith(f"repeats the id {shown}")


# --------------------------------------------------------------------------- writer arguments


def test_writer_deterministic(tmp_path):
    assert_raises("deterministic", CubeWriter, tmp_path / "c.zarr", **{**SHAPE, "eu": 1, "au": 1})
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_classes": 1}, "at least 2 classes"),
        ({"height": 0}, "`height` must be a positive integer"),
        ({"variable": "scores"}, "`variable`"),
        ({"dtype": "float64"}, "`dtype`"),
        ({"dtype": "half-ish"}, "`dtype` is 'half-ish'"),
        ({"class_names": ["a", "b"]}, "2 class_names for 3 classes"),
        ({"class_names": "abc"}, "`class_names` is 'abc'; expected one string per class"),
        ({"background": 3}, "`background` is 3"),
        ({"background": "0"}, "`background` is '0'"),
        ({"raters": -1}, "`raters` must be an integer >= 0"),
        ({"channels": 1.5}, "`channels` must be an integer >= 0"),
        ({"chunk_images": 0}, "`chunk_images` must be a positive integer"),
    ],
)
def test_writer_bad_arguments(tmp_path, kwargs, pattern):
    assert_raises(pattern, CubeWriter, tmp_path / "c.zarr", **{**SHAPE, **kwargs})


@pytest.fixture
def writer(tmp_path):
    with CubeWriter(tmp_path / "cube.zarr", **SHAPE, raters=1, chunk_images=2) as writer:
        yield writer


def test_writer_wrong_probs_shape(writer):
    probs = make_probs(2, height=5)
    assert_raises(r"`probs` has shape \(2, 2, 2, 3, 5, 5\)", writer.append, probs, labels=make_labels(2, 1))


def test_writer_needs_labels(writer):
    assert_raises("pass labels", writer.append, make_probs(2))


def test_writer_labels_wrong_shape(writer):
    assert_raises("`labels` has shape", writer.append, make_probs(2), labels=make_labels(2, raters=2))


def test_writer_labels_out_of_range(writer):
    labels = make_labels(2, raters=1)
    labels[1, 0, 2, 3] = 3
    message = assert_raises("label 3 of image", writer.append, make_probs(2), labels=labels)
    assert "y=2" in message
    assert "x=3" in message
    assert writer.n_images == 0


def test_writer_labels_out_of_range_names_the_image_id(writer):
    labels = make_labels(2, raters=1)
    labels[1, 0, 2, 3] = 9
    message = assert_raises("label 9", writer.append, make_probs(2), labels=labels, image_ids=["img-a", "img-b"])
    assert "'img-b'" in message


def test_writer_mixed_id_kinds(writer):
    probs, labels = make_probs(2), make_labels(2, 1)
    assert_raises("all non-empty strings or all integers", writer.append, probs, labels=labels, image_ids=["a", 1])
    assert_raises("all non-empty strings or all integers", writer.append, probs, labels=labels, image_ids=["a", ""])
    writer.append(probs, labels=labels, image_ids=[1, 2])
    assert_raises("one kind per store", writer.append, probs, labels=labels, image_ids=["a", "b"])
    assert writer.n_images == 2


def test_writer_duplicate_ids(writer):
    probs, labels = make_probs(3), make_labels(3, 1)
    assert_raises("image id 'a'", writer.append, probs, labels=labels, image_ids=["a", "b", "a"])
    writer.append(probs, labels=labels, image_ids=["a", "b", "c"])  # 2 written, 1 buffered
    assert_raises("image id 'c' is already in the store", writer.append, probs[:1], labels=labels[:1], image_ids=["c"])
    assert_raises("image id 'a' is already in the store", writer.append, probs[:1], labels=labels[:1], image_ids=["a"])
    assert writer.n_images == 3


def test_writer_duplicate_default_and_given_int_ids(writer):
    probs, labels = make_probs(2), make_labels(2, 1)
    writer.append(probs, labels=labels)  # ids 0, 1
    assert_raises("image id 1 is already in the store", writer.append, probs, labels=labels, image_ids=[1, 5])


def test_writer_bad_role_and_domain(writer):
    probs, labels = make_probs(2), make_labels(2, 1)
    assert_raises("role 'train'", writer.append, probs, labels=labels, role="train")
    assert_raises("role 'val'", writer.append, probs, labels=labels, role=["test", "val"])
    assert_raises("3 values of `domain` for 2 images", writer.append, probs, labels=labels, domain=["a", "b", "c"])
    assert_raises("`domain` ''", writer.append, probs, labels=labels, domain="")
    assert_raises("`domain` is 5; expected one string or one per image", writer.append, probs, labels=labels, domain=5)
    assert writer.n_images == 0


@pytest.mark.parametrize("domain", ["ID", "Id", "id ", " id", ["blur", "ID"]])
def test_writer_refuses_id_spelled_otherwise(writer, domain):
    probs, labels = make_probs(2), make_labels(2, 1)
    spelt = domain if isinstance(domain, str) else "ID"
    message = assert_raises("looks like 'id'", writer.append, probs, labels=labels, domain=domain)
    assert message.startswith(f"CubeWriter.append: domain {spelt!r} of ")
    assert message.endswith("write 'id'")
    assert writer.n_images == 0
    writer.append(probs, labels=labels, domain="id")  # the same batch, spelled right
    assert writer.n_images == 2


def test_writer_refuses_what_numpy_cannot_read_as_an_array(writer):
    assert_raises("`probs` cannot be read as an array", writer.append, [[0.5, 0.5], [1.0]], labels=make_labels(1, 1))


def test_writer_probs_not_summing_to_one_name_the_image_id(writer):
    probs, labels = make_probs(3), make_labels(3, 1)
    probs[2] *= 5
    message = assert_raises("does not sum to 1", writer.append, probs, labels=labels, image_ids=["x", "y", "z"])
    assert "'z'" in message
    assert "logits" in message
    probs = make_probs(3)
    probs[1, 0, 0, 0, 0, 0] = np.nan
    assert_raises("image 'y' has NaN or inf", writer.append, probs, labels=labels, image_ids=["x", "y", "z"])
    probs = make_probs(3)
    probs[0, 0, 0, 0, 0, 0] = -0.1
    assert_raises("image 'x' has negative", writer.append, probs, labels=labels, image_ids=["x", "y", "z"])
    assert writer.n_images == 0


def test_writer_integer_probs(writer):
    assert_raises("dtype int64", writer.append, np.ones((1, 2, 2, 3, 4, 5), dtype=np.int64), labels=make_labels(1, 1))


def test_writer_wrong_variable(tmp_path):
    with CubeWriter(tmp_path / "cube.zarr", **SHAPE, variable="logits") as writer:
        assert_raises("pass logits=", writer.append, make_probs(1))
        logits = np.zeros((2, 2, 2, 3, 4, 5), dtype=np.float32)
        logits[1, 0, 0, 0, 0, 0] = np.inf
        assert_raises("logits of image 1 have NaN or inf", writer.append, logits=logits)


def test_writer_keeps_good_images_after_a_rejected_batch(tmp_path):
    path = tmp_path / "cube.zarr"
    good, bad = make_probs(3, seed=1), make_probs(2, seed=2)
    bad[1] *= 5
    with CubeWriter(path, **SHAPE, chunk_images=2) as writer:
        writer.append(good[:2], image_ids=["a", "b"])
        assert_raises("does not sum to 1", writer.append, bad, image_ids=["c", "d"])
        writer.append(good[2:], image_ids=["c"])
    ds = open_cube(path, check_values=True)
    assert ds.image.values.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.probs.values, good.astype(np.float16))


def test_writer_closed(tmp_path):
    writer = CubeWriter(tmp_path / "cube.zarr", **SHAPE)
    writer.append(make_probs(1))
    writer.close()
    writer.close()  # idempotent
    assert_raises("closed", writer.append, make_probs(1))
    assert open_cube(tmp_path / "cube.zarr").sizes["image"] == 1


def test_empty_store_is_rejected(tmp_path):
    CubeWriter(tmp_path / "cube.zarr", **SHAPE).close()
    assert_raises("dim `image` of `probs` is empty", open_cube, tmp_path / "cube.zarr")


# --------------------------------------------------------------------------- input images


def test_input_images_round_trip(tmp_path):
    probs, labels = make_probs(5), make_labels(5)
    pixels = np.random.default_rng(3).normal(size=(5, 3, 4, 5))
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, raters=2, channels=3, chunk_images=2) as writer:
        writer.append(probs[0], labels[0], input=pixels[0])  # one image: (channel, y, x)
        writer.append(probs[1:4], labels[1:4], input=pixels[1:4])
        writer.append(probs[4:], labels[4:], input=(pixels[4:] * 100).astype(np.int16))  # integers become floats
    ds = open_cube(path)
    assert ds.input.dims == ("image", "channel", "y", "x")
    assert ds.input.dtype == np.float32
    np.testing.assert_array_equal(ds.input.values[:4], pixels[:4].astype(np.float32))
    np.testing.assert_array_equal(ds.input.values[4], (pixels[4] * 100).astype(np.int16).astype(np.float32))


def test_stores_without_input_have_none(tmp_path):
    path = write_store(tmp_path / "cube.zarr", make_probs(2))
    assert "input" not in open_cube(path)
    assert "input" not in zarr.open_group(path, mode="r")


def test_writer_input_mistakes(tmp_path):
    probs = make_probs(2)
    with CubeWriter(tmp_path / "cube.zarr", **SHAPE, channels=1) as writer:
        assert_raises("the writer has channels=1; pass input", writer.append, probs)
        message = assert_raises(r"`input` has shape \(2, 4, 5\)", writer.append, probs, input=np.zeros((2, 4, 5)))
        assert "expected (image, channel, y, x) = (2, 1, 4, 5)" in message
        assert_raises("`input` has dtype <U1; expected numbers", writer.append, probs, input=np.full((2, 1, 4, 5), "a"))
        assert writer.n_images == 0
        writer.append(probs, input=np.zeros((2, 1, 4, 5)))
    with CubeWriter(tmp_path / "plain.zarr", **SHAPE) as writer:
        assert_raises("input given but the writer was made with channels=0", writer.append, probs, input=np.zeros(1))


def test_resume_refuses_other_input_channels(tmp_path):
    path = tmp_path / "cube.zarr"
    writer = CubeWriter(path, **SHAPE, channels=2, chunk_images=1)
    writer.append(make_probs(1), input=np.zeros((1, 2, 4, 5)))
    del writer
    assert_raises("input channels differ from channels=3", CubeWriter, path, **SHAPE, channels=3, resume=True)
    with CubeWriter(path, **SHAPE, channels=2, resume=True) as writer:
        assert writer.n_images == 1
        writer.append(make_probs(1, seed=4), input=np.ones((1, 2, 4, 5)))
    np.testing.assert_array_equal(open_cube(path).input.values[:, 0, 0, 0], [0.0, 1.0])


def test_open_refuses_variables_of_other_sizes(tmp_path):
    dataset = hand_dataset()
    path = save(dataset, tmp_path / "count.zarr")
    zarr.open_group(path, mode="r+")["labels"].resize((2, 2, 4, 5))
    message = assert_raises("variable `labels` holds 2 image", open_cube, path)
    assert "`probs` holds 3" in message
    path = save(dataset, tmp_path / "height.zarr")
    group = zarr.open_group(path, mode="r+")
    group.create_array("input", shape=(3, 1, 2, 5), dtype="float32", dimension_names=("image", "channel", "y", "x"))
    assert_raises("variable `input` holds 2 pixels along `y` but `probs` holds 4", open_cube, path)


# --------------------------------------------------------------------------- what docs/cube.md promises


def test_float64_probabilities_are_read(tmp_path):
    dataset = hand_dataset()
    dataset["probs"] = dataset.probs.astype(np.float64)
    cube = open_cube(save(dataset, tmp_path / "cube.zarr"), check_values=True)
    assert cube.probs.dtype == np.float64
    message = assert_raises("expected floats", validate_cube, dataset.assign(probs=dataset.probs.astype(np.int8)))
    assert "float16, float32, float64" in message


def test_zarr_v2_store_is_read_and_scored(tmp_path):
    path = tmp_path / "v2.zarr"
    dataset = hand_dataset(8, ids=[f"img-{i}" for i in range(8)])
    dataset = dataset.assign(
        domain=("image", np.array(["id"] * 4 + ["blur"] * 4, dtype=object)),
        role=("image", np.array(["calibration", "test"] * 4, dtype=object)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed-width unicode image ids
        dataset.to_zarr(path, zarr_format=2, consolidated=False)
    assert (path / ".zgroup").exists()
    cube = open_cube(path, check_values=True)
    assert cube.image.values.tolist() == [f"img-{i}" for i in range(8)]
    scores = uqeval.score(path, tasks=["oodd"])
    assert scores.n_images == {"id": 2, "blur": 2}


def test_not_a_store_message_names_both_zarr_formats(tmp_path):
    (tmp_path / "folder.zarr").mkdir()
    message = assert_raises("not a zarr store", open_cube, tmp_path / "folder.zarr")
    assert "zarr.json" in message
    assert ".zgroup" in message


def test_docs_examples_raise_no_warning():
    """docs/cube.md's examples (its to_zarr recipe included) run with every warning an error."""
    import doctest

    docs = Path(__file__).resolve().parents[1] / "docs" / "cube.md"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testfile(str(docs), module_relative=False, verbose=False, report=False)
    assert result.attempted > 10
    assert result.failed == 0


# --------------------------------------------------------------------------- package


def test_import_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, uqeval; assert 'torch' not in sys.modules"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_public_api():
    for name in ("CubeWriter", "UQEvalError", "open_cube", "validate_cube", "check_cube_values", "decompose"):
        assert name in uqeval.__all__
        assert hasattr(uqeval, name)
    assert issubclass(UQEvalError, ValueError)


def test_writer_rejects_logits_that_overflow_float16(tmp_path):
    writer = CubeWriter(tmp_path / "cube.zarr", **SHAPE, variable="logits")
    logits = np.zeros((2, *writer.cube_shape), dtype=np.float32)
    logits[1, 0, 0, 0, 0, 0] = 1e5
    message = assert_raises("overflow float16", writer.append, logits=logits, image_ids=["a", "b"])
    assert "'b'" in message
    assert "float32" in message
    assert writer.n_images == 0
