"""The command line: commands, output, and bad input (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import run_cli
from typer.testing import CliRunner

import uqeval
import uqeval.cli
from uqeval.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert uqeval.__version__ in result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "inspect", "score", "compare", "demo", "plugins"):
        assert command in result.output


#: Each core command and what its usage line must end with.
USAGES = {
    "synth": "[OPTIONS] OUT",
    "inspect": "[OPTIONS] STORE",
    "score": "[OPTIONS] STORE",
    "compare": "[OPTIONS] RUNS...",
    "demo": "[OPTIONS]",
    "plugins": "[OPTIONS]",
}


@pytest.mark.parametrize("command", [None, *USAGES])
def test_help_shows_flags_without_a_type_and_arguments_in_capitals(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert not re.search(r"\{[a-z_]+\}", result.output)  # typer's {store} in the usage
    usage = next(line.strip() for line in result.output.splitlines() if "Usage:" in line)
    expected = "[OPTIONS] COMMAND [ARGS]..." if command is None else USAGES[command]
    assert usage == f"Usage: uqeval {command + ' ' if command else ''}{expected}"
    flags = [line for line in result.output.splitlines() if re.search(r"--help\s", line)]
    assert len(flags) == 1 and re.search(r"--help\s+Show this message and exit", flags[0])


def test_flag_rows_have_no_type_but_options_keep_theirs():
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
    assert re.search(r"--plots\s+--no-plots\s+Write ROC", rows["--plots"])
    assert re.search(r"--json\s+Print scores.json", rows["--json"])
    assert "<path>" in rows["--out"] and "NAME" in rows["--tasks"] and "<default|paper>" in rows["--preset"]
    assert re.search(r"\*\s+STORE\s+<path>", result.output)


def test_help_paragraphs_wrap_at_the_terminal_not_the_docstring():
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    # In the docstring "maps," ends a source line; on a wide terminal the sentence goes on.
    assert "AU / EU / TU maps, scores OOD detection (AUROC)" in result.output


@pytest.mark.cli
def test_missing_argument_is_named_as_in_the_usage():
    result = run_cli("score")
    assert result.returncode == 2
    assert "Missing argument 'STORE'" in result.stderr


#: What ``uqeval --help`` must not import (each costs seconds, or pulls in the kernels).
HEAVY = ("numba", "xarray", "zarr", "dask", "distributed", "scipy", "pandas", "matplotlib")

IMPORTED_BY_HELP = f"""
import runpy, sys
sys.argv = ["uqeval", "--help"]
try:
    runpy.run_module("uqeval", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)!r}))
