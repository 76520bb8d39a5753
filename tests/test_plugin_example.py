"""The example third-party plugin (``examples/uqeval-plugin-example``), installed for real.

The package is installed once per session with pip into a folder of its own; uqeval runs
in a subprocess with that folder on ``PYTHONPATH``, so the plugin is found the way a
user's is: through the ``uqeval`` entry point in its ``dist-info``. Its aggregation
``top_decile`` is checked against an independent recomputation from
:func:`uqeval.decompose` and :func:`sklearn.metrics.roc_auc_score`.

Only the example's entry point is loaded (``UQEVAL_LOAD_PLUGINS=top_decile``), so a
plugin installed in the environment (uqeval-torch) changes no outcome.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import cli_env
from sklearn.metrics import roc_auc_score

import uqeval
import uqeval.plugins
from uqeval import AggregationParameters, builtin_plugin
from uqeval.plugins import LOAD_PLUGINS_ENV

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "uqeval-plugin-example"
#: The example's entry point: the only one the tests here load.
PLUGIN = "top_decile"
BUILTINS = ["mean", "sum", "patch_max", "threshold", "area", "border"]
BUILTIN_TASKS = ["oodd", "amb", "cal", "fd", "pq"]
MEASURES = ("au", "eu", "tu")
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile")


def run_cli(*args: str, paths: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, loading the example's entry point and no other."""
    return helpers.run_cli(*args, paths=paths, plugins=PLUGIN)


