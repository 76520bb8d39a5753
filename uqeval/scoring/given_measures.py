"""A maps store that gives some of AU, EU and TU: what is scored, and what is left out.

The engine scores every measure in one pass (:mod:`uqeval.scoring.engine`). A measure
the store lacks is stood in by one it gives (the same array, never copied), so that the
engine runs unchanged; everything computed for a stand-in is then left out before
anything is reported: its rows, per-image scores, fits, calibration curves and example
maps. A task's Δ compares its correct measure with the best of its wrong ones
(:mod:`uqeval.tasks`), so a Δ that needs a measure the store lacks is left out, with one
note per task; so is the EU / AU collapse without AU or EU. Nothing is derived: a store
with AU and EU but no TU has no TU rows (TU = AU + EU holds for decomposed maps, not for
every method's maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.image_statistics import ExampleMaps, ImageStatistics
from uqeval.names import MEASURES
from uqeval.notes import Note
from uqeval.scoring.fitting import Fitted
from uqeval.scoring.tabulate import Tabulated
from uqeval.tasks import TASKS

#: The kind of the notes on what a missing measure leaves out.
ABSENT_KIND = "measure-absent"
#: Which given measure stands in for the missing ones: the first of these the store
#: has. EU first, so that a volume's example slice is still the one with the most
#: uncertainty of some kind (:func:`uqeval.image_statistics.shown_slice`).
STAND_IN_ORDER = ("eu", "tu", "au")
#: Notes that only a computed Δ makes.
DELTA_NOTE_KINDS = ("delta-undefined", "negative-score")


def absent_measures(given: Sequence[str]) -> tuple[str, ...]:
    """The measures of :data:`~uqeval.names.MEASURES` not in ``given``, in that order."""
    return tuple(measure for measure in MEASURES if measure not in given)


def with_stand_ins(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``maps`` with each missing measure stood in by the first given one of
    :data:`STAND_IN_ORDER` (the same array; its results are left out later)."""
    stand_in = next(maps[measure] for measure in STAND_IN_ORDER if measure in maps)
    for measure in MEASURES:
        maps.setdefault(measure, stand_in)
    return maps


def delta_measures(task: str, entanglement: Sequence[dict] = ()) -> tuple[str, ...]:
    """The measures the Δ of ``task`` compares: its correct one and every wrong one (of a
    plugin's task, those its Δ rows in ``entanglement`` name)."""
    if task in TASKS:
        return (TASKS[task].correct, *TASKS[task].wrong)
    named = [(row["correct"], *row["wrong"].split("/")) for row in entanglement if row["task"] == task]
    return tuple(dict.fromkeys(measure for measures in named for measure in measures))


def check_conventions(absent: Sequence[str], conventions: Conventions, where: str) -> None:
    """Refuse EU rescaling without AU or EU: ``r = ΣAU / ΣEU`` needs both.

    Raises
    ------
    UQEvalError
        When the conventions rescale EU and the store lacks AU or EU.
    """
    lacking = [measure for measure in ("au", "eu") if measure in absent]
    if conventions.rescale_eu and lacking:
        raise UQEvalError(
            f"{where}: EU rescaling (r = ΣAU / ΣEU) needs AU and EU, and the maps store has no "
            f"{' or '.join(measure.upper() for measure in lacking)}; score it without rescale_eu"
        )


def _names(measures: Sequence[str], joined_by: str) -> str:
    return f" {joined_by} ".join(measure.upper() for measure in measures)


def tables_without(tables: Tabulated, absent: Sequence[str]) -> Tabulated:
    """``tables`` without the rows, Δ, collapse, notes and reliability curves that need
    a measure in ``absent``, and with one note per task whose Δ is left out."""
    absent = set(absent)
    tasks = list(dict.fromkeys(row["task"] for row in tables.entanglement))
    left_out = [task for task in tasks if absent & set(delta_measures(task, tables.entanglement))]
    notes = [
        note
        for note in tables.notes
        if note.measure not in absent and not (note.task in left_out and note.kind in DELTA_NOTE_KINDS)
    ]
    for task in left_out:
        needed = delta_measures(task, tables.entanglement)
        missing = [measure for measure in MEASURES if measure in absent and measure in needed]
        text = (
            f"{{task}}: Δ left out: it compares {needed[0].upper()} with {_names(needed[1:], 'and')}, "
            f"and the maps store has no {_names(missing, 'or')} map"
        )
        notes.append(Note(ABSENT_KIND, text, task=task))
    collapse = tables.collapse
    lacking = [measure for measure in ("au", "eu") if measure in absent]
    if lacking and collapse:
        collapse = []
        text = f"the EU / AU collapse is left out: the maps store has no {_names(lacking, 'or')} map"
        notes.append(Note(ABSENT_KIND, text))
    return replace(
        tables,
        results=[row for row in tables.results if row["measure"] not in absent],
        entanglement=[row for row in tables.entanglement if row["task"] not in left_out],
        collapse=collapse,
        notes=notes,
        reliability={key: value for key, value in tables.reliability.items() if key[1] not in absent},
    )


def _given(by_measure: Mapping[str, Any], absent: set[str]) -> dict[str, Any]:
    return {measure: value for measure, value in by_measure.items() if measure not in absent}


def statistics_without(statistics: ImageStatistics, absent: Sequence[str]) -> ImageStatistics:
    """The per-image statistics of the measures not in ``absent``."""
    absent = set(absent)
    return replace(
        statistics,
        means=_given(statistics.means, absent),
        scores={aggregation: _given(by_measure, absent) for aggregation, by_measure in statistics.scores.items()},
        ncc=None if statistics.ncc is None else _given(statistics.ncc, absent),
        calibration=None if statistics.calibration is None else _given(statistics.calibration, absent),
        tables=None if statistics.tables is None else _given(statistics.tables, absent),
    )


def fitted_without(fitted: Fitted, absent: Sequence[str]) -> Fitted:
    """``fitted`` without the parameters of the measures in ``absent``: a parameter held
    per measure (a mapping keyed by ``au``, ``eu``, ``tu``, as ``τ`` and the Platt fits)
    keeps the given measures' entries."""
    absent = set(absent)

    def given(value: Any) -> Any:
        per_measure = isinstance(value, Mapping) and value and set(value) <= set(MEASURES)
        return _given(value, absent) if per_measure else value

    return replace(fitted, parameters={name: given(value) for name, value in fitted.parameters.items()})


def examples_without(examples: Sequence[ExampleMaps], absent: Sequence[str]) -> list[ExampleMaps]:
    """The example maps with those of the measures in ``absent`` set to None."""
    return [replace(example, **dict.fromkeys(absent)) for example in examples]
