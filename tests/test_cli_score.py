"""``uqeval score``: the report it writes, its options, and bad input.

Good runs go through typer's ``CliRunner``; bad input runs the real entry point
(``python -m uqeval``) so that ``main()``'s handling is tested: exit code 2, one line on
stderr that names the problem and where, no traceback, nothing written, the store
untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import run_cli, write_synthetic_store
from typer.testing import CliRunner

import uqeval
from uqeval import CubeWriter
from uqeval.cli import app
from uqeval.ownership import REPORT_MARK

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
#: Without --no-plots: the data files, and each plot as PNG and SVG.
DATA_FILES = {"scores.json", "metrics.csv", "entanglement.csv", "images.csv", "fitted.json", "report.html"}
REPORT_FILES = DATA_FILES | {f"{plot}.{suffix}" for plot in ("roc", "reliability", "maps") for suffix in ("png", "svg")}
SCORE_OPTIONS = (
    "--out",
    "--tasks",
    "--aggregation",
    "--preset",
    "--segmentation",
    "--no-segmentation",
    "--plots",
    "--no-plots",
    "--json",
    "--scheduler",
    "--bootstrap",
    "--seed",
)


def write_store(path: Path, *, n_images: int = 8) -> Path:
    """A small store, two images per chunk (so single chunks can go missing)."""
    return write_synthetic_store(path, n_images=n_images, size=16, eu=2, au=2, raters=2, chunk_images=2)


def fingerprint(path: Path) -> dict[str, str]:
    """Content hash of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {
        str(file.relative_to(path)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


def scores_json(folder: Path) -> dict:
    return json.loads((folder / "scores.json").read_text())


# --------------------------------------------------------------------------- good runs


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:
    return synthetic_store("disentangled", n_images=24, size=32, eu=3, au=4, raters=3)


@pytest.fixture(scope="module")
def default_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "report"
    result = runner.invoke(app, ["score", str(store), "--out", str(out)], env=WIDE)
    return result, out


@pytest.mark.cli
def test_entry_point_calls_main():
    source = (Path(uqeval.__file__).parent / "__main__.py").read_text()
    assert "main()" in source
    result = run_cli("--version")
    assert result.returncode == 0
    assert uqeval.__version__ in result.stdout


def test_score_prints_tables_and_writes_the_report(default_run, store):
    result, out = default_run
    assert result.exit_code == 0, result.output
    printed = result.stdout.lower()
    for title in (
        "ood detection",
        "ambiguity modelling",
        "calibration",
        "predictive quality of the mean prediction",
        "entanglement δ",
        "epistemic collapse",
    ):
        assert title in printed, title
    assert "Δ" in result.stdout
    assert str(out) in result.stdout.replace("\n", "")
    assert {path.name for path in out.iterdir()} == {*REPORT_FILES, REPORT_MARK}  # no temporary or spill files left
    assert sorted(path.name for path in out.parent.iterdir()) == [out.name]  # nor beside it
    content = scores_json(out)
    assert content["schema"] == "uqeval.scores/1"
    assert content["store"] == str(store.resolve())
    assert {row["task"] for row in content["results"]} == {"oodd", "amb", "cal", "fd", "pq"}
    assert "temperature" in json.loads((out / "fitted.json").read_text())
    assert "pq,id,mean,none,nll_ts," in (out / "metrics.csv").read_text()
    assert "Predictive quality of the mean prediction" in (out / "report.html").read_text()
    assert content["model"]["au_method"] == "synthetic-disentangled"
    # The sample scores, beside the measures: in the tables, metrics.csv, images.csv and report.html.
    assert "pairwise Dice" in result.stdout and "CoV" in result.stdout
    assert {"pairwise_dice", "cov"} <= {row["measure"] for row in content["results"]}
    metrics = (out / "metrics.csv").read_text()
    assert "oodd,blur,pairwise_dice,samples,auroc," in metrics and "fd,all,cov,samples,aurc," in metrics
    assert (out / "images.csv").read_text().splitlines()[0].endswith("pairwise_dice,cov")
    assert "pairwise Dice" in (out / "report.html").read_text()


def test_default_out_is_beside_the_store(store, tmp_path):
    copy = tmp_path / "my-model.zarr"
    shutil.copytree(store, copy)
    result = runner.invoke(app, ["score", str(copy), "--no-plots"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = tmp_path / "my-model-scores"
    assert (out / "scores.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["my-model-scores", "my-model.zarr"]
    assert fingerprint(copy) == fingerprint(store)


@pytest.mark.cli
def test_json_prints_exactly_scores_json(store, tmp_path):
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--out", str(out), "--json", "--no-plots")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert printed == scores_json(out)
    assert "Traceback" not in result.stderr


def test_no_plots_writes_no_png(store, tmp_path):
    result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path), "--no-plots"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert not list(tmp_path.glob("*.png"))
    assert {path.name for path in tmp_path.iterdir()} == {*DATA_FILES, REPORT_MARK}


def test_tasks_oodd_only(store, tmp_path):
    result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path), "--tasks", "oodd", "--no-plots"])
    assert result.exit_code == 0, result.output
    content = scores_json(tmp_path)
    assert {row["task"] for row in content["results"]} == {"oodd"}
    assert {row["task"] for row in content["entanglement"]} == {"oodd"}
    assert "ambiguity modelling" not in result.stdout.lower()


def test_aggregation_list_scores_each(store, tmp_path):
    result = runner.invoke(
        app, ["score", str(store), "--out", str(tmp_path), "--aggregation", "border,mean", "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    content = scores_json(tmp_path)
    oodd = {row["aggregation"] for row in content["results"] if row["task"] == "oodd"}
    assert oodd == {"border", "mean", "samples"}  # samples: the rows of pairwise_dice and cov
    assert content["conventions"]["aggregation"] == "border"
    result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path), "--aggregation", "mean", "--no-plots"])
    assert result.exit_code == 0, result.output
    content = scores_json(tmp_path)
    assert content["conventions"]["aggregation"] == "mean"
    assert {row["aggregation"] for row in content["results"] if row["task"] == "oodd"} == {"mean", "samples"}


