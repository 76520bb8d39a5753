"""Stores of volumes: every variable ends in (z, y, x), chunks run along image and z, a volume can be
written member by member or slab by slab, and a store mixing ranks is refused naming the variable."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from cube_stores import assert_raises, save

from uqeval import CubeWriter, UQEvalError, open_cube
from uqeval.cube import CHUNK_BYTES, VOLUME_DIMS, contract, store_spatial_dims

# Spelled out, not taken from the contract: the tests pin it.
PROBS_DIMS_3D = ("image", "eu", "au", "class", "z", "y", "x")
LABELS_DIMS_3D = ("image", "rater", "z", "y", "x")
INPUT_DIMS_3D = ("image", "channel", "z", "y", "x")
SIZES = {"n_classes": 3, "eu": 2, "au": 3, "depth": 6, "height": 4, "width": 5}


def make_volumes(n: int, seed: int = 0, n_classes: int = 3, eu: int = 2, au: int = 3, depth=6, height=4, width=5):
    """Softmax-like float32 probabilities (image, eu, au, class, z, y, x)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=(n, eu, au, depth, height, width))
    return np.moveaxis(probs, -1, 3).astype(np.float32)


def make_volume_labels(n: int, raters: int = 2, seed: int = 1, n_classes: int = 3, depth=6, height=4, width=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=(n, raters, depth, height, width)).astype(np.uint8)
    labels[:, 0, 0, 0, 0] = 255
    return labels


def hand_volumes(n: int = 3, *, labels: bool = True, input: bool = False) -> xr.Dataset:
    """A valid in-memory store of volumes, built without uqeval."""
    probs = make_volumes(n)
    data_vars = {
        "probs": (PROBS_DIMS_3D, probs),
        "domain": (("image",), np.array(["id", "blur", "id"][:n])),
        "role": (("image",), np.array(["test"] * n)),
    }
    if labels:
        data_vars["labels"] = (LABELS_DIMS_3D, make_volume_labels(n))
    if input:
        data_vars["input"] = (INPUT_DIMS_3D, np.zeros((n, 1, 6, 4, 5), dtype=np.float32))
    return xr.Dataset(data_vars, coords={"image": np.array(["a", "b", "c"][:n])}, attrs={"schema": 1})


# -- contract -----------------------------------------------------------------------------


def test_every_variable_has_a_volume_form():
    assert VOLUME_DIMS == ("z", "y", "x")
    assert contract.PROBS.with_spatial(VOLUME_DIMS).dims == PROBS_DIMS_3D
    assert contract.LABELS.with_spatial(VOLUME_DIMS).dims == LABELS_DIMS_3D
    assert contract.INPUT.with_spatial(VOLUME_DIMS).dims == INPUT_DIMS_3D
    assert contract.PROBS.with_spatial(VOLUME_DIMS).counted == ("image", "eu", "au", "class", "z", "y", "x")
    assert contract.LABELS.with_spatial(VOLUME_DIMS).counted == ("rater",)
    # And back: the 2D declarations are what they were.
    assert contract.PROBS.with_spatial(VOLUME_DIMS).with_spatial(("y", "x")) == contract.PROBS
    assert contract.PROBS.with_spatial(VOLUME_DIMS).axis["class"] == contract.CLASS_AXIS
    assert contract.spatial_dims_for(7) == VOLUME_DIMS
    assert contract.spatial_dims_for(6) == ("y", "x")
    assert contract.pixel_text((1, 2, 3)) == "z=1, y=2, x=3"
    assert contract.pixel_text((2, 3)) == "y=2, x=3"


@pytest.mark.parametrize(
    ("value", "dims", "expected"),
    [([2.5, 0.8, 0.8], VOLUME_DIMS, [2.5, 0.8, 0.8]), ((1, 2), ("y", "x"), [1.0, 2.0])],
)
def test_spacing_is_read_as_floats(value, dims, expected):
    assert contract.check_spacing(value, dims, "here") == expected


@pytest.mark.parametrize(
    "value", [[1.0, 1.0], [1.0, 0.0, 1.0], [1.0, float("nan"), 1.0], [1, -2, 1], "1,1,1", [True, 1, 1], 3.0]
)
def test_spacing_must_be_three_positive_finite_numbers_for_volumes(value):
    message = assert_raises(r"here: attribute `spacing` is", contract.check_spacing, value, VOLUME_DIMS, "here")
    assert "3 positive finite numbers" in message and "(z, y, x)" in message


