"""The spill: per-image maps of the batches fitted on, kept until the fits are known.

The fitting batches of a cube (a store, or a possibly dask-backed Dataset) are spilled
to a scratch folder (about 5 % of the cube's bytes), so memory stays bounded by a few
batches; decomposed maps passed to :func:`uqeval.evaluate`, already in memory, keep
them in memory.

The scratch folder, ``uqeval-spill-PID-…``, is marked with its owner
(:mod:`uqeval.owners`) and removed when the run ends, by an error or an interrupt too.
A run that is killed outright (``kill -9``) cannot remove it; the next spill in the same
folder removes the spills of runs that have surely gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.metrics.ambiguity import RaterStatistics
from uqeval.owners import mark_owner, remove_stale

#: The start of a spill folder's name.
SPILL_PREFIX = "uqeval-spill-"


class Spill:
    """Maps and rater statistics by batch key, in a scratch folder or in memory.

    Parameters
    ----------
    folder : path or None
        Parent of the scratch folder (default: the system's temporary folder); the
        scratch folder is made on the first write and removed on exit.
    in_memory : bool
        Keep the arrays in memory instead (for sources held in memory).
    """

    def __init__(self, folder: str | Path | None = None, *, in_memory: bool = False) -> None:
        self._parent = folder
        self._in_memory = in_memory
        self._held: dict[int, tuple[dict[str, np.ndarray], RaterStatistics | None]] = {}
        self.path: Path | None = None

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc_info) -> None:
        self._held.clear()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def write(self, key: int, maps: dict[str, np.ndarray], raters: RaterStatistics | None) -> None:
        if self._in_memory:
            self._held[key] = (maps, raters)
            return
        arrays = dict(maps)
        if raters is not None:
            arrays["rater_variance"] = raters.variance
            arrays["rater_agree"] = raters.agree.astype(np.uint16)
            arrays["rater_valid"] = raters.valid.astype(np.uint16)
        try:
            if self.path is None:
                self._make_folder()
            with open(self.path / f"{key}.npz", "wb") as file:
                np.savez(file, **arrays)
        except OSError as error:
            where = self.path or self._parent or tempfile.gettempdir()
            raise UQEvalError(f"{where}: cannot write the scratch files ({error.strerror or error})") from None

    def _make_folder(self) -> None:
        """Make the scratch folder, marked with its owner, after removing the stale spills beside it."""
        parent = Path(self._parent) if self._parent is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent, SPILL_PREFIX)
        self.path = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=parent))
        mark_owner(self.path)

    def read(self, key: int) -> tuple[dict[str, np.ndarray], RaterStatistics | None]:
        if self._in_memory:
            return self._held[key]
        with np.load(self.path / f"{key}.npz") as stored:
            arrays = {name: stored[name] for name in stored.files}
        raters = None
        if "rater_variance" in arrays:
            raters = RaterStatistics(
                arrays.pop("rater_variance"),
                arrays.pop("rater_agree").astype(np.int32),
                arrays.pop("rater_valid").astype(np.int32),
            )
        return arrays, raters
