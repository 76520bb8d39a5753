"""The local runner: batches in flight at once, one call per phase, errors raised."""

from __future__ import annotations

import functools
import threading
import time

import numba
import numpy as np
import pytest

from uqeval.errors import UQEvalError
from uqeval.scoring import runners
from uqeval.scoring.fitting import Fitted
from uqeval.scoring.runners import LocalRunner
from uqeval.scoring.sources import Loaded


class Recorder:
    """A reader and a work function that record what they see."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.slots_in_use: set[int] = set()
        self.slot_clashes = 0
        self.running = 0
        self.most_running = 0
        self.threads: list[int] = []
        self.fitted: dict[int, object] = {}

    def reader(self, indices: np.ndarray, slot: int) -> Loaded:
        with self.lock:
            self.slot_clashes += slot in self.slots_in_use
            self.slots_in_use.add(slot)
        time.sleep(self.delay)
        return Loaded(cubes=np.asarray(indices) * 10, labels=None, maps={"slot": slot})

    def work(self, loaded: Loaded, indices: np.ndarray, fitted: Fitted | None = None) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.append(numba.get_num_threads())
            self.fitted[int(indices[0])] = fitted
        time.sleep(self.delay)
        np.testing.assert_array_equal(loaded.cubes, indices * 10)
        with self.lock:
            self.running -= 1
            self.slots_in_use.discard(loaded.maps["slot"])
        return indices


def batches(*starts: int) -> list[np.ndarray]:
    return [np.arange(start, start + 2) for start in starts]


def run_all(runner: LocalRunner, recorder: Recorder, fitting: list[np.ndarray], others: list[np.ndarray]):
    """The engine's two phases: the fitting batches, then the others with the fits bound into the work."""
    fits = Fitted()
    with runner:
        seen = [int(indices[0]) for indices in runner.run(recorder.work, fitting)]
        scoring = functools.partial(recorder.work, fitted=fits)
        seen += [int(indices[0]) for indices in runner.run(scoring, others)]
    return seen, fits


def test_two_phases_every_batch_once_and_the_fits_only_in_the_second():
    recorder = Recorder()
    runner = LocalRunner(recorder.reader, workers=2)
    seen, fits = run_all(runner, recorder, batches(0, 2, 4), batches(6, 8, 10, 12))
    assert sorted(seen[:3]) == [0, 2, 4] and sorted(seen[3:]) == [6, 8, 10, 12]
    assert all(recorder.fitted[start] is None for start in (0, 2, 4))
    assert all(recorder.fitted[start] is fits for start in (6, 8, 10, 12))
    assert recorder.slot_clashes == 0


@pytest.mark.parametrize(
    ("concurrent", "most_running", "threads"),
    [
        # OpenMP or TBB: two batches computed at once, the numba threads shared out.
        (True, 2, lambda total: max(1, total // 2)),
        # workqueue: one batch computed at a time, on all threads but the reader's.
        (False, 1, lambda total: max(1, total - 1)),
    ],
    ids=["concurrent-layer", "workqueue"],
)
def test_batches_overlap_only_where_the_threading_layer_allows(monkeypatch, concurrent, most_running, threads):
    monkeypatch.setattr(runners, "_kernels_run_concurrently", lambda: concurrent)
    recorder = Recorder()
    runner = LocalRunner(recorder.reader, workers=2)
    run_all(runner, recorder, [], batches(0, 2, 4, 6))
    assert recorder.most_running == most_running
    assert set(recorder.threads) == {threads(numba.get_num_threads())}


def test_numba_threads_of_the_caller_are_left_alone():
    before = numba.get_num_threads()
    recorder = Recorder(delay=0.0)
    run_all(LocalRunner(recorder.reader), recorder, batches(0), batches(2))
    assert numba.get_num_threads() == before


def test_an_error_in_a_batch_is_raised_and_nothing_else_runs_after():
    recorder = Recorder()
    started = []

    def work(loaded, indices):
        started.append(int(indices[0]))
        if indices[0] == 2:
            raise UQEvalError("batch 2 is broken")
        return recorder.work(loaded, indices)

    runner = LocalRunner(recorder.reader, workers=2)
    with pytest.raises(UQEvalError, match="batch 2 is broken"), runner:
        list(runner.run(work, batches(0, 2, 4, 6, 8, 10, 12, 14)))
    assert len(started) < 8