# -- reading ------------------------------------------------------------------------------


def test_hand_made_store_of_volumes_opens(tmp_path):
    path = save(hand_volumes(input=True).assign_attrs(spacing=[3.0, 0.5, 0.5]), tmp_path / "v.zarr")
    cube = open_cube(path, check_values=True)
    assert cube.probs.dims == PROBS_DIMS_3D
    assert cube.labels.dims == LABELS_DIMS_3D and cube.input.dims == INPUT_DIMS_3D
    assert store_spatial_dims(cube) == VOLUME_DIMS and store_spatial_dims(cube.probs) == VOLUME_DIMS
    assert cube.attrs["spacing"] == [3.0, 0.5, 0.5]
    np.testing.assert_array_equal(cube.probs.values, make_volumes(3))


def test_logits_of_volumes_get_a_softmax_over_class(tmp_path):
    logits = np.random.default_rng(4).normal(size=(2, 2, 3, 3, 6, 4, 5)).astype(np.float32)
    dataset = hand_volumes(2, labels=False).drop_vars("probs").assign(logits=(PROBS_DIMS_3D, logits))
    cube = open_cube(save(dataset, tmp_path / "l.zarr"), check_values=True)
    probs = cube.probs.values
    np.testing.assert_allclose(probs.sum(axis=3), 1, rtol=1e-6)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(axis=3, keepdims=True), rtol=1e-5)


MIXED = {
    "labels of images in a store of volumes": (
        lambda ds: ds.assign(labels=(("image", "rater", "y", "x"), ds.labels.values[:, :, 0])),
        [
            r"variable `labels` has dims \('image', 'rater', 'y', 'x'\)",
            r"expected \('image', 'rater', 'z', 'y', 'x'\)",
            r"missing \['z'\]",
            "images or volumes, not both",
        ],
    ),
    "input of volumes in a store of images": (
        lambda ds: ds.isel(z=0).drop_vars("labels").assign(input=(INPUT_DIMS_3D, np.zeros((3, 1, 6, 4, 5)))),
        [
            r"variable `input` has dims",
            r"expected \('image', 'channel', 'y', 'x'\)",
            r"unexpected \['z'\]",
            "images or volumes, not both",
        ],
    ),
    "misnamed spatial dim": (
        lambda ds: ds.rename(z="slice"),
        [
            r"variable `probs` has dims",
            r"expected \('image', 'eu', 'au', 'class', 'z', 'y', 'x'\)",
            r"missing \['z'\]",
            r"unexpected \['slice'\]",
        ],
    ),
    "spatial dims out of order": (
        lambda ds: ds.assign(probs=ds.probs.transpose("image", "eu", "au", "class", "y", "z", "x")),
        [r"variable `probs` has dims", "wrong order"],
    ),
    "labels with spatial dims out of order": (
        lambda ds: ds.assign(labels=ds.labels.transpose("image", "rater", "y", "z", "x")),
        [r"variable `labels` has dims", r"expected \('image', 'rater', 'z', 'y', 'x'\)", "wrong order"],
    ),
    "bad spacing": (
        lambda ds: ds.assign_attrs(spacing=[1.0, 1.0]),
        [r"attribute `spacing` is \[1.0, 1.0\]", r"3 positive finite numbers.*\(z, y, x\)"],
    ),
}


@pytest.mark.parametrize("case", MIXED)
def test_a_store_mixing_ranks_is_refused_naming_the_variable(tmp_path, case):
    mutate, patterns = MIXED[case]
    path = save(mutate(hand_volumes()), tmp_path / "bad.zarr")
    message = assert_raises(patterns[0], open_cube, path)
    for pattern in patterns[1:]:
        assert __import__("re").search(pattern, message), (pattern, message)


def test_labels_of_another_depth_are_refused(tmp_path):
    dataset = hand_volumes()
    path = save(dataset.drop_vars("labels"), tmp_path / "v.zarr")
    group = zarr.open_group(path, mode="a")
    group.create_array("labels", shape=(3, 2, 5, 4, 5), dtype="uint8", dimension_names=LABELS_DIMS_3D)
    group["labels"][:] = 0
    assert_raises("variable `labels` holds 5 pixels along `z` but `probs` holds 6", open_cube, path)


