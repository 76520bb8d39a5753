"""How far storage rounding moves each metric: the tie tolerances of ranks.

The same synthetic model is written twice through :class:`uqeval.CubeWriter`, with its
probabilities stored as float16 (the default, the coarsest storage uqeval accepts) and
as float32, and both stores are scored with the default conventions and with
``--preset paper``. Whatever differs between the two runs is storage rounding, not a
difference between models; a ranking must not turn on it. The script prints, per
metric, the largest difference over every split, measure and aggregation, and the
largest difference of Δ, next to the tolerances of :mod:`uqeval.precision`.

Run: ``.venv/bin/python benchmarks/storage_precision.py [--seeds 3] [--images 48 --size 32]``
(about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import uqeval
from uqeval.precision import RANK_TOLERANCE
from uqeval.synth import SCENARIOS, image_plan, synthesize_image


def write(path: Path, scenario: str, seed: int, n_images: int, size: int, dtype: str) -> Path:
    """A synthetic store of ``scenario`` (images seeded like ``make_synthetic_cube``) in ``dtype``."""
    eu = 1 if scenario == "no-eu" else 4
    streams = np.random.SeedSequence(seed).spawn(n_images)
    with uqeval.CubeWriter(path, n_classes=2, eu=eu, au=4, height=size, width=size, raters=4, dtype=dtype) as writer:
        for index, ((domain, role), stream) in enumerate(zip(image_plan(n_images), streams, strict=True)):
            probs, labels = synthesize_image(
                np.random.default_rng(stream), scenario, domain, size=size, n_classes=2, eu=eu, au=4, raters=4
            )
            writer.append(probs[None], labels[None], domain=domain, role=role, image_ids=[f"{domain}-{index:05d}"])
    return path


def differences(first: uqeval.Scores, second: uqeval.Scores) -> tuple[dict[str, float], float]:
    """Largest |difference| per metric over the rows both have, and of Δ."""
    fields = ("task", "split", "measure", "aggregation", "metric")
    by_key = {tuple(row[k] for k in fields): row for row in first.results}
    largest: dict[str, float] = defaultdict(float)
    for row in second.results:
        other = by_key[tuple(row[k] for k in fields)]
        if math.isnan(row["value"]) or math.isnan(other["value"]):
            continue
        largest[row["metric"]] = max(largest[row["metric"]], abs(row["value"] - other["value"]))
    deltas = {(row["task"], row["split"]): row["delta"] for row in first.entanglement}
    changes = [abs(row["delta"] - deltas[(row["task"], row["split"])]) for row in second.entanglement]
    delta = max((change for change in changes if not math.isnan(change)), default=0.0)
    return dict(largest), delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    start = time.perf_counter()
    overall: dict[str, float] = defaultdict(float)
    overall_delta = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for scenario in SCENARIOS:
            for seed in range(args.seeds):
                stores = {
                    dtype: write(
                        Path(folder) / f"{scenario}-{seed}-{dtype}.zarr", scenario, seed, args.images, args.size, dtype
                    )
                    for dtype in ("float16", "float32")
                }
                for preset in ("default", "paper"):
                    runs = [
                        uqeval.score(stores[dtype], preset=preset, aggregations=["border", "mean", "threshold"])
                        for dtype in ("float16", "float32")
                    ]
                    largest, delta = differences(*runs)
                    for metric, value in largest.items():
                        overall[metric] = max(overall[metric], value)
                    overall_delta = max(overall_delta, delta)
                    shown = ", ".join(f"{metric} {value:.1e}" for metric, value in sorted(largest.items()))
                    print(f"{scenario:12s} seed {seed} {preset:7s}: Δ {delta:.1e}; {shown}")
    print("\nlargest float16-vs-float32 difference, and the tie tolerance of ranks:")
    for metric, value in sorted(overall.items()):
        tolerance = RANK_TOLERANCE.get(metric)
        note = f"tolerance {tolerance:g} ({tolerance / value:.0f}x)" if tolerance and value > 0 else ""
        print(f"  {metric:15s} {value:.2e}  {note}")
    print(f"  {'Δ':15s} {overall_delta:.2e}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