"""


def test_help_imports_no_heavy_module():
    # The real entry point (plugins loaded), in a fresh interpreter.
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY_HELP], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "score" in result.stdout  # the help really ran
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_scenario_names_match_the_writer():
    # The CLI names them without importing the writer; they must not drift apart.
    assert uqeval.cli.SCENARIO_NAMES == uqeval.SCENARIOS


@pytest.mark.cli
def test_synth_then_inspect(tmp_path):
    store = tmp_path / "cube.zarr"
    result = run_cli("synth", str(store), "--scenario", "collapsed", "--images", "8", "--size", "24", "--seed", "1")
    assert result.returncode == 0, result.stderr
    cube = uqeval.open_cube(store)
    assert cube.sizes["image"] == 8
    assert cube.attrs["seed"] == 1
    result = run_cli("inspect", str(store))
    assert result.returncode == 0, result.stderr
    assert "mean EU" in result.stdout
    for domain in ("id", "blur", "noise"):
        assert domain in result.stdout


@pytest.mark.slow  # every scenario written and scored end to end
def test_demo_writes_every_scenario(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--images", "6"])
    assert result.exit_code == 0, result.output
    for scenario in uqeval.SCENARIOS:
        assert uqeval.open_cube(tmp_path / f"{scenario}.zarr").sizes["image"] == 6
        scores = json.loads((tmp_path / f"{scenario}-scores" / "scores.json").read_text())
        assert scores["model"]["model"] == f"synthetic-{scenario}"
        assert f"{scenario}: Entanglement Δ" in result.output
    comparison = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    assert sorted(row["group"] for row in comparison["ranks"]) == sorted(f"synthetic-{s}" for s in uqeval.SCENARIOS)
    assert "Average rank" in result.output
    # One seed each: no interval over seeds is promised.
    assert "1 = best; one seed each" in result.output and "interval over seeds" not in result.output
    # The closing lines: one per scenario, with the Δ that its scores.json holds.
    closing = " ".join(result.output[result.output.index("What the four synthetic models show") :].split())
    for scenario in uqeval.SCENARIOS:
        rows = json.loads((tmp_path / f"{scenario}-scores" / "scores.json").read_text())["entanglement"]
        delta = {(row["task"], row["split"]): row["delta"] for row in rows}
        start = closing.index(f" {scenario} (")
        line = closing[start : closing.index("(all)", start) + len("(all)")]
        for task, split in (("oodd", "ood"), ("amb", "id"), ("cal", "id"), ("fd", "all")):
            value = delta[task, split]
            shown = "–" if value is None else f"{value:.2f}".replace("-0.00", "0.00")
            assert f"{task.upper()} {shown} ({split})" in line, (scenario, line)
    assert "near 1 on every task" not in result.output
    assert "Δ above 1 means" in closing


@pytest.mark.cli
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.zarr", "no such file"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a zarr store"),
    ],
)
def test_bad_store_exits_2_with_one_line(tmp_path, make, message):
    result = run_cli("inspect", str(make(tmp_path)))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 or "error:" in result.stderr.splitlines()[0]


@pytest.mark.cli
def test_synth_refuses_to_overwrite(tmp_path):
    store = tmp_path / "cube.zarr"
    assert run_cli("synth", str(store), "--images", "2", "--size", "16").returncode == 0
    result = run_cli("synth", str(store), "--images", "2", "--size", "16")
    assert result.returncode == 2
    assert "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.cli
def test_unknown_scenario_exits_2(tmp_path):
    result = run_cli("synth", str(tmp_path / "x.zarr"), "--scenario", "bogus")
    assert result.returncode == 2
    assert "unknown scenario" in result.stderr
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.cli
def test_usage_error_exits_2():
    result = run_cli("inspect")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


@pytest.mark.cli
def test_nan_in_one_image_names_store_and_image(tmp_path):
    import numpy as np
    import zarr

    store = uqeval.make_synthetic_cube(tmp_path / "cube.zarr", n_images=6, size=16)
    probs = zarr.open_group(store, mode="r+")["probs"]
    image = probs[2]
    image[0, 0, 0, 3, 3] = np.nan
    probs[2] = image
    result = run_cli("inspect", str(store))
    assert result.returncode == 2
    assert "cube.zarr" in result.stderr
    assert "'id-00002'" in result.stderr
    assert "NaN" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.cli
def test_single_array_is_not_a_cube(tmp_path):
    import zarr

    zarr.create_array(tmp_path / "array.zarr", shape=(3,), dtype="float32")
    result = run_cli("inspect", str(tmp_path / "array.zarr"))
    assert result.returncode == 2
    assert "single zarr array" in result.stderr


@pytest.mark.parametrize("command", uqeval.cli.TORCH_PLUGIN_COMMANDS)
def test_a_torch_plugin_command_without_the_plugin_says_where_it_comes_from(command):
    """``app`` here has the core's commands only, as in an install without uqeval-torch."""
    assert command not in {info.name for info in app.registered_commands}
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())
    assert f"No such command '{command}'" in message
    assert f"`uqeval {command}` comes with the PyTorch plugin uqeval-torch" in message
    assert "#subdirectory=plugins/uqeval-torch" in message


def test_an_unknown_command_that_no_plugin_provides_gets_click_s_message_only():
    result = runner.invoke(app, ["scor"], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "No such command 'scor'. Did you mean 'score'?" in result.output
    assert "uqeval-torch" not in result.output


@pytest.mark.cli
def test_synth_volumes_then_inspect_shows_them(tmp_path):
    store = tmp_path / "volumes.zarr"
    result = run_cli("synth", str(store), "--shape", "6,16,20", "--images", "4", "--eu", "2", "--au", "2")
    assert result.returncode == 0, result.stderr
    assert "4 volumes of 6×16×20 voxels" in result.stderr
    cube = uqeval.open_cube(store)
    assert cube.probs.dims[-3:] == ("z", "y", "x")
    assert (cube.sizes["z"], cube.sizes["y"], cube.sizes["x"]) == (6, 16, 20)
    result = run_cli("inspect", str(store))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # the title wraps at the table's width
    assert "volumes of 6×16×20 voxels (z×y×x)" in text
    assert "┃ domain ┃ volumes ┃" in text
    # Spacing, when the store has it.
    import zarr

    zarr.open_group(store, mode="a").attrs["spacing"] = [3.0, 0.5, 0.75]
    result = run_cli("inspect", str(store))
    assert result.returncode == 0, result.stderr
    assert "spacing 3×0.5×0.75 mm" in " ".join(result.stdout.split())


@pytest.mark.cli
@pytest.mark.parametrize("shape", ["8,24", "8,x,32", "0,24,32"])
def test_synth_refuses_a_bad_shape(tmp_path, shape):
    result = run_cli("synth", str(tmp_path / "x.zarr"), "--shape", shape, "--images", "2")
    assert result.returncode == 2
    assert "--shape" in result.stderr or "shape" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_means_of_volumes_are_over_every_voxel(tmp_path):
    from uqeval.domain_means import image_means

    store = uqeval.make_synthetic_cube(tmp_path / "v.zarr", n_images=3, shape=(6, 16, 20), eu=2, au=2)
    cube = uqeval.open_cube(store)
    maps = uqeval.decompose(cube.probs).compute()
    means = image_means(cube)
    for name in ("au", "eu", "tu"):
        np.testing.assert_allclose(means[name], maps[name].astype(np.float64).mean(("z", "y", "x")).values, rtol=1e-6)
