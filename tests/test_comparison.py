"""uqeval.compare (in uqeval.comparison): loading runs, Table-2 ranks, seed pooling, files, tables and Fig. 7."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from scipy import stats

import uqeval
from uqeval import save_comparison
from uqeval.comparison import (
    COMPARISON_SCHEMA,
    Comparison,
    Run,
    compare,
    load_run,
    mean_interval,
    rank_values,
)
from uqeval.errors import UQEvalError
from uqeval.ownership import REPORT_MARK
from uqeval.precision import RANK_TOLERANCE
from uqeval.report.compare_plots import DELTA_ZERO_GID, collapse_figure, entanglement_figure
from uqeval.report.scores_file import SavedScores, read_scores
from uqeval.report.tables import comparison_tables, format_value

# (task, split) -> group -> (u_correct, delta) for seed 0 (and 2); u_wrong is made up.
BASE = {
    ("oodd", "ood"): {"A": (0.9, 0.1), "B": (0.8, 0.3), "C": (0.7, 0.2)},
    # a single OOD domain: never ranked (its order is the reverse of the pooled one)
    ("oodd", "blur"): {"A": (0.1, 0.9), "B": (0.5, 0.5), "C": (0.9, 0.1)},
    ("amb", "id"): {"A": (0.5, 0.2), "B": (0.5, 0.1), "C": (0.3, 0.0)},
    ("amb", "ood"): {"A": (0.4, 0.1), "B": (0.2, 0.1), "C": (0.6, 0.1)},
    ("cal", "id"): {"A": (0.05, 0.5), "B": (0.10, 0.4), "C": (0.02, 0.3)},
    ("cal", "ood"): {"A": (0.08, -0.1), "B": (0.06, 0.2), "C": (0.20, 0.0)},
}


def values_for(seed: int) -> dict:
    values = {key: dict(by_group) for key, by_group in BASE.items()}
    if seed == 1:  # A and C swap their OODD performance
        values[("oodd", "ood")]["A"] = (0.7, 0.1)
        values[("oodd", "ood")]["C"] = (0.9, 0.2)
    if seed == 2:  # A gets the best AMB ood Δ; B and C tie
        values[("amb", "ood")] = {"A": (0.4, 0.3), "B": (0.2, 0.1), "C": (0.6, 0.1)}
    return values


def scores_doc(
    group: str | None,
    seed: int | None,
    rows: list[tuple[str, str, float | None, float | None]] = (),
    collapse: dict[str, float | None] | None = None,
    **model: object,
) -> dict:
    """A ``uqeval.scores/1`` document; ``rows`` are ``(task, split, u_correct, delta)``."""
    wrong = {"oodd": "au", "amb": "eu", "cal": "au"}
    entanglement = []
    for task, split, u_correct, delta in rows:
        u_wrong = None if u_correct is None else (u_correct + 0.01 if task == "cal" else u_correct - 0.1)
        entanglement.append(
            {
                "task": task,
                "split": split,
                "correct": {"oodd": "eu", "amb": "au", "cal": "tu"}.get(task, "tu"),
                "wrong": wrong.get(task, "au"),
                "u_correct": u_correct,
                "u_wrong": u_wrong,
                "delta": delta,
            }
        )
    collapse = collapse if collapse is not None else {"id": 0.1, "ood": 0.2}
    return {
        "schema": "uqeval.scores/1",
        "store": "/data/model.zarr",
        "model": {"au_method": "ssn", "eu_method": "ensemble", "model": group, "dataset": "lidc", "seed": seed} | model,
        "conventions": {"aggregation": "border"},
        "n_images": {"id": 10, "blur": 10},
        "results": [],
        "entanglement": entanglement,
        "collapse": [
            {"split": split, "mean_au": 0.1, "mean_eu": None if ratio is None else 0.1 * ratio, "eu_over_au": ratio}
            for split, ratio in collapse.items()
        ],
        "notes": [],
    }


def write_run(folder: Path, document: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(json.dumps(document))
    return folder


def study_doc(group: str, seed: int) -> dict:
    rows = [(task, split, *by_group[group]) for (task, split), by_group in values_for(seed).items()]
    collapse = {"id": 0.07 + 0.01 * seed, "ood": None if (group == "C" and seed == 0) else 0.1 + 0.1 * seed}
    return scores_doc(group, seed, rows, collapse)


@pytest.fixture
def study_folders(tmp_path: Path) -> list[Path]:
    return [write_run(tmp_path / f"{group}-seed{seed}", study_doc(group, seed)) for group in "ABC" for seed in range(3)]


@pytest.fixture
def study(study_folders: list[Path]):
    return compare(study_folders)


def half_width(values: list[float]) -> float:
    """Half the width of scipy's Student-t 95 % interval for the mean."""
    values = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return (high - low) / 2


