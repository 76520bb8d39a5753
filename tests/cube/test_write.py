"""The writer: :class:`uqeval.CubeWriter` builds stores that read back as written, resumes, refuses bad input."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import scipy.special
import xarray as xr
import zarr
from cube_stores import (
    LABELS_DIMS,
    PROBS_DIMS,
    SHAPE,
    assert_raises,
    assert_same_store,
    hand_dataset,
    make_labels,
    make_probs,
    save,
    write_store,
)

import uqeval
from uqeval import CubeWriter, UQEvalError, open_cube, validate_cube

# Hand-built stores use fixed-width unicode, which zarr flags as having no v3 spec yet.
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


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


@pytest.mark.parametrize(
    "what", ["a user's folder", "a file", "a store with a user's file in it", "zarr of another tool"]
)
def test_overwrite_replaces_only_a_store_it_wrote(tmp_path, what):
    """``overwrite=True`` once emptied any folder (``zarr.open_group(mode="w")``)."""
    path = tmp_path / "target"
    if what == "a user's folder":
        path.mkdir()
        (path / "thesis.tex").write_text("my thesis\n")
        (path / "figures").mkdir()
        (path / "figures" / "plot.pdf").write_bytes(b"%PDF")
    elif what == "a file":
        path.write_text("my thesis\n")
    elif what == "a store with a user's file in it":
        write_store(path, make_probs(2, seed=1))
        (path / "notes.txt").write_text("mine\n")
    else:
        zarr.open_group(path, mode="w", zarr_format=3).attrs["schema"] = 1
    before = sorted((item.relative_to(tmp_path), item.is_file() and item.read_bytes()) for item in tmp_path.rglob("*"))
    with pytest.raises(uqeval.UQEvalError, match=f"^{path}: .*uqeval replaces only a cube store it wrote"):
        CubeWriter(path, **SHAPE, overwrite=True)
    after = sorted((item.relative_to(tmp_path), item.is_file() and item.read_bytes()) for item in tmp_path.rglob("*"))
    assert after == before


def test_overwrite_fills_an_empty_folder(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    with CubeWriter(path, **SHAPE, overwrite=True) as writer:
        writer.append(make_probs(2, seed=1))
    assert open_cube(path).sizes["image"] == 2


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


@pytest.mark.parametrize(
    "domain", ["ID", "Id", "id ", " id", ["blur", "ID"], "i\u200bd", "\uff49\uff44", "\u0456d", ["blur", "\u0456d"]]
)
def test_writer_refuses_id_spelled_otherwise(writer, domain):
    probs, labels = make_probs(2), make_labels(2, 1)
    spelt = domain if isinstance(domain, str) else domain[1]
    message = assert_raises("looks like 'id'", writer.append, probs, labels=labels, domain=domain)
    assert message.startswith(f"CubeWriter.append: domain {spelt!r}")
    assert message.endswith("write 'id'")
    assert writer.n_images == 0
    writer.append(probs, labels=labels, domain="id")  # the same batch, spelled right
    assert writer.n_images == 2


@pytest.mark.parametrize("domain", ["ood", "all", ["blur", "ood"], "OOD", "\u0430ll"])
def test_writer_refuses_the_names_scoring_reserves(writer, domain):
    """``uqeval score`` refuses these, so the writer does, before hours of prediction."""
    probs, labels = make_probs(2), make_labels(2, 1)
    message = assert_raises("the split of ", writer.append, probs, labels=labels, domain=domain)
    assert message.startswith("CubeWriter.append: domain ")
    assert message.endswith("name the OOD shift otherwise")
    assert writer.n_images == 0


def test_domains_declared_up_front_are_checked_by_the_same_rule():
    CubeWriter.check_domains(["id", "blur", "noise"])  # raises nothing
    with pytest.raises(UQEvalError, match=r"^dataset 'x': domain 'ood' of 1 image is a reserved name"):
        CubeWriter.check_domains(["id", "ood"], "dataset 'x'")
    with pytest.raises(UQEvalError, match=r"^CubeWriter: domain '\uff49\uff44' \(U\+FF49 "):
        CubeWriter.check_domains(["\uff49\uff44"])


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


def test_writer_rejects_logits_that_overflow_float16(tmp_path):
    writer = CubeWriter(tmp_path / "cube.zarr", **SHAPE, variable="logits")
    logits = np.zeros((2, *writer.cube_shape), dtype=np.float32)
    logits[1, 0, 0, 0, 0, 0] = 1e5
    message = assert_raises("overflow float16", writer.append, logits=logits, image_ids=["a", "b"])
    assert "'b'" in message
    assert "float32" in message
    assert writer.n_images == 0
