"""The maps store: `mean` with any of `au`, `eu`, `tu` instead of probabilities, written by
CubeWriter or by xarray, validated as a cube is, shown by uqeval inspect."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cube_stores import make_labels, make_probs, save
from helpers import run_cli

import uqeval
from uqeval import CubeWriter, UQEvalError, open_cube


def given_maps(n_images: int = 4, **sizes) -> dict[str, np.ndarray]:
    maps = uqeval.decompose(make_probs(n_images, **sizes))
    return {name: np.asarray(maps[name]) for name in ("mean", "au", "eu", "tu")}


def test_the_writer_writes_a_maps_store_that_reads_back(tmp_path):
    maps, labels = given_maps(), make_labels(4)
    with CubeWriter(tmp_path / "m.zarr", n_classes=3, height=4, width=5, raters=2, variable="maps") as writer:
        writer.append(maps={name: values[:3] for name, values in maps.items()}, labels=labels[:3], domain="id")
        writer.append(maps={name: values[3] for name, values in maps.items()}, labels=labels[3], domain="blur")
    store = open_cube(tmp_path / "m.zarr", check_values=True)
    assert store.attrs["source_variable"] == "maps"
    assert "probs" not in store
    assert store["mean"].dims == ("image", "class", "y", "x") and store["au"].dims == ("image", "y", "x")
    for name, values in maps.items():
        np.testing.assert_array_equal(store[name].values, values)
        assert store[name].dtype == np.float32
    np.testing.assert_array_equal(store["labels"].values, labels)
    assert list(store["domain"].values) == ["id"] * 3 + ["blur"]


def test_a_maps_store_may_hold_some_of_the_maps_and_volumes(tmp_path):
    probs = make_probs(2)[:, :, :, :, None].repeat(3, axis=4)  # volumes of 3 slices
    maps = uqeval.decompose(probs)
    with CubeWriter(
        tmp_path / "m.zarr", n_classes=3, depth=3, height=4, width=5, variable="maps", measures=["eu"]
    ) as w:
        w.append(maps={"mean": np.asarray(maps["mean"]), "eu": np.asarray(maps["eu"])})
    store = open_cube(tmp_path / "m.zarr")
    assert store["eu"].dims == ("image", "z", "y", "x") and "au" not in store and "tu" not in store
    assert uqeval.cube.store_spatial_dims(store) == ("z", "y", "x")


def test_a_maps_store_written_with_xarray_reads(tmp_path):
    maps = given_maps()
    dataset = xr.Dataset(
        {
            "mean": (("image", "class", "y", "x"), maps["mean"]),
            **{name: (("image", "y", "x"), maps[name]) for name in ("au", "eu", "tu")},
            "labels": (("image", "rater", "y", "x"), make_labels(4)),
            "domain": ("image", np.array(["id", "id", "blur", "blur"], dtype=object)),
        },
        attrs={"schema": 1},
    )
    store = open_cube(save(dataset, tmp_path / "x.zarr"), check_values=True)
    np.testing.assert_array_equal(store["eu"].values, maps["eu"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop_vars(["au", "eu", "tu"]), "has `mean` but none of `au`, `eu` and `tu`"),
        (lambda d: d.drop_vars("mean"), "a maps store holds `mean` and `au`, `eu` or `tu` instead"),
        (lambda d: d.isel({"class": [0]}), "`mean` has 1 class; a segmentation has at least 2"),
        (lambda d: d.assign(au=d["au"].transpose("image", "x", "y")), "variable `au` has dims"),
        (lambda d: d.assign(tu=d["tu"].astype(np.int32)), "variable `tu` has dtype int32"),
    ],
)
def test_a_bad_maps_store_is_refused_naming_the_variable(change, message):
    maps = given_maps()
    dataset = xr.Dataset(
        {
            "mean": (("image", "class", "y", "x"), maps["mean"]),
            **{name: (("image", "y", "x"), maps[name]) for name in ("au", "eu", "tu")},
            "domain": ("image", np.array(["id"] * 4, dtype=object)),
        },
        attrs={"schema": 1},
    )
    with pytest.raises(UQEvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        uqeval.validate_cube(change(dataset))


def test_values_are_checked_on_write_and_on_read(tmp_path):
    maps = given_maps()
    bad = dict(maps, eu=maps["eu"].copy())
    bad["eu"][2, 0, 0] = -1
    writer = CubeWriter(tmp_path / "m.zarr", n_classes=3, height=4, width=5, variable="maps")
    with pytest.raises(UQEvalError, match="`eu` of image 2 has values that are negative, NaN or infinite"):
        writer.append(maps=bad)
    with pytest.raises(UQEvalError, match="does not sum to 1"):
        writer.append(maps=dict(maps, mean=maps["mean"] * 2))
    with pytest.raises(UQEvalError, match=r"maps has \['au', 'mean'\]; expected \['mean', 'au', 'eu', 'tu'\]"):
        writer.append(maps={"mean": maps["mean"], "au": maps["au"]})
    with pytest.raises(UQEvalError, match="a maps store is written with append"):
        CubeWriter(tmp_path / "v.zarr", n_classes=3, depth=2, height=4, width=5, variable="maps").volume("a")
    dataset = xr.Dataset(
        {"mean": (("image", "class", "y", "x"), maps["mean"]), "tu": (("image", "y", "x"), bad["eu"])},
        attrs={"schema": 1},
    ).assign(domain=("image", np.array(["id"] * 4, dtype=object)))
    with pytest.raises(UQEvalError, match="`tu` of image 2 has values that are negative"):
        open_cube(save(dataset, tmp_path / "bad.zarr"), check_values=True)


def test_an_interrupted_maps_store_resumes_and_is_replaced_with_overwrite(tmp_path):
    maps = given_maps(8)
    path = tmp_path / "m.zarr"
    writer = CubeWriter(path, n_classes=3, height=4, width=5, variable="maps", chunk_images=2)
    writer.append(maps={name: values[:5] for name, values in maps.items()})
    writer = CubeWriter(path, n_classes=3, height=4, width=5, variable="maps", resume=True)
    assert writer.n_images == 4  # two whole chunks
    writer.append(maps={name: values[4:] for name, values in maps.items()}, image_ids=[4, 5, 6, 7])
    writer.close()
    np.testing.assert_array_equal(open_cube(path)["tu"].values, maps["tu"])
    with CubeWriter(path, n_classes=3, height=4, width=5, variable="maps", overwrite=True) as again:
        again.append(maps={name: values[:1] for name, values in maps.items()})
    assert open_cube(path).sizes["image"] == 1


@pytest.mark.cli
def test_inspect_shows_a_maps_store(tmp_path):
    maps = given_maps()
    with CubeWriter(tmp_path / "m.zarr", n_classes=3, height=4, width=5, variable="maps", measures=["au", "eu"]) as w:
        w.append(maps={name: maps[name] for name in ("mean", "au", "eu")}, domain=["id", "id", "blur", "blur"])
    result = run_cli("inspect", str(tmp_path / "m.zarr"))
    assert result.returncode == 0, result.stderr
    assert "maps store (AU, EU as given), 3 classes," in result.stdout and "4×5 px" in result.stdout
    expected = f"{maps['eu'][:2].mean():.4f}"
    assert expected in result.stdout
