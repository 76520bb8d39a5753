"""The engine's faults: a store that vanishes while it is scored is said to be gone, in one line."""

from __future__ import annotations

import shutil

import pytest
from helpers import write_synthetic_store

from uqeval import UQEvalError, score


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("engine") / "cube.zarr", n_images=24, size=16)


@pytest.mark.parametrize(
    "when",
    [
        "first batch",  # absent chunks read as NaN probabilities
        "calibrate",  # the spilled batches' second look
        "last batch",  # the examples' labels are read after the last batch
    ],
)
def test_a_store_removed_while_it_is_scored_is_said_to_be_gone(small_store, tmp_path, when):
    path = shutil.copytree(small_store, tmp_path / "cube.zarr")

    def remove(phase: str, done: int, total: int) -> None:
        due = {"first batch": True, "calibrate": phase == "calibrate", "last batch": done == total}[when]
        if due and path.exists():
            shutil.rmtree(path)

    with pytest.raises(UQEvalError) as info:
        score(path, progress=remove, batch_bytes=1)
    assert str(info.value) == f"{path}: the store was removed while it was scored"
