"""Strings from a store or the command line shown as text: :mod:`uqeval.text`."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.text import Text

from uqeval.text import (
    ELLIPSIS,
    figure_text,
    labelled,
    markup_text,
    printable,
    shortened,
    spreadsheet_text,
)

ORDINARY = ["id", "blur", "noise-2", "model_a", "ssn+ensemble", "Ünïcödé 名前", "a b"]


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_pass_unchanged(name):
    assert printable(name) == shortened(name) == markup_text(name) == figure_text(name) == name
    assert spreadsheet_text(name) == name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x1bb", "a\\x1bb"),
        ("nul\x00", "nul\\x00"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b", "c1\\x9b"),
        ("two\nlines\r", "two\\nlines\\r"),
        ("tab\t", "tab\\t"),
        ("rtl\u202eoverride", "rtl\\u202eoverride"),
        ("isolate\u2066", "isolate\\u2066"),
        ("line\u2028separator", "line\\u2028separator"),
    ],
)
def test_control_and_bidi_characters_are_escaped(raw, shown):
    assert printable(raw) == shown


def test_printable_text_shows_no_control_character_on_a_terminal():
    console = Console(file=None, record=True, width=200, color_system=None, force_terminal=False)
    console.print(Text(printable("\x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x1b[2J")))
    output = console.export_text()
    assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b]8;;https://evil.example\\x07click" in output


def test_a_long_name_is_cut_with_a_visible_marker_and_stays_distinct():
    first, second = "A" * 10_000 + "1", "A" * 10_000 + "2"
    shown_first, shown_second = shortened(first, 40), shortened(second, 40)
    assert len(shown_first) == len(shown_second) == 40
    assert ELLIPSIS in shown_first and shown_first.startswith("AAAA")
    assert shown_first != shown_second
    assert shortened(first, 40) == shown_first  # the same name is cut the same way


def test_a_cut_never_leaves_half_an_escape():
    name = "x" * 28 + "\x1b" * 20
    shown = shortened(name, 40)
    head = shown.split(ELLIPSIS)[0]
    assert not head.endswith(("\\", "\\x", "\\x1"))


HOSTILE_MARKUP = ["[/]", "[bold]evil", "[link=https://evil.example]click[/link]", "trailing\\", "[red"]


@pytest.mark.parametrize("markup", HOSTILE_MARKUP)
def test_markup_text_is_shown_as_written_between_tags(markup):
    console = Console(file=None, record=True, width=200, color_system=None)
    console.print(f"Report in [cyan]{markup_text(markup)}[/] (done)")
    assert console.export_text().strip() == f"Report in {markup} (done)"


@pytest.mark.parametrize("markup", HOSTILE_MARKUP)
def test_a_labelled_line_is_shown_as_written(markup):
    console = Console(file=None, record=True, width=200, color_system=None)
    console.print(labelled("note:", "yellow", markup))
    assert console.export_text().strip() == f"note: {markup}"


def test_markup_text_links_nothing():
    console = Console(file=None, record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(markup_text("[link=https://evil.example]click[/link]"))
    assert "\x1b]8;" not in console.export_text(styles=True)


def test_figure_text_is_no_mathtext():
    assert figure_text("$\\frac{a}{b}$ cost") == "\\$\\frac{a}{b}\\$ cost"


@pytest.mark.parametrize(
    "formula",
    ['=HYPERLINK("https://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)"],
)
def test_formula_cells_are_neutralised(formula):
    assert spreadsheet_text(formula) == "'" + formula


@pytest.mark.parametrize("cell", ["\tleading tab", "\rleading return"])
def test_cells_starting_with_a_tab_or_return_are_neutralised(cell):
    assert spreadsheet_text(cell).startswith("'")


@pytest.mark.parametrize("number", ["-0.5", "-3", "+2", "-1e-05", "-.5", "1.0"])
def test_numbers_as_text_stay_numbers(number):
    assert spreadsheet_text(number) == number
