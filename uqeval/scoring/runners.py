"""Who runs the batches: this machine (several batches read and computed at once) or a dask cluster."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

import numba
import numpy as np

from uqeval.decomposition import threading_layer
from uqeval.errors import UQEvalError
from uqeval.scoring.handshake import check_scheduler
from uqeval.scoring.slices import read_slices
from uqeval.scoring.sources import Loaded, Reader, SlabReader
from uqeval.scoring.store_reader import StoreReader

#: What a batch becomes (:class:`~uqeval.scoring.batch.DecomposedBatch` or
#: :class:`~uqeval.scoring.batch.ScoredBatch`).
Result = TypeVar("Result")
#: ``work(loaded, indices) -> result``: what is done with each batch. The fits, when
#: the work needs them, are bound into it (``functools.partial``).
BatchWork = Callable[[Loaded, np.ndarray], Result]


#: ``work(read_slab, position) -> result``: what is done with each volume read in z-slabs
#: (:mod:`uqeval.scoring.streaming`).
VolumeWork = Callable[[Callable[[int, int], Loaded], int], Result]

#: ``work(loaded, (position, z_start, z_stop)) -> result``: what is done with each slab
#: read on its own (a look of the fits at the volumes fitted on, :mod:`uqeval.scoring.streaming`).
SlabWork = Callable[[Loaded, tuple[int, int, int]], Result]

#: How to install what :class:`DistributedRunner` needs.
CLUSTER_INSTALL = "pip install 'uqeval[cluster]'"

#: Batches in flight on this machine: each is read, then computed, by one thread.
LOCAL_WORKERS = 2


class LocalRunner:
    """Batches on this machine, ``workers`` at a time; results in completion order.

    Each batch is read and computed by one thread, so that one batch is decoded while
    another is computed on, and every core has work whichever of the two is slower. The
    numba threads are shared out among the batches in flight (one each on 2 cores).
    Each call of :meth:`run` is one phase of the engine (fit, then score).

    numba's ``workqueue`` threading layer (used when neither OpenMP nor TBB is
    installed) must not run kernels from two threads at once; under it batches are
    still read concurrently, but computed one at a time on all threads but one.
    """

    def __init__(self, reader: Reader, workers: int = LOCAL_WORKERS, slab_reader: SlabReader | None = None) -> None:
        self.reader = reader
        self.slab_reader = slab_reader
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="uqeval-batch")
        self._free_slots = list(range(self.workers))
        threads = numba.get_num_threads()
        if _kernels_run_concurrently():
            self._compute_lock: AbstractContextManager = nullcontext()
            self._threads = max(1, threads // self.workers)
        else:
            self._compute_lock = threading.Lock()
            # Reading keeps about one core busy while a batch is computed on the rest
            # (measured: 15 % faster on 2 cores than oversubscribing them).
            self._threads = max(1, threads - 1)

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, work: BatchWork[Result], batches: list[np.ndarray]) -> Iterator[Result]:
        """``work`` done on each batch, its results in completion order."""
        return self._run(self._batch, work, list(batches))

    def run_volumes(
        self, work: VolumeWork, positions: Sequence[int], ranges: Sequence[tuple[int, int]]
    ) -> Iterator[Result]:
        """``work`` done on each volume, its results in completion order.

        As with batches, ``workers`` volumes are in flight, each read slab by slab and
        computed on by one pool thread with its share of the numba threads, into a
        buffer set of its own: one volume's slab is decoded while another's is computed
        on, and the numpy work of each slab's statistics (one thread per volume) keeps
        every core busy. With a single volume, or a threading layer that cannot run
        kernels from two threads at once, volumes are computed one at a time on every
        numba thread instead, and a pool thread reads each next slab (``ranges``, in the
        order the work asks for them) into the other of two buffer sets. Either way
        memory holds two slabs.
        """
        positions = [int(position) for position in positions]
        if self.workers > 1 and len(positions) > 1 and _kernels_run_concurrently():
            yield from self._run(self._volume, work, positions)
            return
        for position in positions:
            ahead = _SlabsAhead(self.slab_reader, position, list(ranges), self._pool)
            try:
                with numba_threads(numba.get_num_threads()):
                    yield work(ahead.read, position)
            finally:
                ahead.close()

    def run_slabs(self, work: SlabWork[Result], slabs: Sequence[tuple[int, int, int]]) -> Iterator[Result]:
        """``work`` done on each slab ``(position, z_start, z_stop)``, ``workers`` at a
        time as batches are, its results in completion order."""
        return self._run(self._slab, work, [tuple(int(value) for value in slab) for slab in slabs])

    def _run(self, task: Callable, work: Callable, queue: list) -> Iterator[Result]:
        pending = {self._pool.submit(task, work, queue.pop(0)) for _ in range(min(self.workers, len(queue)))}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    if queue:
                        pending.add(self._pool.submit(task, work, queue.pop(0)))
                    yield result
        finally:
            for future in pending:
                future.cancel()
            wait(pending)

    @contextmanager
    def _slot(self) -> Iterator[int]:
        """A free set of buffers for one batch or volume in flight."""
        slot = self._free_slots.pop()
        try:
            yield slot
        finally:
            self._free_slots.append(slot)

    def _batch(self, work: BatchWork[Result], indices: np.ndarray) -> Result:
        """Read one batch into a free buffer slot and reduce it (on a pool thread)."""
        with self._slot() as slot:
            loaded = self.reader(indices, slot)
            with self._compute_lock, numba_threads(self._threads):
                return work(loaded, indices)

    def _volume(self, work: VolumeWork[Result], position: int) -> Result:
        """Read one volume slab by slab into a free buffer slot and reduce it (on a pool thread)."""
        with self._slot() as slot:

            def read(z_start: int, z_stop: int) -> Loaded:
                return self.slab_reader(position, z_start, z_stop, slot)

            with numba_threads(self._threads):
                return work(read, position)

    def _slab(self, work: SlabWork[Result], slab: tuple[int, int, int]) -> Result:
        """Read one slab into a free buffer slot and reduce it (on a pool thread)."""
        with self._slot() as slot:
            loaded = self.slab_reader(*slab, slot)
            with self._compute_lock, numba_threads(self._threads):
                return work(loaded, slab)


class _SlabsAhead:
    """The slabs of one volume, each read on a pool thread while the one before is computed on.

    Slab ``k`` goes to buffer set ``k % 2``. The next slab is started when one is handed
    out, so a slab's buffers are written again only after the work has asked for the
    slab after it.
    """

    def __init__(self, read: SlabReader, position: int, ranges: list[tuple[int, int]], pool: ThreadPoolExecutor):
        self._read, self._position, self._ranges, self._pool = read, position, ranges, pool
        self._next = 0
        self._pending: Future | None = None
        self._start()

    def _start(self) -> None:
        if self._next < len(self._ranges):
            z_start, z_stop = self._ranges[self._next]
            self._pending = self._pool.submit(self._read, self._position, z_start, z_stop, self._next % 2)

    def read(self, z_start: int, z_stop: int) -> Loaded:
        """Planes ``[z_start, z_stop)``: the slab read ahead when it is the one expected."""
        expected = self._ranges[self._next] if self._next < len(self._ranges) else None
        if self._pending is None or (z_start, z_stop) != expected:
            # Not the slab read ahead: wait for that read, then read this one here.
            self.close()
            return self._read(self._position, z_start, z_stop, 0)
        loaded = self._pending.result()
        self._next += 1
        self._start()
        return loaded

    def close(self) -> None:
        """Wait for a read still under way (its buffers are reused next)."""
        if self._pending is not None:
            wait([self._pending])
            self._pending = None
        self._next = len(self._ranges)


def _kernels_run_concurrently() -> bool:
    """Whether numba's threading layer lets two threads run parallel kernels at once."""
    return threading_layer() in ("omp", "tbb")


