"""The one rule for every overwrite (:func:`uqeval.check_replaceable`): only what uqeval wrote, or an empty folder."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import uqeval
from uqeval import UQEvalError, check_replaceable
from uqeval.ownership import REPORT_MARK, UNMARKED_REPORT_FILES


def victim(folder):
    """A user's folder: a thesis and a subfolder of data."""
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("1,2\n")
    return folder


def cube_store(path):
    probs = np.full((2, 2, 2, 2, 4, 4), 0.5, dtype=np.float32)
    with uqeval.CubeWriter(path, n_classes=2, eu=2, au=2, height=4, width=4, raters=1) as writer:
        writer.append(probs, labels=np.zeros((2, 1, 4, 4), dtype=np.uint8), domain=["id", "blur"])
    return path


def refused(path, kind, *words):
    with pytest.raises(UQEvalError) as caught:
        check_replaceable(path, kind)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "uqeval replaces only" in message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.mark.parametrize("kind", ["cube", "scores", "comparison"])
def test_a_missing_path_or_an_empty_folder_may_be_replaced(tmp_path, kind):
    check_replaceable(tmp_path / "absent", kind)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", kind)


@pytest.mark.parametrize("kind", ["cube", "scores", "comparison"])
def test_a_users_folder_is_refused(tmp_path, kind):
    folder = victim(tmp_path / "victim")
    refused(folder, kind, "not a")
    assert (folder / "thesis.tex").exists() and (folder / "data" / "x.csv").exists()


@pytest.mark.parametrize("kind", ["cube", "scores"])
def test_a_file_a_link_and_the_working_folder_are_refused(tmp_path, monkeypatch, kind):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    refused(file, kind, "exists and is not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    refused(tmp_path / "link", kind, "symbolic link")
    inside = tmp_path / "empty"
    monkeypatch.chdir(inside)
    refused(inside, kind, "working folder")  # empty, but the process works in it
    refused(tmp_path, kind, "working folder")  # holds the working folder
    with pytest.raises(UQEvalError, match=r"^\.: is the working folder"):
        check_replaceable(".", kind)


def test_a_store_written_by_cube_writer_may_be_replaced_and_nothing_beside(tmp_path):
    store = cube_store(tmp_path / "cube.zarr")
    check_replaceable(store, "cube")
    (store / "README.txt").write_text("my notes\n")
    refused(store, "cube", "holds README.txt, which uqeval does not write into a cube store")


def test_a_zarr_store_of_another_tool_is_refused(tmp_path):
    store = cube_store(tmp_path / "cube.zarr")
    metadata = json.loads((store / "zarr.json").read_text())
    del metadata["attributes"]["uqeval_writer"]
    (store / "zarr.json").write_text(json.dumps(metadata))
    refused(store, "cube", "no record of uqeval's writer")
    (store / "zarr.json").write_text("[" * 100_000)  # unreadable: refused, not a RecursionError
    refused(store, "cube", "no readable zarr.json")


def test_a_report_is_recognised_by_its_mark_or_by_its_files(tmp_path):
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "scores.json").write_text("{}")
    (marked / "extra.csv").write_text("")
    (marked / REPORT_MARK).write_text(json.dumps({"kind": "scores", "files": ["scores.json", "extra.csv"]}))
    check_replaceable(marked, "scores")
    refused(marked, "comparison", "is a score report, not a comparison report")
    (marked / "mine.txt").write_text("")
    refused(marked, "scores", "holds mine.txt")
    # A report of an earlier version, with a leftover spill and a half-written file.
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    for name in UNMARKED_REPORT_FILES["scores"]:
        (unmarked / name).write_text("")
    (unmarked / "uqeval-spill-abc123").mkdir()
    (unmarked / ".metrics.csv.0123456789ab.tmp").write_text("")
    check_replaceable(unmarked, "scores")
    refused(unmarked, "comparison", "no comparison.json")
    (unmarked / "draft").mkdir()
    refused(unmarked, "scores", "holds draft")


def test_an_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match=re.escape("kind must be one of cube, scores, comparison")):
        check_replaceable(tmp_path, "report")


def test_the_messages_name_a_few_foreign_entries(tmp_path):
    store = cube_store(tmp_path / "cube.zarr")
    for number in range(5):
        (store / f"extra-{number}").write_text("")
    message = refused(store, "cube")
    assert "extra-0, extra-1, extra-2 and 2 more" in message
    assert os.path.exists(store / "extra-4")
