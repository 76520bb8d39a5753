"""`uqeval train` and `uqeval predict` through the real entry point, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import uqeval
from uqeval.plugins import LOAD_PLUGINS_ENV

DATA_OPTIONS = ["--data-option", "size=16", "--data-option", "n_train=8"]
SMALL = [*DATA_OPTIONS, "--data-option", "n_calibration=2", "--data-option", "n_test=3"]


def uqeval_cli(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != LOAD_PLUGINS_ENV}
    env.update(COLUMNS="200", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    return subprocess.run(
        [sys.executable, "-m", "uqeval", *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


#: ``uqeval plugins --json`` through the real entry point in a fresh interpreter; the last
#: line says whether it imported torch.
PLUGINS_LISTING = """
import runpy, sys
sys.argv = ["uqeval", "plugins", "--json"]
try:
    runpy.run_module("uqeval", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(sorted(name for name in ("torch", "numba", "scipy", "matplotlib") if name in sys.modules))
"""


def test_plugins_lists_the_reference_families_without_importing_torch_or_numba():
    env = {key: value for key, value in os.environ.items() if key != LOAD_PLUGINS_ENV}
    result = subprocess.run(
        [sys.executable, "-c", PLUGINS_LISTING], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    listing, _, imported = result.stdout.rstrip().rpartition("\n")
    [row] = [row for row in json.loads(listing) if row["name"] == "torch"]
    assert row["distribution"] == "uqeval-torch"
    assert row["au_methods"] == ["softmax", "ssn", "prob_unet", "diffusion", "tta"]
    assert row["eu_methods"] == ["none", "dropout", "swag_diag", "swag", "ensemble"]
    assert row["datasets"] == ["synthetic", "lidc", "chaksu"]
    assert set(row["commands"]) == {"train", "predict", "study"}
    assert list(row["options"]) == ["ssn", "prob_unet", "diffusion", "synthetic", "lidc", "chaksu"]
    assert row["problems"] == []
    # The methods' and datasets' classes import torch only inside the methods that need it,
    # and the built-in tasks import the metrics (numba, scipy) only when they make rows.
    assert imported == "[]"


def test_train_predict_score(tmp_path):
    run, store = tmp_path / "run", tmp_path / "cube.zarr"
    trained = uqeval_cli(
        "train", "--au", "ssn", "--eu", "ensemble", "--members", "2", "--data", "synthetic", *SMALL,
        "--size", "tiny", "--epochs", "1", "--batch-size", "4", "--out", str(run), "--device", "cpu",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "trained ssn+ensemble (2 member(s))" in trained.stderr
    assert json.loads((run / "run.json").read_text())["data_options"] == {
        "size": 16, "n_train": 8, "n_calibration": 2, "n_test": 3
    }  # fmt: skip
    predicted = uqeval_cli("predict", str(run), "--out", str(store), "--samples", "2", "--quiet")
    assert predicted.returncode == 0, predicted.stderr
    assert "wrote 17 images × 2 members × 2 samples" in predicted.stderr
    assert uqeval.open_cube(store).sizes["image"] == 2 + 3 + 4 * 3
    scored = uqeval_cli("score", str(store), "--json", "--no-plots")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["model"]["au_method"] == "ssn"
    # Running the same training command again loads the finished run.
    again = uqeval_cli(
        "train", "--au", "ssn", "--eu", "ensemble", "--members", "2", "--data", "synthetic", *SMALL,
        "--size", "tiny", "--epochs", "1", "--batch-size", "4", "--out", str(run), "--quiet",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--au", "softmax", "--eu", "none"], "AU method 'softmax' is deterministic"),
        (
            ["--au", "unet", "--eu", "none"],
            "error: --au: unknown AU method 'unet'; choose one of diffusion, prob_unet, softmax, ssn, tta",
        ),
        (
            ["--au", "ssn", "--eu", "bayes"],
            "error: --eu: unknown EU method 'bayes'; choose one of dropout, ensemble, none, swag, swag_diag",
        ),
        (["--au", "ssn", "--eu", "none", "--data-option", "size"], "--data-option 'size': expected KEY=VALUE"),
        (["--au", "ssn", "--eu", "none", "--data-option", "colour=red"], "colour"),
        (["--au", "ssn", "--eu", "none", "--size", "huge"], "error: --size: unknown size 'huge'; sizes are full, tiny"),
        (["--au", "ssn", "--eu", "ensemble", "--members", "1"], "an ensemble needs at least 2 members"),
    ],
)
def test_bad_training_requests_exit_2_with_one_line(tmp_path, arguments, message):
    result = uqeval_cli("train", "--data", "synthetic", "--out", str(tmp_path / "run"), "--epochs", "1", *arguments)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_predict_on_a_folder_that_is_not_a_run(tmp_path):
    result = uqeval_cli("predict", str(tmp_path), "--out", str(tmp_path / "cube.zarr"))
    assert result.returncode == 2
    assert "not a training run (no run.json)" in result.stderr
    assert not (tmp_path / "cube.zarr").exists()


@pytest.mark.parametrize(
    ("command", "usage"), [("train", "[OPTIONS]"), ("predict", "[OPTIONS] RUN"), ("study", "[OPTIONS] OUT")]
)
def test_plugin_help_reads_like_the_core_commands(command, usage):
    result = uqeval_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    [line] = [line.strip() for line in result.stdout.splitlines() if "Usage:" in line]
    assert line.endswith(f"uqeval {command} {usage}"), line  # `python -m uqeval` names itself so
    assert "<bool>" not in result.stdout and "{run}" not in result.stdout and "{out}" not in result.stdout
    assert re.search(r"--quiet\s+No progress", result.stdout)
    assert re.search(r"--data-option\s+KEY=VALUE\s", result.stdout)


def test_predict_samples_help_names_the_method_default():
    result = uqeval_cli("predict", "--help")
    [row] = [line for line in result.stdout.splitlines() if "--samples" in line]
    assert "the AU method's own, e.g. 1 for softmax, 10 for ssn" in row
    assert "the method's, 10)" not in result.stdout


def test_core_commands_do_not_import_torch():
    code = (
        "import sys, typer, uqeval\n"
        "from uqeval.plugins import plugin_manager\n"
        "manager = plugin_manager()\n"
        "manager.add_commands(typer.Typer())\n"
        "manager.aggregators()\n"
        "assert 'torch' in {info.name for info in manager.info.values()}, manager.info\n"
        "print('torch' in sys.modules)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != LOAD_PLUGINS_ENV}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_gpu_defaults_on_the_cpu_are_announced_up_front(tmp_path):
    """Without --size and --epochs, training on the CPU says what it is about to do (here the
    combination is then refused, so nothing trains)."""
    result = uqeval_cli(
        "train", "--au", "softmax", "--eu", "none", "--data", "synthetic", "--out", str(tmp_path / "run"),
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 2
    assert "settings meant for a GPU, on the CPU takes hours" in result.stderr
    assert "pass --profile cpu for a model that learns in minutes" in result.stderr
    quiet = uqeval_cli(
        "train", "--au", "softmax", "--eu", "none", "--data", "synthetic", "--out", str(tmp_path / "run"),
        "--device", "cpu", "--size", "tiny", "--epochs", "1",
    )  # fmt: skip
    assert "takes hours" not in quiet.stderr


def test_the_cpu_profile_trains_a_model_that_has_learned(tmp_path):
    """--profile cpu: a 2-member softmax ensemble that segments (ID Dice against the raters ≥ 0.8)
    and whose AU follows the raters' disagreement."""
    run, store = tmp_path / "run", tmp_path / "cube.zarr"
    trained = uqeval_cli(
        "train", "--profile", "cpu", "--au", "softmax", "--eu", "ensemble", "--members", "2", "--data", "synthetic",
        "--out", str(run), "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "takes hours" not in trained.stderr
    settings = json.loads((run / "run.json").read_text())
    assert (settings["size"], settings["epochs"], settings["learning_rate"]) == ("tiny", 30, 3e-3)
    data = settings["data_options"]
    assert (settings["batch_size"], data["size"], data["faint"]) == (16, 48, 0.1)
    predicted = uqeval_cli("predict", str(run), "--out", str(store), "--quiet")  # the run's data options
    assert predicted.returncode == 0, predicted.stderr
    scored = uqeval_cli("score", str(store), "--json")
    assert scored.returncode == 0, scored.stderr
    rows = json.loads(scored.stdout)["results"]
    key = ("amb", "id", "au", "ncc")
    [ncc] = [row["value"] for row in rows if (row["task"], row["split"], row["measure"], row["metric"]) == key]
    assert ncc > 0.3
    scores = uqeval.score(store, tasks=["fd"], aggregations=["border", "mean"])
    in_domain = (scores.domains == "id") & (scores.roles == "test")
    assert 1 - scores.images.risk[in_domain].mean() >= 0.8


def test_the_core_names_the_commands_the_plugin_adds():
    """The core's hint for ``uqeval train`` in an install without the plugin
    (:data:`uqeval.cli.TORCH_PLUGIN_COMMANDS`) names exactly the commands it adds."""
    import typer

    from uqeval.cli import TORCH_PLUGIN_COMMANDS
    from uqeval_torch.cli import add_commands

    app = typer.Typer()
    add_commands(app)
    assert tuple(info.name for info in app.registered_commands) == TORCH_PLUGIN_COMMANDS


def test_messages_show_paths_and_names_as_text(capsys):
    from uqeval_torch.cli import _say

    _say("trained ssn+ensemble (1 member(s)) → runs/[/]odd[link=https://evil.example]x[/link]\x1b[2J")
    assert "runs/[/]odd[link=https://evil.example]x[/link]\\x1b[2J" in capsys.readouterr().err
