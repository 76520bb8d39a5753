"""The contract: each variable's dims built from the spatial dims, and each rule that the reader
and the writer both apply, stated once."""

from __future__ import annotations

import numpy as np
import pytest
from cube_stores import SHAPE, make_labels, make_probs

from uqeval import CubeWriter, open_cube
from uqeval.cube import contract
from uqeval.names import IGNORE_LABEL


def test_every_array_variable_is_image_first_and_pixels_last():
    for spec in (*contract.VALUES, *contract.EXTRAS):
        assert spec.dims[0] == contract.IMAGE_DIM
        assert spec.dims[-len(contract.SPATIAL_DIMS) :] == contract.SPATIAL_DIMS
    assert contract.PROBS.dims == (contract.IMAGE_DIM, *contract.CUBE_DIMS, *contract.SPATIAL_DIMS)
    assert contract.LOGITS.dims == contract.PROBS.dims and contract.LOGITS.name == "logits"
    assert contract.PROBS.dims[contract.CLASS_AXIS] == "class"
    assert (contract.IMAGE_DIM, *contract.SPATIAL_DIMS) == contract.SHARED_DIMS


def test_image_shape_follows_the_dims():
    sizes = {"eu": 2, "au": 3, "class": 4, "y": 5, "x": 6, "rater": 7, "channel": 1}
    assert contract.PROBS.image_shape(sizes) == (2, 3, 4, 5, 6)
    assert contract.LABELS.image_shape(sizes) == (7, 5, 6)
    assert contract.INPUT.image_shape(sizes) == (1, 5, 6)
    assert contract.LABELS.axis == {"image": 0, "rater": 1, "y": 2, "x": 3}


def test_labels_are_a_class_index_or_ignore():
    labels = np.array([[0, 2, IGNORE_LABEL], [3, -1, 1]], dtype=np.int16)
    np.testing.assert_array_equal(
        contract.invalid_labels(labels, n_classes=3), [[False, False, False], [True, True, False]]
    )
    assert contract.first_invalid_label(labels, n_classes=3) == ((1, 0), 3)
    assert contract.first_invalid_label(labels, n_classes=4) == ((1, 1), -1)
    assert contract.first_invalid_label(np.array([IGNORE_LABEL, 0], dtype=np.uint8), n_classes=2) is None
    assert contract.pixel_text((3, 4)) == "y=3, x=4"


@pytest.mark.parametrize(
    ("value", "valid"),
    [(0, True), (2, True), (np.int64(1), True), (3, False), (-1, False), (True, False), ("0", False), (1.0, False)],
)
def test_background_is_a_class_index(value, valid):
    assert contract.is_class_index(value, n_classes=3) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [(["a", "b"], True), (("a",), True), (np.array(["a", "b"]), True), ([], True), ("ab", False), ([1, "b"], False)],
)
def test_class_names_are_strings(value, valid):
    assert contract.are_class_names(value) is valid


def test_write_progress_is_recorded_and_read_back():
    progress = contract.WriteProgress(n_images=5, complete=False)
    assert contract.WriteProgress.recorded({contract.PROGRESS_ATTR: progress.record()}) == progress
    assert contract.WriteProgress.recorded({}) is None
    assert contract.WriteProgress.recorded({contract.PROGRESS_ATTR: "done"}) is None


def test_the_writer_writes_what_the_reader_reads_as_the_contract_says(tmp_path):
    path = tmp_path / "cube.zarr"
    with CubeWriter(path, **SHAPE, raters=2, channels=1) as writer:
        writer.append(make_probs(3), labels=make_labels(3), input=np.zeros((3, 1, 4, 5)))
    cube = open_cube(path)
    for spec in (contract.PROBS, *contract.EXTRAS):
        assert cube[spec.name].dims == spec.dims
    assert cube[contract.LABELS.name].dtype == np.dtype(contract.LABELS.stored_dtype)
    assert cube[contract.INPUT.name].dtype == np.dtype(contract.INPUT.stored_dtype)
    for spec in contract.STRINGS:
        assert cube[spec.name].dims == spec.dims
    assert set(contract.ATTRIBUTES) | {"schema"} <= set(cube.attrs)
    assert cube.attrs["schema"] == contract.SCHEMA
    assert list(cube.attrs["class_names"]) == contract.default_class_names(3)
    assert cube.attrs["background"] == contract.DEFAULT_BACKGROUND
    assert cube.role.values.tolist() == [contract.ROLE.default] * 3
