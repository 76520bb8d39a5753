"""Who runs the batches: this machine (reading ahead while computing) or a dask cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from uqeval.errors import UQEvalError
from uqeval.image_statistics import Fitted
from uqeval.scoring.batch import BatchResult
from uqeval.scoring.sources import Loaded, Reader
from uqeval.scoring.store_reader import read_store

#: ``work(loaded, indices, fitted) -> BatchResult``: what is done with each batch.
BatchWork = Callable[[Loaded, np.ndarray, "Fitted | None"], BatchResult]


class LocalRunner:
    """Batches in order on this machine; the next batch is read and decoded while this one is computed.

    ``fitted`` is read when each batch starts: the engine sets it once the fitting
    batches are done.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.fitted: Fitted | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uqeval-read")

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[BatchResult]:
        """Results of the fitting batches, then of the others (which see :attr:`fitted`)."""
        # Reading and decoding keeps about one core busy; giving the kernels one thread
        # fewer than the machine has avoids oversubscribing it (measured: 15 % faster on
        # 2 cores). numba's thread count is per calling thread, so this stays local.
        threads = numba.get_num_threads()
        numba.set_num_threads(max(1, threads - 1))
        try:
            yield from self._batches(work, fitting_batches, other_batches)
        finally:
            numba.set_num_threads(threads)

    def _batches(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[BatchResult]:
        batches = [*fitting_batches, *other_batches]
        pending = self._pool.submit(self.reader, batches[0], 0) if batches else None
        for number, indices in enumerate(batches):
            loaded = pending.result()
            if number + 1 < len(batches):
                # The other slot: its batch was computed on in the previous iteration.
                pending = self._pool.submit(self.reader, batches[number + 1], (number + 1) % 2)
            yield work(loaded, indices, self.fitted if number >= len(fitting_batches) else None)
            del loaded


def _store_batch(
    path: str, variable: str, has_labels: bool, indices: np.ndarray, fitted: Fitted | None, work: BatchWork
) -> BatchResult:
    """A worker's task: read one batch from the store and reduce it."""
    return work(Loaded(*read_store(path, variable, has_labels, indices)), indices, fitted)


class DistributedRunner:
    """Batches on a ``dask.distributed`` cluster, a bounded number in flight; results in completion order.

    The workers read the store at ``path`` themselves.
    """

    def __init__(self, scheduler: str, path: str, variable: str, has_labels: bool) -> None:
        from distributed import Client

        try:
            self.client = Client(scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise UQEvalError(f"scheduler {scheduler}: cannot connect ({error})", parameter="scheduler") from None
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self.fitted: Fitted | None = None

    def __enter__(self) -> DistributedRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.close()

    def run(
        self, work: BatchWork, fitting_batches: list[np.ndarray], other_batches: list[np.ndarray]
    ) -> Iterator[BatchResult]:
        """Results of the fitting batches, then of the others (which see :attr:`fitted`)."""
        yield from self._phase(work, fitting_batches, None)
        yield from self._phase(work, other_batches, lambda: self.fitted)

    def _phase(
        self, work: BatchWork, batches: list[np.ndarray], fitted: Callable[[], Fitted | None] | None
    ) -> Iterator[BatchResult]:
        from distributed import as_completed

        if not batches:
            return
        queue = list(batches)
        current = fitted() if fitted is not None else None
        remote_work = self.client.scatter(work, broadcast=True, hash=False)

        def submit():
            return self.client.submit(
                _store_batch,
                self.path,
                self.variable,
                self.has_labels,
                queue.pop(0),
                current,
                remote_work,
                pure=False,
            )

        threads = max(1, sum(self.client.nthreads().values()))
        futures = as_completed([submit() for _ in range(min(2 * threads, len(queue)))], loop=self.client.loop)
        for future in futures:
            result = future.result()
            future.release()
            if queue:
                futures.add(submit())
            yield result
