"""How ``uqeval.score`` scales on a ``dask.distributed`` cluster, against scoring locally.

Two measurements (docs/scoring.md, "Scaling out"):

1. **Rate.** A store of ``--images`` cubes of eu 10 × au 10 × class 2 × 128 × 128 in
   float16, written as ``bench_score.py`` writes its rate store (``CubeWriter``
   defaults, three raters, ID calibration/test and one OOD domain), is scored with the
   default tasks:

   * ``local``: ``uqeval.score(store)`` in this process;
   * one ``distributed.LocalCluster(n_workers=W, threads_per_worker=T,
     processes=True)`` per ``--configs`` entry ``WxT``:
     ``uqeval.score(store, scheduler=cluster.scheduler_address)``. An entry
     ``WxT-notrim`` starts its workers without the ``MALLOC_TRIM_THRESHOLD_=65536``
     that dask's nanny sets by default (``distributed.nanny.pre-spawn-environ``); that
     setting also fixes glibc's mmap threshold, so every array over 128 kB a worker
     allocates is fresh memory, paid for in page faults.

   All clusters are started before any timing and stay open together (idle workers
   only send heartbeats), so the contenders are timed round-robin in one loop, best
   of ``--repeats``. The first call of each contender is timed on its own and reported
   as ``start-up incl. compile`` (fresh worker processes import uqeval and load the
   numba kernels); it is not among the timed runs. Every cluster's first result is
   checked against the local one: the tidy results and every per-image score must be
   equal to 1e-9.

   Beside the wall time, the CPU time of each best run is reported: of this process
   (the client, and the clusters' schedulers, which live in it) and of the cluster's
   worker processes. On a shared machine it is steadier than the wall time, and it
   shows what the cluster costs in work rather than in waiting.

   Ratio ``t_cluster / t_local``; target: 2 workers × 1 thread (dask's defaults)
   within 1.5× of local (``≤ 1.5``). On a machine with few cores, local scoring
   already uses every core (numba threads, with the next batch read meanwhile), so a
   cluster on the same machine cannot beat it: the ratio measures what going through
   the cluster costs.

2. **Per-task overhead.** A tiny store of ``--overhead-images`` images of eu 2 × au 2 ×
   class 2 × 16 × 16, one image per chunk, is scored locally and on each cluster, best
   of ``--repeats``: with ``batch_bytes=1`` (one batch, i.e. one task, per image)
   and with the default batches (one task for the calibration images, one for the
   rest). ``(t_cluster - t_local) / tasks`` at one image per task is the overhead per
   task; the difference between the two runs splits it into a cost per call
   (connecting the client, sending the job) and a cost per extra task.

Run: ``.venv/bin/python benchmarks/bench_cluster.py [--check]`` (about 2 minutes at the
defaults; writes about 0.8 GB to a temporary folder).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _timing import best_times, print_table
from bench_score import write_store
from bench_store import make_probs, store_bytes

import uqeval
from uqeval.scoring.batches import BATCH_BYTES, plan_batches
from uqeval.scoring.sources import cube_source

#: Largest ``t_cluster / t_local`` allowed for 2 workers × 1 thread.
RATIO_TARGET = 1.5
#: Largest difference allowed between a cluster's numbers and the local ones.
TOLERANCE = 1e-9
#: What dask's nanny sets in its workers' environment that ``-notrim`` leaves out.
TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"


@dataclass(frozen=True)
class Config:
    """A local cluster: ``workers`` processes of ``threads`` threads, with dask's malloc trim or not."""

    workers: int
    threads: int
    trim: bool = True

    @property
    def name(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{workers} × {threads}" + ("" if self.trim else ", no malloc trim")


#: The configuration the target applies to.
TARGET = Config(2, 1)


def parse_configs(text: str) -> list[Config]:
    """``"1x1,2x1-notrim"`` → ``[Config(1, 1), Config(2, 1, trim=False)]``."""
    configs = []
    for item in text.split(","):
        spec, _, flag = item.strip().lower().partition("-")
        workers, _, threads = spec.partition("x")
        try:
            config = Config(int(workers), int(threads or 1), trim=flag != "notrim")
        except ValueError:
            raise argparse.ArgumentTypeError(f"configuration {item!r}: expected WxT or WxT-notrim, e.g. 2x1") from None
        if flag not in ("", "notrim") or min(config.workers, config.threads) < 1:
            raise argparse.ArgumentTypeError(f"configuration {item!r}: expected WxT or WxT-notrim, W and T ≥ 1")
        configs.append(config)
    return configs


@contextlib.contextmanager
def worker_environment(trim: bool) -> Iterator[None]:
    """Start workers with dask's default environment, or without its malloc trim threshold.

    A nanny copies its workers' variables into its own process's environment too, so
    the variable is also taken out of ``os.environ`` while the cluster starts.
    """
    if trim:
        yield
        return
    import dask

    saved = os.environ.pop(TRIM_VARIABLE, None)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE}": None}):
            yield
    finally:
        if saved is not None:
            os.environ[TRIM_VARIABLE] = saved