@pytest.mark.cli
def test_the_cli_refuses_a_mixed_store_with_exit_2(tmp_path):
    from helpers import run_cli

    mutate, _ = MIXED["labels of images in a store of volumes"]
    path = save(mutate(hand_volumes()), tmp_path / "bad.zarr")
    result = run_cli("inspect", str(path))
    assert result.returncode == 2
    assert "variable `labels` has dims" in result.stderr and "Traceback" not in result.stderr


def test_value_checks_read_volumes_slab_by_slab_and_name_the_voxel(tmp_path):
    path = tmp_path / "v.zarr"
    probs, labels = make_volumes(2), make_volume_labels(2)
    with CubeWriter(path, **SIZES, raters=2, chunk_depth=2) as writer:
        writer.append(probs, labels, image_ids=["a", "b"])
    group = zarr.open_group(path, mode="a")
    group["labels"][1, 1, 4, 2, 3] = 7  # in the third slab of the second volume
    message = assert_raises(
        r"`labels` of image 'b' \(rater 1, pixel z=4, y=2, x=3\) is 7", open_cube, path, check_values=True
    )
    assert "classes are 0..2" in message
    group["labels"][1, 1, 4, 2, 3] = 1
    group["probs"][0, 1, 2, 0, 5, 1, 1] = np.nan  # last slab of the first volume
    assert_raises(r"probs: image 'a' has NaN or inf values at 1 pixel", open_cube, path, check_values=True)


def test_the_reader_keeps_z_slabs_and_is_whole_in_every_other_dim(tmp_path):
    path = tmp_path / "v.zarr"
    with CubeWriter(path, **SIZES, chunk_depth=4) as writer:
        writer.append(make_volumes(3))
    probs = open_cube(path).probs
    assert probs.chunks == ((1, 1, 1), (2,), (3,), (3,), (4, 2), (4,), (5,))


# -- writing ------------------------------------------------------------------------------


def test_appended_volumes_round_trip_with_labels_input_and_spacing(tmp_path):
    path = tmp_path / "v.zarr"
    probs, labels = make_volumes(3), make_volume_labels(3)
    pixels = np.random.default_rng(2).normal(size=(3, 2, 6, 4, 5))
    with CubeWriter(path, **SIZES, raters=2, channels=2, spacing=(2.0, 0.7, 0.7)) as writer:
        writer.append(probs[:2], labels[:2], domain=["id", "blur"], input=pixels[:2], image_ids=["a", "b"])
        writer.append(probs[2], labels[2], domain="noise", input=pixels[2], image_ids="c")
    cube = open_cube(path, check_values=True)
    np.testing.assert_array_equal(cube.probs.values, probs.astype(np.float16))
    np.testing.assert_array_equal(cube.labels.values, labels)
    np.testing.assert_array_equal(cube.input.values, pixels.astype(np.float32))
    assert cube.domain.values.tolist() == ["id", "blur", "noise"]
    assert cube.attrs["spacing"] == [2.0, 0.7, 0.7]


def test_default_chunks_are_whole_small_volumes_and_z_slabs_of_large_ones(tmp_path):
    small = CubeWriter(tmp_path / "s.zarr", **SIZES)
    assert small.chunk_depth == 6 and small.chunk_images > 1
    # eu 4 × au 2 × class 2 × 64 × 256 × 256 float16 = 128 MiB a volume, 2 MiB a slice.
    large = CubeWriter(tmp_path / "l.zarr", n_classes=2, eu=4, au=2, depth=64, height=256, width=256)
    assert large.chunk_images == 1 and large.chunk_depth == CHUNK_BYTES // 2**21
    chunks = zarr.open_group(tmp_path / "l.zarr")["probs"].chunks
    assert chunks == (1, 4, 2, 2, CHUNK_BYTES // 2**21, 256, 256)
    assert chunks[4] * 4 * 2 * 2 * 256 * 256 * 2 == CHUNK_BYTES
    for writer in (small, large):
        writer.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, r"`depth` must be a positive integer, got 0"),
        ({"depth": 6, "chunk_depth": 0}, r"`chunk_depth` must be a positive integer"),
        ({"chunk_depth": 2}, r"`chunk_depth` given for a store of images"),
        ({"depth": 6, "chunk_depth": 2, "chunk_images": 2}, r"a chunk in slabs holds one volume"),
        ({"depth": 6, "spacing": [1.0, 1.0]}, r"attribute `spacing` is \[1.0, 1.0\]"),
        ({"spacing": [1.0, 1.0, 1.0]}, r"2 positive finite numbers.*\(y, x\)"),
        ({"depth": 6, "attrs": {"spacing": [1, 0, 1]}}, r"attribute `spacing`"),
    ],
)
def test_writer_arguments_for_volumes_are_checked(tmp_path, kwargs, match):
    sizes = {key: value for key, value in SIZES.items() if key != "depth"}
    assert_raises(match, CubeWriter, tmp_path / "v.zarr", **sizes, **kwargs)