@contextmanager
def numba_threads(count: int) -> Iterator[None]:
    """Run numba's parallel kernels on ``count`` threads within the block.

    numba's thread count is per calling thread, so this does not touch other threads.
    """
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _store_batch(
    path: str,
    variable: str,
    has_labels: bool,
    indices: np.ndarray,
    work: BatchWork[Result],
    slice_depth: int | None = None,
) -> Result:
    """A worker's task: read one batch from the store and reduce it, on one core.

    dask gives each thread of a worker one core (its nanny sets ``OMP_NUM_THREADS=1``
    for the same reason), and the runner keeps every thread busy. Left alone, numba
    would run each task's kernels on as many threads as the machine has cores, so
    that workers sharing a machine oversubscribe it (measured: 2 workers × 1 thread on
    2 cores, 1.8 s instead of 1.05 s for 80 images). numba's thread count is per
    calling thread, so this stays within the task.
    """
    reader = _worker_reader(path, variable, has_labels)
    with numba_threads(1):
        if slice_depth is None:
            return work(Loaded(*reader(indices, 0)), indices)

        def read_slab(position: int, z_start: int, z_stop: int, slot: int) -> Loaded:
            return Loaded(*reader.slab(position, z_start, z_stop, slot))

        return work(read_slices(read_slab, indices, slice_depth), indices)


