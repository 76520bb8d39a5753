"""The report folder that :func:`uqeval.save_report` writes: ``entanglement.csv`` beside
``metrics.csv``, and the provenance in ``scores.json``."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import math
import os
from datetime import datetime

import pandas
import pytest

import uqeval
from uqeval.ownership import REPORT_MARK
from uqeval.report.scores_file import read_scores
from uqeval.results import ENTANGLEMENT_COLUMNS, METRIC_COLUMNS


@pytest.fixture(scope="module")
def scores(synthetic_store) -> uqeval.Scores:
    return uqeval.score(synthetic_store("disentangled"), aggregations=("border", "mean"))


@pytest.fixture(scope="module")
def report(scores, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    written = uqeval.save_report(scores, folder, plots=False)
    return folder, written


def read_frame(path) -> pandas.DataFrame:
    """A report CSV as pandas reads it, an empty cell (undefined value) as NaN."""
    return pandas.read_csv(path, keep_default_na=False, na_values=[""])


def test_entanglement_csv_is_written_beside_metrics_csv(report):
    folder, written = report
    names = [path.name for path in written]
    assert names == ["scores.json", "metrics.csv", "entanglement.csv", "images.csv", "fitted.json", "report.html"]
    # No temporary file left; the mark of a complete report (with the list of files) beside them.
    assert sorted(path.name for path in folder.iterdir()) == sorted([*names, REPORT_MARK])
    header = (folder / "entanglement.csv").read_text().splitlines()[0]
    assert header == ",".join(ENTANGLEMENT_COLUMNS)
    assert (folder / "metrics.csv").read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)


def test_entanglement_csv_rows_equal_the_dataframe(report, scores):
    folder, _ = report
    frame = read_frame(folder / "entanglement.csv")
    expected = scores.entanglement_dataframe()
    assert (
        len(frame) == len(scores.entanglement) == 16
    )  # 4 tasks × (id, blur, noise, ood) less OODD on id, plus FD on all
    pandas.testing.assert_frame_equal(frame, expected, check_dtype=False, check_exact=True)
    # Full precision: the csv module's text parses back to the very floats.
    with open(folder / "entanglement.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for got, want in zip(rows, scores.entanglement, strict=True):
        for column in ENTANGLEMENT_COLUMNS[:4]:
            assert got[column] == want[column]
        for column in ("u_correct", "u_wrong", "delta"):
            assert float(got[column]) == want[column]


def test_an_undefined_delta_is_an_empty_cell(scores, tmp_path):
    rows = [dict(row) for row in scores.entanglement]
    rows[0]["delta"] = math.nan
    undefined = dataclasses.replace(scores, entanglement=rows)
    uqeval.save_report(undefined, tmp_path, plots=False)
    lines = (tmp_path / "entanglement.csv").read_text().splitlines()
    assert lines[1].endswith(",") and lines[1].count(",") == len(ENTANGLEMENT_COLUMNS) - 1
    frame = read_frame(tmp_path / "entanglement.csv")
    assert math.isnan(frame.loc[0, "delta"])
    pandas.testing.assert_frame_equal(frame, undefined.entanglement_dataframe(), check_dtype=False)


def test_entanglement_csv_is_replaced_atomically(scores, tmp_path, monkeypatch):
    """A write that fails (the disk is full) raises the documented UQEvalError, leaves the
    previous report whole and no temporary file or folder behind."""
    folder = tmp_path / "report"
    uqeval.save_report(scores, folder, plots=False)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    replace = os.replace

    def fail_on_entanglement(source, target, *args, **kwargs):
        if os.fspath(target).endswith("entanglement.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_on_entanglement)
    with pytest.raises(uqeval.UQEvalError, match=f"^{folder}: cannot write the report \\(No space left on device\\)"):
        uqeval.save_report(scores, folder, plots=False)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["report"]


def test_scores_json_in_the_report_carries_the_provenance(report, scores, synthetic_store):
    folder, _ = report
    content = json.loads((folder / "scores.json").read_text())
    assert content == scores.to_dict()
    provenance = content["provenance"]
    assert provenance["uqeval"] == uqeval.__version__
    assert datetime.fromisoformat(provenance["created"]).tzinfo is not None
    store = synthetic_store("disentangled")
    assert content["store"] == str(store.resolve())
    assert provenance["store_attributes"]["model"] == content["model"]["model"] == "synthetic-disentangled"
    assert provenance["store_attributes"]["scenario"] == "disentangled"
    assert content["conventions"]["aggregation"] == "border"
    saved = read_scores(folder)
    assert saved.provenance == provenance
