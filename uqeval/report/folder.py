"""A report folder replaced whole: written beside its place, then renamed into it.

The files go to a hidden sibling folder, ``.NAME.uqeval-new-…``, marked with its owner
(:mod:`uqeval.owners`). When every file is written, the mark of a complete report
(:data:`~uqeval.ownership.REPORT_MARK`, with the list of files) is written last, the old
folder is renamed aside, the new one is renamed into its place, and the old one is
removed. A reader sees the old report or the new one, never a mix; a run that fails or
is stopped leaves the old report as it was; of two runs on one folder, the one that
finishes last wins, whole. Siblings left by runs that were killed are removed by the
next run on the same folder (when their owner has surely gone).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from uqeval.errors import UQEvalError
from uqeval.owners import OWNER_FILE, mark_owner, remove_stale
from uqeval.ownership import REPORT_MARK, check_replaceable
from uqeval.report.files import write_json

#: Another run may put its report in place between our two renames; we then replace
#: that one, at most this many times.
_SWAP_TRIES = 10
#: Characters of the folder's name kept in the names of its siblings (a name has at most 255 bytes).
_NAME_CHARACTERS = 100


def sibling_prefix(folder: Path) -> str:
    """The start of the names of ``folder``'s staged and set-aside siblings."""
    return f".{folder.name[:_NAME_CHARACTERS]}.uqeval-"


def check_report_folder(folder: str | os.PathLike[str], kind: str) -> list[Path]:
    """Refuse a ``folder`` that uqeval may not replace with a report of ``kind``
    (:func:`~uqeval.ownership.check_replaceable`), make its parent folders and prove that
    a report can be written there: in its parent (beside it) and, when ``folder``
    exists, in it (its permissions are the user's say). Returns the parent folders made,
    deepest first.

    Called before a long job, so that it fails at once, and again when the report is written.

    Raises
    ------
    UQEvalError
        Naming ``folder`` and the reason.
    """
    folder = Path(folder)
    check_replaceable(folder, kind)
    missing = [parent for parent in (folder.parent, *folder.parent.parents) if not parent.exists()]
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder.parent):
            pass
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as error:
        raise UQEvalError(f"{folder}: cannot write the report there ({error.strerror or error})") from None
    return missing


@contextlib.contextmanager
def replaced_whole(folder: str | os.PathLike[str], kind: str) -> Iterator[Path]:
    """Yield an empty folder to write a report of ``kind`` into; on leaving the block
    without an error, it replaces ``folder`` whole (the module's scheme).

    Parameters
    ----------
    folder : the report folder; its parent folders are created if needed.
    kind : ``"scores"`` or ``"comparison"`` (:func:`uqeval.check_replaceable`).

    Raises
    ------
    UQEvalError
        ``folder`` is not a report of ``kind`` written by uqeval (nor missing or empty),
        or it cannot be written (disk full, no permission): the message names it, and
        the old report is left as it was.
    """
    folder = Path(folder)
    existed = os.path.lexists(folder)
    check_report_folder(folder, kind)
    try:
        remove_stale(folder.parent, sibling_prefix(folder))
        staging = _new_sibling(folder, "new")
    except OSError as error:
        raise UQEvalError(f"{folder}: cannot write the report beside it ({error.strerror or error})") from None
    try:
        mark_owner(staging)
        yield staging
        (staging / OWNER_FILE).unlink()
        files = sorted(entry.name for entry in os.scandir(staging))
        mark = {"kind": kind, "files": files, "complete": True}
        write_json(staging / REPORT_MARK, {**mark, "written": datetime.now(UTC).isoformat(timespec="seconds")})
        _swap(staging, folder, kind)
    except OSError as error:
        kept = "the old report is left as it was" if existed else "nothing was written"
        raise UQEvalError(f"{folder}: cannot write the report ({error.strerror or error}); {kept}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_sibling(folder: Path, role: str) -> Path:
    """A new, empty sibling of ``folder`` with the usual permissions (``tempfile`` would give 0o700)."""
    while True:
        sibling = folder.parent / f"{sibling_prefix(folder)}{role}-{secrets.token_hex(6)}"
        try:
            sibling.mkdir()
        except FileExistsError:
            continue
        return sibling


def _swap(staging: Path, folder: Path, kind: str) -> None:
    """Put ``staging`` in the place of ``folder``: the old folder aside, the new one in, the old one removed."""
    for _ in range(_SWAP_TRIES):
        aside = None
        if os.path.lexists(folder):
            check_replaceable(folder, kind)  # another run may have put something else there meanwhile
            aside = folder.parent / f"{sibling_prefix(folder)}old-{secrets.token_hex(6)}"
            try:
                os.rename(folder, aside)
            except FileNotFoundError:  # another run moved it first
                aside = None
        try:
            os.rename(staging, folder)
        except OSError as error:
            if aside is not None:
                with contextlib.suppress(OSError):
                    os.rename(aside, folder)  # put the old one back where nothing took its place
                if aside.exists():
                    shutil.rmtree(aside, ignore_errors=True)  # another run's report took its place
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # another run put its report in place between our renames: replace it in turn
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return
    raise UQEvalError(f"{folder}: other runs kept replacing it; run again")
