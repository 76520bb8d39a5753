"""``scores.json``, the file a :class:`~uqeval.Scores` is saved as: its writer and its reader.

:func:`write_scores` writes :meth:`Scores.to_dict() <uqeval.Scores.to_dict>` into a
report folder; :func:`read_scores` reads such a file back, checked, as
:class:`SavedScores` (``uqeval compare`` reads its runs so). ``notes`` is a list of
sentences, in files old and new.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uqeval.errors import UQEvalError
from uqeval.report.files import write_json
from uqeval.report.summary import saved_summary
from uqeval.results import SCORES_SCHEMA, entanglement_frame

if TYPE_CHECKING:
    import pandas

    from uqeval.results import Scores

#: File name of a run's scores inside its report folder.
SCORES_FILE = "scores.json"


def write_scores(scores: Scores, folder: Path) -> Path:
    """Write ``scores.json`` (:meth:`Scores.to_dict() <uqeval.Scores.to_dict>`) into
    ``folder``, atomically; returns its path."""
    return write_json(folder / SCORES_FILE, scores.to_dict())


_REQUIRED_KEYS = ("entanglement", "collapse")
_ENTANGLEMENT_KEYS = ("task", "split", "u_correct", "u_wrong", "delta")
_COLLAPSE_KEYS = ("split", "eu_over_au")


@dataclass(frozen=True, eq=False, repr=False)
class SavedScores:
    """The checked contents of a ``scores.json``.

    ``repr`` (and, in a notebook, its HTML table) summarises it as :class:`Scores` does.

    Attributes
    ----------
    source : str
        Where it was read from (for messages).
    model : dict
        ``model`` (an empty dict when ``null``).
    entanglement : tuple of dict
        Rows ``task, split, correct, wrong, u_correct, u_wrong, delta`` (floats, NaN
        for ``null``).
    collapse : tuple of dict
        Rows ``split, mean_au, mean_eu, eu_over_au`` (floats, NaN for ``null`` or missing).
    data : dict
        The whole document as read.
    folder : Path or None
        The report folder the file lies in (:func:`read_scores`).
    """

    source: str
    model: dict[str, Any]
    entanglement: tuple[dict[str, Any], ...]
    collapse: tuple[dict[str, Any], ...]
    data: dict[str, Any] = field(repr=False)
    folder: Path | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SavedScores:
        """Check the parsed document ``data``; errors name ``source`` and the key.

        Raises
        ------
        UQEvalError
            When the schema is not ``uqeval.scores/1`` or a key or value is missing or
            of the wrong type. ``provenance`` is optional (files written before uqeval
            recorded it lack it).
        """
        where = source
        if not isinstance(data, Mapping):
            raise UQEvalError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
        if "schema" not in data:
            raise UQEvalError(
                f"{where}: missing key 'schema' (expected {SCORES_SCHEMA!r}); is it a uqeval scores file?"
            )
        if data["schema"] != SCORES_SCHEMA:
            raise UQEvalError(f"{where}: schema is {data['schema']!r}, expected {SCORES_SCHEMA!r}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise UQEvalError(f"{where}: missing key(s) {', '.join(repr(key) for key in missing)}")
        model = data.get("model")
        if model is None:
            model = {}
        if not isinstance(model, Mapping):
            raise UQEvalError(f"{where}: 'model' must be an object, got {type(model).__name__}")
        provenance = data.get("provenance")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise UQEvalError(f"{where}: 'provenance' must be an object, got {type(provenance).__name__}")
        entanglement = tuple(_entanglement_rows(data["entanglement"], where))
        collapse = tuple(_collapse_rows(data["collapse"], where))
        return cls(source, dict(model), entanglement, collapse, dict(data))

    @property
    def provenance(self) -> dict[str, Any]:
        """``provenance``: uqeval and plugin versions, UTC time, store attributes, EU
        convention (:func:`uqeval.provenance.provenance_record`); an empty dict in files
        written before uqeval recorded it."""
        return dict(self.data.get("provenance") or {})

    def entanglement_dataframe(self) -> pandas.DataFrame:
        """:attr:`entanglement` as a pandas DataFrame (columns as
        :meth:`Scores.entanglement_dataframe`)."""
        return entanglement_frame(self.entanglement)

    def __repr__(self) -> str:
        return saved_summary(self).text()

    def _repr_html_(self) -> str:
        return saved_summary(self).html()


def read_scores(path: str | os.PathLike[str]) -> SavedScores:
    """Read a ``scores.json``: a report folder written by ``uqeval score`` or the file itself.

    Returns
    -------
    SavedScores
        The checked contents, with the report folder (the file's folder) as ``folder``.

    Raises
    ------
    UQEvalError
        When the folder or file does not exist, the file is not JSON (with line and
        column), or its contents break the schema; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        folder, file = path, path / SCORES_FILE
        if not file.is_file():
            raise UQEvalError(f"{file}: missing; is {path} a report folder written by `uqeval score`?")
    elif path.is_file():
        folder, file = path.parent, path
    else:
        raise UQEvalError(f"{path}: no such run folder or scores file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UQEvalError(f"{file}: not JSON (not UTF-8 text at byte {error.start})") from None
    except OSError as error:
        raise UQEvalError(f"{file}: cannot be read ({error.strerror or error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UQEvalError(f"{file}: not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise UQEvalError(f"{file}: JSON nested too deeply to read") from None
    return replace(SavedScores.from_dict(data, str(file)), folder=folder)


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UQEvalError(f"{where} must be a number or null, got {value!r}")
    return float(value)


def _rows(value: Any, key: str, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise UQEvalError(f"{where}: {key!r} must be a list of objects, got {type(value).__name__}")
    for index, row in enumerate(value):
        if not isinstance(row, Mapping):
            raise UQEvalError(f"{where}: {key}[{index}] must be an object, got {type(row).__name__}")
    return value


def _entanglement_rows(value: Any, where: str) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for index, row in enumerate(_rows(value, "entanglement", where)):
        missing = [key for key in _ENTANGLEMENT_KEYS if key not in row]
        if missing:
            raise UQEvalError(f"{where}: entanglement[{index}] misses key(s) {', '.join(map(repr, missing))}")
        task, split = str(row["task"]), str(row["split"])
        if (task, split) in seen:
            raise UQEvalError(f"{where}: entanglement has two rows for task {task!r}, split {split!r}")
        seen.add((task, split))
        rows.append(
            {
                "task": task,
                "split": split,
                "correct": None if row.get("correct") is None else str(row["correct"]),
                "wrong": None if row.get("wrong") is None else str(row["wrong"]),
                **{
                    key: _number(row[key], f"{where}: entanglement[{index}].{key}")
                    for key in ("u_correct", "u_wrong", "delta")
                },
            }
        )
    return rows


def _collapse_rows(value: Any, where: str) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for index, row in enumerate(_rows(value, "collapse", where)):
        missing = [key for key in _COLLAPSE_KEYS if key not in row]
        if missing:
            raise UQEvalError(f"{where}: collapse[{index}] misses key(s) {', '.join(map(repr, missing))}")
        split = str(row["split"])
        if split in seen:
            raise UQEvalError(f"{where}: collapse has two rows for split {split!r}")
        seen.add(split)
        rows.append(
            {
                "split": split,
                **{
                    key: _number(row.get(key), f"{where}: collapse[{index}].{key}")
                    for key in ("mean_au", "mean_eu", "eu_over_au")
                },
            }
        )
    return rows