def test_append_checks_volumes_as_images(tmp_path):
    probs = make_volumes(2)
    probs[1, 0, 0, :, 3] *= 2
    writer = CubeWriter(tmp_path / "v.zarr", **SIZES)
    assert_raises(r"CubeWriter.append: probs: image 1 does not sum to 1", writer.append, probs)
    with CubeWriter(tmp_path / "w.zarr", **SIZES) as writer:
        message = assert_raises(r"`probs` has shape \(3, 3, 6, 4, 5\)", writer.append, probs[0, 0])
        assert "expected (image, eu, au, class, z, y, x) = (n, 2, 3, 3, 6, 4, 5)" in message
        writer.append(make_volumes(1))


@pytest.mark.parametrize("order", ["members", "slabs", "mixed"])
def test_a_volume_written_in_pieces_equals_one_appended(tmp_path, order):
    probs, labels = make_volumes(3), make_volume_labels(3)
    pixels = np.ones((3, 1, 6, 4, 5))
    whole = tmp_path / "whole.zarr"
    with CubeWriter(whole, **SIZES, raters=2, channels=1, chunk_depth=2) as writer:
        writer.append(probs, labels, domain=["id", "blur", "id"], input=pixels, image_ids=["a", "b", "c"])
    pieces = tmp_path / "pieces.zarr"
    with CubeWriter(pieces, **SIZES, raters=2, channels=1, chunk_depth=2) as writer:
        writer.append(probs[0], labels[0], input=pixels[0], image_ids="a")
        for index, (image_id, domain) in enumerate([("b", "blur"), ("c", "id")], start=1):
            with writer.volume(image_id, domain=domain, labels=labels[index], input=pixels[index]) as volume:
                if order in ("members", "mixed"):
                    for member in range(2 if order == "members" else 1):
                        volume.write_member(member, probs[index, member])
                if order in ("slabs", "mixed"):
                    for z in (0, 2, 4):
                        volume.write_slab(z, probs[index, :, :, :, z : z + 2])
                assert volume.complete
            assert writer.n_images == index + 1
    a, b = open_cube(whole, check_values=True), open_cube(pieces, check_values=True)
    for name in ("probs", "labels", "input", "domain", "role", "image"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.probs.chunks == b.probs.chunks


def test_a_volume_with_a_piece_missing_is_dropped(tmp_path):
    probs = make_volumes(2)
    path = tmp_path / "v.zarr"
    with CubeWriter(path, **SIZES) as writer:
        writer.append(probs[0], image_ids="a")
        volume = writer.volume("b")
        volume.write_member(0, probs[1, 0])
        volume.write_slab(0, probs[1, :, :, :, :2])
        message = assert_raises(
            r"volume 'b' was left with member\(s\) 1 at slice\(s\) z=2, 3, 4, 5 not written", volume.finish
        )
        assert "dropped" in message
        assert writer.n_images == 1
        # The id is free again and the writer goes on.
        with writer.volume("b") as volume:
            for member in range(2):
                volume.write_member(member, probs[1, member])
    cube = open_cube(path)
    assert cube.image.values.tolist() == ["a", "b"]
    np.testing.assert_array_equal(cube.probs.values, probs.astype(np.float16))


def test_pieces_are_checked_as_append_checks_volumes(tmp_path):
    probs = make_volumes(1)[0]
    with CubeWriter(tmp_path / "v.zarr", **SIZES, raters=2) as writer:
        assert_raises(r"the writer has raters=2; pass labels", writer.volume, "a")
        assert_raises(r"`labels` has shape \(2, 4, 5\)", writer.volume, "a", labels=np.zeros((2, 4, 5), "uint8"))
        labels = make_volume_labels(1)[0]
        bad = probs[0].copy()
        bad[0, 0, 0, 0, 0] = np.nan
        with pytest.raises(UQEvalError, match=r"write_member\(0\): probs: image 'a' has NaN"):  # noqa: SIM117
            with writer.volume("a", labels=labels) as volume:
                volume.write_member(0, bad)
        assert writer.n_images == 0
        with writer.volume("a", labels=labels) as volume:
            assert_raises(r"`member` must be an integer in \[0, 2\), got 2", volume.write_member, 2, probs[0])
            assert_raises(
                r"`probs` has shape \(3, 3, 5, 4, 5\); expected \(au, class, z, y, x\) = \(3, 3, 6, 4, 5\)",
                volume.write_member,
                0,
                probs[0, :, :, :5],
            )
            assert_raises(
                r"a slab of 3 slice\(s\) from z=4 does not fit in a volume of depth 6",
                volume.write_slab,
                4,
                probs[:, :, :, :3],
            )
            assert_raises(r"`z_start` must be an integer in \[0, 6\)", volume.write_slab, 6, probs[:, :, :, :1])
            assert_raises(r"volume 'a' is still being written", writer.append, probs, labels)
            assert_raises(r"volume 'a' is still being written", writer.close)
            volume.write_slab(0, probs)
        assert_raises(r"image id 'a' is already in the store", writer.volume, "a", labels=labels)


def test_volume_needs_a_writer_of_volumes(tmp_path):
    sizes = {key: value for key, value in SIZES.items() if key != "depth"}
    with CubeWriter(tmp_path / "i.zarr", **sizes) as writer:
        assert_raises(r"this writer writes 2D images; make it with depth=", writer.volume, "a")


def test_logits_volume_pieces_refuse_overflow(tmp_path):
    with CubeWriter(tmp_path / "v.zarr", **SIZES, variable="logits") as writer, writer.volume("a") as volume:
        logits = np.zeros((3, 3, 6, 4, 5), dtype=np.float32)
        logits[0, 0, 0, 0, 0] = 1e6
        assert_raises(r"logits of image 'a' overflow float16", volume.write_member, 0, logits)
        volume.write_slab(0, np.zeros((2, 3, 3, 6, 4, 5), dtype=np.float32))
    cube = open_cube(tmp_path / "v.zarr")
    np.testing.assert_allclose(cube.probs.values, 1 / 3, rtol=1e-6)


def test_an_interrupted_volume_is_truncated_on_resume(tmp_path):
    probs, path = make_volumes(3), tmp_path / "v.zarr"
    writer = CubeWriter(path, **SIZES, chunk_depth=2)
    writer.append(probs[0], image_ids="a")
    volume = writer.volume("b")
    volume.write_member(0, probs[1, 0])  # … and the process dies here.
    assert CubeWriter.progress(path).n_images == 1
    assert_raises("the store is incomplete: writing stopped after 1 complete image", open_cube, path)
    with CubeWriter(path, **SIZES, resume=True) as resumed:
        assert resumed.n_images == 1 and resumed.chunk_depth == 2
        with resumed.volume("b") as volume:
            volume.write_slab(0, probs[1])
        resumed.append(probs[2], image_ids="c")
    cube = open_cube(path, check_values=True)
    assert cube.image.values.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(cube.probs.values, probs.astype(np.float16))


def test_resume_refuses_a_store_of_another_rank(tmp_path):
    path = tmp_path / "v.zarr"
    writer = CubeWriter(path, **SIZES)
    writer.append(make_volumes(1))
    sizes = {key: value for key, value in SIZES.items() if key != "depth"}
    assert_raises(
        r"cannot resume: `probs` holds cubes of shape \(2, 3, 3, 6, 4, 5\), not \(2, 3, 3, 4, 5\)",
        CubeWriter,
        path,
        **sizes,
        resume=True,
    )


def test_spacing_reaches_the_provenance_of_scores(tmp_path):
    """The scorer copies every store attribute into ``scores.json``; ``spacing`` arrives as
    the reader normalised it (2D here: the scorer of volumes is not this module's)."""
    import json

    import uqeval

    path = tmp_path / "c.zarr"
    probs = np.moveaxis(np.random.default_rng(0).dirichlet(np.ones(2), size=(8, 2, 2, 6, 6)), -1, 3)
    with CubeWriter(path, n_classes=2, eu=2, au=2, height=6, width=6, spacing=(0.5, 0.25)) as writer:
        writer.append(probs.astype(np.float32), domain=["id", "blur"] * 4)
    scores = uqeval.score(path, tasks=["oodd"])
    provenance = json.loads(json.dumps(scores.to_dict(), allow_nan=False))["provenance"]
    assert provenance["store_attributes"]["spacing"] == [0.5, 0.25]
