"""The report's figures drawn in worker processes, started before the scoring.

Drawing the figures of a small store takes longer than scoring it, almost all of it in
matplotlib's Python code, on one core. :class:`FigureWorkers` starts processes at the
start of a command; they import matplotlib while the scoring runs, then draw the
figures side by side, each returning its files' bytes, which the caller writes into the
report. Without workers, :func:`draw_figures` draws them in this process, with the same
code: the bytes are the same either way.

A figure is a :class:`FigureJob`: the name of a function of :mod:`uqeval.report.plots`
or :mod:`uqeval.report.compare_plots` and its arguments, so that naming one imports no
matplotlib here.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from uqeval.report.style import FIGURE_FORMATS

__all__ = ["FIGURE_FORMATS", "FigureJob", "FigureWorkers", "draw_figure", "draw_figures", "useful_workers"]

#: The most worker processes: a score report has three figures.
MOST_WORKERS = 3


@dataclass(frozen=True)
class FigureJob:
    """One figure: ``module.function(*args, **kwargs)`` returns it; its files are named ``stem.<format>``.

    ``function`` is ``"module:name"`` with the module under :mod:`uqeval.report`, e.g.
    ``"plots:roc_figure"``; the arguments must pickle (arrays, dataclasses, mappings).
    """

    stem: str
    function: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def draw_figure(job: FigureJob, formats: Sequence[str] = FIGURE_FORMATS) -> dict[str, bytes]:
    """Build ``job``'s figure and render it in each of ``formats``: format → the file's bytes.

    The figure is laid out once and rendered once per format (:func:`uqeval.report.plots.figure_bytes`).
    """
    from uqeval.report.plots import figure_bytes

    module, name = job.function.split(":")
    figure = getattr(importlib.import_module(f"uqeval.report.{module}"), name)(*job.args, **job.kwargs)
    return {suffix: figure_bytes(figure, suffix) for suffix in formats}


def draw_figures(
    jobs: Sequence[FigureJob], formats: Sequence[str] = FIGURE_FORMATS, workers: FigureWorkers | None = None
) -> dict[str, dict[str, bytes]]:
    """Each job's files: stem → format → bytes, in ``workers`` when given, else here, one after another."""
    if workers is not None:
        return workers.draw(jobs, formats)
    return {job.stem: draw_figure(job, formats) for job in jobs}


def useful_workers() -> int:
    """How many figure workers would help now: :data:`MOST_WORKERS` or the CPUs this
    process may use, whichever is fewer, when at least one of those CPUs is idle (the
    1-minute load average is below their count less one); else 0.

    Workers buy time only from idle cores: each one imports matplotlib anew (about a
    second of CPU), which on a busy machine costs more than drawing side by side saves.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        load = 0.0
    return min(MOST_WORKERS, cpus) if cpus >= 2 and load < cpus - 1 else 0


class FigureWorkers:
    """``processes`` processes (at least one) that draw figures.

    Started fresh (``spawn``: a fork would copy the scorer's threads), they import
    matplotlib and the figures' modules at once, while the caller goes on; :meth:`draw`
    hands them the jobs, the next job to the first one free. Use as a context manager,
    or call :meth:`close`: the processes end with it (and at the latest with this
    process, as daemons).
    """

    def __init__(self, processes: int = MOST_WORKERS) -> None:
        count = processes
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for _ in range(max(1, count)):
            here, there = context.Pipe()
            process = context.Process(target=_serve, args=(there,), daemon=True, name="uqeval-figures")
            process.start()
            there.close()
            self._workers.append((process, here))

    def draw(self, jobs: Sequence[FigureJob], formats: Sequence[str] = FIGURE_FORMATS) -> dict[str, dict[str, bytes]]:
        """Each job's files, stem → format → bytes, drawn in the workers in the order given.

        Raises
        ------
        Exception
            The first error a job raised, re-raised here with the worker's traceback as its cause.
        RuntimeError
            A worker ended without an answer.
        """
        pending = list(jobs)
        results: dict[str, dict[str, bytes]] = {}
        busy: dict[Connection, FigureJob] = {}
        idle = [connection for _, connection in self._workers]
        while pending or busy:
            while pending and idle:
                connection = idle.pop()
                job = pending.pop(0)
                connection.send((job, tuple(formats)))
                busy[connection] = job
            for connection in wait(list(busy)):
                job = busy.pop(connection)
                try:
                    status, answer = connection.recv()
                except EOFError:
                    raise RuntimeError(f"the process drawing {job.stem} ended without an answer") from None
                if status == "error":
                    error, text = answer
                    raise error from _WorkerTraceback(text)
                results[job.stem] = answer
                idle.append(connection)
        return {job.stem: results[job.stem] for job in jobs}

    def close(self) -> None:
        """End the workers: ask them to stop, and stop those that do not."""
        for _, connection in self._workers:
            with contextlib.suppress(OSError):
                connection.send(None)
            connection.close()
        deadline = time.monotonic() + 1.0  # one second for them all: an error must not wait on their imports
        for process, _ in self._workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
        self._workers = []

    def __enter__(self) -> FigureWorkers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _WorkerTraceback(Exception):
    """The traceback of an error raised in a worker, as text."""

    def __str__(self) -> str:
        return self.args[0]


def _serve(connection: Connection) -> None:
    """A worker's loop: import what the figures need, then draw each job received until told to stop."""
    import signal

    import uqeval.report.compare_plots
    import uqeval.report.plots  # noqa: F401  (imported before the first job comes)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle: it ends the workers
    while True:
        try:
            message = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        job, formats = message
        try:
            answer: tuple[str, Any] = ("done", draw_figure(job, formats))
        except Exception as error:  # handed to the caller, which raises it
            answer = ("error", (error, traceback.format_exc()))
        try:
            connection.send(answer)
        except Exception:  # an error that does not pickle goes as its text
            connection.send(("error", (RuntimeError(traceback.format_exc()), "")))