# Hand-computed per-seed overall ranks (see BASE): performance and entanglement.
PERFORMANCE = {"A": [19 / 12, 27 / 12, 19 / 12], "B": [25 / 12] * 3, "C": [28 / 12, 20 / 12, 28 / 12]}
ENTANGLEMENT = {"A": [26 / 12, 26 / 12, 24 / 12], "B": [18 / 12, 18 / 12, 19 / 12], "C": [28 / 12, 28 / 12, 29 / 12]}


# ---------------------------------------------------------------- ranking


def split_rank(comparison, seed, group, task, split) -> dict:
    (row,) = [
        r
        for r in comparison.split_ranks
        if (r["seed"], r["group"], r["task"], r["split"]) == (seed, group, task, split)
    ]
    return row


@pytest.mark.parametrize(
    ("task", "split", "performance", "entanglement"),
    [
        ("oodd", "ood", {"A": 1, "B": 2, "C": 3}, {"A": 3, "B": 1, "C": 2}),
        ("amb", "id", {"A": 1.5, "B": 1.5, "C": 3}, {"A": 1, "B": 2, "C": 3}),  # tie in NCC
        ("amb", "ood", {"A": 2, "B": 3, "C": 1}, {"A": 2, "B": 2, "C": 2}),  # three-way tie in Δ
        ("cal", "id", {"A": 2, "B": 3, "C": 1}, {"A": 1, "B": 2, "C": 3}),  # lowest ACE is best
        ("cal", "ood", {"A": 2, "B": 1, "C": 3}, {"A": 3, "B": 1, "C": 2}),
    ],
)
def test_ranks_per_task_and_split(study, task, split, performance, entanglement):
    for group in "ABC":
        row = split_rank(study, 0, group, task, split)
        assert row["performance_rank"] == performance[group]
        assert row["entanglement_rank"] == entanglement[group]
        assert row["n_ranked"] == 3


def test_only_pooled_splits_are_ranked(study):
    assert {(r["task"], r["split"]) for r in study.split_ranks} == {
        ("oodd", "ood"),
        ("amb", "id"),
        ("amb", "ood"),
        ("cal", "id"),
        ("cal", "ood"),
    }
    assert len(study.split_ranks) == 5 * 3 * 3


def test_overall_ranks_average_splits_then_tasks_then_seeds(study):
    assert study.groups == ["A", "B", "C"]  # sorted by mean performance rank
    for group in "ABC":
        row = study.rank(group)
        assert row["n_seeds"] == 3
        assert row["performance_rank"] == pytest.approx(np.mean(PERFORMANCE[group]))
        assert row["entanglement_rank"] == pytest.approx(np.mean(ENTANGLEMENT[group]))
        assert row["entanglement_interval"] == pytest.approx(half_width(ENTANGLEMENT[group]))
        if group == "B":
            assert row["performance_interval"] == 0.0  # the same rank at every seed
        else:
            assert row["performance_interval"] == pytest.approx(half_width(PERFORMANCE[group]))


def test_per_task_ranks(study):
    oodd = {"A": [1, 3, 1], "B": [2, 2, 2], "C": [3, 1, 3]}
    for group, ranks in oodd.items():
        row = study.rank(group)
        assert row["performance_rank_oodd"] == pytest.approx(np.mean(ranks))
        assert row["entanglement_rank_cal"] == pytest.approx({"A": 2.0, "B": 1.5, "C": 2.5}[group])
    assert study.rank("A")["performance_rank_amb"] == pytest.approx(1.75)
    assert study.rank("A")["performance_interval_oodd"] == pytest.approx(half_width(oodd["A"]))
    assert study.tasks == ("oodd", "amb", "cal")


def test_rank_values_ties_direction_and_nan():
    assert rank_values([0.9, 0.7, 0.9]).tolist() == [1.5, 3.0, 1.5]
    assert rank_values([0.05, 0.02, 0.05], lower_is_better=True).tolist() == [2.5, 1.0, 2.5]
    assert rank_values([np.nan, 0.5, 0.7]).tolist() == [3.0, 2.0, 1.0]
    assert rank_values([np.nan, 0.5, np.nan], lower_is_better=True).tolist() == [2.5, 1.0, 2.5]
    assert rank_values([np.nan, np.nan]).tolist() == [1.5, 1.5]
    assert rank_values([]).tolist() == []


