"""The benchmarks' baselines compute what they claim, and the scripts run at a small size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_decompose


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("size", [bench_decompose.READ_ROW * 3, bench_decompose.READ_ROW * 2 + 1234, 777])
def test_the_parallel_read_sums_every_value_once(dtype, size):
    values = np.random.default_rng(0).random(size).astype(dtype)
    got = bench_decompose.parallel_read(values)
    if dtype == np.float16:  # read as the uint16 bits: an exact integer sum
        assert got == values.view(np.uint16).astype(np.int64).sum()
    else:
        assert got == pytest.approx(values.astype(np.float64).sum(), rel=1e-5)


def test_bench_decompose_runs_and_reports_the_ratios(capsys):
    assert bench_decompose.main(["--images", "2", "--eu", "2", "--au", "3", "--size", "16", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "t_parallel_read / t_decompose_batch (float32)" in printed
    assert "t_parallel_read / t_decompose_batch (float16)" in printed
