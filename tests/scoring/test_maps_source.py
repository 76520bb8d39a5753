"""Scoring a maps store: the maps as given, no decomposition; the same scores as the cube the
maps came from, whether the store was written by CubeWriter or by xarray, images or volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli, write_synthetic_store

import uqeval
from uqeval import CubeWriter, UQEvalError, open_cube


def maps_store_of(cube_path, path, *, chunk_images=4):
    """The maps uqeval computes from the cube at ``cube_path``, written as a maps store."""
    cube = open_cube(cube_path)
    maps = uqeval.decompose(cube["probs"].values)
    spatial = {dim: cube.sizes[dim] for dim in ("z", "y", "x") if dim in cube.sizes}
    with CubeWriter(
        path,
        n_classes=cube.sizes["class"],
        depth=spatial.get("z"),
        height=spatial["y"],
        width=spatial["x"],
        raters=cube.sizes["rater"],
        variable="maps",
        chunk_images=chunk_images,
    ) as writer:
        writer.append(
            maps={name: np.asarray(maps[name]) for name in ("mean", "au", "eu", "tu")},
            labels=cube["labels"].values,
            domain=list(cube["domain"].values),
            role=list(cube["role"].values),
            image_ids=list(cube["image"].values),
        )
    return maps, cube


def comparable(scores) -> str:
    """Everything a run reports but its provenance, store path and notes."""
    record = scores.to_dict()
    for name in ("provenance", "store", "notes", "model"):
        record.pop(name)
    return json.dumps(record, sort_keys=True)


@pytest.mark.parametrize("shape", [None, (4, 8, 10)])
def test_scores_equal_those_of_the_cube_the_maps_came_from(tmp_path, shape):
    cube_path = tmp_path / "cube.zarr"
    if shape is None:
        write_synthetic_store(cube_path, n_images=24, size=12)
    else:
        uqeval.make_synthetic_cube(cube_path, "disentangled", n_images=24, shape=shape, eu=3, au=2, raters=2)
    maps_store_of(cube_path, tmp_path / "maps.zarr")
    from_cube = uqeval.score(cube_path, aggregations=["border", "mean", "threshold"])
    from_maps = uqeval.score(tmp_path / "maps.zarr", aggregations=["border", "mean", "threshold"])
    assert comparable(from_maps) == comparable(from_cube)
    assert from_maps.value("oodd", "ood", "eu", "auroc", "border") == from_cube.value("oodd", "ood", "eu", "auroc")
    assert [note for note in from_maps.notes if note.kind != "maps-given"] == from_cube.notes
    [given] = [note for note in from_maps.notes if note.kind == "maps-given"]
    assert "taken as given" in given.text and "no EU floor" in given.text
    assert from_maps.eu_convention == "maps-as-given"


def test_a_maps_store_written_with_xarray_scores_as_the_cube(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    cube = open_cube(cube_path)
    maps = uqeval.decompose(cube["probs"].values)
    dataset = xr.Dataset(
        {
            "mean": (("image", "class", "y", "x"), np.asarray(maps["mean"])),
            **{name: (("image", "y", "x"), np.asarray(maps[name])) for name in ("au", "eu", "tu")},
            "labels": (("image", "rater", "y", "x"), cube["labels"].values),
            "domain": ("image", np.asarray(cube["domain"].values, dtype=object)),
            "role": ("image", np.asarray(cube["role"].values, dtype=object)),
        },
        coords={"image": np.asarray(cube["image"].values, dtype=object)},
        attrs={"schema": 1},
    )
    dataset.to_zarr(tmp_path / "x.zarr", zarr_format=3, consolidated=False)
    expected = comparable(uqeval.score(cube_path))
    assert comparable(uqeval.score(tmp_path / "x.zarr")) == expected
    assert comparable(uqeval.score(dataset)) == expected  # in memory


def test_a_maps_store_without_every_measure_is_refused_by_the_scorer(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=8, size=8)
    maps = uqeval.decompose(open_cube(cube_path)["probs"].values)
    with CubeWriter(tmp_path / "m.zarr", n_classes=2, height=8, width=8, variable="maps", measures=["eu"]) as writer:
        writer.append(maps={"mean": np.asarray(maps["mean"]), "eu": np.asarray(maps["eu"])})
    with pytest.raises(UQEvalError, match="the maps store lacks `au`, `tu`; scoring needs all of au, eu and tu"):
        uqeval.score(tmp_path / "m.zarr")


@pytest.mark.cli
def test_uqeval_score_says_the_maps_were_taken_as_given(tmp_path):
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "maps.zarr")
    result = run_cli("score", str(tmp_path / "maps.zarr"), "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "taken as given" in result.stdout


def test_a_maps_store_scored_on_a_cluster_gives_the_local_numbers(tmp_path):
    distributed = pytest.importorskip("distributed")  # the cluster extra, which `make` installs
    cube_path = write_synthetic_store(tmp_path / "cube.zarr", n_images=16, size=12)
    maps_store_of(cube_path, tmp_path / "maps.zarr", chunk_images=2)
    local = uqeval.score(tmp_path / "maps.zarr", batch_bytes=4096)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = uqeval.score(
            tmp_path / "maps.zarr", batch_bytes=4096, scheduler=cluster.scheduler_address, scratch=tmp_path
        )
    assert {"pavpu", "augrc", "eaugrc"} <= {row["metric"] for row in local.results}
    assert comparable(remote) == comparable(local)


def test_volumes_of_a_maps_store_larger_than_a_batch_are_read_in_slabs(tmp_path):
    """A maps store's volumes stream in z-slabs like a cube's: the same scores, to float rounding."""
    cube_path = tmp_path / "cube.zarr"
    uqeval.make_synthetic_cube(cube_path, "disentangled", n_images=16, shape=(6, 8, 10), eu=3, au=2, raters=2)
    maps_store_of(cube_path, tmp_path / "maps.zarr", chunk_images=1)
    options = {"aggregations": ["border", "patch_max"], "tasks": ["oodd", "amb", "cal", "fd"]}
    whole = uqeval.score(tmp_path / "maps.zarr", **options)
    streamed = uqeval.score(tmp_path / "maps.zarr", batch_bytes=64, **options)

    def key(row):
        return row["task"], row["split"], row["measure"], row["metric"], row.get("aggregation")

    expected = {key(row): row["value"] for row in whole.results}
    assert len(expected) == len(streamed.results)
    for row in streamed.results:
        value = expected[key(row)]
        assert value == pytest.approx(row["value"], rel=1e-9, abs=1e-12, nan_ok=True), row