def test_repeated_flags_equal_comma_separated_names(store, tmp_path):
    repeated = ["--tasks", "oodd", "--tasks", "cal", "--aggregation", "mean", "--aggregation", "border,sum"]
    comma = ["--tasks", "oodd,cal", "--aggregation", "mean,border,sum"]
    contents = []
    for name, flags in (("repeated", repeated), ("comma", comma)):
        result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path / name), "--no-plots", *flags])
        assert result.exit_code == 0, result.output
        contents.append(scores_json(tmp_path / name))
    first, second = contents
    assert first["results"] == second["results"]
    assert {row["task"] for row in first["entanglement"]} == {"oodd", "cal"}
    assert first["conventions"]["aggregation"] == "mean"  # the first name is the primary one
    assert {row["aggregation"] for row in first["results"] if row["task"] == "oodd"} == {
        "mean",
        "border",
        "sum",
        "samples",
    }


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_cli_aggregations_mean_what_the_api_aggregations_mean(store, tmp_path, preset):
    flags = ["--aggregation", "mean", "--aggregation", "patch_max", "--preset", preset]
    result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path), "--no-plots", *flags])
    assert result.exit_code == 0, result.output
    from_cli = scores_json(tmp_path)
    from_api = json.loads(json.dumps(uqeval.score(store, aggregations=["mean", "patch_max"], preset=preset).to_dict()))
    for content in (from_cli, from_api):
        del content["provenance"]
    assert from_cli == from_api
    assert from_api["conventions"]["aggregation"] == "mean"  # Δ's: the first name
    assert {row["aggregation"] for row in from_api["results"] if row["task"] == "oodd"} == {
        "mean",
        "patch_max",
        "samples",
    }


