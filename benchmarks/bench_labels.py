"""Label placement in the comparison figure: uqeval's greedy placer against adjustText.

Draws ``uqeval compare``'s entanglement figure for crowded and spread-out sets of
models, places the labels with each placer on the same figure, and counts what a
reader would trip over:

- ``overlaps``: pairs of labels whose text boxes overlap;
- ``outside``: labels that leave their panel;
- ``on markers``: label area over other points' markers, in % of all label area;
- ``misleading``: labels nearer another point than their own (they name the wrong one);
- ``distance``: mean gap between a label and its point, in pixels;
- ``seconds``: time to place the labels of one figure.

adjustText is not a dependency of uqeval: ``pip install adjustText`` to run this.

    python benchmarks/bench_labels.py            # 6, 12 and 20 crowded models, 12 spread out
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.text import Text

from uqeval.comparison import compare
from uqeval.report import compare_plots

CORRECT = {"oodd": "eu", "amb": "au", "cal": "tu"}
WRONG = {"oodd": "au", "amb": "eu", "cal": "au"}
PANELS = [("oodd", "ood"), ("amb", "id"), ("amb", "ood"), ("cal", "id"), ("cal", "ood")]


def write_run(folder: Path, group: str, values: dict) -> Path:
    """A run folder whose scores.json holds (u_correct, u_wrong) for each panel."""
    entanglement = [
        {"task": task, "split": split, "correct": CORRECT[task], "wrong": WRONG[task]}
        | {"u_correct": correct, "u_wrong": wrong, "delta": 0.1}
        for (task, split), (correct, wrong) in values.items()
    ]
    document = {
        "schema": "uqeval.scores/1",
        "store": "/data/model.zarr",
        "model": {"au_method": "ssn", "eu_method": "ensemble", "model": group, "dataset": "d", "seed": 0},
        "conventions": {"aggregation": "border"},
        "n_images": {"id": 10},
        "results": [],
        "entanglement": entanglement,
        "collapse": [],
        "notes": [],
    }
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text(json.dumps(document))
    return folder


def scenario(root: Path, n_models: int, spread: float, seed: int) -> list[Path]:
    """``n_models`` runs scattered by ``spread`` (a fraction of the axis) around one place per panel."""
    rng = np.random.default_rng(seed)
    centre = {panel: tuple(rng.uniform(0.2, 1, 2)) for panel in PANELS}
    folders = []
    for index in range(n_models):
        values = {}
        for (task, split), (c, w) in centre.items():
            scale = 0.05 if task == "cal" else 0.6
            values[(task, split)] = tuple(float(scale * np.clip(v + spread * rng.normal(), 0, 1.2)) for v in (c, w))
        folders.append(write_run(root / f"m{index}", f"model-{index:02d}", values))
    return folders


def adjust_text_placer(figure, placements) -> None:
    """adjustText on each panel: labels pushed off each other, the markers and the frame."""
    from adjustText import adjust_text

    figure.canvas.draw()
    for ax, clusters in placements:
        texts = [cluster.label for cluster in clusters]
        x = [cluster.centre[0] for cluster in clusters]
        y = [cluster.centre[1] for cluster in clusters]
        adjust_text(
            texts,
            x=x,
            y=y,
            ax=ax,
            ensure_inside_axes=True,
            arrowprops={"arrowstyle": "-", "color": "0.45", "linewidth": 0.5},
        )
    figure.set_layout_engine("none")


def measure(figure) -> dict[str, float]:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    counts = {"overlaps": 0, "outside": 0, "on markers": 0.0, "misleading": 0, "distance": 0.0}
    label_area = marker_area = 0.0
    n_labels = 0
    for ax in (ax for ax in figure.axes if ax.get_title()):
        frame = ax.get_window_extent(renderer)
        labels = [child for child in ax.texts if child.get_text() and child.get_position() != (0.5, 1.02)]
        boxes = [Text.get_window_extent(label, renderer) for label in labels]
        points = [ax.transData.transform(label.xy) for label in labels]
        counts["overlaps"] += sum(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
        counts["outside"] += sum(
            not (frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1) for b in boxes
        )
        half = compare_plots._MARKER_SIZE / 2 * figure.dpi / 72
        for index, (box, own) in enumerate(zip(boxes, points, strict=True)):
            label_area += box.width * box.height
            for j, other in enumerate(points):
                if j == index:
                    continue
                width = min(box.x1, other[0] + half) - max(box.x0, other[0] - half)
                height = min(box.y1, other[1] + half) - max(box.y0, other[1] - half)
                marker_area += max(width, 0) * max(height, 0)
            gap = compare_plots._distance(box, own)
            counts["distance"] += gap
            counts["misleading"] += any(
                compare_plots._distance(box, other) < gap for j, other in enumerate(points) if j != index
            )
            n_labels += 1
    counts["on markers"] = 100 * marker_area / label_area if label_area else 0.0
    counts["distance"] /= max(n_labels, 1)
    return counts


def run(folders: list[Path], placer_name: str) -> dict[str, float]:
    comparison = compare(folders)
    original = compare_plots._place_labels
    seconds = []

    def timed(figure, placements):
        start = time.perf_counter()
        (original if placer_name == "greedy" else adjust_text_placer)(figure, placements)
        seconds.append(time.perf_counter() - start)

    compare_plots._place_labels = timed
    try:
        figure = compare_plots.entanglement_figure(comparison)
    finally:
        compare_plots._place_labels = original
    return {**measure(figure), "seconds": seconds[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="random layouts per scenario (default 3)")
    arguments = parser.parse_args(argv)
    try:
        import adjustText  # noqa: F401
    except ImportError:
        print("adjustText is not installed: pip install adjustText", file=sys.stderr)
        return 2
    scenarios = [("6 crowded", 6, 0.05), ("12 crowded", 12, 0.05), ("20 crowded", 20, 0.05), ("12 spread", 12, 0.3)]
    columns = ["overlaps", "outside", "on markers", "misleading", "distance", "seconds"]
    print(f"| models | placer | {' | '.join(columns)} |")
    print("|" + " --- |" * (len(columns) + 2))
    for name, n_models, spread in scenarios:
        totals = {placer: dict.fromkeys(columns, 0.0) for placer in ("greedy", "adjustText")}
        for seed in range(arguments.seeds):
            with tempfile.TemporaryDirectory() as folder:
                folders = scenario(Path(folder), n_models, spread, seed)
                for placer in totals:
                    for key, value in run(folders, placer).items():
                        totals[placer][key] += value / arguments.seeds
        for placer, values in totals.items():
            cells = [
                f"{values[c]:.2f}" if c in ("on markers", "distance", "seconds") else f"{values[c]:.1f}"
                for c in columns
            ]
            print(f"| {name} | {placer} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
