"""The progress bar of :mod:`uqeval.report.progress`: a store's name in a bar's description is text."""

from __future__ import annotations

from rich.console import Console

from uqeval.report.progress import DESCRIPTION_CHARACTERS, progress_bar


def test_a_description_is_shown_as_written_with_control_characters_escaped():
    console = Console(record=True, width=300, color_system=None, force_terminal=False)
    progress = progress_bar(console)
    progress.add_task("scoring [/][link=https://evil.example]x\x1b[2J.zarr", total=4)
    console.print(progress.make_tasks_table(progress.tasks))
    shown = console.export_text()
    assert "scoring [/][link=https://evil.example]x\\x1b[2J.zarr" in shown
    assert "\x1b" not in shown


def test_a_long_description_is_cut():
    console = Console(record=True, width=300, color_system=None, force_terminal=False)
    progress = progress_bar(console)
    progress.add_task("scoring " + "x" * 10_000, total=4)
    console.print(progress.make_tasks_table(progress.tasks))
    line = console.export_text().strip()
    assert "…" in line and "x" * (DESCRIPTION_CHARACTERS + 1) not in line