def start_cluster(stack: contextlib.ExitStack, config: Config) -> str:
    """A ``LocalCluster`` of worker processes, closed with ``stack``; its scheduler's address."""
    from distributed import LocalCluster

    with worker_environment(config.trim):
        cluster = LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.threads,
            processes=True,
            dashboard_address=None,
            # The scheduler's HTTP server (health, metrics) on a free port, not 8787.
            scheduler_kwargs={"dashboard_address": ":0"},
            silence_logs=logging.ERROR,
        )
    return stack.enter_context(cluster).scheduler_address


def worker_pids(address: str) -> list[int]:
    """Process ids of the workers of the cluster at ``address``."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return sorted(client.run(os.getpid).values())


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by this process and by processes ``pids`` (NaN without /proc)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def metered(fn: Callable[[], object], pids: list[int], cpu: dict[str, float], name: str) -> Callable[[], None]:
    """``fn``, keeping in ``cpu[name]`` the CPU time of its cheapest call (this process and ``pids``)."""

    def run() -> None:
        before = cpu_seconds(pids)
        fn()
        cpu[name] = min(cpu.get(name, float("inf")), cpu_seconds(pids) - before)

    return run


def n_batches(path: Path, batch_bytes: int) -> int:
    """How many batches (tasks) ``uqeval.score`` makes of the store at ``batch_bytes``.

    The default tasks fit on the calibration images, so their chunks are batched apart.
    """
    source = cube_source(uqeval.open_cube(path), path)
    fitting, other = plan_batches(
        source.chunk_sizes, source.bytes_per_image, batch_bytes, source.roles == "calibration", True
    )
    return len(fitting) + len(other)


def largest_difference(got: uqeval.Scores, expected: uqeval.Scores) -> float:
    """Largest absolute difference of the tidy results and per-image scores; inf if they differ otherwise."""
    worst = 0.0
    for frame in ("to_dataframe", "images_dataframe"):
        a, b = getattr(got, frame)(), getattr(expected, frame)()
        if list(a.columns) != list(b.columns) or list(a.index) != list(b.index):
            return float("inf")
        numbers = a.select_dtypes("number").columns
        if not a.drop(columns=numbers).equals(b.drop(columns=numbers)):
            return float("inf")
        x, y = a[numbers].to_numpy(float), b[numbers].to_numpy(float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        both = ~np.isnan(x)
        if both.any():
            worst = max(worst, float(np.max(np.abs(x[both] - y[both]))))
    return worst


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160, help="images of the rate store")
    parser.add_argument("--pool", type=int, default=32, help="distinct cubes generated")
    parser.add_argument("--eu", type=int, default=10, help="ensemble members of the rate store")
    parser.add_argument("--au", type=int, default=10, help="samples per member of the rate store")
    parser.add_argument("--size", type=int, default=128, help="height and width of the rate store")
    parser.add_argument(
        "--configs",
        type=parse_configs,
        default="1x1,2x1,1x2,2x1-notrim",
        help="clusters: WORKERSxTHREADS, -notrim for workers without dask's malloc trim; comma-separated",
    )
    parser.add_argument("--overhead-images", type=int, default=16, help="images (one task each) of the tiny store")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit with status 1 if the target is missed")
    args = parser.parse_args(argv)
    configs = list(dict.fromkeys(args.configs))

    load_before = os.getloadavg()[0]
    with np.errstate(over="ignore"):  # exp of large logits: p1 rounds to 0 or 1, as intended
        pool = make_probs(args.pool, args.eu, args.au, args.size, args.seed).astype(np.float16)
        tiny_pool = make_probs(min(args.pool, 4), 2, 2, 16, args.seed).astype(np.float16)
    with tempfile.TemporaryDirectory(prefix="uqeval-bench-cluster-") as tmp, contextlib.ExitStack() as stack:
        store, tiny = Path(tmp) / "rate.zarr", Path(tmp) / "tiny.zarr"
        write_store(store, pool, args.images, args.seed)
        write_store(tiny, tiny_pool, args.overhead_images, args.seed, chunk_images=1)
        tasks, tiny_tasks, tiny_few = n_batches(store, BATCH_BYTES), n_batches(tiny, 1), n_batches(tiny, BATCH_BYTES)
        decoded = args.images * pool[0].nbytes / 1e9
        print(
            f"rate store: {args.images} images of {args.eu}×{args.au}×2×{args.size}×{args.size} float16, "
            f"{decoded:.2f} GB decoded, {store_bytes(store) / 1e9:.2f} GB on disk, {tasks} batches"
        )
        print(
            f"tiny store: {args.overhead_images} images of 2×2×2×16×16 float16, one per chunk: "
            f"{tiny_tasks} tasks at batch_bytes=1, {tiny_few} at the default"
        )
        print(f"machine: {os.cpu_count()} cores; clusters: all open at once, timed round-robin")

        addresses = {config.name: start_cluster(stack, config) for config in configs}
        pids = {"local": []} | {name: worker_pids(address) for name, address in addresses.items()}

        def scorer(path: Path, address: str | None, batch_bytes: int = BATCH_BYTES) -> Callable[[], uqeval.Scores]:
            return lambda: uqeval.score(path, scheduler=address, batch_bytes=batch_bytes)

        names = ["local", *addresses]
        everywhere = {"local": None, **addresses}
        startup, results = {}, {}
        for name in names:
            startup[name], results[name] = timed(scorer(store, everywhere[name]))
        worst = max((largest_difference(results[name], results["local"]) for name in addresses), default=0.0)
        del results
        cpu: dict[str, float] = {}
        times = best_times(
            {name: metered(scorer(store, everywhere[name]), pids[name], cpu, name) for name in names},
            repeats=args.repeats,
            warmup=0,
        )
        many = best_times({name: scorer(tiny, everywhere[name], 1) for name in names}, repeats=args.repeats)
        few = best_times({name: scorer(tiny, everywhere[name]) for name in names}, repeats=args.repeats)

    def overhead(name: str) -> float:
        return (many[name] - many["local"]) / tiny_tasks

    print_table(
        f"Scoring {args.images} images (best of {args.repeats}; start-up: the first call, not among them)",
        [
            "configuration",
            "start-up incl. compile (s)",
            "seconds",
            "images/s",
            "t / t_local",
            "CPU s",
            "overhead/task (ms)",
        ],
        [
            [
                name,
                f"{startup[name]:.2f}",
                f"{seconds:.3f}",
                f"{args.images / seconds:.1f}",
                f"{seconds / times['local']:.2f}",
                f"{cpu[name]:.2f}",
                "-" if name == "local" else f"{overhead(name) * 1e3:.1f}",
            ]
            for name, seconds in times.items()
        ],
    )
    print_table(
        f"Overhead on the tiny store (best of {args.repeats}; Δ = t_cluster - t_local)",
        ["configuration", f"Δ, {tiny_tasks} tasks (ms)", f"Δ, {tiny_few} tasks (ms)", "per extra task (ms)"],
        [
            [
                name,
                f"{(many[name] - many['local']) * 1e3:.0f}",
                f"{(few[name] - few['local']) * 1e3:.0f}",
                f"{((many[name] - many['local']) - (few[name] - few['local'])) / (tiny_tasks - tiny_few) * 1e3:.1f}"
                if tiny_tasks > tiny_few
                else "-",
            ]
            for name in addresses
        ],
    )
    print(
        f"\ntiny store locally: {many['local'] * 1e3:.0f} ms at {tiny_tasks} batches, {few['local'] * 1e3:.0f} ms "
        f"at {tiny_few}; overhead/task = Δ at {tiny_tasks} tasks / {tiny_tasks}"
    )
    same = worst <= TOLERANCE
    print("CPU s: the cheapest timed call's CPU time, this process (client and schedulers) and the workers")
    print(f"cluster results equal the local ones: {'yes' if same else 'NO'} (largest difference {worst:.1e})")

    met = same
    print()
    for name in addresses:
        if name in (TARGET.name, Config(2, 1, trim=False).name):
            ratio = times[name] / times["local"]
            verdict = "ok" if ratio <= RATIO_TARGET else "MISSED"
            print(f"t_cluster / t_local ({name}) = {ratio:.2f} (target ≤ {RATIO_TARGET}) {verdict}")
    if TARGET.name in times:
        met &= times[TARGET.name] / times["local"] <= RATIO_TARGET
    else:
        print(f"{TARGET.name} not measured: the target is not checked")
    print(f"\nload average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