def test_undefined_values_rank_last_with_a_note(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", None, [("oodd", "ood", None, 0.1), ("cal", "id", 0.05, None)])),
        write_run(tmp_path / "b", scores_doc("B", None, [("oodd", "ood", 0.2, 0.2), ("cal", "id", 0.50, 0.3)])),
        write_run(tmp_path / "c", scores_doc("C", None, [("oodd", "ood", 0.6, 0.3), ("cal", "id", 0.10, 0.4)])),
    ]
    comparison = compare(folders)
    assert split_rank(comparison, None, "A", "oodd", "ood")["performance_rank"] == 3  # NaN AUROC last
    assert split_rank(comparison, None, "B", "oodd", "ood")["performance_rank"] == 2
    assert split_rank(comparison, None, "A", "cal", "id")["performance_rank"] == 1  # ACE 0.05 is best
    assert split_rank(comparison, None, "A", "cal", "id")["entanglement_rank"] == 3  # NaN Δ last
    assert any("undefined and ranked last" in note and "A" in note for note in comparison.notes)


def test_a_missing_task_is_not_ranked_last(tmp_path):
    full = [("oodd", "ood", 0.9, 0.3), ("amb", "id", 0.1, 0.1)]
    folders = [
        write_run(tmp_path / "a", scores_doc("A", None, full)),
        write_run(tmp_path / "b", scores_doc("B", None, [("oodd", "ood", 0.5, 0.1), ("amb", "id", 0.3, 0.2)])),
        write_run(tmp_path / "c", scores_doc("C", None, [("amb", "id", 0.2, 0.3)])),  # no OOD images
    ]
    comparison = compare(folders)
    assert split_rank(comparison, None, "A", "oodd", "ood")["n_ranked"] == 2
    assert comparison.rank("C")["performance_rank"] == 2.0  # AMB only
    assert math.isnan(comparison.rank("C")["performance_rank_oodd"])
    assert comparison.rank("A")["performance_rank"] == pytest.approx((1 + 3) / 2)


def test_unknown_tasks_are_pooled_not_ranked(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", None, [("oodd", "ood", 0.9, 0.3), ("new", "id", 0.5, 0.1)])),
        write_run(tmp_path / "b", scores_doc("B", None, [("oodd", "ood", 0.5, 0.1), ("new", "id", 0.6, 0.2)])),
    ]
    comparison = compare(folders)
    assert comparison.tasks == ("oodd",)
    assert comparison.point("A", "new", "id")["u_correct"] == 0.5
    assert any("new" in note and "not ranked" in note for note in comparison.notes)


# ---------------------------------------------------------------- intervals and pooling


