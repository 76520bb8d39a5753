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


@pytest.mark.parametrize("with_torch", [True, False], ids=["torch", "no-torch"])
def test_bench_alternatives_runs_and_reports_the_ratios(capsys, monkeypatch, with_torch):
    import re

    import bench_alternatives

    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    argv = ["--images", "2", "--eu", "2", "--au", "3", "--size", "16", "--repeats", "1"]
    assert bench_alternatives.main(argv) == 0
    printed = capsys.readouterr().out

    def row(name):
        """(seconds, ratio) of a contender's row."""
        match = re.search(rf"^{re.escape(name)}\s+(\S+)\s+\S+\s+\S+\s+(\d+\.\d\d)$", printed, re.MULTILINE)
        assert match, f"no row for {name!r} in:\n{printed}"
        return float(match.group(1)), float(match.group(2))

    def ratio(name):
        return row(name)[1]

    assert "t / t_uqeval" in printed
    assert ratio("uqeval") == 1.0
    # Every contender timed; on 2 tiny cubes a fast one can take under 0.05 ms, or 0.5 % of
    # uqeval's time, so that it prints as 0.0 ms and 0.00: that its row is there is checked.
    assert row("numpy")[0] >= 0 and row("parallel read")[0] >= 0
    torch_rows = ["study method (torch)", "plain torch"]
    if with_torch:
        assert all(row(name)[0] >= 0 for name in torch_rows)
        assert "skipped" not in printed
    else:
        assert "torch is not installed" in printed and "skipped" in printed
        assert not any(re.search(rf"^{re.escape(name)}\s+\d", printed, re.MULTILINE) for name in torch_rows)
    assert "1-minute load average" in printed


