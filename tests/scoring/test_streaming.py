"""Volumes larger than a batch are scored in z-slabs: the same scores as the volumes held whole.

The store is written by :class:`uqeval.CubeWriter` slab by slab, with z-chunks that do
not divide the depth, logits and float16 probabilities; the batch is made smaller than a
volume so that the engine reads every volume in slabs.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

import uqeval
from uqeval import UQEvalError
from uqeval.scoring import streaming
from uqeval.scoring.chunk_files import READS, ArrayReads
from uqeval.scoring.sources import cube_source

DEPTH, HEIGHT, WIDTH = 9, 12, 10
EU, AU, CLASSES, RATERS = 3, 2, 3, 3
LAYOUT = [("id", "calibration", 3), ("id", "test", 4), ("shift", "test", 4)]
OPTIONS = {
    "tasks": ("oodd", "amb", "cal", "fd", "pq"),
    "aggregations": ("border", "patch_max", "threshold", "mean", "sum", "area"),
    "segmentation": True,
}


def _write(path, variable: str, seed: int = 0, chunk_depth: int = 4):
    rng = np.random.default_rng(seed)
    with uqeval.CubeWriter(
        path,
        n_classes=CLASSES,
        eu=EU,
        au=AU,
        depth=DEPTH,
        height=HEIGHT,
        width=WIDTH,
        raters=RATERS,
        channels=1,
        chunk_depth=chunk_depth,  # 4: slabs of 4, 4 and 1 planes
        variable=variable,
        spacing=(3.0, 0.7, 0.7),
    ) as writer:
        for domain, role, count in LAYOUT:
            for _ in range(count):
                spread = 2.0 if domain == "shift" else 0.7
                base = rng.normal(size=(1, 1, CLASSES, DEPTH, HEIGHT, WIDTH)) * 3
                logits = base + spread * rng.normal(size=(EU, 1, CLASSES, DEPTH, HEIGHT, WIDTH))
                logits = logits + rng.normal(size=(EU, AU, CLASSES, DEPTH, HEIGHT, WIDTH))
                labels = np.repeat(base[0, 0].argmax(axis=0)[None], RATERS, axis=0).astype(np.uint8)
                labels[rng.random(labels.shape) < 0.1] = 255
                values = logits if variable == "logits" else softmax(logits, axis=2)
                with writer.volume(
                    domain=domain, role=role, labels=labels, input=rng.random((1, DEPTH, HEIGHT, WIDTH))
                ) as volume:
                    for start in range(0, DEPTH, chunk_depth):
                        volume.write_slab(start, values[:, :, :, start : start + chunk_depth])
    return path


@pytest.fixture(scope="module", params=["probs", "logits"])
def volume_store(request, tmp_path_factory):
    return _write(tmp_path_factory.mktemp("streamed") / "volumes.zarr", request.param)


def _rows(scores):
    return {
        (row["task"], row["split"], row["measure"], row["metric"], row.get("aggregation")): row["value"]
        for row in scores.results
    }


def _assert_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            np.testing.assert_allclose(actual[key], value, rtol=1e-9, atol=1e-12, err_msg=str(key))
        else:
            assert actual[key] == value, key


def test_volumes_read_in_slabs_score_as_the_volumes_held_whole(volume_store, monkeypatch):
    source = cube_source(uqeval.open_cube(volume_store), volume_store)
    assert source.chunk_depth == 4
    ranges = []
    slab_ranges = streaming.slab_ranges
    monkeypatch.setattr(streaming, "slab_ranges", lambda *args: ranges.append(slab_ranges(*args)) or ranges[-1])
    READS.reset()
    streamed = uqeval.score(volume_store, batch_bytes=source.bytes_per_image // 2, **OPTIONS)
    assert ranges == [[(0, 4), (4, 8), (8, 9)]]
    # Every slab was decoded straight from its chunk files: the 11 volumes scored, and the
    # 3 calibration volumes read once more for each of the three looks of the fits (`threshold`
    # needs two: its quantile level from the read look, τ from the spilled one; PAvPU's τ
    # takes a second spilled look).
    for name in (source.variable, "labels"):
        assert READS.by_array()[name] == ArrayReads(0, 0, (11 + 3 * 3) * DEPTH, 0)
    whole = uqeval.score(volume_store, **OPTIONS)
    assert {"pavpu", "augrc", "eaugrc"} <= {row["metric"] for row in streamed.results}
    assert {"pairwise_dice", "cov"} <= {row["measure"] for row in streamed.results}  # their counts summed over slabs
    _assert_close(_rows(streamed), _rows(whole))
    assert streamed.fitted.pavpu_thresholds == whole.fitted.pavpu_thresholds
    # pq: its rows above, and T fitted in the spilled look PAvPU and Platt take anyway.
    assert {"brier_ts", "nll_ts", "ece_ts", "temperature"} <= {row["metric"] for row in streamed.results}
    assert streamed.fitted.temperature.temperature == pytest.approx(whole.fitted.temperature.temperature, rel=1e-12)
    for got, want in zip(streamed.image_rows(), whole.image_rows(), strict=True):
        _assert_close(got, want)
    assert streamed.fitted.to_dict().keys() == whole.fitted.to_dict().keys()
    np.testing.assert_allclose(
        [fit["slope"] for fit in streamed.fitted.to_dict()["platt"].values()],
        [fit["slope"] for fit in whole.fitted.to_dict()["platt"].values()],
        rtol=1e-9,
    )
    assert [(example.image_id, example.z) for example in streamed.examples] == [
        (example.image_id, example.z) for example in whole.examples
    ]
    for got, want in zip(streamed.examples, whole.examples, strict=True):
        np.testing.assert_array_equal(got.input, want.input)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.eu, want.eu)


def test_slabs_of_several_chunks_are_decomposed_chunk_by_chunk_as_the_volumes_held_whole(tmp_path, monkeypatch):
    # z-chunks of 2 planes in slabs of 4: each slab's two chunks are decoded in place and
    # decomposed as two images; the last slab (one plane, a part of a chunk) is copied into place.
    store = _write(tmp_path / "pairs.zarr", "probs", seed=3, chunk_depth=2)
    source = cube_source(uqeval.open_cube(store), store)
    chunked = []
    decomposed_chunks = streaming._decomposed_chunks
    monkeypatch.setattr(
        streaming,
        "_decomposed_chunks",
        lambda chunks, image_id: chunked.append(len(chunks)) or decomposed_chunks(chunks, image_id),
    )
    READS.reset()
    streamed = uqeval.score(store, batch_bytes=source.bytes_per_image // 2, **OPTIONS)
    # 11 volumes scored and 3 calibration volumes looked at three times: two slabs of two chunks each.
    assert chunked == [2] * (11 + 3 * 3) * 2
    assert READS.by_array()["probs"] == ArrayReads(0, 0, (11 + 3 * 3) * DEPTH, 0)
    whole = uqeval.score(store, **OPTIONS)
    _assert_close(_rows(streamed), _rows(whole))
    for got, want in zip(streamed.image_rows(), whole.image_rows(), strict=True):
        _assert_close(got, want)  # pairwise_dice and cov too, counted chunk by chunk
    for got, want in zip(streamed.examples, whole.examples, strict=True):
        np.testing.assert_array_equal(got.mean, want.mean)
        np.testing.assert_array_equal(got.tu, want.tu)


def test_slices_of_volumes_read_in_slabs_score_as_before(volume_store):
    """``--unit slice`` reads the planes of each batch; a batch of one z-chunk of slices
    scores as a batch of whole volumes does."""
    source = cube_source(uqeval.open_cube(volume_store), volume_store)
    small = uqeval.score(volume_store, unit="slice", batch_bytes=source.bytes_per_image // DEPTH, **OPTIONS)
    large = uqeval.score(volume_store, unit="slice", **OPTIONS)
    _assert_close(_rows(small), _rows(large))
    assert len(small.image_rows()) == 11 * DEPTH


def test_calibration_volumes_are_read_twice_more_with_cal_only(volume_store):
    """CAL fits Platt scaling and PAvPU's τ in one spilled look, and τ in a second one."""
    source = cube_source(uqeval.open_cube(volume_store), volume_store)
    READS.reset()
    uqeval.score(volume_store, batch_bytes=source.bytes_per_image // 2, tasks=("cal",))
    assert READS.by_array()[source.variable] == ArrayReads(0, 0, (11 + 2 * 3) * DEPTH, 0)


def test_pavpus_second_look_is_taken_only_with_cal(volume_store):
    """Without CAL, the `threshold` aggregation's two looks only."""
    source = cube_source(uqeval.open_cube(volume_store), volume_store)
    READS.reset()
    uqeval.score(volume_store, batch_bytes=source.bytes_per_image // 2, tasks=("oodd",), aggregations=("threshold",))
    assert READS.by_array()[source.variable] == ArrayReads(0, 0, (11 + 2 * 3) * DEPTH, 0)


def test_whole_volumes_of_a_store_chunked_in_z_slabs_are_decoded_from_their_chunk_files(volume_store):
    source = cube_source(uqeval.open_cube(volume_store), volume_store)
    READS.reset()
    uqeval.score(volume_store, tasks=("oodd",))
    assert READS.by_array()[source.variable] == ArrayReads(11, 0)


def test_the_per_image_equal_mass_ace_is_refused_for_volumes_read_in_slabs(volume_store):
    conventions = uqeval.Conventions(ace_scope="per-image")
    with pytest.raises(UQEvalError, match="ace_scope 'per-image' needs every voxel"):
        uqeval.score(volume_store, conventions=conventions, batch_bytes=1)


def test_slab_results_are_handed_on_in_slab_order_and_held_only_until_then():
    slabs = [(0, 0, 4), (0, 4, 8), (2, 0, 4), (2, 4, 8)]
    arrived = [((2, 0, 4), "c"), ((0, 4, 8), "b"), ((0, 0, 4), "a"), ((2, 4, 8), "d")]
    handed = []

    def results():
        for item in arrived:
            yield item
            handed.append(("arrived", item[1]))

    ordered = []
    for slab, value in streaming.in_slab_order(results(), slabs):
        ordered.append((slab, value))
        handed.append(("handed", value))
    assert ordered == [((0, 0, 4), "a"), ((0, 4, 8), "b"), ((2, 0, 4), "c"), ((2, 4, 8), "d")]
    # "a", and "b" and "c" that waited for it, are handed on before the next result is asked for.
    assert handed.index(("handed", "c")) < handed.index(("arrived", "a"))