def _store_volume(path: str, variable: str, has_labels: bool, position: int, work: VolumeWork) -> Result:
    """A worker's task: read one volume from the store in z-slabs and reduce it, on one core."""
    reader = _worker_reader(path, variable, has_labels)

    def read_slab(z_start: int, z_stop: int) -> Loaded:
        return Loaded(*reader.slab(position, z_start, z_stop, 0, by_chunk=True))

    with numba_threads(1):
        return work(read_slab, position)


def _store_slab(path: str, variable: str, has_labels: bool, slab: tuple[int, int, int], work: SlabWork) -> Result:
    """A worker's task: read one slab of a volume from the store and reduce it, on one core."""
    reader = _worker_reader(path, variable, has_labels)
    with numba_threads(1):
        return work(Loaded(*reader.slab(*slab, 0, by_chunk=True)), slab)


#: Per worker thread, the :class:`StoreReader` of the store it read last: its buffers
#: are reused by the next task, instead of a fresh batch-sized array that costs a page
#: fault per 4 KiB.
_WORKER_READERS = threading.local()


def _worker_reader(path: str, variable: str, has_labels: bool) -> StoreReader:
    """This thread's reader of the store; a new one when the store was written again
    since (its array metadata has another modification time)."""
    try:
        written = os.stat(os.path.join(path, variable, "zarr.json")).st_mtime_ns
    except OSError:
        written = None
    key = (path, variable, has_labels, written)
    if getattr(_WORKER_READERS, "key", None) != key:
        _WORKER_READERS.key = key
        _WORKER_READERS.reader = StoreReader(path, variable, has_labels)
    return _WORKER_READERS.reader


class DistributedRunner:
    """Batches on a ``dask.distributed`` cluster, a bounded number in flight; results in completion order.

    The workers read the store at ``path`` themselves. Each call of :meth:`run` is one
    phase of the engine (fit, then score).
    """

    def __init__(
        self, scheduler: str, path: str, variable: str, has_labels: bool, slice_depth: int | None = None
    ) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise UQEvalError(
                f"a scheduler needs dask.distributed, which is not installed: {CLUSTER_INSTALL}", parameter="scheduler"
            ) from None
        check_scheduler(scheduler)
        try:
            self.client = Client(scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise UQEvalError(f"scheduler {scheduler}: cannot connect ({error})", parameter="scheduler") from None
        self.path, self.variable, self.has_labels = path, variable, has_labels
        self.slice_depth = slice_depth

    def __enter__(self) -> DistributedRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.close()

    def run(self, work: BatchWork[Result], batches: list[np.ndarray]) -> Iterator[Result]:
        """``work`` done on each batch by the workers, its results in completion order.

        ``work`` (with the fits bound into it) is sent to every worker once per call.
        """
        return self._run(_store_batch, work, list(batches), self.slice_depth)

    def run_volumes(
        self, work: VolumeWork, positions: Sequence[int], ranges: Sequence[tuple[int, int]] = ()
    ) -> Iterator[Result]:
        """``work`` done on each volume by the workers, each reading it in z-slabs; results in completion order."""
        return self._run(_store_volume, work, [int(position) for position in positions])

    def run_slabs(self, work: SlabWork[Result], slabs: Sequence[tuple[int, int, int]]) -> Iterator[Result]:
        """``work`` done on each slab ``(position, z_start, z_stop)`` by the workers; results in completion order."""
        return self._run(_store_slab, work, [tuple(int(value) for value in slab) for slab in slabs])

    def _run(self, task: Callable, work: Callable, queue: list, *extra) -> Iterator[Result]:
        from distributed import as_completed

        if not queue:
            return
        remote_work = self.client.scatter(work, broadcast=True, hash=False)

        def submit():
            return self.client.submit(
                task, self.path, self.variable, self.has_labels, queue.pop(0), remote_work, *extra, pure=False
            )

        threads = max(1, sum(self.client.nthreads().values()))
        futures = as_completed([submit() for _ in range(min(2 * threads, len(queue)))], loop=self.client.loop)
        for future in futures:
            result = future.result()
            future.release()
            if queue:
                futures.add(submit())
            yield result
