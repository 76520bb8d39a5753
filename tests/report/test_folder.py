"""A report folder is replaced whole (:mod:`uqeval.report.folder`): never old figures
beside new numbers, never a mix of two runs, the old report kept when a run fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

import uqeval
from uqeval.owners import OWNER_FILE, this_owner
from uqeval.ownership import REPORT_MARK
from uqeval.report import folder as report_folder
from uqeval.report import plots


@pytest.fixture(scope="module")
def scores(synthetic_store) -> uqeval.Scores:
    return uqeval.score(synthetic_store("disentangled"))


@pytest.fixture(scope="module")
def other_scores(synthetic_store) -> uqeval.Scores:
    """Scores whose scores.json differs from :func:`scores`'s."""
    return uqeval.score(synthetic_store("disentangled"), aggregations=("border", "mean"))


def contents(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def siblings(folder) -> list[str]:
    """What a run left beside the report folder."""
    return sorted(path.name for path in folder.parent.iterdir() if path != folder)


def assert_whole(folder) -> list[str]:
    """The folder holds exactly the files its mark lists; returns them."""
    mark = json.loads((folder / REPORT_MARK).read_text())
    assert mark["complete"] is True
    assert sorted(path.name for path in folder.iterdir()) == sorted([*mark["files"], REPORT_MARK])
    return mark["files"]


def test_a_report_without_plots_leaves_no_old_figures(scores, tmp_path):
    folder = tmp_path / "report"
    uqeval.save_report(scores, folder)
    assert (folder / "roc.png").exists()
    uqeval.save_report(scores, folder, plots=False)
    assert not [path.name for path in folder.iterdir() if path.suffix in (".png", ".svg")]
    assert assert_whole(folder) == sorted(
        ["scores.json", "metrics.csv", "entanglement.csv", "images.csv", "fitted.json", "report.html"]
    )
    assert siblings(folder) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_a_run_stopped_while_plotting_leaves_the_old_report_whole(
    scores, other_scores, tmp_path, monkeypatch, interrupt
):
    folder = tmp_path / "report"
    uqeval.save_report(scores, folder)
    before = contents(folder)

    def stopped(*args, **kwargs):
        raise interrupt()

    monkeypatch.setattr(plots, "maps_figure", stopped)
    with pytest.raises(interrupt):
        uqeval.save_report(other_scores, folder)
    assert contents(folder) == before
    assert siblings(folder) == []


def test_two_runs_on_one_folder_end_whole(scores, other_scores, tmp_path):
    """One run plots, the other does not; whichever finishes last wins, whole."""
    folder = tmp_path / "report"
    errors = []

    def run(chosen, with_plots):
        try:
            uqeval.save_report(chosen, folder, plots=with_plots)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(scores, True)),
        threading.Thread(target=run, args=(other_scores, False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    files = assert_whole(folder)
    plotted = "roc.png" in files
    expected = scores if plotted else other_scores
    assert json.loads((folder / "scores.json").read_text()) == json.loads(json.dumps(expected.to_dict()))
    assert siblings(folder) == []


def test_a_report_put_in_place_between_the_renames_is_replaced_in_turn(scores, other_scores, tmp_path, monkeypatch):
    """The race of two runs, made to happen: run B puts its report in place while run A
    has moved the old one aside; A's rename then fails and A replaces B's report."""
    folder = tmp_path / "report"
    uqeval.save_report(scores, folder)
    rename = os.rename
    raced = []

    def racing_rename(source, target):
        if os.fspath(target) == os.fspath(folder) and ".uqeval-new-" in os.fspath(source) and not raced:
            raced.append(source)
            monkeypatch.setattr(report_folder.os, "rename", rename)  # run B renames normally
            uqeval.save_report(scores, folder, plots=True)
            monkeypatch.setattr(report_folder.os, "rename", racing_rename)
        return rename(source, target)

    monkeypatch.setattr(report_folder.os, "rename", racing_rename)
    uqeval.save_report(other_scores, folder, plots=False)
    assert raced
    assert "roc.png" not in assert_whole(folder)  # run A's report, whole
    assert json.loads((folder / "scores.json").read_text()) == json.loads(json.dumps(other_scores.to_dict()))
    assert siblings(folder) == []


def test_the_leftovers_of_a_killed_run_are_removed_by_the_next(scores, tmp_path):
    folder = tmp_path / "report"
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    stale = tmp_path / ".report.uqeval-new-0123456789ab"
    stale.mkdir()
    (stale / "scores.json").write_text("{}")
    (stale / OWNER_FILE).write_text(json.dumps({**this_owner(), "pid": gone}))
    running = tmp_path / ".report.uqeval-new-ba9876543210"  # another run, still writing
    running.mkdir()
    (running / OWNER_FILE).write_text(json.dumps(this_owner()))
    uqeval.save_report(scores, folder, plots=False)
    assert siblings(folder) == [running.name]


@pytest.mark.parametrize("save", ["report", "comparison"])
def test_a_folder_uqeval_did_not_write_is_refused_and_kept(scores, synthetic_store, tmp_path, save):
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    uqeval.save_report(scores, runs[0], plots=False)
    uqeval.save_report(uqeval.score(synthetic_store("disentangled", seed=1)), runs[1], plots=False)
    comparison = uqeval.compare(runs)
    folder = tmp_path / "user" / "thesis"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("my thesis\n")
    with pytest.raises(uqeval.UQEvalError, match=f"^{folder}: .*uqeval replaces only a"):
        if save == "report":
            uqeval.save_report(scores, folder, plots=False)
        else:
            uqeval.save_comparison(comparison, folder)
    assert contents(folder) == {"thesis.tex": b"my thesis\n"}
    assert siblings(folder) == []
