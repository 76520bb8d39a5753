"""What :class:`uqeval.Scores` and :class:`~uqeval.results.SavedScores` show of themselves
(``repr``, ``_repr_html_``), their entanglement DataFrame, and the provenance that
``scores.json`` records."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import types
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import write_synthetic_store

import uqeval
import uqeval.plugins
from uqeval import UQEvalError, decompose, evaluate, score
from uqeval.conventions import Conventions
from uqeval.plugins import BUILTIN, ENTRY_POINT_GROUP, LOAD_PLUGINS_ENV
from uqeval.report.scores_file import SavedScores, read_scores
from uqeval.report.summary import HEADLINE_SPLITS
from uqeval.results import ENTANGLEMENT_COLUMNS, SCORES_SCHEMA, Scores

#: The model's identity written into the store (a name with markup in it, to be escaped).
IDENTITY = {"model": "unet <v2> & co", "dataset": "toy", "au_method": "ssn", "eu_method": "ensemble", "seed": 3}


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def same_rows(got: list[dict], want: list[dict]) -> bool:
    return len(got) == len(want) and all(
        got_row.keys() == want_row.keys() and all(same(got_row[key], want_row[key]) for key in want_row)
        for got_row, want_row in zip(got, want, strict=True)
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store in a folder whose name needs escaping in HTML; unanimous raters on the ID
    images make AMB's Δ on ``id`` undefined (a headline NaN)."""
    folder = tmp_path_factory.mktemp("results") / 'runs <&> "quoted"'
    folder.mkdir()
    return write_synthetic_store(folder / "model.zarr", unanimous=lambda _, domain: domain == "id", **IDENTITY)


@pytest.fixture(scope="module")
def scored(store) -> tuple[Scores, datetime, datetime]:
    """The store's scores and the UTC times (to the second) before and after scoring."""
    before = datetime.now(UTC).replace(microsecond=0)
    scores = score(store)
    return scores, before, datetime.now(UTC)


@pytest.fixture(scope="module")
def scores(scored) -> Scores:
    return scored[0]


def headline(scores: Scores) -> dict[tuple[str, str], float]:
    return {(row["task"], row["split"]): row["delta"] for row in scores.entanglement if row["split"] in HEADLINE_SPLITS}


def headline_cells(scores: Scores) -> dict[tuple[str, str], str]:
    """The summary's Δ cells: every task × headline split, "–" where a task has none there (OODD on id)."""
    given = headline(scores)
    splits = {split for _, split in given}
    return {(task, split): shown(given.get((task, split), math.nan)) for task, _ in given for split in splits}


def shown(delta: float) -> str:
    """A Δ as the summary shows it: 2 decimals, never "-0.00", "–" when undefined or absent."""
    return "–" if math.isnan(delta) else f"{delta:.2f}".replace("-0.00", "0.00")