@pytest.mark.parametrize("values", [[1.0, 2.0], [1.0, 2.0, 4.0], [0.3, 0.1, 0.7, 0.2, 0.9]])
def test_mean_interval_matches_scipy_t_interval(values):
    mean, half, n = mean_interval(values)
    assert n == len(values)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(half_width(values))
    assert half == pytest.approx(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def test_mean_interval_edge_cases():
    mean, half, n = mean_interval([0.4])
    assert (mean, n) == (0.4, 1) and math.isnan(half)
    mean, half, n = mean_interval([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)
    mean, half, n = mean_interval([1.0, np.nan, 3.0])
    assert (mean, n) == (2.0, 2) and half == pytest.approx(half_width([1.0, 3.0]))


def test_one_seed_gives_nan_intervals(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", 0, [("oodd", "ood", 0.9, 0.3)])),
        write_run(tmp_path / "b", scores_doc("B", 0, [("oodd", "ood", 0.5, 0.1)])),
    ]
    comparison = compare(folders)
    row = comparison.rank("A")
    assert row["n_seeds"] == 1 and row["performance_rank"] == 1.0
    assert math.isnan(row["performance_interval"]) and math.isnan(row["entanglement_interval"])
    assert math.isnan(comparison.point("A", "oodd", "ood")["delta_interval"])


def test_points_and_collapse_are_pooled_over_seeds(study):
    point = study.point("A", "oodd", "ood")
    assert point["n"] == 3
    assert point["u_correct"] == pytest.approx(np.mean([0.9, 0.7, 0.9]))
    assert point["u_correct_interval"] == pytest.approx(half_width([0.9, 0.7, 0.9]))
    assert point["u_wrong"] == pytest.approx(np.mean([0.8, 0.6, 0.8]))
    assert point["delta"] == pytest.approx(0.1) and point["delta_interval"] == pytest.approx(0.0)
    assert (point["metric"], point["correct"], point["wrong"]) == ("auroc", "eu", "au")
    assert study.point("B", "oodd", "blur")["u_correct"] == pytest.approx(0.5)  # domains are pooled too
    by_key = {(row["group"], row["split"]): row for row in study.collapse}
    assert by_key[("A", "id")]["eu_over_au"] == pytest.approx(0.08)
    assert by_key[("A", "id")]["eu_over_au_interval"] == pytest.approx(half_width([0.07, 0.08, 0.09]))
    c_ood = by_key[("C", "ood")]  # null at seed 0 is left out of the mean
    assert c_ood["n"] == 3 and c_ood["eu_over_au"] == pytest.approx(0.25)
    assert c_ood["eu_over_au_interval"] == pytest.approx(half_width([0.2, 0.3]))


# ---------------------------------------------------------------- errors and loading


def test_duplicate_group_and_seed_names_both_folders(tmp_path):
    first = write_run(tmp_path / "first", scores_doc("A", 3, [("oodd", "ood", 0.9, 0.3)]))
    second = write_run(tmp_path / "second", scores_doc("A", 3, [("oodd", "ood", 0.8, 0.3)]))
    with pytest.raises(UQEvalError, match="both model 'A' with seed 3") as error:
        compare([first, second])
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_duplicate_group_without_seed_is_an_error(tmp_path):
    first = write_run(tmp_path / "x", scores_doc("A", None))
    second = write_run(tmp_path / "y", scores_doc("A", None))
    with pytest.raises(UQEvalError, match="no seed"):
        compare([first, second])


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_runs(tmp_path, n):
    folders = [write_run(tmp_path / f"r{i}", scores_doc(f"G{i}", 0)) for i in range(n)]
    with pytest.raises(UQEvalError, match=f"at least 2 runs, got {n}"):
        compare(folders)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(UQEvalError, match="no such run folder") as error:
        load_run(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)
    (tmp_path / "empty").mkdir()
    written_by = r"scores\.json: missing; is .*empty a report folder written by `uqeval score`\?"
    with pytest.raises(UQEvalError, match=written_by):
        load_run(tmp_path / "empty")


def test_not_json_names_line_and_column(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "scores.json").write_text('{"schema": "uqeval.scores/1",\n  "model": oops}')
    with pytest.raises(UQEvalError, match=r"scores\.json: not JSON \(line 2, column 12"):
        load_run(tmp_path / "run")
    (tmp_path / "run" / "scores.json").write_bytes(b"\xff\xfe")
    with pytest.raises(UQEvalError, match="not JSON"):
        load_run(tmp_path / "run")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "uqeval.scores/2"}, "schema is 'uqeval.scores/2', expected 'uqeval.scores/1'"),
        ({"schema": None}, "schema is None, expected"),
        ({"entanglement": "x"}, "'entanglement' must be a list of objects"),
        ({"collapse": [1]}, r"collapse\[0\] must be an object"),
        ({"entanglement": [{"task": "oodd", "split": "ood"}]}, r"entanglement\[0\] misses key\(s\) 'u_correct'"),
        ({"collapse": [{"split": "id", "eu_over_au": "high"}]}, r"collapse\[0\]\.eu_over_au must be a number"),
        ({"model": [1]}, "'model' must be an object"),
        ({"model": {"seed": "zero"}}, "model.seed must be an integer or null, got 'zero'"),
        ({"model": {"seed": True}}, "model.seed must be an integer"),
    ],
)
def test_bad_documents(tmp_path, change, message):
    folder = write_run(tmp_path / "run", scores_doc("A", 0, [("oodd", "ood", 0.9, 0.3)]) | change)
    with pytest.raises(UQEvalError, match=message) as error:
        load_run(folder)
    assert str(folder / "scores.json") in str(error.value)


@pytest.mark.parametrize("key", ["schema", "entanglement", "collapse"])
def test_missing_keys(tmp_path, key):
    document = scores_doc("A", 0)
    del document[key]
    folder = write_run(tmp_path / "run", document)
    with pytest.raises(UQEvalError, match=f"missing key.*'{key}'"):
        load_run(folder)


def test_top_level_must_be_an_object(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UQEvalError, match=r"list\.json: expected a JSON object"):
        load_run(tmp_path / "list.json")


def test_load_run_reads_a_folder_or_the_file(tmp_path):
    folder = write_run(tmp_path / "ssn-run", scores_doc("ssn-ensemble", 2, [("oodd", "ood", 0.9, None)]))
    run = load_run(folder)
    assert (run.folder, run.group, run.seed, run.label) == (folder, "ssn-ensemble", 2, "ssn-ensemble (seed 2)")
    assert math.isnan(run.entanglement[0]["delta"])
    assert run.dataset == "lidc" and run.aggregation == "border"
    assert run.data["store"] == "/data/model.zarr"
    renamed = tmp_path / "elsewhere.json"
    renamed.write_text((folder / "scores.json").read_text())
    assert load_run(renamed).folder == tmp_path
    # The reader beside the writer: the checked document and the report folder.
    saved = read_scores(folder)
    where = saved.folder
    assert isinstance(saved, SavedScores) and where == folder
    assert saved.source == str(folder / "scores.json")
    assert saved.entanglement == run.scores.entanglement and saved.model["seed"] == 2


