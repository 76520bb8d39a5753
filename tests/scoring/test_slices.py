"""Every z-slice of a volume scored as an image (``--unit slice``): the same as a 2D store of the slices."""

from __future__ import annotations

import numpy as np
import pytest

import uqeval
from uqeval.names import SAMPLE_AGGREGATION
from uqeval.scoring.api import _run
from uqeval.scoring.prepare import prepare
from uqeval.scoring.slices import as_slices, slice_source, slices_of, volumes_of
from uqeval.scoring.sources import Loaded, Source


def volumes(seed: int = 0, n: int = 6, depth: int = 5, height: int = 12, width: int = 10):
    """(volume, eu, au, class, z, y, x) probabilities, labels (volume, rater, z, y, x), domains, roles."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3, 2, 2, depth, height, width)).astype(np.float32)
    logits[:, :, :, 1] += np.linspace(-2, 2, width, dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=3, keepdims=True)
    labels = (rng.random((n, 3, depth, height, width)) < probs[:, :1, 0, 1].mean(axis=1, keepdims=True)).astype(
        np.uint8
    )
    labels[0, 0, 0, :2] = 255
    domains = np.array(["id", "id", "id", "id", "blur", "blur"], dtype=object)[:n]
    roles = np.array(["calibration", "test", "test", "test", "test", "test"], dtype=object)[:n]
    return probs.astype(np.float32), labels, domains, roles


def volume_source(probs, labels, domains, roles) -> Source:
    """A source of volumes held in memory, as cube_source gives for a 3D store."""

    def reader():
        def load(indices, slot=0):
            return Loaded(probs[indices], labels[indices])

        return load

    return Source(
        where="volumes",
        ids=np.array([f"case{i}" for i in range(len(probs))], dtype=object),
        domains=domains,
        roles=roles,
        has_labels=True,
        n_classes=probs.shape[3],
        background=0,
        reader=reader,
        chunk_sizes=[2] * (len(probs) // 2),
        bytes_per_image=probs[0].nbytes,
        depth=probs.shape[4],
        read_labels=labels.__getitem__,
    )


def test_volumes_of_maps_slices_to_their_volumes():
    volumes_read, picks = volumes_of(np.array([1, 5, 6, 14]), depth=5)
    np.testing.assert_array_equal(volumes_read, [0, 1, 2])
    np.testing.assert_array_equal(picks, [1, 5, 6, 14])
    volumes_read, picks = volumes_of(np.array([12, 13]), depth=5)
    np.testing.assert_array_equal(volumes_read, [2])
    np.testing.assert_array_equal(picks, [2, 3])


def test_slices_of_a_batch_are_the_volumes_slices():
    probs, labels, _, _ = volumes()
    picked = slices_of(Loaded(probs[[1, 3]], labels[[1, 3]]), np.array([0, 4, 7]))
    np.testing.assert_array_equal(picked.cubes[0], probs[1, :, :, :, 0])
    np.testing.assert_array_equal(picked.cubes[1], probs[1, :, :, :, 4])
    np.testing.assert_array_equal(picked.cubes[2], probs[3, :, :, :, 2])
    np.testing.assert_array_equal(picked.labels[2], labels[3, :, 2])
    assert as_slices(None, 1) is None


@pytest.mark.parametrize("batch_bytes", [1, 2**30])
def test_per_slice_scores_equal_those_of_a_2d_store_of_the_slices(batch_bytes):
    probs, labels, domains, roles = volumes()
    depth = probs.shape[4]
    request = prepare(tasks=("oodd", "amb", "cal", "fd", "pq"), aggregations=["border", "patch_max", "threshold"])
    sliced = _run(slice_source(volume_source(probs, labels, domains, roles)), request, batch_bytes=batch_bytes)

    flat = as_slices(probs, 3)
    plain = uqeval.evaluate(
        uqeval.decompose(flat),
        np.repeat(domains, depth),
        np.repeat(roles, depth),
        as_slices(labels, 1),
        aggregations=["border", "patch_max", "threshold"],
        n_classes=2,
    )
    # The maps alone have no samples: the slices' rows of the sample scores are left out here.
    _assert_same_rows([row for row in sliced.results if row["aggregation"] != SAMPLE_AGGREGATION], plain.results)
    _assert_same_rows(sliced.entanglement, plain.entanglement)
    assert sliced.slice_z is not None and sliced.slice_z.tolist() == list(range(depth)) * len(probs)
    rows = sliced.image_rows()
    assert [row["z"] for row in rows[:depth]] == list(range(depth))
    assert rows[depth]["image"] == "case1" and rows[depth]["z"] == 0
    assert sliced.to_dict()["unit"] == "slice"


def _assert_same_rows(first: list[dict], second: list[dict]) -> None:
    """The same rows, numbers equal to float rounding."""
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == {
            k: v for k, v in b.items() if not isinstance(v, float)
        }
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-12, nan_ok=True), (a, key)


def test_a_2d_source_is_its_own_slices():
    probs, labels, domains, roles = volumes()
    source = volume_source(probs[..., 0, :, :], labels[:, :, 0], domains, roles)
    source = Source(**{**source.__dict__, "depth": None})
    assert slice_source(source) is source


def test_the_example_of_a_volume_is_its_slice_with_the_most_eu():
    from uqeval.scoring.batch import example_maps

    rng = np.random.default_rng(3)
    maps = {name: rng.random((2, 4, 3, 5)).astype(np.float32) for name in ("au", "eu", "tu")}
    maps["mean"] = rng.random((2, 2, 4, 3, 5)).astype(np.float32)
    maps["eu"][1, 2] += 1.0  # volume 1: slice 2 holds the most EU
    example = example_maps(maps, 1, position=7, image_id="case7")
    assert (example.z, example.position, example.image_id) == (2, 7, "case7")
    np.testing.assert_array_equal(example.eu, maps["eu"][1, 2])
    np.testing.assert_array_equal(example.mean, maps["mean"][1, :, 2])
    maps["eu"][:] = 0.0  # no EU: the slice with the most TU
    maps["tu"][0, 3] += 1.0
    assert example_maps(maps, 0, position=0, image_id="case0").z == 3
    flat = {name: array[:, 0] if name != "mean" else array[:, :, 0] for name, array in maps.items()}
    assert example_maps(flat, 0, position=0, image_id="case0").z is None
