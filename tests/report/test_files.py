"""CSV text of :mod:`uqeval.report.files`: what a spreadsheet opens is data, never a formula."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from uqeval.report.files import csv_text, json_bytes, write_json

FORMULAS = [
    '=HYPERLINK("https://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
]


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("formula", FORMULAS)
def test_text_cells_that_start_like_a_formula_get_a_quote(formula):
    rows = cells(csv_text([{"image": formula, "domain": formula, "value": 0.5}], ["image", "domain", "value"]))
    assert rows[1] == ["'" + formula, "'" + formula, "0.5"]


def test_numbers_stay_numbers():
    row = {"value": -0.25, "count": -3, "missing": math.nan, "id": "-7", "seed": None}
    rows = cells(csv_text([row], list(row)))
    assert rows[1] == ["-0.25", "-3", "", "-7", ""]


def test_control_characters_are_written_escaped():
    row = {"image": "a\x1b[31mb\x00", "domain": "\tlead", "role": "two\nlines"}
    rows = cells(csv_text([row], list(row)))
    assert rows[1] == ["a\\x1b[31mb\\x00", "\\tlead", "two\\nlines"]


def test_ordinary_text_is_unchanged():
    row = {"image": "id-001", "domain": "blur", "role": "test", "aggregation": "patch_max"}
    assert csv_text([row], list(row)) == "image,domain,role,aggregation\nid-001,blur,test,patch_max\n"


def test_json_keeps_a_lone_surrogate_as_its_escape(tmp_path):
    """A store's JSON metadata can hold ``"\\ud800"``, which UTF-8 cannot encode."""
    path = write_json(tmp_path / "scores.json", {"model": "a\ud800b", "delta": "Δ"})
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8
    assert b"a\\ud800b" in raw and "Δ".encode() in raw
    assert json.loads(raw) == {"model": "a\ud800b", "delta": "Δ"}
    assert json_bytes({"model": "a\ud800b"}) == b'{\n  "model": "a\\ud800b"\n}\n'
