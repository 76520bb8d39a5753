"""The terminal's tables as plain data for ``report.html``.

``report.html`` shows the very tables ``uqeval score`` and ``uqeval compare`` print
(:mod:`uqeval.report.tables`): this module reads a :class:`rich.table.Table` back into
its title, caption, columns and cell texts, so that the page and the terminal cannot
disagree on a number or its rounding. The texts are plain strings; the page's template
escapes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from uqeval.text import printable

#: A cell that names measures ("EU", "AU ✓", "AU/EU"): the page colours it as the figures do.
_MEASURE_CELL = re.compile(r"(AU|EU|TU)(/(AU|EU|TU))*( ✓)?")


@dataclass(frozen=True)
class Cell:
    """One cell: its text, and the measure it names (``"au"``…) or ``""``; ``repeated``
    when it repeats the block label above it (blank in the terminal)."""

    text: str
    measure: str = ""
    repeated: bool = False


@dataclass(frozen=True)
class Column:
    """A column's header and whether its cells are numbers (right-aligned)."""

    header: str
    numeric: bool


@dataclass(frozen=True)
class PlainTable:
    """A table as the page shows it."""

    title: str
    caption: str
    columns: list[Column]
    rows: list[list[Cell]]


def _text(value: object) -> str:
    if value is None:
        return ""
    return printable(value.plain if isinstance(value, Text) else str(value))


def plain_table(table: Table) -> PlainTable:
    """``table``'s title, caption, columns and cells as text.

    In a table of blocks (rows in sections, such as one block per image score), the
    terminal writes the block's label in its first row only; here every row carries it
    (marked ``repeated`` after the first), so that a row keeps its label when sorted.
    """
    columns = [Column(_text(column.header), column.justify == "right") for column in table.columns]
    cells = [[_text(cell) for cell in column.cells] for column in table.columns]
    blocks = any(row.end_section for row in table.rows)
    rows: list[list[Cell]] = []
    label = ""
    for index in range(table.row_count):
        row = []
        for position, column_cells in enumerate(cells):
            text = column_cells[index] if index < len(column_cells) else ""
            repeated = False
            if blocks and position == 0:
                if text:
                    label = text
                else:
                    text, repeated = label, bool(label)
            match = _MEASURE_CELL.fullmatch(text)
            row.append(Cell(text, match.group(1).lower() if match else "", repeated))
        rows.append(row)
        if blocks and table.rows[index].end_section:
            label = ""
    return PlainTable(_text(table.title), _text(table.caption), columns, rows)
