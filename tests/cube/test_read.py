"""The reader: :func:`uqeval.open_cube` and :func:`uqeval.validate_cube` read every valid store,
and name what is wrong with a bad one."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import zarr
from cube_stores import (
    LABELS_DIMS,
    PROBS_DIMS,
    SHAPE,
    assert_raises,
    hand_dataset,
    make_labels,
    make_probs,
    save,
    write_store,
)

import uqeval
from uqeval import CubeWriter, open_cube, validate_cube

# Hand-built stores use fixed-width unicode, which zarr flags as having no v3 spec yet.
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


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


@pytest.mark.parametrize(("name", "dtype"), [("labels", "<q9"), ("probs", "bogus"), ("domain", "|Z7")])
def test_zarr_v2_dtype_zarr_cannot_parse_is_named(tmp_path, name, dtype):
    path = tmp_path / "v2.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed-width unicode image ids
        hand_dataset().to_zarr(path, zarr_format=2, consolidated=False)
    metadata = json.loads((path / name / ".zarray").read_text())
    (path / name / ".zarray").write_text(json.dumps({**metadata, "dtype": dtype}))
    message = assert_raises(f"variable `{name}` cannot be opened", open_cube, path)
    assert message.startswith(f"{path}: variable `{name}` cannot be opened: its metadata is damaged")
    assert repr(dtype) in message


def test_not_a_store_message_names_both_zarr_formats(tmp_path):
    (tmp_path / "folder.zarr").mkdir()
    message = assert_raises("not a zarr store", open_cube, tmp_path / "folder.zarr")
    assert "zarr.json" in message
    assert ".zgroup" in message


def test_docs_examples_raise_no_warning():
    """docs/cube.md's examples (its to_zarr recipe included) run with every warning an error."""
    import doctest

    docs = Path(__file__).resolve().parents[2] / "docs" / "cube.md"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testfile(str(docs), module_relative=False, verbose=False, report=False)
    assert result.attempted > 10
    assert result.failed == 0
