"""Reading cube stores: chunk files decoded directly must give exactly what zarr gives."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
import zarr.codecs

from uqeval import CubeWriter, UQEvalError, score
from uqeval.scoring.chunk_files import READS, ArrayReads, open_chunk_files
from uqeval.scoring.sources import Loaded
from uqeval.scoring.store_reader import StoreArrays, StoreReader, images_without_chunks, read_store


def write_store(path, *, n_images=11, chunk_images=3, compressor="default", dtype="float16", raters=2, seed=0):
    """A small cube store; returns its probabilities and labels as written."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(n_images, 2, 3, 5, 7)).transpose(0, 1, 2, 5, 3, 4)
    labels = rng.integers(0, 3, (n_images, raters, 5, 7)).astype(np.uint8)
    with CubeWriter(
        path,
        n_classes=3,
        eu=2,
        au=3,
        height=5,
        width=7,
        raters=raters,
        dtype=dtype,
        chunk_images=chunk_images,
        compressor=compressor,
    ) as writer:
        writer.append(probs, labels=labels if raters else None, image_ids=[f"i{k}" for k in range(n_images)])
    return probs.astype(dtype), labels


def zarr_read(path, name, indices):
    return zarr.open_group(path, mode="r")[name].get_orthogonal_selection((np.asarray(indices),))


@pytest.mark.parametrize("compressor", ["default", None])
@pytest.mark.parametrize(
    "indices",
    [
        list(range(11)),  # everything, the last chunk partial
        [3, 4, 5],  # one whole chunk
        [1, 2, 3, 4],  # parts of two chunks
        [0, 5, 6, 10],  # several runs, the last in the partial chunk
        [10],
    ],
)
def test_direct_decoding_equals_zarr(tmp_path, monkeypatch, compressor, indices):
    store = tmp_path / "cube.zarr"
    probs, labels = write_store(store, compressor=compressor)
    files = open_chunk_files(store, "probs")
    assert files is not None and files.compressed == (compressor is not None) and files.chunk == 3
    want = zarr_read(store, "probs", indices)

    def no_zarr(*args, **kwargs):
        raise AssertionError("read through zarr, not from the chunk files")

    monkeypatch.setattr(zarr.Array, "get_basic_selection", no_zarr)
    got_probs, got_labels = read_store(str(store), "probs", True, np.asarray(indices))
    np.testing.assert_array_equal(got_probs, want)
    np.testing.assert_array_equal(got_probs, probs[indices])
    np.testing.assert_array_equal(got_labels, labels[indices])
    assert got_probs.dtype == np.float16


@pytest.mark.parametrize(
    ("compressor", "direct"),
    [("default", True), (None, True), (zarr.codecs.ZstdCodec(), False)],
    ids=["blosc", "raw", "zstd"],
)
def test_the_tally_counts_the_images_read_each_way(tmp_path, compressor, direct):
    store = tmp_path / "cube.zarr"
    write_store(store, raters=0, compressor=compressor)
    READS.reset()
    read_store(str(store), "probs", False, np.asarray([0, 1, 5, 6, 7, 10]))
    assert READS.by_array() == {"probs": ArrayReads(6, 0) if direct else ArrayReads(0, 6)}
    READS.reset()
    assert READS.by_array() == {}


def test_a_missing_chunk_file_is_counted_as_read_through_zarr(tmp_path):
    store = tmp_path / "cube.zarr"
    write_store(store, raters=0)
    open_chunk_files(store, "probs").chunk_path(1).unlink()
    READS.reset()
    read_store(str(store), "probs", False, np.asarray([0, 1, 4, 5]))  # two runs: chunk 0, then chunk 1
    assert READS.by_array() == {"probs": ArrayReads(direct=2, through_zarr=2)}


def test_reader_slots_reuse_their_buffers_and_stay_apart(tmp_path):
    store = tmp_path / "cube.zarr"
    probs, labels = write_store(store)
    reader = StoreReader(str(store), "probs", True)
    first, _ = reader(np.arange(0, 3), 0)
    second, _ = reader(np.arange(3, 6), 1)
    again, again_labels = reader(np.arange(6, 9), 0)
    assert again.base is first.base  # slot 0's buffer, decoded into again
    np.testing.assert_array_equal(second, probs[3:6])  # slot 1 untouched by slot 0
    np.testing.assert_array_equal(again, probs[6:9])
    np.testing.assert_array_equal(again_labels, labels[6:9])