def test_run_from_dict_names_its_source(tmp_path):
    document = scores_doc("A", 1, [("oodd", "ood", 0.9, 0.3)])
    run = Run.from_dict(document, tmp_path / "r")
    assert (run.folder, run.group, run.seed, run.label) == (tmp_path / "r", "A", 1, "A (seed 1)")
    assert run.scores.source == str(tmp_path / "r" / "scores.json")
    with pytest.raises(UQEvalError, match=r"r/scores\.json: schema is 'x'"):
        Run.from_dict(document | {"schema": "x"}, tmp_path / "r")
    with pytest.raises(UQEvalError, match=r"^memory: schema is 'x'"):
        Run.from_dict(document | {"schema": "x"}, tmp_path / "r", source="memory")


def test_public_names():
    assert uqeval.compare is compare and uqeval.Comparison is Comparison
    assert uqeval.read_scores is read_scores


@pytest.mark.parametrize(
    ("model", "group", "seed"),
    [
        ({"model": "m", "au_method": "ssn", "eu_method": "dropout"}, "m", None),
        ({"model": None, "au_method": "ssn", "eu_method": "dropout", "seed": 4.0}, "ssn+dropout", 4),
        ({"model": "", "au_method": "ssn", "eu_method": None, "seed": "7"}, "folder-name", 7),
        (None, "folder-name", None),
    ],
)
def test_group_and_seed(tmp_path, model, group, seed):
    document = scores_doc(None, None)
    document["model"] = model
    run = load_run(write_run(tmp_path / "folder-name", document))
    assert (run.group, run.seed) == (group, seed)


def test_a_run_without_the_model_key(tmp_path):
    document = scores_doc(None, None)
    del document["model"]
    assert load_run(write_run(tmp_path / "bare", document)).group == "bare"


def test_notes_on_inconsistent_runs(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", 0, [("oodd", "ood", 0.9, 0.3)])),
        write_run(tmp_path / "b", scores_doc("B", 0, [("oodd", "ood", 0.5, 0.1)], dataset="chaksu")),
        write_run(tmp_path / "a1", scores_doc("A", 1, [("oodd", "ood", 0.5, 0.1)])),
    ]
    notes = compare(folders).notes
    assert any("different datasets" in note for note in notes)
    assert any("seed 1 has no run of B" in note for note in notes)
    assert any("seed 1 has a single run" in note for note in notes)


# ---------------------------------------------------------------- order invariance


def run_from(group: str, seed: int, values: list[float | None]) -> Run:
    tasks = [("oodd", "ood"), ("amb", "id"), ("amb", "ood"), ("cal", "id"), ("cal", "ood")]
    rows = [(task, split, values[2 * i], values[2 * i + 1]) for i, (task, split) in enumerate(tasks)]
    return Run.from_dict(scores_doc(group, seed, rows), Path(f"/runs/{group}-{seed}"))


@given(
    st.lists(
        st.lists(
            st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.5, 0.9]), st.floats(-1, 1)), min_size=10, max_size=10
        ),
        min_size=6,
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_ranks_do_not_depend_on_the_order_of_runs(values, random):
    runs = [run_from(group, seed, values[3 * seed + i]) for seed in range(2) for i, group in enumerate("XYZ")]
    shuffled = list(runs)
    random.shuffle(shuffled)
    assert compare(shuffled).to_dict() == compare(runs).to_dict()


# ---------------------------------------------------------------- files