@pytest.mark.slow  # starts a cluster of worker processes: about 5 s
def test_bench_cluster_runs_and_reports_the_ratio(capsys):
    import re

    pytest.importorskip("distributed")
    import bench_cluster

    argv = ["--images", "4", "--pool", "2", "--eu", "2", "--au", "2", "--size", "16", "--overhead-images", "4"]
    assert bench_cluster.main([*argv, "--configs", "1x1", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "configuration" in printed and "t / t_local" in printed and "overhead/task (ms)" in printed
    number = r" +-?[\d.]+"
    row = re.search(rf"^1 worker × 1 thread{number * 3} +(\d+\.\d\d){number * 2}$", printed, re.MULTILINE)
    assert row is not None, printed
    assert float(row.group(1)) > 0
    assert "cluster results equal the local ones: yes" in printed


@pytest.mark.slow  # writes two small stores and runs the command line twice: about 20 s
def test_bench_score_runs_and_reports_every_baseline(capsys):
    import os
    import re

    import bench_score

    assert bench_score.main(["--images", "4", "--pool", "2", "--repeats", "1", "--skip-memory"]) == 0
    printed = capsys.readouterr().out
    for kind in ("random", "realistic"):
        assert f"Throughput, {kind} store" in printed
    threads = os.cpu_count() or 1
    names = ["zarr read + decode", "raw decode", f"raw decode, {threads} threads", "uqeval.score"]
    for name in [*names, "uqeval score (command line, once)"]:
        rows = re.findall(rf"^{re.escape(name)} +\d+\.\d+ ", printed, re.MULTILINE)
        assert len(rows) == 2, (name, printed)
    pattern = r"^t\((.+?)\) / t\(uqeval\.score\) = (\d+\.\d\d) on the (\w+) store"
    ratios = re.findall(pattern, printed, re.MULTILINE)
    assert [(baseline, kind) for baseline, _, kind in ratios] == [
        ("zarr read + decode", "random"),
        ("raw decode", "realistic"),
    ]
    assert all(float(value) > 0 for _, value, _ in ratios)


def test_raw_decode_reads_back_what_was_written(tmp_path):
    import bench_score

    pool = bench_score.random_probs(3, seed=1)
    bench_score.write_store(tmp_path / "s.zarr", pool, 5, seed=1)
    decoder = bench_score.RawDecoder(tmp_path / "s.zarr")
    decoder.serial()
    np.testing.assert_array_equal(decoder.out[:5], pool[np.arange(5) % 3])
    decoder.out[:] = 0
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as workers:
        decoder.parallel(workers)
    np.testing.assert_array_equal(decoder.out[:5], pool[np.arange(5) % 3])


def test_the_direct_path_check_passes_on_a_cubewriter_store(tmp_path):
    import bench_score
    from bench_store import make_probs

    store = tmp_path / "s.zarr"
    bench_score.write_store(store, make_probs(2, 2, 3, 16, seed=0).astype(np.float16), 8, seed=0)
    assert bench_score.direct_path_problem(store) is None


def test_the_direct_path_check_fails_when_the_writer_default_codec_is_one_it_cannot_decode(tmp_path, monkeypatch):
    import bench_score
    import zarr.codecs
    from bench_store import make_probs

    import uqeval.cube.write

    monkeypatch.setattr(uqeval.cube.write, "default_compressor", zarr.codecs.ZstdCodec)
    store = tmp_path / "s.zarr"
    bench_score.write_store(store, make_probs(2, 2, 3, 16, seed=0).astype(np.float16), 8, seed=0)
    problem = bench_score.direct_path_problem(store)
    assert problem is not None
    assert "did not take the direct chunk-file path" in problem
    assert "`probs`: 8 image(s) and 0 plane(s) through zarr, 0 image(s) and 0 plane(s) from its chunk files" in problem
    assert "'probs': ['bytes', 'zstd']" in problem


@pytest.mark.slow  # writes a store of 4 full-size cubes and scores it, twice: about 15 s
def test_bench_score_check_exits_1_when_the_direct_path_is_off(capsys, monkeypatch):
    import bench_score
    import zarr.codecs

    import uqeval.cube.write

    argv = ["--check", "--skip-rate", "--skip-memory", "--images", "4", "--pool", "2"]
    assert bench_score.main(argv) == 0
    assert "direct path: uqeval.score read every image from the chunk files" in capsys.readouterr().out
    monkeypatch.setattr(uqeval.cube.write, "default_compressor", zarr.codecs.ZstdCodec)
    assert bench_score.main(argv) == 1
    assert "bench_score --check: " in capsys.readouterr().err


# --------------------------------------------------------------------------- volumes


def test_bench_decompose_runs_on_volumes(capsys):
    argv = ["--volume", "3,8,10", "--images", "2", "--eu", "2", "--au", "3", "--repeats", "1"]
    assert bench_decompose.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 images x (2, 3, 2, 3, 8, 10)" in printed
    assert "t_parallel_read / t_decompose_batch (float16)" in printed


def test_raw_decode_reads_every_z_slab_of_a_volume_store(tmp_path):
    import bench_score

    pool = bench_score.random_probs(2, seed=1, eu=2, au=3, spatial=(7, 10, 12))
    bench_score.write_store(tmp_path / "v.zarr", pool, 2, seed=1, chunk_depth=4)  # slabs of 4 and 3 (+ padding)
    decoder = bench_score.RawDecoder(tmp_path / "v.zarr")
    assert len(decoder.files) == 4
    decoder.serial()
    for number, (volume, slab) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        expected = pool[volume][..., 4 * slab : 4 * slab + 4, :, :]
        np.testing.assert_array_equal(decoder.out[number][..., : expected.shape[-3], :, :], expected)


def test_volume_memory_store_is_written_once_slab_by_slab(tmp_path, capsys):
    import bench_volume_memory

    import uqeval

    path = bench_volume_memory.cached_store(tmp_path, 3, 2, 2, (5, 8, 12), seed=0)
    assert "written in" in capsys.readouterr().out
    cube = uqeval.open_cube(path, check_values=True)
    assert cube.probs.shape == (3, 2, 2, 2, 5, 8, 12)
    assert [str(d) for d in cube.domain.values] == ["id", "id", "noise"]
    assert [str(r) for r in cube.role.values] == ["calibration", "test", "test"]
    assert bench_volume_memory.cached_store(tmp_path, 3, 2, 2, (5, 8, 12), seed=0) == path
    assert "(cached)" in capsys.readouterr().out


@pytest.mark.slow  # writes a tiny store and runs `uqeval score` once: about 15 s
def test_bench_volume_memory_reports_the_peak_and_the_stages(tmp_path, capsys):
    import re

    import bench_volume_memory

    argv = ["--data", str(tmp_path), "--shape", "4,12,16", "--no-plots", "--interval", "0.02"]
    assert bench_volume_memory.main(argv) == 0
    printed = capsys.readouterr().out
    peak = re.search(r"^peak RSS (\d+\.\d\d) GB", printed, re.MULTILINE)
    assert peak is not None and 0 < float(peak.group(1)) < 5, printed
    assert "scoring/api:score" in printed  # a stage of the table
    assert re.search(r"^wall time \d+\.\d s", printed, re.MULTILINE)


def test_bench_bootstrap_runs_and_reports_the_parts(capsys):
    import bench_bootstrap

    argv = ["--images", "16", "--size", "16", "--resamples", "20", "--repeats", "1"]
    assert bench_bootstrap.main(argv) == 0
    printed = capsys.readouterr().out
    assert "uqeval.score --bootstrap" in printed and "OODD + FD, all resamples at once" in printed
