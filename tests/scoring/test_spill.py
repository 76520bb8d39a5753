"""The spill's scratch folder: marked with its run, removed on the way out, its stale
leftovers removed by the next run, and a full disk one clear error."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import uqeval
from uqeval.owners import OWNER_FILE, this_owner
from uqeval.scoring import spill as spill_module

#: One batch per chunk, so that several batches are spilled.
TINY = 1


@pytest.fixture(scope="module")
def store(synthetic_store):
    return synthetic_store("disentangled")


def spills(folder) -> list[str]:
    return sorted(path.name for path in folder.glob("uqeval-spill-*"))


def test_the_spill_names_its_run(store, tmp_path):
    seen = {}

    def progress(*call):
        for path in tmp_path.glob("uqeval-spill-*"):
            seen[path.name] = json.loads((path / OWNER_FILE).read_text())

    uqeval.score(store, scratch=tmp_path, batch_bytes=TINY, progress=progress)
    (name, owner), *others = seen.items()
    assert others == []
    assert name.startswith(f"uqeval-spill-{os.getpid()}-")
    assert owner == json.loads(json.dumps(this_owner()))
    assert spills(tmp_path) == []


def test_the_spills_of_killed_runs_are_removed_by_the_next(store, tmp_path):
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    folders = {}
    for name, owner in {
        "killed": {**this_owner(), "pid": gone},
        "running": this_owner(),
        "elsewhere": {**this_owner(), "pid": gone, "host": "another-host"},
        "unmarked": None,
    }.items():
        folder = tmp_path / f"uqeval-spill-{name}"
        folder.mkdir()
        (folder / "0.npz").write_bytes(b"0" * 1000)
        if owner is not None:
            (folder / OWNER_FILE).write_text(json.dumps(owner))
        folders[name] = folder
    uqeval.score(store, scratch=tmp_path, batch_bytes=TINY)
    assert spills(tmp_path) == ["uqeval-spill-elsewhere", "uqeval-spill-running", "uqeval-spill-unmarked"]


def test_a_full_disk_is_one_clear_error_and_the_spill_is_removed(store, tmp_path, monkeypatch):
    written = []

    def full(file, **arrays):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(file)
        np.savez(file, **arrays)

    monkeypatch.setattr(spill_module.np, "savez", full)
    with pytest.raises(uqeval.UQEvalError, match=r"uqeval-spill-.*: cannot write the scratch files \(No space left"):
        uqeval.score(store, scratch=tmp_path, batch_bytes=TINY)
    assert written, "the first batch should have been spilled"
    assert spills(tmp_path) == []
