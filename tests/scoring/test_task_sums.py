"""Tasks as plugins: a task's own per-image sums, through the engine, for images and
volumes read in z-slabs, and the errors a broken task gives.

The example plugin's QUBIQ task (``examples/uqeval-plugin-example``) is registered in
process and checked against an independent recomputation from the store's arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import uqeval
import uqeval.plugins
from uqeval.plugins import LOAD_PLUGINS_ENV
from uqeval.report.tables import score_tables

EXAMPLE_SOURCE = Path(__file__).resolve().parents[2] / "examples" / "uqeval-plugin-example" / "src"


@pytest.fixture
def manager(monkeypatch):
    """A fresh plugin manager with no entry point loaded; forgotten after the test."""
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")
    uqeval.plugins.reset_plugin_manager()
    yield uqeval.plugins.plugin_manager()
    uqeval.plugins.reset_plugin_manager()


@pytest.fixture
def example(manager, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE_SOURCE))
    import uqeval_plugin_example

    manager.register(uqeval_plugin_example)
    yield uqeval_plugin_example
    sys.modules.pop("uqeval_plugin_example", None)


def qubiq_reference(store: Path) -> dict[str, float]:
    """Per split, the mean over test images of the thresholded soft Dice, from the raw arrays."""
    cube = uqeval.open_cube(store)
    probabilities = cube["probs"].values.astype(np.float64)  # (image, eu, au, class, ...)
    labels = cube["labels"].values
    domains, roles = cube["domain"].values.astype(str), cube["role"].values.astype(str)
    per_image = []
    for index in range(len(probabilities)):
        foreground = 1.0 - probabilities[index].mean(axis=(0, 1))[0]
        raters = labels[index]
        valid = (raters >= 0).all(axis=0)
        soft = (raters > 0).mean(axis=0)
        dices = []
        for threshold in np.arange(1, 10) / 10:
            p = (foreground > threshold) & valid
            q = (soft > threshold) & valid
            total = p.sum() + q.sum()
            dices.append(1.0 if total == 0 else 2 * (p & q).sum() / total)
        per_image.append(np.mean(dices))
    per_image = np.array(per_image)
    test = roles == "test"
    splits = {"id": test & (domains == "id"), "ood": test & (domains != "id")}
    for name in sorted(set(domains[test]) - {"id"}):
        splits[name] = test & (domains == name)
    return {name: float(per_image[chosen].mean()) for name, chosen in splits.items()}


def qubiq_values(scores) -> dict[str, float]:
    return {row["split"]: row["value"] for row in scores.results if row["task"] == "qubiq"}


def test_a_plugin_task_is_scored_like_a_builtin_and_matches_a_reference(example, synthetic_store):
    store = synthetic_store("disentangled", n_images=12, size=16, eu=2, au=2, raters=3)
    assert list(uqeval.plugins.plugin_manager().tasks()) == ["oodd", "amb", "cal", "fd", "pq", "qubiq"]
    scores = uqeval.score(store)  # every task found, the plugin's among them
    assert {row["task"] for row in scores.results} >= {"oodd", "amb", "cal", "fd", "pq", "qubiq"}
    found, expected = qubiq_values(scores), qubiq_reference(store)
    assert found.keys() == expected.keys()
    for split in expected:
        assert found[split] == pytest.approx(expected[split], abs=1e-12), split
    # No Δ for a task without correct and wrong measures; the built-ins' rows are those of a run without it.
    assert "qubiq" not in {row["task"] for row in scores.entanglement}
    alone = uqeval.score(store, tasks=["oodd", "amb", "cal", "fd", "pq"])
    assert [row for row in scores.results if row["task"] != "qubiq"] == alone.results
    # The terminal shows the task's table, one row per measure of its rows.
    table = next(table for table in score_tables(scores) if str(table.title).startswith("Qubiq"))
    assert table.title == "Qubiq: SOFT_DICE" and table.row_count == 1
    # Resampling images carries the task's sums along.
    taken = scores.images.take(np.array([2, 0]))
    np.testing.assert_array_equal(taken.tasks["qubiq"]["dice_sums"], scores.images.tasks["qubiq"]["dice_sums"][[2, 0]])


def test_a_plugin_task_on_volumes_read_in_slabs_equals_the_volumes_held_whole(example, synthetic_store):
    store = synthetic_store("disentangled", n_images=6, size=12, eu=2, au=2, raters=2, shape=(8, 12, 12))
    whole = uqeval.score(store, tasks=["qubiq"])
    # A batch smaller than one volume: each is read in z-slabs and its sums added up.
    slabs = uqeval.score(store, tasks=["qubiq"], batch_bytes=2 * 12 * 12 * 2 * 2 * 2 * 4)
    assert whole.images.tasks["qubiq"]["dice_sums"].shape == (6, 9, 3)
    np.testing.assert_array_equal(slabs.images.tasks["qubiq"]["dice_sums"], whole.images.tasks["qubiq"]["dice_sums"])
    expected = qubiq_reference(store)
    for split, value in qubiq_values(slabs).items():
        assert value == pytest.approx(expected[split], abs=1e-12)


def test_a_task_needing_labels_is_skipped_with_a_note_on_a_store_without(example, synthetic_store):
    store = synthetic_store("disentangled", n_images=8, size=12, eu=2, au=2, raters=2)
    scores = uqeval.score(uqeval.open_cube(store).drop_vars("labels"), tasks=["oodd", "qubiq"])
    assert "qubiq" not in {row["task"] for row in scores.results}
    assert any(note.kind == "skipped" and note.task == "qubiq" for note in scores.notes)


def broken_task(statistics, name="broken"):
    return uqeval.Task(
        name, "broken", "value", None, (), False, needs_labels=False, needs_ood=False,
        rows=lambda tables: None, statistics=statistics,
    )  # fmt: skip


class BrokenTasks:
    @staticmethod
    @uqeval.hookimpl
    def uqeval_tasks():
        return {
            "raises": broken_task(lambda inputs: 1 / 0, "raises"),
            "ragged": broken_task(lambda inputs: {"count": np.zeros(len(inputs.pred) + 1)}, "ragged"),
            "misnamed": broken_task(None, "other"),
            "no_rows": uqeval.Task("no_rows", "t", "m", None, (), False, needs_labels=False, needs_ood=False),
        }


def test_a_broken_task_gives_one_clear_error_naming_it(manager, synthetic_store):
    store = synthetic_store("disentangled", n_images=8, size=12, eu=2, au=2, raters=2)
    manager.register(BrokenTasks)
    assert set(manager.tasks()) == {"oodd", "amb", "cal", "fd", "pq", "raises", "ragged"}
    problems = [problem.error for problem in manager.problems]
    assert any("'misnamed' is named 'other'" in error for error in problems)
    assert any("'no_rows' has no rows function" in error for error in problems)
    with pytest.raises(uqeval.UQEvalError, match=r"task 'raises': its statistics failed: ZeroDivisionError"):
        uqeval.score(store, tasks=["raises"])
    with pytest.raises(
        uqeval.UQEvalError, match=r"task 'ragged': statistic 'count' has shape \(9,\); expected one row"
    ):
        uqeval.score(store, tasks=["ragged"])
    with pytest.raises(uqeval.UQEvalError, match=r"unknown task\(s\) nope; choose from oodd, amb, cal, fd, pq, raises"):
        uqeval.score(store, tasks=["nope"])
