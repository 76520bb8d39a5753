"""LIDC-IDRI and Chaksu through `uqeval train`, `predict` and `score`, from fixtures in the published layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from test_chaksu import write_release
from test_lidc import write_lidc

import uqeval

TINY = ["--size", "tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]


def train_predict_score(tmp_path, data: str, root) -> tuple[uqeval.Scores, object]:
    run, store = tmp_path / "run", tmp_path / "cube.zarr"
    options = ["--data-option", f"root={root}", "--data-option", "size=64"]
    trained = run_cli(
        "train", "--au", "softmax", "--eu", "ensemble", "--members", "2", "--data", data, *options,
        "--out", str(run), *TINY,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    if data == "chaksu":  # the fixture has one image for which an expert drew no cup
        assert "note: dataset 'chaksu': left out 1 image for which an expert has no mask" in trained.stderr
    predicted = run_cli("predict", str(run), "--out", str(store), "--quiet")  # the run's data options
    assert predicted.returncode == 0, predicted.stderr
    scored = run_cli("score", str(store), "--json", "--no-plots")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["model"]["dataset"] == data
    return uqeval.open_cube(store), json.loads((run / "run.json").read_text())


@pytest.mark.cli
def test_lidc_trains_predicts_and_scores(tmp_path):
    root = write_lidc(tmp_path / "lidc")
    cube, settings = train_predict_score(tmp_path, "lidc", root)
    assert settings["data_options"] == {"root": str(root), "size": 64}
    assert set(cube.domain.values) == {"id", "noise", "blur", "contrast", "jpeg"}
    assert set(cube.role.values) == {"calibration", "test"}
    assert (cube.sizes["rater"], cube.sizes["class"], cube.sizes["y"]) == (4, 2, 64)
    patients = {
        role: {str(image).split("/")[0] for image in cube.image.values[cube.role.values == role]}
        for role in ("calibration", "test")
    }
    assert patients["calibration"] and patients["test"]
    assert not patients["calibration"] & patients["test"], "a patient in two roles"
    assert all(patient.startswith("LIDC-IDRI-") for patient in patients["test"])
    # Every OOD image is a shifted ID test image of the same slice.
    test_ids = {str(image) for image in cube.image.values[(cube.role.values == "test") & (cube.domain.values == "id")]}
    shifted = cube.image.values[cube.domain.values == "noise"]
    assert {str(image).removesuffix("-noise") for image in shifted} == test_ids


@pytest.mark.cli
def test_chaksu_trains_predicts_and_scores(tmp_path):
    root = tmp_path / "chaksu"
    write_release(root)
    cube, _ = train_predict_score(tmp_path, "chaksu", root)
    assert set(cube.domain.values) == {"id", "bosch", "forus"}
    assert (cube.sizes["rater"], cube.sizes["class"], cube.sizes["y"]) == (5, 3, 64)
    devices = {str(image).split("/")[1] for image in cube.image.values[cube.domain.values == "id"]}
    assert devices == {"Remidio"}
    assert {str(image).split("/")[1] for image in cube.image.values[cube.domain.values == "bosch"]} == {"Bosch"}
    labels = cube.labels.values
    assert set(np.unique(labels)) <= {0, 1, 2}


@pytest.mark.cli
@pytest.mark.parametrize("data", ["lidc", "chaksu"])
def test_a_missing_root_exits_2_naming_it(tmp_path, data):
    result = run_cli(
        "train", "--au", "softmax", "--eu", "ensemble", "--members", "2", "--data", data,
        "--data-option", f"root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "run"), *TINY,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nowhere" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.pt"))
