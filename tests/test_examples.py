"""The runnable examples in ``examples/`` run end to end and write what they promise.

They need torch and uqeval-torch (``plugins/uqeval-torch[examples]``, installed by ``make``); without them the test
fails with the example's ImportError rather than being skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import uqeval

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(
    cwd: Path, script: str, *arguments: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/script`` with ``arguments`` in ``cwd``; it must succeed within ``timeout`` s.

    ``env`` adds to (or replaces) variables of this process's environment.
    """
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def test_pytorch_segmentation_writes_and_scores_a_cube(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    completed = run_example(
        tmp_path, "pytorch_segmentation.py", "--quick", "--seed", "0", "--out", str(out), timeout=300
    )
    assert "Entanglement" in completed.stdout

    cube = uqeval.open_cube(out / "cube.zarr", check_values=True)
    assert dict(cube["probs"].sizes) == {"image": 56, "eu": 3, "au": 4, "class": 2, "y": 32, "x": 32}
    assert cube["labels"].sizes["rater"] == 3
    domains, counts = np.unique(cube["domain"].values.astype(str), return_counts=True)
    assert dict(zip(domains.tolist(), counts.tolist(), strict=True)) == {"id": 32, "noise": 24}
    assert (cube["role"].values == "calibration").sum() == 8
    assert cube.attrs["model"] == "toy-cnn"

    scores = json.loads((out / "scores" / "scores.json").read_text())
    assert scores["schema"] == "uqeval.scores/1"
    assert scores["model"]["model"] == "toy-cnn"
    aurocs = {
        row["measure"]: row["value"]
        for row in scores["results"]
        if row["task"] == "oodd"
        and row["split"] == "noise"
        and row["metric"] == "auroc"
        and row["aggregation"] != "samples"  # pairwise_dice and cov, scored from the samples beside them
    }
    assert set(aurocs) == {"au", "eu", "tu"}
    assert all(0 <= value <= 1 for value in aurocs.values())
    # Members trained on mild noise disagree on much stronger noise (seeds 0–11 all gave ≥ 0.88).
    assert aurocs["eu"] > 0.5
    assert {row["task"] for row in scores["entanglement"]} == {"oodd", "amb", "cal", "fd"}
    for name in ("scores/metrics.csv", "scores/images.csv", "scores/roc.png"):
        assert (out / name).is_file()


def test_bring_your_own_model_writes_members_and_samples_that_differ_and_scores(tmp_path: Path) -> None:
    out = tmp_path / "byom"
    completed = run_example(tmp_path, "bring_your_own_model.py", "--out", str(out), "--steps", "40")
    assert "MC dropout over 3 dropout layers" in completed.stdout
    cube = uqeval.open_cube(out / "cube.zarr", check_values=True)
    probs = cube["probs"].values.astype(np.float64)
    assert probs.shape[1:3] == (4, 4)
    assert np.abs(np.diff(probs, axis=1)).max() > 1e-3  # EU members differ
    assert np.abs(np.diff(probs, axis=2)).max() > 1e-3  # AU samples differ
    assert (cube.attrs["eu_source"], cube.attrs["au_source"]) == ("MCDropout", "TestTimeAugmentation")
    scores = json.loads((out / "scores" / "scores.json").read_text())
    deltas = {(row["task"], row["split"]) for row in scores["entanglement"]}
    assert {("oodd", "ood"), ("amb", "id"), ("cal", "id")} <= deltas
    assert "Δ oodd on ood" in completed.stdout


def test_monai_unet_goes_through_the_same_sources(tmp_path: Path) -> None:
    out = tmp_path / "monai"
    completed = run_example(tmp_path, "monai_unet.py", "--out", str(out), "--steps", "20")
    found = int(completed.stdout.split("MC dropout over ")[1].split()[0])
    assert found >= 4  # one nn.Dropout per convolution unit of MONAI's UNet
    cube = uqeval.open_cube(out / "cube.zarr")
    probs = cube["probs"].values.astype(np.float64)
    assert np.abs(np.diff(probs, axis=1)).max() > 1e-3 and np.abs(np.diff(probs, axis=2)).max() > 1e-3
    assert (out / "scores" / "scores.json").is_file()


@pytest.mark.slow
def test_monai_unet_3d_writes_volumes_that_score_per_volume_and_per_slice(tmp_path: Path) -> None:
    """Issue 28's check: ``examples/monai_unet_3d.py --out DIR`` writes a 3D store with ≥ 2 members that scores.

    One torch thread, and OpenMP threads that sleep rather than spin while they wait: torch's
    and the core's numba kernels share the CPU (on a busy 2-core machine, spinning threads
    made sampling tens of times slower).
    """
    out = tmp_path / "monai-3d"
    completed = run_example(
        tmp_path,
        "monai_unet_3d.py",
        *("--out", str(out), "--steps", "150"),
        env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert int(completed.stdout.split("MC dropout over ")[1].split()[0]) >= 4  # one per MONAI convolution unit

    cube = uqeval.open_cube(out / "cube.zarr", check_values=True)
    sizes = dict(cube["probs"].sizes)
    assert sizes == {"image": 32, "eu": 4, "au": 4, "class": 2, "z": 16, "y": 32, "x": 24}
    assert cube["labels"].dims == ("image", "rater", "z", "y", "x") and cube["labels"].sizes["rater"] == 4
    assert cube["input"].dims == ("image", "channel", "z", "y", "x")
    assert (cube.attrs["spacing"], cube.attrs["patch_size"]) == ([3.0, 1.0, 1.0], [16, 16, 16])
    domains, counts = np.unique(cube["domain"].values.astype(str), return_counts=True)
    assert dict(zip(domains.tolist(), counts.tolist(), strict=True)) == {"contrast": 8, "id": 16, "noise": 8}
    assert (cube["role"].values == "calibration").sum() == 8
    probs = cube["probs"].values.astype(np.float64)
    assert np.abs(np.diff(probs, axis=1)).max() > 1e-3  # MC dropout members differ
    assert np.abs(np.diff(probs, axis=2)).max() > 1e-3  # flipped samples differ

    for folder, unit, rows in (("scores", None, 32), ("scores-slice", "slice", 32 * 16)):
        scores = json.loads((out / folder / "scores.json").read_text())
        assert scores.get("unit") == unit
        assert len((out / folder / "images.csv").read_text().splitlines()) == 1 + rows
        values = {(row["task"], row["split"], row["measure"], row["metric"]): row["value"] for row in scores["results"]}
        for key in [("oodd", "ood", measure, "auroc") for measure in ("au", "eu", "tu")] + [
            ("amb", "id", "au", "ncc"),
            ("cal", "id", "tu", "ace"),
        ]:
            assert key in values and math.isfinite(values[key]), (folder, key)
        assert all(math.isfinite(row["delta"]) for row in scores["entanglement"])
        assert {("oodd", "ood"), ("amb", "id"), ("cal", "id"), ("fd", "id")} <= {
            (row["task"], row["split"]) for row in scores["entanglement"]
        }
    assert "per slice" in completed.stdout and "Δ oodd on ood" in completed.stdout
