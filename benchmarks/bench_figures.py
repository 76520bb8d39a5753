"""What the figures and report.html cost: ``uqeval score`` against ``uqeval score --no-plots``.

Writes the synthetic demo store (``uqeval synth``'s defaults: 96 images of 64 × 64,
eu 5 × au 8, scenario ``disentangled``) and scores it from the command line, each run
in a fresh process as a user runs it: with the figures (PNG and SVG) and report.html,
and with ``--no-plots``. The two are timed round-robin after a warm-up run of each (which
also fills the kernel cache); the ratio of their best times is the target (≤ 2).

It also checks that two runs write byte-identical figures, and times the figures'
parts in this process (import, building each figure, laying it out, rendering each
format), which says where their time goes.

    python benchmarks/bench_figures.py               # ~1 min
    python benchmarks/bench_figures.py --check --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import print_table

#: The most ``uqeval score`` may take, figures and report included, against ``--no-plots``.
TARGET_RATIO = 2.0


def run_score(store: Path, out: Path, *options: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system, its worker processes included) of
    ``uqeval score STORE --out OUT OPTIONS`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "uqeval", "score", str(store), "--out", str(out), *options],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def figure_hashes(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.suffix in (".png", ".svg")
    }


def figure_parts(store: Path) -> list[list[str]]:
    """Seconds of each part of the figures, drawn here as ``uqeval score`` draws them."""
    from uqeval.scoring import score

    scores = score(store, scratch=store.parent)
    start = time.perf_counter()
    from uqeval.report import plots

    rows = [["import matplotlib and the figures' module", f"{time.perf_counter() - start:.3f}"]]
    aggregation = scores.conventions.aggregation
    curves = scores.roc_curves()
    aurocs = {
        domain: {measure: scores.value("oodd", domain, measure, "auroc", aggregation) for measure in scores.measures}
        for domain in curves
    }
    figures = {
        "roc": lambda: plots.roc_figure(curves, aurocs, aggregation=aggregation),
        "reliability": lambda: plots.reliability_figure(
            {key: value for key, value in scores.reliability.items() if key[0] in ("id", "ood")}
        ),
        "maps": lambda: plots.maps_figure(plots.map_examples(scores.examples)),
    }
    for name, build in figures.items():
        times = [time.perf_counter()]
        figure = build()
        times.append(time.perf_counter())
        plots.lay_out(figure)
        times.append(time.perf_counter())
        for suffix in plots.FIGURE_FORMATS:
            plots.figure_bytes(figure, suffix)
            times.append(time.perf_counter())
        parts = ["build", "lay out", *(f"render {suffix}" for suffix in plots.FIGURE_FORMATS)]
        spans = zip(parts, times, times[1:], strict=False)
        rows += [[f"{name}: {part}", f"{end - begin:.3f}"] for part, begin, end in spans]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is above {TARGET_RATIO}")
    args = parser.parse_args()

    from uqeval.synth import make_synthetic_cube

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        store = folder / "demo.zarr"
        make_synthetic_cube(store, "disentangled", n_images=args.images, seed=0)
        contenders = {
            "uqeval score (figures, report.html)": (folder / "plots", ()),
            "uqeval score --no-plots": (folder / "no-plots", ("--no-plots",)),
        }
        for out, options in contenders.values():  # warm-up: fills the kernel cache, the OS's file cache
            run_score(store, out, *options)
        first = figure_hashes(folder / "plots")
        best = dict.fromkeys(contenders, float("inf"))
        cpu = dict.fromkeys(contenders, float("inf"))
        for _ in range(args.repeats):
            for name, (out, options) in contenders.items():
                wall, seconds = run_score(store, out, *options)
                best[name], cpu[name] = min(best[name], wall), min(cpu[name], seconds)
        identical = figure_hashes(folder / "plots") == first
        names = list(contenders)
        ratio = best[names[0]] / best[names[1]]
        print_table(
            f"{args.images} images of 64 × 64, each run a fresh process, best of {args.repeats}",
            ["command", "wall s", "CPU s"],
            [[name, f"{best[name]:.2f}", f"{cpu[name]:.2f}"] for name in names],
        )
        print(f"\nratio figures / --no-plots: {ratio:.2f} wall (target ≤ {TARGET_RATIO}), ", end="")
        print(f"{cpu[names[0]] / cpu[names[1]]:.2f} CPU (information: the load of other work skews it less)")
        print(f"figures byte-identical across runs: {identical} ({len(first)} files)")
        print_table("the figures' parts, in this process", ["part", "seconds"], figure_parts(store))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.check and (ratio > TARGET_RATIO or not identical):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