def top_decile_reference(u: np.ndarray) -> float:
    """Mean of the largest ceil(10 %) of the pixel values, written independently of the plugin."""
    values = np.asarray(u, dtype=np.float64).ravel()
    count = max(1, math.ceil(0.1 * values.size))
    return float(np.mean(np.partition(values, values.size - count)[values.size - count :]))


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """The example package pip-installed into a folder of its own (a real distribution)."""
    root = tmp_path_factory.mktemp("example")
    source = root / "source"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    subprocess.run(
        [*PIP_INSTALL, "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (site / "uqeval_plugin_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:
    return synthetic_store("disentangled", n_images=24, size=16, eu=2, au=2, raters=2)


@pytest.fixture(scope="module")
def reference_scores(store) -> dict[str, dict[str, float]]:
    """``top_decile`` of AU, EU and TU per image id, from the store's probabilities."""
    cube = uqeval.open_cube(store)
    maps = uqeval.decompose(cube["probs"].values)
    ids = [str(image) for image in cube["image"].values]
    return {
        image: {measure: top_decile_reference(maps[measure].values[index]) for measure in MEASURES}
        for index, image in enumerate(ids)
    }


@pytest.fixture(scope="module")
def top_decile_run(store, example_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("top-decile") / "report"
    result = run_cli(
        "score", str(store), "--aggregation", "top_decile", "--json", "--no-plots", "--out", str(out),
        paths=(example_site,),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with (out / "images.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return json.loads(result.stdout), rows, result


def read_rows(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


# --------------------------------------------------------------------------- uqeval plugins


@pytest.mark.cli
def test_plugins_json_lists_the_example_and_the_builtins(example_site):
    result = run_cli("plugins", "--json", paths=(example_site,))
    rows = read_rows(result)
    assert rows["top_decile"] == {
        "name": "top_decile",
        "distribution": "uqeval-plugin-example",
        "version": "0.1.0",
        "module": "uqeval_plugin_example",
        "aggregators": ["top_decile"],
        "au_methods": [],
        "eu_methods": [],
        "datasets": [],
        "importers": ["npy_cubes"],
        "tasks": ["qubiq"],
        "commands": [],
        "options": {},
        "problems": [],
    }
    builtin = rows["uqeval"]
    assert (builtin["distribution"], builtin["version"]) == ("uqeval", uqeval.__version__)
    assert builtin["aggregators"] == BUILTINS
    assert builtin["importers"] == ["nnunet", "files", "values"]
    assert builtin["tasks"] == BUILTIN_TASKS
    assert builtin["problems"] == []
    assert result.stderr == ""  # nothing to warn about


@pytest.mark.cli
def test_plugins_table_mentions_the_example(example_site):
    result = run_cli("plugins", paths=(example_site,))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = [line for line in lines if "top_decile" in line and "uqeval-plugin-example 0.1.0" in line]
    assert row, result.stdout
    assert "aggregators: top_decile" in row[0]
    assert any("aggregators: " + ", ".join(BUILTINS) in line for line in lines), result.stdout


@pytest.mark.cli
def test_without_the_plugin_only_the_builtins_are_listed():
    rows = read_rows(run_cli("plugins", "--json"))
    assert list(rows) == ["uqeval"]
    assert rows["uqeval"]["aggregators"] == BUILTINS


@pytest.mark.cli
def test_the_example_importer_writes_a_store_uqeval_scores(example_site, tmp_path):
    rng = np.random.default_rng(0)
    cubes = rng.dirichlet(np.ones(2), size=(3, 2, 3, 8, 8)).transpose(0, 1, 2, 5, 3, 4).astype(np.float32)
    (tmp_path / "cubes").mkdir()
    for index, cube in enumerate(cubes):
        np.save(tmp_path / "cubes" / f"case{index}.npy", cube)
    result = run_cli(
        "import", "npy_cubes", str(tmp_path / "cubes"), "--out", str(tmp_path / "s.zarr"), paths=(example_site,)
    )
    assert result.returncode == 0, result.stderr
    assert "format npy_cubes, from plugin 'top_decile' (uqeval-plugin-example 0.1.0)" in " ".join(result.stderr.split())
    store = uqeval.open_cube(tmp_path / "s.zarr")
    assert list(store["image"].values) == ["case0", "case1", "case2"]
    np.testing.assert_allclose(store["probs"].values, cubes, atol=1e-3)  # stored as float16
    result = run_cli(
        "import", "npy_cubes", str(tmp_path / "nothing"), "--out", str(tmp_path / "t.zarr"), paths=(example_site,)
    )
    assert result.returncode == 2 and result.stderr.startswith("error:") and "holds no <case>.npy file" in result.stderr


def test_load_plugins_env_can_leave_the_example_out(example_site):
    env = cli_env(example_site, **{LOAD_PLUGINS_ENV: ""})
    result = subprocess.run(
        [sys.executable, "-m", "uqeval", "plugins", "--json"], capture_output=True, text=True, env=env, check=False
    )
    assert list(read_rows(result)) == ["uqeval"]


# --------------------------------------------------------------------------- uqeval score


@pytest.mark.cli
def test_score_top_decile_equals_an_independent_recomputation(top_decile_run, reference_scores):
    scores, rows, _ = top_decile_run
    assert scores["conventions"]["aggregation"] == "top_decile"
    assert len(rows) == len(reference_scores) == 24
    for row in rows:
        for measure in MEASURES:
            expected = reference_scores[row["image"]][measure]
            assert float(row[f"top_decile_{measure}"]) == pytest.approx(expected, rel=1e-5, abs=1e-7), (
                row["image"],
                measure,
            )
    # The plugin's score is not one of the built-ins under another name.
    for row in rows:
        assert float(row["top_decile_au"]) > float(row["mean_au"])


@pytest.mark.cli
def test_score_runs_the_plugins_task_by_default(top_decile_run):
    scores, _, _ = top_decile_run
    qubiq = {row["split"]: row["value"] for row in scores["results"] if row["task"] == "qubiq"}
    assert set(qubiq) == {"id", "blur", "noise", "ood"}
    assert all(0.0 < value <= 1.0 for value in qubiq.values())
    assert "qubiq" not in {row["task"] for row in scores["entanglement"]}  # no Δ without correct and wrong


@pytest.mark.cli
def test_score_top_decile_auroc_equals_sklearn(top_decile_run, reference_scores):
    scores, rows, _ = top_decile_run
    negatives = [row["image"] for row in rows if row["domain"] == "id" and row["role"] == "test"]
    domains = sorted({row["domain"] for row in rows} - {"id"})
    assert negatives and domains == ["blur", "noise"]
    auroc = {
        (row["split"], row["measure"]): row["value"]
        for row in scores["results"]
        if row["task"] == "oodd" and row["aggregation"] == "top_decile" and row["metric"] == "auroc"
    }
    checked = 0
    for domain in domains:
        positives = [row["image"] for row in rows if row["domain"] == domain and row["role"] == "test"]
        assert positives
        for measure in MEASURES:
            images = negatives + positives
            labels = [0] * len(negatives) + [1] * len(positives)
            expected = roc_auc_score(labels, [reference_scores[image][measure] for image in images])
            assert auroc[domain, measure] == pytest.approx(expected, abs=1e-12), (domain, measure)
            checked += 1
    assert checked == 6
    assert 0.5 < auroc["blur", "au"] < 0.9  # a value that ordering errors would change


@pytest.mark.cli
def test_score_border_then_top_decile_keeps_border_primary(store, example_site, top_decile_run, tmp_path):
    first, _, _ = top_decile_run
    result = run_cli(
        "score", str(store), "--aggregation", "border,top_decile", "--tasks", "oodd", "--json", "--no-plots",
        "--out", str(tmp_path), paths=(example_site,),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["conventions"]["aggregation"] == "border"
    oodd = [row for row in scores["results"] if row["task"] == "oodd"]
    assert {row["aggregation"] for row in oodd} == {"border", "top_decile", "samples"}

    def aurocs(content, aggregation):
        return {
            (row["split"], row["measure"]): row["value"]
            for row in content["results"]
            if row["task"] == "oodd" and row["aggregation"] == aggregation and row["metric"] == "auroc"
        }

    assert aurocs(scores, "top_decile") == aurocs(first, "top_decile")
    border = aurocs(scores, "border")
    # Δ is computed on the primary aggregation: border, not top_decile.
    entanglement = {row["split"]: row for row in scores["entanglement"] if row["task"] == "oodd"}
    assert entanglement["blur"]["u_wrong"] == border["blur", "au"]
    assert border["blur", "au"] != aurocs(first, "top_decile")["blur", "au"]
    header = (tmp_path / "images.csv").read_text().splitlines()[0].split(",")
    assert {"border_au", "top_decile_au", "top_decile_eu", "top_decile_tu"} <= set(header)


@pytest.mark.cli
def test_score_top_decile_without_the_plugin_exits_2(store, tmp_path):
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--aggregation", "top_decile", "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "--aggregation: unknown aggregation 'top_decile'; choose one of" in message
    for name in BUILTINS:
        assert name in message
    assert not out.exists()


# --------------------------------------------------------------------------- in process


@pytest.fixture
def example_manager(example_site, monkeypatch):
    """The process's plugin manager rebuilt with the example on ``sys.path`` (and no other entry point);
    restored afterwards."""
    monkeypatch.setenv(LOAD_PLUGINS_ENV, PLUGIN)
    monkeypatch.syspath_prepend(str(example_site))
    uqeval.plugins.reset_plugin_manager()
    yield uqeval.plugins.plugin_manager()
    uqeval.plugins.reset_plugin_manager()
    sys.modules.pop("uqeval_plugin_example", None)


def test_example_in_process_through_the_plugin_manager(example_manager):
    assert set(example_manager.info) == {"uqeval", "top_decile"}
    assert example_manager.problems == []
    aggregator = example_manager.aggregator("top_decile")
    assert "top_decile" not in builtin_plugin.uqeval_aggregators()  # a plugin's contribution, not a built-in
    assert aggregator.source == "plugin 'top_decile' (uqeval-plugin-example 0.1.0)"
    assert aggregator.description == "Mean of U over the most uncertain 10 % of the pixels."
    assert example_manager.info["top_decile"].distribution == "uqeval-plugin-example"
    rng = np.random.default_rng(0)
    u = rng.random((3, 9, 11)).astype(np.float32)  # 99 pixels: ceil(9.9) = 10 of them
    pred = np.zeros(u.shape, dtype=np.uint8)
    scores = uqeval.aggregate("top_decile", u, pred)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, [top_decile_reference(image) for image in u], rtol=1e-12)
    with pytest.raises(uqeval.UQEvalError, match="shape"):
        aggregator(u[0], pred[0], AggregationParameters())