def test_a_missing_chunk_file_is_read_through_zarr_as_its_fill_value(tmp_path):
    store = tmp_path / "cube.zarr"
    probs, _ = write_store(store, raters=0)
    files = open_chunk_files(store, "probs")
    files.chunk_path(1).unlink()
    got, labels = read_store(str(store), "probs", False, np.arange(11))
    assert labels is None
    np.testing.assert_array_equal(got[:3], probs[:3])
    assert np.isnan(got[3:6]).all()  # zarr's fill value for float probabilities
    np.testing.assert_array_equal(got[6:], probs[6:])


def test_layouts_the_direct_path_does_not_know_go_through_zarr(tmp_path):
    store = tmp_path / "cube.zarr"
    write_store(store, raters=0)
    metadata_path = store / "probs" / "zarr.json"
    metadata = json.loads(metadata_path.read_text())

    def with_metadata(**changes):
        changed = {**metadata, **changes}
        metadata_path.write_text(json.dumps(changed))
        return open_chunk_files(store, "probs")

    assert with_metadata() is not None
    zstd = [metadata["codecs"][0], {"name": "zstd", "configuration": {"level": 0, "checksum": False}}]
    assert with_metadata(codecs=zstd) is None
    big_endian = [{"name": "bytes", "configuration": {"endian": "big"}}, metadata["codecs"][1]]
    assert with_metadata(codecs=big_endian) is None
    grid = {"name": "regular", "configuration": {"chunk_shape": [3, 2, 3, 3, 5, 4]}}
    assert with_metadata(chunk_grid=grid) is None  # split along x as well
    assert with_metadata(zarr_format=2) is None
    assert with_metadata(storage_transformers=[{"name": "x"}]) is None
    metadata_path.write_text("{not json")
    assert open_chunk_files(store, "probs") is None
    assert open_chunk_files(tmp_path / "nowhere.zarr", "probs") is None


def test_a_sharded_array_is_read_through_zarr(tmp_path):
    path = tmp_path / "sharded.zarr"
    values = np.random.default_rng(3).random((6, 4, 4)).astype(np.float32)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array("probs", shape=values.shape, dtype="float32", shards=(6, 4, 4), chunks=(2, 4, 4))
    array[:] = values
    assert open_chunk_files(path, "probs") is None
    np.testing.assert_array_equal(StoreArrays(str(path)).read("probs", np.asarray([1, 2, 5])), values[[1, 2, 5]])


def test_dot_separated_chunk_keys(tmp_path):
    path = tmp_path / "dots.zarr"
    values = np.random.default_rng(4).random((5, 3, 2)).astype(np.float16)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array(
        "probs",
        shape=values.shape,
        dtype="float16",
        chunks=(2, 3, 2),
        chunk_key_encoding={"name": "default", "separator": "."},
        compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )
    array[:] = values
    files = open_chunk_files(path, "probs")
    assert files is not None and files.separator == "."
    assert files.chunk_path(2).name == "c.2.0.0"
    np.testing.assert_array_equal(StoreArrays(str(path)).read("probs", np.arange(5)), values)


@pytest.mark.parametrize("compressor", ["default", None])
def test_a_damaged_chunk_file_is_named(tmp_path, compressor):
    store = tmp_path / "cube.zarr"
    write_store(store, raters=0, compressor=compressor)
    chunk = open_chunk_files(store, "probs").chunk_path(2)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    with pytest.raises(UQEvalError, match=r"^probs/c/2/0/0/0/0/0: the chunk"):
        read_store(str(store), "probs", False, np.arange(11))
    np.testing.assert_array_equal(read_store(str(store), "probs", False, np.arange(6))[0].shape, (6, 2, 3, 3, 5, 7))


def test_a_damaged_chunk_read_through_zarr_is_named(tmp_path):
    path = tmp_path / "zstd.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    zstd = zarr.codecs.ZstdCodec()
    array = group.create_array("probs", shape=(4, 8), dtype="float32", chunks=(2, 8), compressors=zstd)
    array[:] = np.arange(32, dtype=np.float32).reshape(4, 8)
    assert open_chunk_files(path, "probs") is None
    (path / "probs" / "c" / "1" / "0").write_bytes(b"not zstd at all")
    with pytest.raises(UQEvalError, match=r"^probs: images 0 to 3 cannot be read \("):
        StoreArrays(str(path)).read("probs", np.arange(4))


# --------------------------------------------------------------------------- absent chunks


