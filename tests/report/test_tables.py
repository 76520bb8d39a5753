"""Tests of :mod:`uqeval.report.tables`: what ``uqeval score`` and ``uqeval compare`` print.

The tables are rendered to text (a wide console) and read back: the numbers in a row
must be the results' numbers, not only the row's label.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_synthetic_store
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

import uqeval
from uqeval.conventions import PRESETS, Conventions
from uqeval.notes import Note, literal
from uqeval.report.tables import (
    aggregations_scored,
    changed_conventions,
    collapse_table,
    entanglement_table,
    format_value,
    grouped_notes,
    print_report,
    print_tables,
    score_remarks,
    score_tables,
    single_ood_domain,
    task_table,
)

#: ``-0``, ``-0.0``, ``-0.000`` …: a negative zero, alone or before ``±``.
NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(\.0+)?(?![\d.])")


def render(*tables, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    print_tables(console, tables)
    return console.export_text()


def rows_of(text: str) -> list[list[str]]:
    """The body rows of rendered tables, as lists of cell texts."""
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in text.splitlines() if line.startswith("│")]


def one_domain_layout(domain: str = "blur") -> list[tuple[str, str]]:
    """Nine ID images (three to fit on) and six test images of one OOD domain."""
    return [("id", "calibration" if index % 3 == 0 else "test") for index in range(9)] + [(domain, "test")] * 6


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> uqeval.Scores:
    store = write_synthetic_store(tmp_path_factory.mktemp("two") / "cube.zarr", n_images=18, size=16, eu=2, au=2)
    return uqeval.score(store, aggregations=["border", "mean"])


@pytest.fixture(scope="module")
def one_domain(tmp_path_factory) -> uqeval.Scores:
    path = tmp_path_factory.mktemp("one") / "cube.zarr"
    store = write_synthetic_store(path, layout=one_domain_layout(), size=16, eu=2, au=2, raters=2)
    return uqeval.score(store)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [(-0.0004, 3, "0.000"), (-0.0, 3, "0.000"), (-0.004, 2, "0.00"), (-1e-300, 4, "0.0000"), (-0.0006, 3, "-0.001")],
)
def test_a_value_that_rounds_to_zero_has_no_sign(value, digits, expected):
    assert format_value(value, digits=digits) == expected


def test_an_interval_that_rounds_to_zero_has_no_sign():
    assert format_value(-0.04, -0.0, digits=1) == "0.0 ± 0.0"
    assert format_value(2.0, 0.04) == "2.0 ± 0.0"


@given(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), st.integers(min_value=0, max_value=4))
def test_format_value_rounds_and_never_prints_a_negative_zero(value, digits):
    text = format_value(value, digits=digits)
    assert not NEGATIVE_ZERO.fullmatch(text)
    assert math.isclose(float(text), value, abs_tol=0.5 * 10**-digits + 1e-9)


def test_undefined_values_print_a_dash():
    assert format_value(math.nan, digits=3) == "–"
    assert format_value(None) == "–"


# --------------------------------------------------------------------------- aggregations


def test_every_aggregation_reaches_the_oodd_table(two_domains):
    scores = two_domains
    assert aggregations_scored(scores, "oodd") == ["border", "mean"]
    assert aggregations_scored(scores, "amb") == ["none"]
    text = render(task_table(scores, "oodd"))
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    splits = [cell.strip() for cell in header.strip("┃").split("┃")][2:]
    assert splits == ["blur", "noise", "ood"]
    rows = rows_of(text)
    assert len(rows) == 8  # three measures for each of the two aggregations, then the two sample scores
    current = None
    for row in rows[:6]:
        current = row[0] or current
        measure = row[1].split()[0].lower()
        expected = [format_value(scores.value("oodd", split, measure, "auroc", current), digits=3) for split in splits]
        assert row[2:] == expected, (current, measure)
    assert [row[0] for row in rows if row[0]] == ["border", "mean", "samples"]  # Δ's aggregation first
    for row, measure in zip(rows[6:], ("pairwise_dice", "cov"), strict=True):
        expected = [format_value(scores.value("oodd", split, measure, "auroc"), digits=3) for split in splits]
        assert row[2:] == expected, measure
    assert [row[1] for row in rows[6:]] == ["pairwise Dice", "CoV"]
    assert "image scores: border (used for Δ), mean" in text
    assert "pairwise Dice and CoV: image scores of the samples themselves, not in Δ" in text


def test_one_aggregation_keeps_the_plain_table(one_domain):
    text = render(task_table(one_domain, "oodd"))
    assert text.splitlines()[2].split() == ["┃", "measure", "┃", "blur", "=", "ood", "┃"]  # no aggregation column
    assert "image score: border;" in text
    assert [row[0] for row in rows_of(text)] == ["AU", "EU ✓", "TU", "pairwise Dice", "CoV"]


def test_remarks_say_where_every_aggregation_is(two_domains):
    [remark] = score_remarks(two_domains)
    assert remark.startswith("image scores border, mean:")
    for where in ("metrics.csv", "scores.json", "images.csv", "border_au", "mean_tu"):
        assert where in remark


def test_entanglement_caption_names_the_aggregation_of_delta(two_domains):
    assert "oodd and fd with image score border" in render(entanglement_table(two_domains))


# --------------------------------------------------------------------------- one OOD domain


def test_pavpu_augrc_and_eaugrc_get_tables_of_their_own(two_domains):
    titles = [str(table.title) for table in score_tables(two_domains)]
    calibration, failure = titles.index("Calibration: ACE"), titles.index("Failure detection: AURC")
    assert titles[calibration + 1] == "Calibration: PAvPU"
    assert titles[failure + 1 : failure + 3] == ["Failure detection: AUGRC", "Failure detection: E-AUGRC"]
    pavpu = task_table(two_domains, "cal", "pavpu", lower_is_better=False)
    assert "higher is better" in str(pavpu.caption)
    tu = rows_of(render(pavpu))[2]
    assert tu[0] == "TU ✓"
    assert tu[1] == format_value(two_domains.value("cal", "id", "tu", "pavpu"), digits=3)
    augrc = rows_of(render(task_table(two_domains, "fd", "augrc", lower_is_better=True)))
    assert len(augrc) == 8  # AU, EU, TU for each of the two image scores, pairwise Dice and CoV
    assert task_table(two_domains, "fd", "brier") is None  # no such rows


def test_the_ood_split_of_one_domain_is_shown_once(one_domain):
    scores = one_domain
    assert single_ood_domain(scores) == "blur"
    # The results do have both splits, with equal values.
    assert scores.value("oodd", "ood", "eu", "auroc") == scores.value("oodd", "blur", "eu", "auroc")
    for table in score_tables(scores):
        text = render(table)
        assert not re.search(r"[┃│] ood\b", text), text
    ncc = rows_of(render(task_table(scores, "amb")))
    assert [row[0] for row in ncc] == ["AU ✓", "EU", "TU"]
    assert [len(row) for row in ncc] == [3, 3, 3]  # measure, id, blur = ood
    assert ncc[0][2] == format_value(scores.value("amb", "blur", "au", "ncc"), digits=3)
    header = render(task_table(scores, "fd")).splitlines()[2]
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == ["measure", "id", "blur = ood", "all"]
    delta_splits = [row[1] for row in rows_of(render(entanglement_table(scores)))]
    assert delta_splits == ["blur = ood", "id", "blur = ood", "id", "blur = ood", "id", "blur = ood", "all"]
    collapse = rows_of(render(collapse_table(scores)))
    assert [row[:2] for row in collapse] == [["id", "6"], ["blur = ood", "6"]]
    assert any("only OOD domain" in remark and "'blur = ood'" in remark for remark in score_remarks(scores))


def test_two_domains_keep_the_ood_split(two_domains):
    assert single_ood_domain(two_domains) is None
    assert "ood" in rows_of(render(collapse_table(two_domains)))[-1][0]
    assert not any("only OOD domain" in remark for remark in score_remarks(two_domains))


def test_an_ood_split_that_differs_from_the_domain_is_kept(one_domain):
    scores = one_domain
    changed = [dict(row) for row in scores.collapse]
    for row in changed:
        if row["split"] == "ood":
            row["mean_eu"] += 0.5  # no longer a copy of blur
    twin = uqeval.Scores(**{**_fields(scores), "collapse": changed})
    assert single_ood_domain(twin) is None
    assert [row[0] for row in rows_of(render(collapse_table(twin)))] == ["id", "blur", "ood"]


def _fields(scores: uqeval.Scores) -> dict:
    import dataclasses

    return {field.name: getattr(scores, field.name) for field in dataclasses.fields(scores) if field.init}


# --------------------------------------------------------------------------- conventions


def test_changed_conventions_of_the_paper_preset():
    assert changed_conventions(PRESETS["default"]) == {}
    assert changed_conventions(PRESETS["paper"]) == {
        "ncc_constant": "zero",
        "ood_split": "domain-mean",
        "threshold_fraction": "members",
        "delta_both_zero": "atan2",
        "platt": "binned-smoothed",
        "amb_reference": "class-index-variance",
        "ncc_factor": "n-1-over-n",
        "cal_ood_delta": "domain-min-mean",
        "all_correct_image": "wrong",
    }
    # The aggregation is on the tables already, and not a convention line's business.
    assert changed_conventions(Conventions(aggregation="mean", calibration_bins=10)) == {"calibration_bins": 10}


def test_the_conventions_line_names_the_preset(one_domain):
    paper = uqeval.Scores(**{**_fields(one_domain), "conventions": PRESETS["paper"]})
    lines = [line for line in score_remarks(paper, preset="paper") if line.startswith("conventions")]
    assert lines == [
        "conventions (paper preset): ncc_constant=zero, ood_split=domain-mean, threshold_fraction=members, "
        "delta_both_zero=atan2, platt=binned-smoothed, amb_reference=class-index-variance, ncc_factor=n-1-over-n, "
        "cal_ood_delta=domain-min-mean, all_correct_image=wrong"
    ]
    assert not [line for line in score_remarks(one_domain, preset="default") if line.startswith("conventions")]


def test_volumes_scored_per_slice_and_their_spacing_are_said(one_domain):
    n = len(one_domain.image_ids)
    sliced = uqeval.Scores(
        **{**_fields(one_domain), "slice_z": np.zeros(n, dtype=int), "attrs": {"spacing": [2.5, 0.8, 0.75]}}
    )
    remarks = score_remarks(sliced)
    assert "scored per z-slice: every slice of a volume is an image (images.csv has the volume's id and z)" in remarks
    assert "spacing (z, y, x): 2.5 × 0.8 × 0.75 mm" in remarks
    assert not [line for line in score_remarks(one_domain) if "slice" in line or "spacing" in line]


# --------------------------------------------------------------------------- notes


CONSTANT = "{task}: {count} {split} image(s) have a constant rater-variance or {MEASURE} map and were left out"
ZERO_EU = "{task}: Δ on {split} is undefined: EU is 0 at every pixel"
NO_LABELS = "{task}: skipped, the store has no rater labels"


def test_notes_of_one_kind_and_text_collapse_into_one_line_with_a_count():
    domains = ["blur", "noise", "fog", "snow", "rain", "dark"]
    notes = [
        Note("constant-maps", CONSTANT, task="amb", split=domain, measure=measure, count=count)
        for count, domain in enumerate(domains, start=1)
        for measure in ("au", "eu", "tu")
    ]
    notes.insert(4, Note("fitted-on-test", "no calibration images: Platt scaling, τ and the EU scale are fitted"))
    grouped = grouped_notes(notes)
    assert grouped == [
        "amb: {1, 2, 3, 4, 5, 6} {blur, noise, fog, snow, rain, dark} image(s) have a constant rater-variance or "
        "{AU, EU, TU} map and were left out (×18)",
        "no calibration images: Platt scaling, τ and the EU scale are fitted",
    ]
    assert [str(note) for note in notes[:2]] == [
        "amb: 1 blur image(s) have a constant rater-variance or AU map and were left out",
        "amb: 1 blur image(s) have a constant rater-variance or EU map and were left out",
    ]


def test_long_value_lists_are_cut():
    notes = [Note("delta-undefined", ZERO_EU, task="oodd", split=f"domain-{index:02d}") for index in range(12)]
    [line] = grouped_notes(notes, max_values=3)
    assert line == "oodd: Δ on {domain-00, domain-01, domain-02, …} is undefined: EU is 0 at every pixel (×12)"


def test_notes_of_another_kind_or_text_stay_apart():
    notes = [
        Note("skipped", NO_LABELS, task="amb"),
        Note("skipped", "{task}: skipped, there are no OOD test images", task="oodd"),  # another text
        Note("skipped", NO_LABELS, task="cal"),
        Note("unlabelled", NO_LABELS, task="fd"),  # another kind
        "amb: ncc is negative on id (EU -0.0187: Δ 1.03); with a negative score Δ leaves [−1, 1]",
        "amb: ncc is negative on id (EU -0.0187: Δ 1.03), blur (EU -0.07: Δ 1.1); with a negative score",
    ]
    assert grouped_notes(notes) == [
        "{amb, cal}: skipped, the store has no rater labels (×2)",
        "oodd: skipped, there are no OOD test images",
        "fd: skipped, the store has no rater labels",
        notes[4],
        notes[5],
    ]
    assert grouped_notes([notes[0]]) == [str(notes[0])]
    assert grouped_notes([notes[0], notes[0]]) == [f"{notes[0]} (×2)"]
    assert grouped_notes([notes[4], notes[4]]) == [f"{notes[4]} (×2)"]
    assert grouped_notes([]) == []


def test_braces_in_a_note_are_kept_as_they_are():
    note = Note("no-id", literal("warning: the domains are 'a{1}', 'b'"))
    assert str(note) == "warning: the domains are 'a{1}', 'b'"
    assert grouped_notes([note, note]) == ["warning: the domains are 'a{1}', 'b' (×2)"]


def test_print_report_groups_notes_and_prints_captions_at_console_width(two_domains):
    console = Console(width=250, record=True, color_system=None)
    notes = [Note("delta-undefined", ZERO_EU, task="oodd", split=split) for split in ("blur", "noise", "ood")]
    print_report(console, score_tables(two_domains), ["a remark"], notes, "Report in [cyan]out[/]")
    text = console.export_text()
    lines = text.splitlines()
    assert "note: oodd: Δ on {blur, noise, ood} is undefined: EU is 0 at every pixel (×3)" in lines
    assert lines[-1] == "Report in out" and "a remark" in lines
    # A caption longer than its table is one line on a wide console.
    caption = "1: the correct measure far better; 0: no better than the best wrong one; < 0: worse"
    assert any(line.startswith(caption) for line in lines)
    assert "Epistemic collapse (nats per pixel)" in lines
    assert not NEGATIVE_ZERO.search(text)


def test_print_tables_leaves_the_tables_as_they_were(two_domains):
    table = task_table(two_domains, "cal")
    title, caption = table.title, table.caption
    text = render(table, width=120)
    assert (table.title, table.caption) == (title, caption)
    assert text.splitlines()[0] == title and caption in text.splitlines()


def test_no_negative_zero_in_any_table(one_domain):
    # Values just below zero, as Δ and NCC give them, in every table of a run.
    scores = one_domain
    tiny = -4e-5
    entanglement = [{**row, "delta": tiny, "u_wrong": tiny} for row in scores.entanglement]
    results = [{**row, "value": tiny} if row["metric"] == "ncc" else row for row in scores.results]
    collapse = [{**row, "eu_over_au": tiny, "mean_eu": tiny} for row in scores.collapse]
    twin = uqeval.Scores(**{**_fields(scores), "entanglement": entanglement, "results": results, "collapse": collapse})
    text = render(*score_tables(twin))
    assert "0.00 " in text and "0.000 " in text and "0.0000 " in text
    assert not NEGATIVE_ZERO.search(text), text


def test_files_in_a_path_are_not_markup(tmp_path):
    # The report's location goes through rich markup; a bracket in a path must survive.
    console = Console(width=120, record=True, color_system=None)
    from rich.markup import escape

    where = Path(tmp_path) / "run[1]"
    print_report(console, [], [], [], f"Report in [cyan]{escape(str(where))}[/]")
    assert console.export_text().strip() == f"Report in {where}"
