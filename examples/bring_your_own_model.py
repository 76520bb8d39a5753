"""Bring your own model: any PyTorch segmentation network to a scored cube in a few lines.

The network below is an ordinary ``nn.Module`` with dropout; nothing in it knows
uqeval. It trains for a few steps on uqeval-torch's synthetic shapes (drawn by 4
raters), then:

- **EU:** MC dropout, 4 members (each one fixed mask per dropout layer; everything else in eval mode);
- **AU:** test-time augmentation, 4 flips and rotations inverted exactly on the output;

``write_cube`` writes the samples to a store and ``uqeval.score`` scores it. Runs on a
CPU in about half a minute of CPU time: measured 32 s of CPU with one torch thread
(``OMP_NUM_THREADS=1``, torch 2.13), and 79 s of wall time on a 2-core machine busy with
other jobs.

    pip install ./ ./plugins/uqeval-torch      # from the repository root; or: make
    python examples/bring_your_own_model.py --out byom-output

Writes ``byom-output/cube.zarr`` and the report in ``byom-output/scores`` (``scores.json``, ``metrics.csv``, …).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

import uqeval
from uqeval_torch.data.synthetic import SyntheticDataset
from uqeval_torch.sources import MCDropout, TestTimeAugmentation
from uqeval_torch.writing import write_cube


class SmallUNet(nn.Module):
    """Two scales, channel dropout after each block: any segmentation network would do."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 16, dropout: float = 0.2):
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1),
                nn.GroupNorm(4, outputs),
                nn.SiLU(),
                nn.Dropout2d(dropout),
            )

        self.down = block(in_channels, width)
        self.deep = nn.Sequential(nn.MaxPool2d(2), block(width, 2 * width), nn.Upsample(scale_factor=2))
        self.up = block(3 * width, width)
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skip = self.down(images)
        return self.head(self.up(torch.cat([skip, self.deep(skip)], dim=1)))


def train(model: nn.Module, dataset: SyntheticDataset, steps: int, seed: int) -> None:
    """A few steps of cross-entropy against a random rater per image and step."""
    samples = list(dataset.samples("train"))
    images = torch.from_numpy(np.stack([sample.image for sample in samples]))
    labels = torch.from_numpy(np.stack([sample.labels for sample in samples])).long()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(samples), (16,), generator=generator)
        rater = torch.randint(0, labels.shape[1], (16,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch, rater])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def batches(dataset: SyntheticDataset, size: int = 16):
    """Calibration and test images (ID), then the test images under two of the study's shifts."""
    for role, domain in [("calibration", "id"), ("test", "id"), ("test", "contrast"), ("test", "noise")]:
        samples = list(dataset.samples(role, domain))
        for start in range(0, len(samples), size):
            chunk = samples[start : start + size]
            yield {
                "image": torch.from_numpy(np.stack([sample.image for sample in chunk])),
                "labels": np.stack([sample.labels for sample in chunk]),
                "domain": domain,
                "role": role,
                "image_id": [sample.image_id for sample in chunk],
            }


def parse_arguments(description: str, default_out: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(default_out), help="folder for the store and the report")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def synthetic_shapes() -> SyntheticDataset:
    """uqeval-torch's synthetic shapes, 32² px, drawn by 4 raters."""
    return SyntheticDataset(size=32, n_train=128, n_calibration=16, n_test=24, faint=0.1)


def score_mc_dropout_with_tta(model: nn.Module, name: str, dataset: SyntheticDataset, out: Path, seed: int) -> None:
    """MC dropout (4 members) × TTA (4 samples) to ``out/cube.zarr``, scored into ``out/scores``; prints Δ."""
    eu = MCDropout(model, members=4)
    au = TestTimeAugmentation(samples=4)
    print(f"MC dropout over {eu.n_dropout_layers} dropout layers of {name} × test-time augmentation")
    store = write_cube(
        eu,
        au,
        batches(dataset),
        out / "cube.zarr",
        model=f"{name} (MC dropout × TTA)",
        dataset="synthetic",
        class_names=dataset.class_names,
        seed=seed,
        overwrite=True,
    )
    scores = uqeval.score(store)
    uqeval.save_report(scores, out / "scores")
    print(scores)
    for row in scores.entanglement:
        if row["split"] in ("id", "ood"):
            print(f"Δ {row['task']:>4} on {row['split']:<3}: {row['delta']:+.3f}")


def main() -> None:
    arguments = parse_arguments(__doc__.split("\n")[0], "byom-output")
    torch.manual_seed(arguments.seed)
    dataset = synthetic_shapes()
    model = SmallUNet()
    train(model, dataset, arguments.steps, arguments.seed)
    score_mc_dropout_with_tta(model, "SmallUNet", dataset, arguments.out, arguments.seed)


if __name__ == "__main__":
    main()
