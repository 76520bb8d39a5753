"""benchmarks/gpu_check.py, the one-call GPU check, runs end to end on the CPU at its tiny size."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"softmax": "softmax", "ssn": "SSN", "prob_unet": "Prob. UNet", "diffusion": "diffusion"}


@pytest.mark.slow  # trains and predicts four tiny networks, writes and scores a cube: 4 to 16 minutes here
def test_gpu_check_runs_on_the_cpu_and_reports_every_family(tmp_path):
    # One torch thread: under pytest -n the cores are shared, and torch's threads then wait on each other.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny"]
    # A generous time box, so that a busy machine does not cut the run short (exit status 3).
    command += ["--out", str(tmp_path), "--threads", "1", "--budget", "2400"]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3000)
    printed = finished.stdout
    assert finished.returncode == 0, printed + finished.stderr

    for label in FAMILIES.values():
        row = re.search(rf"^{re.escape(label)} +(\d[\d.]*) +(\d[\d.]*) +(\d[\d.]*) .* passed$", printed, re.MULTILINE)
        assert row is not None, f"no passing row for {label!r} in:\n{printed}"
        assert all(float(value) > 0 for value in row.groups())
    bf16 = re.search(r"^bf16 check: PASS · max / mean \|p_bf16 - p_fp32\| \(tolerance\): (.*)$", printed, re.MULTILINE)
    assert bf16 is not None, printed
    assert all(f"{label} " in bf16.group(1) for label in FAMILIES.values())
    assert re.search(r"^whole path \(SSN, \d+ images .* network \d+%", printed, re.MULTILINE), printed

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    environment = report["environment"]
    assert environment["torch"] and environment["device"] == "cpu" and environment["device_name"]
    assert "cuda" in environment and environment["plan"]["size"] == "tiny"
    assert environment["compile"].startswith("skipped on the CPU")
    assert report["exit_status"] == 0
    assert set(report["families"]) == set(FAMILIES)
    for name, record in report["families"].items():
        assert record["status"] == "passed", (name, record)
        for part in ("train_fp32", "train_bf16"):
            assert record[part]["images_per_s"] > 0 and record[part]["losses_finite"]
            assert record[part]["timed_steps"] == environment["plan"]["steps"]
        assert record["predict"]["images_per_s"] > 0
        assert record["predict"]["members"] == environment["plan"]["members"]
        assert record["batched"]["batched"]
        check = record["bf16_check"]
        assert check["passed"] and 0 <= check["max_deviation"] <= check["max_tolerance"]
        assert record["variants"]["channels_last"]["predict"]["images_per_s"] > 0
        assert "skipped" in record["variants"]["compile"]["predict"]
    # Diffusion draws its 10 samples in one batch: 10 DDIM passes whatever the samples.
    batched = report["families"]["diffusion"]["batched"]
    assert batched["passes_with_2_samples"] == batched["passes_with_4_samples"] == 10
    assert batched["batch_of_each_pass_with_4_samples"] == [4]
    path = report["whole_path"]
    assert path["network_share"] + path["writer_share"] + path["scoring_share"] == pytest.approx(1)
    assert {"amb", "cal", "oodd"} <= set(path["tasks_scored"])
