"""What uqeval may replace: the one rule for every overwrite.

A cube store (``CubeWriter(overwrite=True)``, ``uqeval synth --overwrite``,
``uqeval predict --overwrite``) and a report folder (``--out`` of ``uqeval score``,
``compare`` and ``demo``) are replaced only when the path is missing, an empty folder,
or recognisably the same kind of thing written by uqeval:

- a **cube store**: its ``zarr.json`` is a zarr v3 group whose attributes hold the
  contract's ``schema`` and the writer's progress record (``uqeval_writer``), and
  everything else in it is a folder named for a variable of the contract;
- a **report folder** (``scores`` or ``comparison``): it holds :data:`REPORT_MARK`,
  written last by :func:`uqeval.save_report` or :func:`uqeval.save_comparison` with the
  list of files they wrote, and nothing that list does not name (a report folder of an
  earlier uqeval, without the mark, is recognised by its files:
  :data:`UNMARKED_REPORT_FILES`).

Anything else — a file, a symbolic link, the working folder or one that holds it, a
folder with anything uqeval did not write — is refused with a :class:`UQEvalError` that
names the path and what is in the way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from uqeval.cube.contract import EXTRAS, IMAGE_DIM, MAPS, MEAN, PROGRESS_ATTR, SCHEMA, STRINGS, VALUES
from uqeval.errors import UQEvalError

#: The mark of a complete report folder, written last: its kind and the files it holds.
REPORT_MARK = ".uqeval-report.json"
#: The files of report folders that earlier versions wrote without :data:`REPORT_MARK`;
#: the first one names the kind.
UNMARKED_REPORT_FILES = {
    "scores": (
        "scores.json",
        "metrics.csv",
        "entanglement.csv",
        "images.csv",
        "fitted.json",
        *(f"{figure}.{suffix}" for figure in ("roc", "reliability", "maps") for suffix in ("png", "svg")),
    ),
    "comparison": (
        "comparison.json",
        "ranks.csv",
        "points.csv",
        "collapse.csv",
        *(f"{figure}.{suffix}" for figure in ("entanglement", "collapse") for suffix in ("png", "svg")),
    ),
}
#: How messages name each kind.
NOUNS = {"cube": "cube store", "scores": "score report", "comparison": "comparison report"}
#: The scratch of a run of an earlier version left in its report folder, and a half-written file.
_LEFTOVER_FOLDER = "uqeval-spill-"
_LEFTOVER_FILE = ".tmp"
#: ``zarr.json`` and a report's mark are small; a larger one is not read.
_MAX_METADATA_BYTES = 64 * 2**20


def check_replaceable(path: str | os.PathLike[str], kind: str) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty folder, or recognisably
    a ``kind`` written by uqeval (the module's rule).

    Parameters
    ----------
    path : the cube store or report folder about to be replaced.
    kind : ``"cube"`` (a cube store), ``"scores"`` (a report of ``uqeval score``) or
        ``"comparison"`` (a report of ``uqeval compare``).

    Raises
    ------
    UQEvalError
        Naming ``path`` and what is in the way; nothing is changed.
    """
    if kind not in NOUNS:
        raise ValueError(f"kind must be one of {', '.join(NOUNS)}, not {kind!r}")
    path = Path(path)
    noun = NOUNS[kind]
    if not os.path.lexists(path):
        return
    advice = f"uqeval replaces only a {noun} it wrote, or an empty folder: choose another path or remove it yourself"
    if path.is_symlink():
        raise UQEvalError(f"{path}: is a symbolic link; {advice}")
    if not path.is_dir():
        raise UQEvalError(f"{path}: exists and is not a folder; {advice}")
    try:
        resolved, working = path.resolve(), Path.cwd().resolve()
    except OSError:  # the working folder was removed: it cannot be the path
        resolved = working = None
    if working is not None and (resolved == working or resolved in working.parents):
        raise UQEvalError(f"{path}: is the working folder or holds it; {advice}")
    try:
        entries = {entry.name: entry for entry in os.scandir(path)}
    except OSError as error:
        raise UQEvalError(f"{path}: cannot be read ({error.strerror or error}); {advice}") from None
    if not entries:
        return
    problem = _cube_problem(path, entries) if kind == "cube" else _report_problem(path, entries, kind)
    if problem is not None:
        raise UQEvalError(f"{path}: {problem}; {advice}")


def _cube_problem(path: Path, entries: Mapping[str, os.DirEntry]) -> str | None:
    not_ours = "is not a cube store written by uqeval"
    metadata = _read_json(path / "zarr.json", entries.get("zarr.json"))
    if metadata is None:
        return f"{not_ours} (it has no readable zarr.json)"
    attrs = metadata.get("attributes")
    if not (
        metadata.get("zarr_format") == 3
        and metadata.get("node_type") == "group"
        and isinstance(attrs, Mapping)
        and attrs.get("schema") == SCHEMA
        and isinstance(attrs.get(PROGRESS_ATTR), Mapping)
    ):
        return f"{not_ours} (its zarr.json has no record of uqeval's writer)"
    variables = {spec.name for spec in (*VALUES, MEAN, *MAPS, *EXTRAS, *STRINGS)} | {IMAGE_DIM}
    foreign = [
        name
        for name, entry in entries.items()
        if name != "zarr.json" and not (name in variables and entry.is_dir(follow_symlinks=False))
    ]
    return _holds(foreign, "a cube store")


def _report_problem(path: Path, entries: Mapping[str, os.DirEntry], kind: str) -> str | None:
    noun = NOUNS[kind]
    if REPORT_MARK in entries:
        mark = _read_json(path / REPORT_MARK, entries[REPORT_MARK])
        if mark is None or not isinstance(mark.get("files"), list):
            return f"its {REPORT_MARK} cannot be read"
        if mark.get("kind") != kind:
            found = NOUNS.get(mark.get("kind"), "report") if isinstance(mark.get("kind"), str) else "report"
            return f"is a {found}, not a {noun}"
        allowed = {name for name in mark["files"] if isinstance(name, str)}
    else:
        main = UNMARKED_REPORT_FILES[kind][0]
        if main not in entries:
            return f"is not a {noun} written by uqeval (it has no {main})"
        allowed = set(UNMARKED_REPORT_FILES[kind])

    def ours(name: str, entry: os.DirEntry) -> bool:
        if entry.is_dir(follow_symlinks=False):
            return name.startswith(_LEFTOVER_FOLDER)
        if not entry.is_file(follow_symlinks=False):
            return False
        return name in allowed or (name.startswith(".") and name.endswith(_LEFTOVER_FILE))

    foreign = [name for name, entry in entries.items() if name != REPORT_MARK and not ours(name, entry)]
    return _holds(foreign, f"a {noun}")


def _read_json(path: Path, entry: os.DirEntry | None) -> dict | None:
    """A small JSON object from a regular file; None for anything else."""
    if entry is None or not entry.is_file(follow_symlinks=False):
        return None
    try:
        if entry.stat(follow_symlinks=False).st_size > _MAX_METADATA_BYTES:
            return None
        value = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _holds(foreign: list[str], what: str) -> str | None:
    if not foreign:
        return None
    names = sorted(foreign)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"holds {shown}, which uqeval does not write into {what}"
