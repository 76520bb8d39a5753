"""uqeval import values: a ValUES experiment folder becomes a maps store, the study's maps as
they are and `mean` the share of the samples that predict each class."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli
from import_folders import values_folder

import uqeval
from uqeval import UQEvalError, open_cube
from uqeval.importers.values import import_values

MEASURES = ("au", "eu", "tu")


def test_a_values_folder_becomes_a_maps_store(tmp_path):
    written = values_folder(tmp_path / "exp")
    summary = import_values(tmp_path / "exp", tmp_path / "m.zarr", ood_domain="texture")
    store = open_cube(tmp_path / "m.zarr", check_values=True)
    assert summary.n_images == 5 and "maps store" in summary.notes[0]
    assert store.attrs["source_variable"] == "maps"
    assert list(store["image"].values) == list(written)
    assert list(store["domain"].values) == ["id"] * 3 + ["texture"] * 2
    for position, arrays in enumerate(written.values()):
        for name in ("au", "eu", "tu"):
            np.testing.assert_array_equal(store[name].values[position], arrays[name])
        np.testing.assert_array_equal(store["labels"].values[position], arrays["labels"])
        share = np.stack([(arrays["segs"] == k).mean(axis=0) for k in (0, 1)])
        np.testing.assert_allclose(store["mean"].values[position], share, rtol=1e-6)
    assert store.attrs["spacing"] == [2.5, 0.8, 0.7]
    assert store.attrs["import"]["cases"]["ood/0101"]["maps"]["eu"].endswith("ood/epistemic_uncertainty/0101.nii.gz")


def test_its_scores_equal_those_of_the_same_maps_written_with_xarray(tmp_path):
    written = values_folder(tmp_path / "exp")
    import_values(tmp_path / "exp", tmp_path / "m.zarr")
    arrays = list(written.values())
    share = [np.stack([(item["segs"] == k).mean(axis=0) for k in (0, 1)]) for item in arrays]
    dataset = xr.Dataset(
        {
            "mean": (("image", "class", "z", "y", "x"), np.stack(share).astype(np.float32)),
            **{
                name: (("image", "z", "y", "x"), np.stack([item[name] for item in arrays]))
                for name in ("au", "eu", "tu")
            },
            "labels": (("image", "rater", "z", "y", "x"), np.stack([item["labels"] for item in arrays])),
            "domain": ("image", np.array(["id"] * 3 + ["shift"] * 2, dtype=object)),
        },
        coords={"image": np.array(list(written), dtype=object)},
        attrs={"schema": 1},
    )
    imported, expected = uqeval.score(tmp_path / "m.zarr"), uqeval.score(dataset)
    for key in (("oodd", "shift", "eu", "auroc", "border"), ("amb", "id", "au", "ncc"), ("cal", "id", "tu", "ace")):
        assert imported.value(*key) == pytest.approx(expected.value(*key), abs=1e-12)


def test_missing_maps_and_classes_out_of_range_are_named(tmp_path):
    values_folder(tmp_path / "exp")
    (tmp_path / "exp" / "ood" / "pred_entropy" / "0102.nii.gz").unlink()
    with pytest.raises(UQEvalError, match=r"pred_entropy: lacks the TU map of image '0102'"):
        import_values(tmp_path / "exp", tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    with pytest.raises(UQEvalError, match="holds no pred_seg/ folder"):
        import_values(tmp_path, tmp_path / "m.zarr")


@pytest.mark.cli
def test_the_command(tmp_path):
    values_folder(tmp_path / "exp")
    result = run_cli("import", "values", str(tmp_path / "exp"), "--out", str(tmp_path / "m.zarr"))
    assert result.returncode == 0, result.stderr
    assert "5 images" in result.stderr and "maps store" in result.stderr
    result = run_cli("score", str(tmp_path / "m.zarr"), "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "taken as given" in result.stdout
