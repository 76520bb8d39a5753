"""What ``uqeval score --bootstrap N`` costs: the resamples against scoring the store.

Scores a store once without and once with the per-image parts the bootstrap needs,
then times the resamples alone (:func:`uqeval.scoring.bootstrap.bootstrap`) and two
parts of them: OODD and FD computed for all resamples at once from image counts, and
the other tasks tabulated resample by resample. Ratios are against ``uqeval.score`` of
the same store without a bootstrap, timed in the same run.

    .venv/bin/python benchmarks/bench_bootstrap.py --store STORE.zarr --resamples 1000
    .venv/bin/python benchmarks/bench_bootstrap.py            # a 160-image synthetic store, 64×64
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _timing import best_times, print_table

import uqeval
from uqeval.cube import open_cube
from uqeval.scoring import engine
from uqeval.scoring.api import bootstrap_options, tabulation
from uqeval.scoring.bootstrap import bootstrap
from uqeval.scoring.prepare import plan, prepare
from uqeval.scoring.sources import cube_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="a cube store (default: a synthetic one)")
    parser.add_argument("--images", type=int, default=160, help="images of the synthetic store")
    parser.add_argument("--size", type=int, default=64, help="side of the synthetic store's images")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        store = args.store
        if store is None:
            store = Path(scratch) / "bench.zarr"
            uqeval.make_synthetic_cube(store, "disentangled", n_images=args.images, size=args.size, seed=args.seed)
        source = cube_source(open_cube(store), store)
        request = prepare(tasks=("oodd", "amb", "cal", "fd"), aggregations=None, conventions=None, segmentation=False)
        source_plan = plan(
            request,
            source.domains,
            source.roles,
            has_labels=source.has_labels,
            segmentation_possible=source.has_probabilities,
            n_raters=source.n_raters,
        )
        computed = engine.run(source, request, source_plan, keep_pools=True)
        retabulate = tabulation(source, request, source_plan, computed)
        tables = retabulate(
            computed.statistics, histograms=computed.histograms, calibration_sums=computed.calibration_sums
        )

        def resamples(tasks):
            return lambda: bootstrap(
                tables,
                computed.statistics,
                source.domains,
                source.roles,
                **bootstrap_options(source, request, computed, retabulate, tasks),
                n=args.resamples,
                seed=args.seed,
            )

        contenders = {
            "uqeval.score": lambda: uqeval.score(store),
            "uqeval.score --bootstrap": lambda: uqeval.score(store, bootstrap=args.resamples, seed=args.seed),
            "resamples alone": resamples(source_plan.tasks),
            "  OODD + FD, all resamples at once": resamples([t for t in source_plan.tasks if t in ("oodd", "fd")]),
            "  AMB + CAL, tabulated per resample": resamples([t for t in source_plan.tasks if t in ("amb", "cal")]),
        }
        times = best_times(contenders, args.repeats)
    base = times["uqeval.score"]
    rows = [[name, f"{seconds:.3f}", f"{seconds / base:.2f}"] for name, seconds in times.items()]
    kept = computed.pools.nbytes / 1e6
    title = f"{len(source.ids)} images, {args.resamples} resamples; per-image parts kept: {kept:.1f} MB"
    print_table(title, ["contender", "s", "t / t_uqeval.score"], rows)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
