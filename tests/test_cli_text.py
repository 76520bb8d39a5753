"""The command line shows a store's strings and the command line's own as text.

Domains, image ids and model names are whatever the store's writer chose: Rich markup
(``[/]``, ``[link=…]``) is shown as written, never parsed; control characters are shown
escaped; every CSV cell is one a spreadsheet reads as text; every SVG is valid XML;
metadata nested too deeply is refused with one line.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import run_cli
from typer.testing import CliRunner

from uqeval import CubeWriter
from uqeval.cli import app
from uqeval.synth import image_plan, synthesize_image

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}

CLOSING_TAG = "[/]"
LINK = "[link=https://e.vil]x[/link]"
FORMULA = '=HYPERLINK("https://evil.example","x")'
ESCAPE = "\x1b[2J\x07"
#: ``(domain, role)`` per image: the synthetic plan with its OOD domains renamed.
RENAMED = {"blur": CLOSING_TAG, "noise": FORMULA}


def write_hostile_store(path: Path, *, model: str, ids: dict[int, str] | None = None, n_images: int = 18) -> Path:
    """A small store whose OOD domains are ``[/]`` and a formula, whose image ids
    carry markup, a formula, ``+cmd|…`` and control characters, and whose model is ``model``."""
    ids = ids or {}
    plan = [(RENAMED.get(domain, domain), role) for domain, role in image_plan(n_images)]
    plan[5] = (LINK + ESCAPE, "test")  # a third OOD domain: markup and control characters
    streams = np.random.SeedSequence(3).spawn(n_images)
    kinds = ["[bold]evil", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "tab\there", "nul\x00in"]
    with CubeWriter(path, n_classes=2, eu=2, au=2, height=16, width=16, raters=2, chunk_images=6, model=model) as out:
        for index, ((domain, role), stream) in enumerate(zip(plan, streams, strict=True)):
            source = "blur" if domain != "id" else "id"
            probs, labels = synthesize_image(
                np.random.default_rng(stream), "disentangled", source, size=16, eu=2, au=2, raters=2
            )
            image_id = ids.get(index, f"{kinds[index % len(kinds)]}-{index}")
            out.append(probs[None], labels[None], domain=domain, role=role, image_ids=[image_id])
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    return write_hostile_store(folder / "store.zarr", model=f"{LINK} {ESCAPE}")


@pytest.fixture(scope="module")
def scored(hostile) -> tuple[Path, str]:
    out = hostile.parent / "report"
    result = runner.invoke(app, ["score", str(hostile), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    return out, result.output


def assert_shown_as_text(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\x00" not in output
    assert "\\x1b[2J\\x07" in output


def test_score_shows_markup_and_control_characters_as_text(scored):
    _, output = scored
    assert CLOSING_TAG in output
    assert LINK in output  # shown as written: not turned into a link
    assert FORMULA in output
    assert_shown_as_text(output)


def test_report_html_shows_markup_and_control_characters_as_text(scored):
    report, _ = scored
    page = (report / "report.html").read_text(encoding="utf-8")
    assert_shown_as_text(page)
    assert LINK in page and CLOSING_TAG in page  # Rich markup means nothing in HTML: shown as written
    assert "https://e.vil" not in re.findall(r'(?:href|src)="([^"]*)"', page)
    assert "HYPERLINK(&#34;https://evil.example&#34;" in page  # quotes escaped too


def test_inspect_shows_the_domains_and_the_model_as_text(hostile):
    result = runner.invoke(app, ["inspect", str(hostile)], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.strip("│ ").startswith(CLOSING_TAG) for line in lines)
    assert f"store.zarr: {LINK} \\x1b[2J\\x07 — eu 2" in result.output
    assert_shown_as_text(result.output)


def test_compare_shows_model_names_as_text(scored, tmp_path):
    report, _ = scored
    second = tmp_path / "second"
    second.mkdir()
    document = json.loads((report / "scores.json").read_text())
    document["model"]["model"] = CLOSING_TAG
    (second / "scores.json").write_text(json.dumps(document))
    result = runner.invoke(app, ["compare", str(report), str(second), "--out", str(tmp_path / "cmp")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert re.search(r"│ \[/\] +│", result.output)
    assert LINK in result.output
    assert_shown_as_text(result.output)


def report_csv_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.csv"))
    assert files
    return files


def assert_no_formula_cells(files: list[Path]) -> None:
    """Every cell that a spreadsheet would run as a formula starts with ``'`` or is a number."""
    for file in files:
        with file.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                        float(cell)  # a number, written by us: no formula
                    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", cell), (file.name, cell)


