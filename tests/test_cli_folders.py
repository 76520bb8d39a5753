"""What the commands may replace and what they leave behind: never a folder uqeval did not
write, report folders replaced whole, one line and exit 2 on a full disk, no spill after
SIGTERM, no empty parent folders after a refusal."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import cli_env, run_cli

from uqeval.cli import TERMINATED_EXIT

#: Test hooks loaded by the command through ``sitecustomize``: a slow spill (to stop a
#: run while it scores) and a full disk (an OSError writing one report file).
HOOKS = textwrap.dedent(
    """
    import errno, os, time

    if os.environ.get("UQEVAL_TEST_SLOW_SPILL"):
        import uqeval.scoring.spill as spill

        write = spill.Spill.write

        def slow(self, *args, **kwargs):
            write(self, *args, **kwargs)
            time.sleep(120)

        spill.Spill.write = slow

    if os.environ.get("UQEVAL_TEST_FULL_DISK"):
        import uqeval.report.files as files

        write_bytes = files.write_bytes

        def full(path, data):
            if os.fspath(path).endswith(os.environ["UQEVAL_TEST_FULL_DISK"]):
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
            return write_bytes(path, data)

        files.write_bytes = full
    """
)


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:
    return synthetic_store("disentangled", n_images=24, size=16)


@pytest.fixture
def hooks(tmp_path) -> Path:
    folder = tmp_path / "hooks"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOKS)
    return folder


def victim(folder: Path) -> dict[str, bytes]:
    """A user's folder with a thesis and a subfolder; returns what it holds."""
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("my thesis\n")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("1,2\n")
    return held(folder)


def held(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.is_file() and path.read_bytes() for path in folder.rglob("*")}


def one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.cli
def test_synth_overwrite_keeps_a_users_folder_a_file_and_the_working_folder(tmp_path):
    folder = tmp_path / "victim"
    before = victim(folder)
    one_line(run_cli("synth", str(folder), "--overwrite", "--images", "4", "--size", "8"), str(folder), "not a cube")
    assert held(folder) == before
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    one_line(run_cli("synth", str(file), "--overwrite", "--images", "4", "--size", "8"), "exists and is not a folder")
    assert file.read_text() == "mine\n"
    one_line(run_cli("synth", ".", "--overwrite", "--images", "4", "--size", "8", cwd=folder), "working folder")
    assert held(folder) == before


@pytest.mark.cli
@pytest.mark.parametrize("command", ["score", "compare"])
def test_out_never_replaces_a_users_folder(store, tmp_path, command):
    out = tmp_path / "victim"
    before = victim(out)
    if command == "score":
        result = run_cli("score", str(store), "--out", str(out), "--no-plots")
    else:
        runs = [tmp_path / "a", tmp_path / "b"]
        for run in runs:
            (run).mkdir()
            (run / "scores.json").write_text("{}")
        result = run_cli("compare", *map(str, runs), "--out", str(out))
    one_line(result, str(out), "uqeval replaces only a")
    assert held(out) == before


@pytest.mark.cli
def test_no_plots_into_an_old_report_leaves_no_old_figures(store, tmp_path):
    out = tmp_path / "report"
    assert run_cli("score", str(store), "--out", str(out)).returncode == 0
    assert (out / "roc.png").exists()
    assert run_cli("score", str(store), "--out", str(out), "--no-plots").returncode == 0
    assert not [path.name for path in out.iterdir() if path.suffix in (".png", ".svg")]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"]


@pytest.mark.cli
def test_a_missing_store_leaves_no_empty_parent_folders(tmp_path):
    result = run_cli("score", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "a" / "b" / "c"))
    one_line(result, "missing.zarr")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cli
def test_a_full_disk_is_one_line_and_keeps_the_old_report(store, tmp_path, hooks):
    out = tmp_path / "report"
    assert run_cli("score", str(store), "--out", str(out), "--no-plots").returncode == 0
    before = held(out)
    result = run_cli(
        "score",
        str(store),
        "--out",
        str(out),
        "--tasks",
        "oodd",
        paths=(hooks,),
        env={"UQEVAL_TEST_FULL_DISK": "images.csv"},
    )
    one_line(result, str(out), "No space left on device", "the old report is left as it was")
    assert held(out) == before  # scores.json byte for byte
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hooks", "report"]


@pytest.mark.cli
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_stopped_run_leaves_no_spill(store, tmp_path, hooks, stop):
    """SIGTERM cleans up as Ctrl-C does; after SIGKILL the next run removes the stale spill."""
    out = tmp_path / "work" / "report"
    command = [sys.executable, "-m", "uqeval", "score", str(store), "--out", str(out)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(hooks, UQEVAL_TEST_SLOW_SPILL="1"),
    )
    deadline = time.monotonic() + 120
    spills = []
    while not spills and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        spills = [path for path in (tmp_path / "work").glob("uqeval-spill-*") if any(path.glob("*.npz"))]
    assert spills, "the run never spilled"
    process.send_signal(getattr(signal, stop))
    _, stderr = process.communicate(timeout=60)
    if stop == "SIGTERM":
        assert process.returncode == TERMINATED_EXIT, stderr
        assert "Traceback" not in stderr, stderr
        assert [path.name for path in tmp_path.iterdir()] == ["hooks"]  # the folder it made is gone too
    else:
        assert process.returncode == -signal.SIGKILL
        assert [path.name for path in (tmp_path / "work").iterdir()] == [spills[0].name]
        assert run_cli("score", str(store), "--out", str(out), "--no-plots").returncode == 0
        assert [path.name for path in (tmp_path / "work").iterdir()] == ["report"]