def test_save_writes_every_file_atomically(study, tmp_path):
    out = tmp_path / "out" / "nested"
    written = save_comparison(study, out)
    names = {"comparison.json", "ranks.csv", "points.csv", "collapse.csv", "report.html"}
    names |= {f"{figure}.{suffix}" for figure in ("entanglement", "collapse") for suffix in ("png", "svg")}
    assert set(written) == names
    assert {path.name for path in out.iterdir()} == {*names, REPORT_MARK}  # no temporary file left behind
    assert (out / "entanglement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mode = (out / "ranks.csv").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    with (out / "ranks.csv").open() as handle:
        ranks = list(csv.DictReader(handle))
    assert [row["group"] for row in ranks] == ["A", "B", "C"]
    assert float(ranks[0]["performance_rank"]) == pytest.approx(np.mean(PERFORMANCE["A"]))
    with (out / "points.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(study.points)


def test_comparison_json_round_trips_with_null_for_nan(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", 0, [("oodd", "ood", 0.9, None)])),
        write_run(tmp_path / "b", scores_doc("B", 0, [("oodd", "ood", 0.5, 0.1)])),
    ]
    comparison = compare(folders)
    save_comparison(comparison, tmp_path / "out")
    text = (tmp_path / "out" / "comparison.json").read_text()
    assert "NaN" not in text
    document = json.loads(text)
    assert document == comparison.to_dict()
    assert document["schema"] == COMPARISON_SCHEMA
    assert document["ranks"][0]["performance_interval"] is None
    assert document["points"][0]["delta"] is None
    assert [run["group"] for run in document["runs"]] == ["A", "B"]
    with (tmp_path / "out" / "ranks.csv").open() as handle:
        assert next(csv.DictReader(handle))["performance_interval"] == ""


def test_save_into_an_unwritable_place(study, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UQEvalError, match=f"^{re.escape(str(blocker))}: exists and is not a folder; "):
        save_comparison(study, blocker)  # the library names no CLI flag
    with pytest.raises(UQEvalError, match="cannot write"):
        save_comparison(study, blocker / "below")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UQEvalError, match=str(locked)):
            save_comparison(study, locked)


# ---------------------------------------------------------------- figures and tables


def test_entanglement_figure_has_a_panel_per_task_and_split(study):
    figure = entanglement_figure(study)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["OODD · ood", "AMB · id", "AMB · ood", "CAL · id", "CAL · ood"]
    assert axes[0].get_ylabel() == "EU AUROC (correct)" and axes[0].get_xlabel() == "AU AUROC (wrong)"
    assert axes[1].get_ylabel() == "AU NCC (correct)" and axes[1].get_xlabel() == "EU NCC (wrong)"
    assert axes[3].get_ylabel() == "TU ACE (correct)" and axes[3].get_xlabel() == "min(AU, EU) ACE (wrong)"
    for ax in axes:
        (line,) = [line for line in ax.get_lines() if line.get_gid() == DELTA_ZERO_GID]
        assert line.get_linestyle() == "--"
        np.testing.assert_array_equal(line.get_xdata(), line.get_ydata())
        assert ax.get_xlim() == ax.get_ylim()
        assert {name for text in ax.texts for name in text.get_text().split(", ")} >= {"A", "B", "C"}
    assert any("lower is better" in text.get_text() for text in axes[3].texts)
    assert not any("lower is better" in text.get_text() for text in axes[0].texts)
    # each point sits at (U_wrong, U_correct) of its group
    a_point = study.point("A", "oodd", "ood")
    labelled = {text.get_text(): text.xy for text in axes[0].texts if text.get_text() in "ABC"}
    assert labelled["A"] == pytest.approx((a_point["u_wrong"], a_point["u_correct"]))


def test_entanglement_figure_only_shows_present_panels(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", 0, [("oodd", "ood", 0.9, 0.3), ("amb", "id", 0.3, 0.1)])),
        write_run(tmp_path / "b", scores_doc("B", 0, [("oodd", "ood", None, None), ("amb", "id", 0.2, 0.1)])),
    ]
    figure = entanglement_figure(compare(folders))
    assert [ax.get_title() for ax in figure.axes] == ["OODD · ood", "AMB · id"]
    assert any("1 undefined, not shown" in text.get_text() for text in figure.axes[0].texts)


def test_figures_without_rows(tmp_path):
    folders = [write_run(tmp_path / n, scores_doc(n, None, [], collapse={})) for n in "ab"]
    comparison = compare(folders)
    assert any("no ranked task" in note for note in comparison.notes)
    assert not entanglement_figure(comparison).axes
    assert not collapse_figure(comparison).axes
    written = save_comparison(comparison, tmp_path / "out")
    assert "collapse.png" not in written and "entanglement.png" in written


def test_collapse_figure(study):
    figure = collapse_figure(study)
    (ax,) = figure.axes
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["A", "B", "C"]
    assert len(ax.patches) == 3 * 2  # id and ood for A, B, C (C's ood is undefined at one seed only)
    assert ax.get_legend() is not None


def render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_comparison_tables(study):
    ranking, per_task, performance, deltas, collapse = comparison_tables(study)
    text = render(ranking)
    lines = [line for line in text.splitlines() if line.strip().startswith("│ ") and line[2] in "ABC"]
    assert [line[2] for line in lines] == ["A", "B", "C"]
    row = study.rank("A")
    assert format_value(row["performance_rank"], row["performance_interval"]) in lines[0]
    assert "± 0.0" in lines[1]  # B's performance rank is the same at every seed
    assert "OODD perf." in render(per_task)
    assert "AMB ood" in render(deltas)
    assert "OODD ood AUROC" in render(performance)  # the values behind the ranks, not only the ranks
    point = study.point("A", "oodd", "ood")
    assert format_value(point["u_correct"], point["u_correct_interval"], digits=3) in render(performance)
    assert format_value(point["delta"], point["delta_interval"], digits=3) in render(deltas)
    assert "0.080 ±" in render(collapse)


def test_tables_without_intervals_for_one_seed(tmp_path):
    folders = [
        write_run(tmp_path / "a", scores_doc("A", 0, [("oodd", "ood", 0.9, 0.3)])),
        write_run(tmp_path / "b", scores_doc("B", 0, [("oodd", "ood", 0.5, 0.1)])),
    ]
    tables = comparison_tables(compare(folders))
    rows = [line for table in tables for line in render(table).splitlines() if line.startswith("│")]
    assert rows and not any("±" in line for line in rows)
    assert "1.0" in render(tables[0]) and "0.900" in render(tables[2]) and "0.300" in render(tables[3])


def test_format_value():
    assert format_value(3.0, 0.8) == "3.0 ± 0.8"
    assert format_value(3.0) == "3.0"
    assert format_value(math.nan, 0.3) == "–"
    assert format_value(0.12345, 0.01, digits=3) == "0.123 ± 0.010"


# --------------------------------------------------------------------------- ties and exact zeros


def brute_force_ranks(values, tolerance, lower_is_better=False):
    """Chained ties, spelled out: sort, cut where a gap exceeds the tolerance, average positions."""
    keys = [v if lower_is_better else -v for v in values]
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    groups, current = [], [order[0]]
    for previous, index in itertools.pairwise(order):
        if keys[index] - keys[previous] > tolerance:
            groups.append(current)
            current = []
        current.append(index)
    groups.append(current)
    ranks, position = [0.0] * len(values), 1
    for group in groups:
        for index in group:
            ranks[index] = position + (len(group) - 1) / 2
        position += len(group)
    return ranks


@given(
    values=st.lists(st.sampled_from([0.5, 0.50004, 0.50008, 0.5002, 0.7, 0.70009]), min_size=1, max_size=8),
    tolerance=st.sampled_from([0.0, 1e-4, 1e-3]),
    lower_is_better=st.booleans(),
)
def test_rank_values_ties_values_within_the_tolerance(values, tolerance, lower_is_better):
    ranks = rank_values(values, lower_is_better=lower_is_better, tolerance=tolerance)
    assert ranks.tolist() == pytest.approx(brute_force_ranks(values, tolerance, lower_is_better), abs=1e-12)
    if tolerance == 0.0:  # no tolerance: scipy's average ranks
        keys = np.asarray(values) if lower_is_better else -np.asarray(values)
        assert ranks.tolist() == pytest.approx(stats.rankdata(keys, method="average").tolist())


def write_model(path: Path, *, dtype: str = "float16", collapsed: bool = False, model: str, seed: int = 0) -> Path:
    """A synthetic model's cube through CubeWriter; ``collapsed`` copies member 0 into every member."""
    from uqeval.synth import image_plan, synthesize_image

    streams = np.random.SeedSequence(11).spawn(40)
    with uqeval.CubeWriter(
        path, n_classes=2, eu=3, au=3, height=24, width=24, raters=3, dtype=dtype, model=model, seed=seed
    ) as writer:
        for index, ((domain, role), stream) in enumerate(zip(image_plan(40), streams, strict=True)):
            probs, labels = synthesize_image(
                np.random.default_rng(stream), "disentangled", domain, size=24, eu=3, au=3, raters=3
            )
            if collapsed:
                probs = np.repeat(probs[:1], 3, axis=0)
            writer.append(probs[None], labels[None], domain=domain, role=role, image_ids=[f"{domain}-{index}"])
    return path


def scored_run(tmp_path: Path, name: str, **options) -> Path:
    store = write_model(tmp_path / f"{name}.zarr", **options)
    folder = tmp_path / name
    uqeval.save_report(uqeval.score(store), folder)
    return folder


def test_a_collapsed_model_never_ranks_first_on_entanglement(tmp_path):
    collapsed = scored_run(tmp_path, "collapsed", collapsed=True, model="collapsed")
    healthy = scored_run(tmp_path, "healthy", model="healthy")
    comparison = compare([collapsed, healthy])
    for row in comparison.split_ranks:
        if row["group"] == "collapsed":
            assert math.isnan(row["delta"])
            assert row["entanglement_rank"] == 2.0
    assert comparison.rank("collapsed")["entanglement_rank"] == 2.0
    assert comparison.rank("healthy")["entanglement_rank"] == 1.0


def test_one_model_stored_as_float16_and_float32_ties_on_ncc(tmp_path):
    """Storage rounding moves the NCC by ~1e-5; the two runs must not be told apart on AMB."""
    half = scored_run(tmp_path, "half", model="half")
    single = scored_run(tmp_path, "single", dtype="float32", model="single")
    comparison = compare([half, single])
    amb = [row for row in comparison.split_ranks if row["task"] == "amb"]
    assert amb
    by_split: dict[str, list] = {}
    for row in amb:
        by_split.setdefault(row["split"], []).append(row)
    for split, rows in by_split.items():
        first, second = rows
        assert abs(first["u_correct"] - second["u_correct"]) < RANK_TOLERANCE["ncc"], split
        assert first["u_correct"] != second["u_correct"]  # they do differ, by rounding
        assert first["performance_rank"] == second["performance_rank"] == 1.5


def test_a_huge_model_name_is_cut_and_the_comparison_stays_small_and_quick(tmp_path):
    """A 1 MB model name (two, alike but for the last character): each row keeps a
    bounded group, which the run's scores.json keeps whole; files, figures and tables
    stay small."""
    import time

    names = {"A": "A" * 1_000_000, "B": "A" * 999_999 + "B"}
    folders = []
    for letter, name in names.items():
        rows = [(task, split, *by_group[letter]) for (task, split), by_group in values_for(0).items()]
        folders.append(write_run(tmp_path / letter, scores_doc(name, 0, rows, {"id": 0.1, "ood": 0.2, "blur": 0.3})))
    started = time.perf_counter()
    comparison = compare(folders)
    groups = comparison.groups
    assert len(set(groups)) == 2
    assert all(len(group) <= 1000 and "…" in group for group in groups)
    written = save_comparison(comparison, tmp_path / "comparison")
    tables = Console(file=io.StringIO(), width=120, record=True)
    for table in comparison_tables(comparison):
        tables.print(table)
    elapsed = time.perf_counter() - started
    assert sum(path.stat().st_size for path in written.values()) < 10_000_000
    assert elapsed < 30  # a few seconds; it took minutes when every row copied the name
    assert max(matplotlib.image.imread(written["entanglement.png"]).shape[:2]) < 4000
    assert "A" * 200 not in tables.export_text()


# ---------------------------------------------------------------- rank stability over bootstrap resamples


def bootstrapped_run(group: str, u_correct: list[float], delta: list[float], *, seed: int = 0) -> Run:
    """A run with one ranked row (OODD ood) and its values in ``len(u_correct)`` resamples."""
    from dataclasses import replace

    from uqeval.scoring.bootstrap import Bootstrap

    run = Run.from_dict(scores_doc(group, 0, [("oodd", "ood", u_correct[0], delta[0])]), Path(f"/runs/{group}"))
    n = len(u_correct)
    values = {"u_correct": [u_correct], "u_wrong": [[value - 0.1 for value in u_correct]], "delta": [delta]}
    resampled = Bootstrap(
        n, seed, [], np.empty((0, n)), [("oodd", "ood")], {name: np.array(rows) for name, rows in values.items()}
    )
    return replace(run, bootstrap=resampled)


def test_runs_with_resamples_are_ranked_in_each_resample(tmp_path: Path):
    runs = [bootstrapped_run("A", [0.9, 0.7, 0.9], [0.1, 0.1, 0.4]), bootstrapped_run("B", [0.8] * 3, [0.3] * 3)]
    comparison = compare(runs)
    rows = {row["group"]: row for row in comparison.bootstrap_ranks}
    assert rows["A"]["performance_rank_mean"] == pytest.approx(4 / 3) and rows["A"]["performance_first"] == 2 / 3
    assert rows["B"]["entanglement_rank_mean"] == pytest.approx(4 / 3) and rows["B"]["entanglement_first"] == 2 / 3
    low, high = np.percentile([1, 2, 1], [2.5, 97.5])
    assert (rows["A"]["performance_rank_low"], rows["A"]["performance_rank_high"]) == (low, high)
    assert rows["A"]["n_resamples"] == 3
    assert comparison.to_dict()["bootstrap_ranks"] == comparison.bootstrap_ranks
    written = save_comparison(comparison, tmp_path / "cmp")
    assert "bootstrap_ranks.csv" in written
    console = Console(file=io.StringIO(), width=200)
    for table in comparison_tables(comparison):
        console.print(table)
    assert "Rank stability" in console.file.getvalue() and "1.33 [1, 1.95]" in console.file.getvalue()
    # a run without resamples: no rank stability, and a note that says why
    plain = compare([runs[0], Run.from_dict(scores_doc("B", 0, [("oodd", "ood", 0.8, 0.3)]), Path("/runs/B"))])
    assert plain.bootstrap_ranks == [] and "bootstrap_ranks" not in plain.to_dict()
    assert any("no bootstrap resamples" in note for note in plain.notes)
