"""The one progress-bar factory of the command line (the core's commands and plugins')."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from uqeval.text import shortened

#: Characters of a bar's description shown.
DESCRIPTION_CHARACTERS = 100


class _RateColumn(ProgressColumn):
    """Items per second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class _DescriptionColumn(ProgressColumn):
    """The task's description as text: a store's or folder's name in it is shown as
    written (no Rich markup, control characters escaped), at most :data:`DESCRIPTION_CHARACTERS`."""

    def render(self, task: Task) -> Text:
        return Text(shortened(task.description, DESCRIPTION_CHARACTERS), style="bold")


def progress_bar(console: Console, *, unit: str = "images", transient: bool = True) -> Progress:
    """A rich progress display on ``console``: description, bar, done of total ``unit``,
    rate, time elapsed and left. ``transient`` bars vanish when done."""
    columns: list[ProgressColumn] = [_DescriptionColumn(), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns += [TextColumn(unit), _RateColumn(unit)]
    columns += [TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=transient)
