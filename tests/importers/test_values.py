"""uqeval import values: a ValUES experiment folder becomes a maps store, the study's maps as
they are and `mean` the share of the samples that predict each class."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli
from import_folders import values_folder, write_nifti

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


def cube_of(written: dict, path, *, ood_domain: str = "shift"):
    """The same arrays written straight with CubeWriter: one member, the samples as ``au``."""
    arrays = list(written.values())
    n_samples, n_classes, *spatial = arrays[0]["probs"].shape
    with uqeval.CubeWriter(
        path,
        n_classes=n_classes,
        eu=1,
        au=n_samples,
        depth=spatial[0],
        height=spatial[1],
        width=spatial[2],
        raters=2,
        dtype="float32",
    ) as writer:
        for image, item in written.items():
            writer.append(
                item["probs"][None],
                item["labels"],
                domain="id" if image.startswith("id/") else ood_domain,
                image_ids=image,
            )
    return path


@pytest.mark.parametrize("classes", [2, 3])
def test_a_values_folder_with_pred_prob_becomes_a_cube_that_scores_as_the_arrays(tmp_path, classes):
    written = values_folder(tmp_path / "exp", classes=classes, samples=4, probabilities=True)
    summary = import_values(tmp_path / "exp", tmp_path / "c.zarr")
    store = open_cube(tmp_path / "c.zarr", check_values=True)
    assert store.attrs["source_variable"] == "probs"
    assert dict(store["probs"].sizes) == {"image": 5, "eu": 1, "au": 4, "class": classes, "z": 4, "y": 5, "x": 6}
    for position, item in enumerate(written.values()):
        np.testing.assert_array_equal(store["probs"].values[position, 0], item["probs"])
        np.testing.assert_array_equal(store["labels"].values[position], item["labels"])
    # The maps beside pred_prob are not imported, and the note says so.
    assert "cube (eu 1 × au 4" in summary.notes[0]
    assert "aleatoric_uncertainty/, epistemic_uncertainty/, pred_entropy/) are not imported" in summary.notes[0]
    record = store.attrs["import"]["cases"]["ood/0102"]
    assert [Path(path).name for path in record["probs"][3]] == [
        f"0102_04_{k:02d}.nii.gz" for k in range(1, classes + 1)
    ]
    assert store.attrs["spacing"] == [2.5, 0.8, 0.7]

    imported = uqeval.score(tmp_path / "c.zarr")
    expected = uqeval.score(cube_of(written, tmp_path / "direct.zarr"))
    for key in (("oodd", "shift", "eu", "auroc", "border"), ("amb", "id", "au", "ncc"), ("cal", "id", "tu", "ace")):
        assert imported.value(*key) == expected.value(*key)
    assert imported.results == expected.results and imported.eu_convention == "samples-as-members"


def test_pred_prob_without_maps_imports_and_a_split_without_it_falls_back_to_the_maps(tmp_path):
    values_folder(tmp_path / "exp", probabilities=True, maps=False)
    summary = import_values(tmp_path / "exp", tmp_path / "c.zarr")
    assert open_cube(tmp_path / "c.zarr").attrs["source_variable"] == "probs"
    assert "are not imported" not in summary.notes[0]

    values_folder(tmp_path / "mixed", probabilities=True)
    shutil.rmtree(tmp_path / "mixed" / "ood" / "pred_prob")
    summary = import_values(tmp_path / "mixed", tmp_path / "m.zarr")
    assert open_cube(tmp_path / "m.zarr").attrs["source_variable"] == "maps"
    assert "pred_prob/ is in split(s) 'id' but not in 'ood'" in summary.notes[0]


def test_one_sample_per_image_has_nothing_to_decompose_and_imports_the_maps(tmp_path):
    values_folder(tmp_path / "exp", samples=1, probabilities=True)
    summary = import_values(tmp_path / "exp", tmp_path / "m.zarr")
    assert open_cube(tmp_path / "m.zarr").attrs["source_variable"] == "maps"
    assert "one prediction per image" in summary.notes[0]


def test_bad_pred_prob_folders_are_named(tmp_path):
    values_folder(tmp_path / "exp", classes=3, probabilities=True)
    with pytest.raises(UQEvalError, match=r"--classes 2, but .* holds 3 class files per sample"):
        import_values(tmp_path / "exp", tmp_path / "c.zarr", classes=2)
    (tmp_path / "exp" / "ood" / "pred_prob" / "0102_02_03.nii.gz").unlink()
    with pytest.raises(UQEvalError, match=r"lacks the probabilities of class 3 of image '0102', sample 02"):
        import_values(tmp_path / "exp", tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()

    values_folder(tmp_path / "sums", probabilities=True)
    path = tmp_path / "sums" / "id" / "pred_prob" / "0002_01_01.nii.gz"
    write_nifti(path, np.zeros((4, 5, 6), dtype=np.float32))
    with pytest.raises(UQEvalError, match=r"image 'id/0002' in 0002_01_01.nii.gz … 0002_01_02.nii.gz sum to"):
        import_values(tmp_path / "sums", tmp_path / "s.zarr")


def test_an_interrupted_cube_import_resumes_after_its_last_whole_image(tmp_path):
    written = values_folder(tmp_path / "exp", probabilities=True)
    # Probabilities that do not sum to 1 are found when the fourth image is read, after three are written.
    broken = tmp_path / "exp" / "ood" / "pred_prob" / "0101_02_01.nii.gz"
    kept = broken.read_bytes()
    write_nifti(broken, np.zeros((4, 5, 6), dtype=np.float32))
    with pytest.raises(UQEvalError, match="keeps the 3 case"):
        import_values(tmp_path / "exp", tmp_path / "c.zarr")
    broken.write_bytes(kept)
    summary = import_values(tmp_path / "exp", tmp_path / "c.zarr")
    assert (summary.resumed, summary.n_images) == (3, 5)
    store = open_cube(tmp_path / "c.zarr")
    for position, item in enumerate(written.values()):
        np.testing.assert_array_equal(store["probs"].values[position, 0], item["probs"])
    assert list(store.attrs["import"]["cases"]) == list(written)


@pytest.mark.cli
def test_the_command_writes_a_cube_from_pred_prob(tmp_path):
    values_folder(tmp_path / "exp", probabilities=True)
    result = run_cli("import", "values", str(tmp_path / "exp"), "--out", str(tmp_path / "c.zarr"))
    assert result.returncode == 0, result.stderr
    assert "5 images" in result.stderr and "cube" in result.stderr
    result = run_cli("score", str(tmp_path / "c.zarr"), "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "taken as given" not in result.stdout