def test_the_images_of_absent_chunks_are_found(tmp_path):
    path = tmp_path / "cube.zarr"
    write_store(path, n_images=11, chunk_images=3)  # labels: chunks of 16 images
    assert images_without_chunks(str(path), "labels").tolist() == []
    assert images_without_chunks(str(path), "probs").tolist() == []
    for number in (1, 3):  # images 3-5 and 9-10 (the last chunk is short)
        (path / "probs" / "c" / str(number) / "0" / "0" / "0" / "0" / "0").unlink()
    assert images_without_chunks(str(path), "probs").tolist() == [3, 4, 5, 9, 10]


def test_the_writer_writes_a_labels_chunk_that_is_all_ignored(tmp_path):
    """zarr skips chunks that hold only the fill value; the writer must not, or an
    unlabelled chunk could not be told from a deleted one."""
    path = tmp_path / "cube.zarr"
    probs = np.random.default_rng(0).dirichlet([1.0, 1.0], size=(40, 1, 2, 3, 3)).transpose(0, 1, 2, 5, 3, 4)
    labels = np.full((40, 1, 3, 3), 255, dtype=np.uint8)
    with CubeWriter(path, n_classes=2, eu=1, au=2, height=3, width=3, raters=1, chunk_images=16) as writer:
        writer.append(probs, labels=labels)
    assert sorted(folder.name for folder in (path / "labels" / "c").iterdir()) == ["0", "1", "2"]
    assert images_without_chunks(str(path), "labels").tolist() == []


def test_a_missing_labels_chunk_is_noted_with_the_images_named(tmp_path):
    path = tmp_path / "cube.zarr"
    write_store(path, n_images=40, chunk_images=4)  # labels: chunks of 16 images, ids i0 … i39
    shutil.rmtree(path / "labels" / "c" / "1")  # images 16-31
    notes = [note for note in score(path).notes if note.kind == "labels-absent"]
    assert [str(note) for note in notes] == [
        "16 image(s) have no `labels` chunk in the store, so every label of theirs reads as the fill value 255 "
        "(ignored): 'i16', 'i17', 'i18', 'i19', 'i20' and 11 more. If these images were labelled, chunk files of "
        "`labels` are missing"
    ]
    assert notes[0].count == 16
    write_store(tmp_path / "intact.zarr", n_images=40, chunk_images=4)
    assert not [note for note in score(tmp_path / "intact.zarr").notes if note.kind == "labels-absent"]


@pytest.mark.parametrize("variable", ["probs", "logits"])
def test_slabs_by_chunk_hold_the_planes_of_the_slab(tmp_path, variable):
    store = tmp_path / "volumes.zarr"
    rng = np.random.default_rng(4)
    values = rng.normal(size=(2, 2, 3, 3, 7, 5, 4)).astype(np.float32)  # image, eu, au, class, z, y, x
    if variable == "probs":
        values = np.exp(values) / np.exp(values).sum(axis=3, keepdims=True)
    labels = rng.integers(0, 3, (2, 2, 7, 5, 4)).astype(np.uint8)
    with CubeWriter(
        store, n_classes=3, eu=2, au=3, depth=7, height=5, width=4, raters=2, chunk_depth=2, variable=variable
    ) as writer:
        writer.append(**{variable: values}, labels=labels)
    reader = StoreReader(str(store), variable, True)
    READS.reset()
    for z_start, z_stop, chunked in [(0, 4, True), (2, 6, True), (4, 6, False), (6, 7, False)]:
        plain = Loaded(*reader.slab(1, z_start, z_stop, 0))
        plain = Loaded(plain.cubes.copy(), plain.labels.copy())
        by_chunk = Loaded(*reader.slab(1, z_start, z_stop, 1, by_chunk=True))
        # Whole chunks, more than one: (chunk, eu, au, class, 2, y, x), each decoded in place.
        assert (by_chunk.chunk_planes == 2) == chunked
        if chunked:
            assert by_chunk.cubes.shape == ((z_stop - z_start) // 2, 2, 3, 3, 2, 5, 4)
        np.testing.assert_array_equal(by_chunk.in_planes().cubes, plain.cubes)
        np.testing.assert_array_equal(by_chunk.labels, plain.labels)
        np.testing.assert_array_equal(plain.labels, labels[1:2, :, z_start:z_stop])
        want = values[1:2, ..., z_start:z_stop, :, :].astype(np.float16).astype(np.float32)
        if variable == "logits":
            want = np.exp(want) / np.exp(want).sum(axis=3, keepdims=True)
        np.testing.assert_allclose(plain.cubes, want, rtol=1e-6)
    assert READS.by_array()[variable] == ArrayReads(0, 0, 2 * (4 + 4 + 2 + 1), 0)