def repr_delta_table(text: str) -> dict[tuple[str, str], str]:
    """The Δ cells of a ``repr``: (task, split) → the text shown (cells are right-aligned, 8 wide)."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("  Δ per task"))
    header = lines[start + 1]
    columns = header.split()
    offset = len(header) - 8 * len(columns)
    cells = {}
    for line in lines[start + 2 :]:
        if not line.startswith("    "):
            break
        task = line.split()[0]
        padded = line.ljust(len(header))
        for index, split in enumerate(columns):
            cell = padded[offset + 8 * index : offset + 8 * (index + 1)].strip()
            if cell:
                cells[task, split] = cell
    return cells


# --------------------------------------------------------------------------- repr


def test_repr_is_short_and_shows_what_was_scored(scores, store):
    text = repr(scores)
    assert len(text) < 1500
    assert str(scores) == text
    assert text.startswith("<uqeval.Scores>")
    assert f"store         {store.resolve()}" in text
    for name, value in IDENTITY.items():
        assert f"{name} {value}" in text
    assert "test images   id 8 · blur 6 · noise 6" in text
    assert scores.n_images == {"id": 8, "blur": 6, "noise": 6}
    assert "measures      au, eu, tu" in text
    assert "aggregations  border (Δ)" in text
    assert "tasks         oodd, amb, cal, fd" in text
    assert ".to_dataframe()" in text and ".entanglement_dataframe()" in text
    assert f"{len(scores.notes)} note(s) in .notes" in text


def test_repr_shows_the_headline_deltas(scores):
    want = headline(scores)
    assert math.isnan(want["amb", "id"])  # the undefined one is shown as such
    assert {split for _, split in want} == set(HEADLINE_SPLITS)
    assert repr_delta_table(repr(scores)) == headline_cells(scores)
    per_domain = len(scores.entanglement) - len(want)
    assert per_domain == 8  # 4 tasks × 2 OOD domains
    assert f"{per_domain} more Δ row(s), of single OOD domains, in .entanglement_dataframe()" in repr(scores)


def test_repr_is_bounded_whatever_the_store(scores):
    domains = [f"domain-with-a-rather-long-name-{index:03d}" for index in range(200)]
    rows = [
        {**row, "split": split}
        for row in scores.entanglement
        for split in ([row["split"]] if row["split"] in HEADLINE_SPLITS else domains)
    ]
    huge = dataclasses.replace(
        scores,
        store="/data/" + "very-deep-folder/" * 500 + "model.zarr",
        attrs=dict.fromkeys(IDENTITY, "x" * 10_000),
        n_images=dict.fromkeys(domains, 10**9),
        entanglement=rows,
        notes=["a note"] * 10_000,
    )
    text = repr(huge)
    assert len(text) < 1500
    (store_line,) = [line for line in text.splitlines() if line.startswith("  store ")]
    assert store_line.split()[1].startswith("…") and store_line.endswith("-folder/model.zarr")  # keeps its end
    assert "… +194 more" in text
    assert f"{len(rows) - len(headline(scores))} more Δ row(s)" in text
    assert repr_delta_table(text) == headline_cells(scores)
    markup = huge._repr_html_()
    assert len(markup) < 3500
    assert html_delta_table(markup) == headline_cells(scores)


def test_repr_shows_control_characters_escaped(scores):
    hostile = dataclasses.replace(
        scores, attrs={"model": "m\x1b]8;;https://evil.example\x07x", "dataset": "rtl\u202eevil"}
    )
    for shown_text in (repr(hostile), hostile._repr_html_()):
        assert "\x1b" not in shown_text and "\x07" not in shown_text and "\u202e" not in shown_text
        assert "m\\x1b]8;;https://evil.example\\x07x" in shown_text and "rtl\\u202eevil" in shown_text


def test_repr_without_any_delta(scores):
    empty = dataclasses.replace(scores, entanglement=[])
    text = repr(empty)
    assert "Δ: none" in text and "more Δ row" not in text
    assert "Δ: none" in empty._repr_html_()


# --------------------------------------------------------------------------- HTML


class Markup(HTMLParser):
    """Tags checked for nesting, the text collected, and the cells of each table row
    (empty cells included)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)
        if {"td", "th"} & set(self.open) and "tr" in self.open:
            self.rows[-1][-1] += data


def parse(markup: str) -> Markup:
    parser = Markup()
    parser.feed(markup)
    parser.close()
    assert parser.open == [], f"unclosed tags {parser.open}"
    return parser


def html_delta_table(markup: str) -> dict[tuple[str, str], str]:
    """The Δ cells of an HTML summary: (task, split) → the text shown."""
    rows = parse(markup).rows
    start = next(index for index, row in enumerate(rows) if row[0] == "task")
    splits = rows[start][1:]
    cells = {}
    for task, *values in rows[start + 1 :]:
        cells.update({(task, split): value for split, value in zip(splits, values, strict=True) if value})
    return cells


def test_html_is_well_formed_escaped_and_shows_the_same_numbers(scores, store):
    markup = scores._repr_html_()
    text = "".join(parse(markup).text)
    path = str(store.resolve())
    assert "<&>" in path
    assert path not in markup and "&lt;&amp;&gt;" in markup  # escaped in the markup ...
    assert path in text  # ... and reads back as the path
    assert IDENTITY["model"] in text and "<v2>" not in markup
    assert "id 8 · blur 6 · noise 6" in text
    assert html_delta_table(markup) == headline_cells(scores)
    assert len(markup) < 3500


# --------------------------------------------------------------------------- entanglement DataFrame


def test_entanglement_dataframe_equals_the_rows(scores):
    frame = scores.entanglement_dataframe()
    assert list(frame.columns) == list(ENTANGLEMENT_COLUMNS)
    assert all(tuple(row) == ENTANGLEMENT_COLUMNS for row in scores.entanglement)
    assert same_rows(frame.to_dict("records"), scores.entanglement)
    assert frame["delta"].isna().sum() == sum(math.isnan(row["delta"]) for row in scores.entanglement) == 1


def test_entanglement_dataframe_of_no_rows_has_the_columns(scores):
    frame = dataclasses.replace(scores, entanglement=[]).entanglement_dataframe()
    assert list(frame.columns) == list(ENTANGLEMENT_COLUMNS) and len(frame) == 0


# --------------------------------------------------------------------------- provenance