def test_aggregation_list_prints_every_aggregation(store, tmp_path):
    result = runner.invoke(
        app, ["score", str(store), "--out", str(tmp_path), "--aggregation", "border,mean", "--no-plots"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    values = {
        (row["task"], row["split"], row["measure"], row["aggregation"]): row["value"]
        for row in scores_json(tmp_path)["results"]
        if row["metric"] in ("auroc", "aurc")
    }
    lines = result.stdout.splitlines()
    for task, title in (("oodd", "OOD detection: AUROC"), ("fd", "Failure detection: AURC")):
        start = lines.index(title)
        header = [cell.strip() for cell in lines[start + 2].strip("┃").split("┃")]
        assert header[:2] == ["image score", "measure"]
        rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in lines[start + 4 : start + 12]]
        rows = [row for row in rows if len(row) == len(header)]  # the rule between the blocks is not a row
        assert [row[0] for row in rows] == ["border", "", "", "mean", "", ""]
        for index, row in enumerate(rows):
            aggregation, measure = ("border", "mean")[index // 3], ("au", "eu", "tu")[index % 3]
            assert row[1].split()[0] == measure.upper()
            for split, cell in zip(header[2:], row[2:], strict=True):
                assert cell == f"{values[(task, split, measure, aggregation)]:.3f}".replace("-0.000", "0.000")
    [where] = [line for line in lines if line.startswith("image scores border, mean:")]
    assert "metrics.csv" in where and "scores.json" in where and "images.csv" in where


def test_one_ood_domain_is_printed_once(tmp_path):
    layout = [("id", "calibration" if index % 3 == 0 else "test") for index in range(9)] + [("fog", "test")] * 6
    store = write_synthetic_store(tmp_path / "fog.zarr", layout=layout, size=16, eu=2, au=2, raters=2)
    out = tmp_path / "report"
    result = runner.invoke(app, ["score", str(store), "--out", str(out), "--no-plots"], env=WIDE)
    assert result.exit_code == 0, result.output
    content = scores_json(out)
    assert {row["split"] for row in content["results"] if row["task"] == "oodd"} == {"fog", "ood"}  # both kept
    headers = [line for line in result.stdout.splitlines() if line.startswith("┃")]
    assert headers and all("fog = ood" in line for line in headers if "measure" in line)
    cells = {
        cell.strip() for line in result.stdout.splitlines() if line[:1] in "┃│" for cell in line[1:].split(line[0])
    }
    assert "ood" not in cells and "fog" not in cells  # neither alone: one column, one row, named for both
    assert "fog is the only OOD domain" in result.stdout


def test_preset_paper_changes_the_conventions(store, default_run, tmp_path):
    result = runner.invoke(
        app, ["score", str(store), "--out", str(tmp_path), "--preset", "paper", "--no-plots"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert scores_json(tmp_path)["conventions"]["ncc_constant"] == "zero"
    assert scores_json(default_run[1])["conventions"]["ncc_constant"] == "skip"
    assert len([line for line in result.stdout.splitlines() if line.startswith("conventions")]) == 1
    assert " ".join(result.stdout.split()).count("conventions (paper preset)") == 1
    assert (  # the terminal may wrap the line
        "conventions (paper preset): ncc_constant=zero, ood_split=domain-mean, threshold_fraction=members, "
        "delta_both_zero=atan2, platt=binned-smoothed, amb_reference=class-index-variance, ncc_factor=n-1-over-n, "
        "cal_ood_delta=domain-min-mean, all_correct_image=wrong"
    ) in " ".join(result.stdout.split())
    assert "conventions" not in default_run[0].stdout


def test_captions_use_the_terminal_width(default_run):
    result, _ = default_run
    lines = result.stdout.splitlines()
    assert (
        "image score: border; pairwise Dice and CoV: image scores of the samples themselves, not in Δ; ✓ the measure "
        "that should win" in lines
    )
    assert (
        "1: the correct measure far better; 0: no better than the best wrong one; < 0: worse; oodd and fd with "
        "image score border" in lines
    )


def test_no_negative_zero_is_printed(default_run):
    result, _ = default_run
    assert "0.000" in result.stdout
    assert not re.search(r"(?<![\w.])-0\.0+(?![\d.])", result.stdout), result.stdout


def test_notes_of_one_cause_are_printed_once_with_a_count(tmp_path):
    # Two identical members: EU is 0 everywhere, so Δ is undefined on every task and split.
    store = tmp_path / "no-spread.zarr"
    rng = np.random.default_rng(1)
    layout = [("id", "calibration" if index % 3 == 0 else "test") for index in range(9)]
    layout += [(domain, "test") for domain in ("blur", "noise") for _ in range(4)]
    with CubeWriter(store, n_classes=2, eu=2, au=2, height=8, width=8, raters=2) as writer:
        for index, (domain, role) in enumerate(layout):
            member = rng.dirichlet([1.0, 1.0], size=(1, 1, 2, 8, 8)).astype(np.float32).transpose(0, 1, 2, 5, 3, 4)
            labels = (rng.random((1, 2, 8, 8)) < 0.5).astype(np.uint8)
            writer.append(
                probs=np.concatenate([member, member], axis=1),
                labels=labels,
                domain=domain,
                role=role,
                image_ids=[f"{domain}-{index:02d}"],
            )
    out = tmp_path / "report"
    result = runner.invoke(app, ["score", str(store), "--out", str(out), "--no-plots"], env=WIDE)
    assert result.exit_code == 0, result.output
    undefined = [note for note in scores_json(out)["notes"] if "is undefined: EU is 0 at every pixel" in note]
    assert len(undefined) >= 10  # scores.json keeps every note
    printed = [line for line in result.stdout.splitlines() if "is undefined: EU is 0 at every pixel" in line]
    assert len(printed) == 1
    assert printed[0].startswith("note: {oodd, amb, cal, fd}: Δ on {")
    assert printed[0].endswith(f"(×{len(undefined)})")


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert f"uqeval {uqeval.__version__}" in result.stdout


def test_score_help_mentions_every_option():
    result = runner.invoke(app, ["score", "--help"], env=WIDE)
    assert result.exit_code == 0
    for option in SCORE_OPTIONS:
        assert option in result.stdout, option
    assert "Usage: uqeval score [OPTIONS] STORE" in result.stdout
    assert "<bool>" not in result.stdout and "{store}" not in result.stdout
    [json_help] = [line for line in result.stdout.splitlines() if line.strip("│ ").startswith("--json")]
    assert "the report folder is written as usual" in json_help


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("good") / "good.zarr")


def copy_of(good: Path, folder: Path, name: str) -> Path:
    target = folder / name
    shutil.copytree(good, target)
    return target


def rewritten(good: Path, folder: Path, name: str, edit: Callable[[xr.Dataset], xr.Dataset]) -> Path:
    """The good store through xarray, edited, written anew (attributes such as ``schema`` kept)."""
    dataset = xr.open_zarr(good, consolidated=False).load()
    edited = edit(dataset)
    target = folder / name
    edited.to_zarr(target, zarr_format=3, consolidated=False)
    assert xr.open_zarr(target, consolidated=False).attrs["schema"] == 1
    return target


def edit_probs(store: Path, image: int, change: Callable[[np.ndarray], None]) -> Path:
    probs = zarr.open_group(store, mode="r+")["probs"]
    values = probs[image]
    change(values)
    probs[image] = values
    return store


def make_plain_folder(good, folder):
    (folder / "plain").mkdir()
    return folder / "plain"


def make_text_file(good, folder):
    (folder / "notes.txt").write_text("not a store\n")
    return folder / "notes.txt"


def make_missing_probs(good, folder):
    return rewritten(good, folder, "noprobs.zarr", lambda d: d.drop_vars("probs"))


def make_wrong_dim_names(good, folder):
    return rewritten(good, folder, "dimnames.zarr", lambda d: d.rename_dims({"class": "klass"}))


def make_wrong_dim_order(good, folder):
    return rewritten(
        good,
        folder,
        "dimorder.zarr",
        lambda d: d.assign(probs=d["probs"].transpose("image", "au", "eu", "class", "y", "x")),
    )


def make_nan(good, folder):
    def change(values):
        values[1, 0, 1, 4, 9] = np.nan

    return edit_probs(copy_of(good, folder, "nan.zarr"), 5, change)


def make_negative(good, folder):
    def change(values):
        values[0, 1, 0, 3, 3] = -0.25
        values[0, 1, 1, 3, 3] = 1.25

    return edit_probs(copy_of(good, folder, "negative.zarr"), 3, change)


def make_sum_five(good, folder):
    store = copy_of(good, folder, "sum5.zarr")
    probs = zarr.open_group(store, mode="r+")["probs"]
    probs[:] = (probs[:].astype(np.float32) * 5).astype(probs.dtype)
    return store


def make_label_out_of_range(good, folder):
    store = copy_of(good, folder, "labelrange.zarr")
    labels = zarr.open_group(store, mode="r+")["labels"]
    values = labels[6]
    values[1, 2, 2] = 7
    labels[6] = values
    return store


def make_label_height(good, folder):
    """``labels`` 12 pixels high beside 16-pixel probabilities (zarr arrays written directly)."""
    store = copy_of(good, folder, "labelheight.zarr")
    group = zarr.open_group(store, mode="r+")
    old = group["labels"][:]
    del group["labels"]
    labels = group.create_array(
        "labels",
        shape=(old.shape[0], old.shape[1], 12, old.shape[3]),
        dtype="uint8",
        fill_value=255,
        dimension_names=("image", "rater", "y", "x"),
    )
    labels[:] = old[:, :, :12]
    return store


def make_unclosed_writer(good, folder):
    dataset = xr.open_zarr(good, consolidated=False).load()
    writer = CubeWriter(folder / "unclosed.zarr", n_classes=2, eu=2, au=2, height=16, width=16, chunk_images=2)
    writer.append(
        dataset["probs"].values[:5].astype(np.float32),
        domain=list(dataset["domain"].values[:5]),
        role=list(dataset["role"].values[:5]),
    )
    return folder / "unclosed.zarr"  # never closed: 4 images written, 1 buffered


def make_deleted_chunks(good, folder):
    store = copy_of(good, folder, "deletedchunks.zarr")
    chunk = store / "probs" / "c" / "2" / "0" / "0" / "0" / "0" / "0"  # images 4 and 5
    assert chunk.is_file()
    chunk.unlink()
    return store


def make_damaged_chunk(good, folder):
    store = copy_of(good, folder, "damaged.zarr")
    chunk = store / "probs" / "c" / "2" / "0" / "0" / "0" / "0" / "0"  # images 4 and 5
    chunk.write_bytes(chunk.read_bytes()[:-40])  # cut short, as by a full disk
    return store


def make_v2_unknown_dtype(good, folder):
    """A zarr v2 store whose ``labels`` dtype zarr cannot parse."""
    dataset = xr.open_zarr(good, consolidated=False).load().drop_encoding()
    target = folder / "v2dtype.zarr"
    dataset.to_zarr(target, zarr_format=2, consolidated=False)
    metadata = json.loads((target / "labels" / ".zarray").read_text())
    (target / "labels" / ".zarray").write_text(json.dumps({**metadata, "dtype": "<q9"}))
    return target


def make_calibration_only(good, folder):
    store = copy_of(good, folder, "calibrationonly.zarr")
    roles = zarr.open_group(store, mode="r+")["role"]
    roles[:] = np.full(roles.shape, "calibration", dtype=object)
    return store


def make_domain_look_alike(good, folder):
    store = copy_of(good, folder, "lookalike.zarr")
    domains = zarr.open_group(store, mode="r+")["domain"]
    values = domains[:]
    domains[:] = np.where(values == "id", "i\u200bd", values).astype(object)
    return store


def make_deterministic(good, folder):
    return rewritten(good, folder, "deterministic.zarr", lambda d: d.isel(eu=[0], au=[0]))


# (make the input, extra arguments, words the one-line message must hold)
BAD_STORES = {
    "plain-folder": (make_plain_folder, [], ["plain", "not a zarr store"]),
    "text-file": (make_text_file, [], ["notes.txt", "not a zarr store"]),
    "probs-missing": (make_missing_probs, [], ["noprobs.zarr", "`probs`"]),
    "wrong-dim-names": (make_wrong_dim_names, [], ["dimnames.zarr", "`probs`", "klass", "'class'"]),
    "wrong-dim-order": (make_wrong_dim_order, [], ["dimorder.zarr", "`probs`", "wrong order"]),
    "nan": (make_nan, [], ["nan.zarr", "'blur-005'", "NaN"]),
    "negative": (make_negative, [], ["negative.zarr", "'noise-003'", "negative"]),
    "sum-five": (make_sum_five, [], ["sum5.zarr", "'id-000'", "sum to 1", "logits"]),
    "label-out-of-range": (make_label_out_of_range, [], ["labelrange.zarr", "labels", "'id-006'"]),
    "label-height": (make_label_height, [], ["labelheight.zarr", "`y`", "labels", "probs"]),
    "unclosed-writer": (make_unclosed_writer, [], ["unclosed.zarr", "incomplete", "resume"]),
    "deleted-chunks": (make_deleted_chunks, [], ["deletedchunks.zarr", "`probs`", "truncated"]),
    "damaged-chunk": (make_damaged_chunk, [], ["damaged.zarr", "probs/c/2/0/0/0/0/0", "damaged"]),
    "eu-au-1": (make_deterministic, [], ["deterministic.zarr", "eu = au = 1"]),
    "v2-unknown-dtype": (make_v2_unknown_dtype, [], ["v2dtype.zarr", "`labels`", "'<q9'"]),
    "calibration-only": (make_calibration_only, [], ["calibrationonly.zarr", "nothing to score", "'calibration'"]),
    "domain-look-alike": (make_domain_look_alike, [], ["lookalike.zarr", "U+200B ZERO WIDTH SPACE", "looks like 'id'"]),
}

# The library's message, with the flag named first by the CLI.
BAD_OPTIONS = {
    "unknown-aggregation": (
        ["--aggregation", "nope"],
        [
            "error: --aggregation: unknown aggregation 'nope'; choose one of",
            *("border", "mean", "patch_max", "threshold", "area", "sum"),
        ],
    ),
    "unknown-extra-aggregation": (
        ["--aggregation", "border,nope"],
        ["error: --aggregation: unknown aggregation 'nope'", "border"],
    ),
    "unknown-task": (["--tasks", "oodd,foo"], ["error: --tasks: unknown task(s) foo; choose from oodd, amb, cal"]),
    "empty-tasks": (["--tasks", ","], ["error: --tasks: give at least one name"]),
}


def assert_clean_refusal(result: subprocess.CompletedProcess, words: list[str]) -> str:
    """Exit 2, one line on stderr naming the problem, no traceback; returns the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.cli
@pytest.mark.parametrize("case", list(BAD_STORES))
def test_bad_store_exits_2_with_one_line(good, tmp_path, case):
    make, extra, words = BAD_STORES[case]
    source = make(good, tmp_path)
    before = fingerprint(source)
    out = tmp_path / "report"
    result = run_cli("score", str(source), "--out", str(out), *extra)
    assert_clean_refusal(result, words)
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    assert fingerprint(source) == before
    assert not (tmp_path / f"{source.name.removesuffix('.zarr')}-scores" / "scores.json").exists()


@pytest.mark.cli
@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_exits_2_with_one_line(good, tmp_path, case):
    arguments, words = BAD_OPTIONS[case]
    store = copy_of(good, tmp_path, "good.zarr")
    before = fingerprint(store)
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--out", str(out), *arguments)
    assert_clean_refusal(result, words)
    assert not out.exists() or not any(out.iterdir())
    assert fingerprint(store) == before


@pytest.mark.cli
def test_missing_store(tmp_path):
    result = run_cli("score", str(tmp_path / "absent.zarr"), "--out", str(tmp_path / "report"))
    assert_clean_refusal(result, ["absent.zarr", "no such file"])


@pytest.mark.cli
@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_unwritable_out_exits_2(good, tmp_path, where):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "report" if where == "under-a-file" else blocker
    result = run_cli("score", str(good), "--out", str(out))
    reason = "cannot write the report there" if where == "under-a-file" else "exists and is not a folder"
    assert_clean_refusal(result, [f"error: {out}: {reason}"])
    assert blocker.read_text() == "a file, not a folder\n"


@pytest.mark.cli
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="running as root: chmod 0o500 does not stop root writing"
)
def test_read_only_out_folder_exits_2(good, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = run_cli("score", str(good), "--out", str(out))
        assert_clean_refusal(result, [str(out), "cannot write"])
    finally:
        out.chmod(0o700)
    assert not any(out.iterdir())


@pytest.mark.cli
def test_unknown_preset_is_a_usage_error(good, tmp_path):
    """``--preset`` is a choice: click refuses a bad one with its usage message, before any work."""
    store = copy_of(good, tmp_path, "good.zarr")
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--out", str(out), "--preset", "nope", env={"COLUMNS": "200"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Usage:" in result.stderr and "error:" not in result.stderr  # click's message, not ours
    assert "Invalid value for '--preset'" in result.stderr
    for word in ("'nope'", "'default'", "'paper'"):
        assert word in result.stderr, word
    assert not out.exists()


@pytest.mark.cli
def test_a_bad_convention_is_one_line_naming_the_flag(good, tmp_path):
    store = copy_of(good, tmp_path, "good.zarr")
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--out", str(out), "--convention", "ace_scope=sometimes")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: --convention: conventions: ace_scope is 'sometimes'; expected 'pooled' or 'per-image'"
    )
    assert not out.exists()


def test_convention_changes_one_field_of_the_preset(store, tmp_path):
    result = runner.invoke(
        app,
        [
            *("score", str(store), "--out", str(tmp_path), "--preset", "paper", "--no-plots"),
            *("--convention", "ace_scope=per-image,seed=2", "--convention", "calibration_bins=10"),
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    written = scores_json(tmp_path)["conventions"]
    assert (written["ace_scope"], written["seed"], written["calibration_bins"]) == ("per-image", 2, 10)
    assert written["platt"] == "binned-smoothed"  # the rest is the preset's
    assert "ace_scope=per-image" in " ".join(result.stdout.split())


def test_multi_rater_conventions_are_chosen_by_name_and_recorded(store, tmp_path):
    """``--convention empty_pair=skip,hungarian_matching=rectangular`` reaches GED and HM-IoU
    as ``uqeval.score(conventions=...)`` does, and scores.json records both."""
    result = runner.invoke(
        app,
        [
            *("score", str(store), "--out", str(tmp_path), "--segmentation", "--no-plots"),
            *("--convention", "empty_pair=skip,hungarian_matching=rectangular"),
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    written = scores_json(tmp_path)
    assert (written["conventions"]["empty_pair"], written["conventions"]["hungarian_matching"]) == (
        "skip",
        "rectangular",
    )
    chosen = uqeval.Conventions(empty_pair="skip", hungarian_matching="rectangular")
    from_api = uqeval.score(store, segmentation=True, conventions=chosen)
    segmentation = [row for row in written["results"] if row["task"] == "segmentation"]
    assert segmentation == [row for row in from_api.to_dict()["results"] if row["task"] == "segmentation"]
    default = uqeval.score(store, segmentation=True)
    assert from_api.value("segmentation", "id", "none", "hungarian_iou") != default.value(
        "segmentation", "id", "none", "hungarian_iou"
    )
    assert "empty_pair=skip" in " ".join(result.stdout.split())


@pytest.mark.cli
def test_scheduler_without_distributed_names_the_extra(good, tmp_path):
    """The ``cluster`` extra brings dask.distributed; a core install has no other use for it."""
    hidden = tmp_path / "hidden" / "distributed"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('distributed is not installed (test)')\n")
    out = tmp_path / "report"
    result = run_cli("score", str(good), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1", paths=(hidden.parent,))
    needs = "a scheduler needs dask.distributed, which is not installed: pip install 'uqeval[cluster]'"
    assert_clean_refusal(result, [f"error: --scheduler: {needs}"])
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.cli
def test_unreachable_scheduler_names_the_flag(good, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "report"
    result = run_cli("score", str(good), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1")
    assert_clean_refusal(result, ["error: --scheduler: scheduler tcp://127.0.0.1:1: cannot connect"])
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.cli
def test_deleted_chunk_message_says_missing(good, tmp_path):
    store = make_deleted_chunks(good, tmp_path)
    result = run_cli("score", str(store), "--out", str(tmp_path / "report"))
    line = assert_clean_refusal(result, ["`probs`", "chunks"]).replace(str(store), "STORE")
    assert "truncated" in line, line


def write_big_store(folder: Path) -> Path:
    """32 images, two per `probs` chunk; `labels` chunks hold 16 images (CubeWriter's minimum)."""
    store = write_store(folder / "big.zarr", n_images=32)
    chunks = sorted(path for path in (store / "labels" / "c").rglob("*") if path.is_file())
    assert len(chunks) == 2
    return store


@pytest.mark.cli
def test_deleted_labels_chunk_is_noted(tmp_path):
    # A labels chunk may be absent (zarr skips a chunk that holds only the fill value
    # unless told otherwise), so the images it covers are scored without labels, and
    # the notes count them and name them.
    store = write_big_store(tmp_path)
    (store / "labels" / "c" / "1" / "0" / "0" / "0").unlink()
    result = run_cli("score", str(store), "--out", str(tmp_path / "report"), "--no-plots", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    roles = zarr.open_group(store, mode="r")["role"][16:]
    n_test = int(sum(role == "test" for role in roles))
    assert (
        f"{n_test} test image(s) have no rater label at any pixel (all 255); they are left out of AMB, CAL and FD"
        in (document["notes"])
    )
    absent = [note for note in document["notes"] if "have no `labels` chunk in the store" in note]
    assert len(absent) == 1 and absent[0].startswith("16 image(s) have no `labels` chunk"), document["notes"]


@pytest.mark.cli
def test_all_labels_ignored_skips_cal_with_a_note(good, tmp_path):
    store = copy_of(good, tmp_path, "ignored.zarr")
    labels = zarr.open_group(store, mode="r+")["labels"]
    labels[:] = 255
    result = run_cli("score", str(store), "--out", str(tmp_path / "report"), "--no-plots", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert not any(
        row["task"] in ("amb", "cal") and row["metric"] in ("ncc", "ace") and row["value"] is not None
        for row in document["results"]
    )
    assert any(note.startswith("cal: skipped") and "rater label" in note for note in document["notes"])
    assert any("no rater label at any pixel" in note for note in document["notes"])


def test_score_with_a_bootstrap_writes_intervals_beside_every_number(tmp_path):
    store = write_store(tmp_path / "small.zarr")
    out = tmp_path / "report"
    arguments = ["score", str(store), "--out", str(out), "--no-plots", "--bootstrap", "30", "--seed", "5"]
    result = runner.invoke(app, arguments, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "95 % bootstrap interval (30 resamples, seed 5)" in result.stdout and " ± " in result.stdout
    for name in ("metrics.csv", "entanglement.csv"):
        assert (out / name).read_text().splitlines()[0].endswith(",ci_low,ci_high")
    document = scores_json(out)
    assert document["bootstrap"]["n"] == 30 and document["bootstrap"]["seed"] == 5
    assert all("ci_low" in row for row in document["results"] + document["entanglement"])
    from uqeval.report.bootstrap_file import read_bootstrap

    resampled = read_bootstrap(out)
    assert resampled.results.shape == (len(document["results"]), 30)
    assert resampled.entanglement_keys == [(row["task"], row["split"]) for row in document["entanglement"]]
    assert "bootstrap interval" in (out / "report.html").read_text()
    bad = runner.invoke(app, ["score", str(store), "--out", str(out), "--bootstrap", "-1"], env=WIDE)
    assert bad.exit_code == 2