def test_report_csv_cells_are_never_formulas(scored):
    report, _ = scored
    files = report_csv_files(report)
    assert {file.name for file in files} >= {"images.csv", "metrics.csv", "entanglement.csv"}
    assert_no_formula_cells(files)
    images = (report / "images.csv").read_text(encoding="utf-8")
    assert "'+cmd|' /C calc'!A0-1" in images and "'@SUM(1+1)-2" in images and "'-2+3-3" in images
    assert '"\'=HYPERLINK(""https://evil.example"",""x"")"' in images
    metrics = (report / "metrics.csv").read_text(encoding="utf-8")
    assert any(cell.startswith("-0.") for line in metrics.splitlines() for cell in line.split(","))  # numbers stay


def test_comparison_csv_cells_are_never_formulas(scored, tmp_path):
    report, _ = scored
    runs = []
    for name in ("=1+1", "-cmd|calc"):
        folder = tmp_path / name.strip("=|-+")
        folder.mkdir()
        document = json.loads((report / "scores.json").read_text())
        document["model"]["model"] = name
        (folder / "scores.json").write_text(json.dumps(document))
        runs.append(str(folder))
    result = runner.invoke(app, ["compare", *runs, "--out", str(tmp_path / "cmp")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert_no_formula_cells(report_csv_files(tmp_path / "cmp"))
    assert "'=1+1" in (tmp_path / "cmp" / "ranks.csv").read_text(encoding="utf-8")


def test_report_svgs_are_valid_xml(scored):
    report, _ = scored
    figures = sorted(report.glob("*.svg"))
    assert {figure.name for figure in figures} == {"roc.svg", "reliability.svg", "maps.svg"}
    for figure in figures:
        ElementTree.parse(figure)  # raises on a control character


@pytest.mark.cli
def test_an_error_names_an_image_as_written(tmp_path):
    store = write_hostile_store(tmp_path / "store.zarr", model="m", ids={3: "[bold]evil"})
    probs = zarr.open_group(store, mode="r+")["probs"]
    image = probs[3]
    image[0, 0, 0, 2, 2] = np.nan
    probs[3] = image
    result = run_cli("inspect", str(store), "--check-values")
    assert result.returncode == 2
    assert "'[bold]evil'" in result.stderr
    assert "Traceback" not in result.stderr


def nest(store: Path, depth: int) -> None:
    """Give the store's group an attribute of lists ``depth`` deep, written straight into ``zarr.json``."""
    metadata = store / "zarr.json"
    text = metadata.read_text()
    nested = "[" * depth + "]" * depth
    metadata.write_text(text.replace('"attributes": {', f'"attributes": {{"deep": {nested}, ', 1))


@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_attributes_are_refused_in_one_line(hostile, tmp_path, depth):
    import shutil

    store = tmp_path / "deep.zarr"
    shutil.copytree(hostile, store)
    nest(store, depth)
    result = runner.invoke(app, ["score", str(store), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1  # CliRunner: main() turns the UQEvalError into exit 2 and one line
    message = str(result.exception)
    assert type(result.exception).__name__ == "UQEvalError", message
    assert "deep.zarr" in message and "nested" in message
    assert not (tmp_path / "report").exists()


@pytest.mark.cli
def test_deeply_nested_metadata_exits_2_with_one_line(hostile, tmp_path):
    import shutil

    store = tmp_path / "deep.zarr"
    shutil.copytree(hostile, store)
    nest(store, 100_000)
    result = run_cli("score", str(store), "--out", str(tmp_path / "report"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "deep.zarr" in result.stderr and "nested too deeply" in result.stderr


def test_a_lone_surrogate_in_an_attribute_is_kept_as_its_escape(tmp_path):
    store = write_hostile_store(tmp_path / "store.zarr", model="a\ud800b")
    out = tmp_path / "report"
    result = runner.invoke(app, ["score", str(store), "--out", str(out), "--no-plots", "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"]["model"] == "a\ud800b"
    assert json.loads((out / "scores.json").read_bytes().decode("utf-8"))["model"]["model"] == "a\ud800b"


def test_a_huge_model_name_is_kept_once_in_scores_json(tmp_path):
    name = "M" * 1_000_000
    store = write_hostile_store(tmp_path / "store.zarr", model=name)
    out = tmp_path / "report"
    result = runner.invoke(app, ["score", str(store), "--out", str(out), "--no-plots"], env=WIDE)
    assert result.exit_code == 0, result.output
    raw = (out / "scores.json").read_bytes()
    assert len(name) < len(raw) < len(name) + 200_000  # the name once, in the provenance
    document = json.loads(raw)
    assert document["provenance"]["store_attributes"]["model"] == name
    assert len(document["model"]["model"]) <= 200 and "…" in document["model"]["model"]
    assert all(len(line) < 2000 for line in (out / "images.csv").read_text().splitlines())