def test_scores_json_records_the_provenance(scored, store):
    scores, before, after = scored
    content = json.loads(json.dumps(scores.to_dict(), allow_nan=False))
    assert content["schema"] == SCORES_SCHEMA == "uqeval.scores/1"
    assert content["store"] == str(store.resolve())
    assert content["model"] == IDENTITY
    assert content["conventions"] == Conventions().to_dict()
    provenance = content["provenance"]
    assert set(provenance) == {"uqeval", "plugins", "created", "store_attributes", "eu_convention"}
    assert provenance["uqeval"] == uqeval.__version__
    created = datetime.fromisoformat(provenance["created"])
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after
    attributes = provenance["store_attributes"]
    assert attributes == {**attributes, **IDENTITY, "schema": 1}  # every attribute of the store
    assert attributes == json.loads(json.dumps(dict(uqeval.open_cube(store).attrs)))
    assert provenance["eu_convention"] == scores.eu_convention == "members"


def test_provenance_names_every_plugin_with_its_distribution_version(store, monkeypatch):
    """Entry-point plugins carry their installed distribution's version; one registered
    in code carries none."""
    monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)
    uqeval.plugins.reset_plugin_manager()
    try:
        plugin = types.ModuleType("provenance_test_plugin")
        plugin.uqeval_aggregators = uqeval.hookimpl(lambda: {})
        assert uqeval.plugins.plugin_manager().register(plugin)
        recorded = score(store, tasks=["oodd"]).provenance["plugins"]
    finally:
        uqeval.plugins.reset_plugin_manager()
    by_name = {entry["name"]: entry for entry in recorded}
    assert BUILTIN not in by_name  # the built-ins are uqeval itself, recorded as "uqeval"
    assert by_name["provenance_test_plugin"] == {
        "name": "provenance_test_plugin",
        "distribution": "in code",
        "version": None,
    }
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in entry_points:
        if entry_point.dist is None or entry_point.name not in by_name:
            continue  # failed to load: not registered, so not recorded
        assert by_name[entry_point.name] == {
            "name": entry_point.name,
            "distribution": entry_point.dist.name,
            "version": importlib.metadata.version(entry_point.dist.name),
        }
    assert [entry["name"] for entry in recorded][-1] == "provenance_test_plugin"  # registration order


def test_arrays_in_memory_record_no_path():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 3, 4, 2, 12, 12))
    cubes = np.exp(logits) / np.exp(logits).sum(axis=3, keepdims=True)
    domain = ["id"] * 4 + ["blur"] * 4
    scores = evaluate(decompose(cubes), domain, tasks=["oodd"])
    content = scores.to_dict()
    assert content["store"] is None
    assert content["provenance"]["store_attributes"] == {}
    assert content["provenance"]["uqeval"] == uqeval.__version__
    datetime.fromisoformat(content["provenance"]["created"])
    text = repr(scores)
    assert "store         arrays in memory" in text
    assert "model         not named by the store" in text
    assert "tasks         oodd" in text


# --------------------------------------------------------------------------- reading scores.json


def test_saved_scores_read_back_with_the_same_summary(scores, tmp_path):
    uqeval.save_report(scores, tmp_path, plots=False)
    saved = read_scores(tmp_path)
    folder = saved.folder
    assert folder == tmp_path
    assert saved.provenance == scores.to_dict()["provenance"]
    text = repr(saved)
    assert text.startswith("<uqeval.SavedScores>")
    assert f"file          {tmp_path / 'scores.json'}" in text
    assert len(text) < 1500
    # Everything after the places is the same summary as the Scores' one.
    ours = repr(scores).splitlines()
    theirs = text.splitlines()
    assert theirs[3:-2] == ours[2:-2]
    assert repr_delta_table(text) == headline_cells(scores)
    assert html_delta_table(saved._repr_html_()) == html_delta_table(scores._repr_html_())
    assert same_rows(saved.entanglement_dataframe().to_dict("records"), scores.entanglement)


def test_an_old_scores_json_without_provenance_still_reads(scores, tmp_path):
    old = scores.to_dict()
    del old["provenance"]
    (tmp_path / "scores.json").write_text(json.dumps(old))
    saved = read_scores(tmp_path)
    assert saved.provenance == {}
    assert saved.model == IDENTITY
    assert same_rows(list(saved.entanglement), scores.entanglement)
    assert "<uqeval.SavedScores>" in repr(saved)


def test_a_minimal_scores_json_has_a_summary_too():
    data = {
        "schema": SCORES_SCHEMA,
        "entanglement": [{"task": "oodd", "split": "ood", "u_correct": 0.9, "u_wrong": 0.6, "delta": None}],
        "collapse": [],
    }
    saved = SavedScores.from_dict(data, "hand-written.json")
    text = repr(saved)
    assert "file          hand-written.json" in text and "store " not in text
    assert repr_delta_table(text) == {("oodd", "ood"): "–"}
    assert "test images   unknown" in text


def test_provenance_of_the_wrong_type_is_refused(scores):
    data = {**scores.to_dict(), "provenance": ["not", "an", "object"]}
    with pytest.raises(UQEvalError, match=r"^run/scores\.json: 'provenance' must be an object, got list$"):
        SavedScores.from_dict(data, "run/scores.json")
