"""A PyTorch segmentation model writes its sample cube with ``uqeval.CubeWriter`` and scores it.

The script makes a toy dataset (noisy discs whose border three raters disagree on, plus
an out-of-distribution domain with much stronger noise), trains a small deep ensemble
of CNNs with dropout, writes every member's MC-dropout softmax samples to a cube store
and scores the uncertainty with ``uqeval.score``. It needs about 40 s of CPU time: measured
39 s of CPU and 83 s of wall time with one torch thread, on a 2-core machine busy with other
jobs (torch 2.13). The script asks torch for 2 threads; on that busy machine they spun
waiting for each other, and the same run took 212 s of CPU and 9 minutes of wall time.

    pip install torch            # the CPU build is enough (or: make, which pins it)
    python examples/pytorch_segmentation.py --out toy-output [--seed 0] [--quick]

Writes ``toy-output/cube.zarr`` and the report in ``toy-output/scores`` (``scores.json``, ``metrics.csv``, plots)
next to it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas
import torch
from torch import nn

import uqeval

SIZE = 32  # image height and width, pixels
RATERS = 3
MEMBERS = 3  # eu: ensemble members
SAMPLES = 4  # au: MC-dropout samples per member
ID_NOISE, OOD_NOISE = 0.3, 2.0  # noise σ of the in-distribution images and of the OOD domain "noise"


@dataclass
class ToyData:
    images: np.ndarray  # (image, 1, y, x) float32
    labels: np.ndarray  # (image, rater, y, x) uint8
    domains: list[str]
    roles: list[str]


def make_images(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` discs on a noisy background, and each rater's label maps: every rater draws
    the border a little further in or out."""
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    images, labels = [], []
    for _ in range(n):
        centre = rng.uniform(0.35, 0.65, 2) * SIZE
        radius = rng.uniform(0.15, 0.3) * SIZE
        distance = np.hypot(yy - centre[0], xx - centre[1])
        # A soft edge makes the border itself ambiguous, so the raters disagree about it.
        intensity = 1 / (1 + np.exp((distance - radius) / 1.5))
        images.append(intensity + rng.normal(0, noise, intensity.shape))
        labels.append([distance < radius + offset for offset in rng.uniform(-2.5, 2.5, RATERS)])
    return np.asarray(images, dtype=np.float32)[:, None], np.asarray(labels, dtype=np.uint8)


def make_data(rng: np.random.Generator, n_calibration: int, n_test: int, n_ood: int) -> ToyData:
    """The images to score: ID ones for calibration and test, and OOD ones (domain
    ``noise``), all test."""
    id_images, id_labels = make_images(rng, n_calibration + n_test, ID_NOISE)
    ood_images, ood_labels = make_images(rng, n_ood, OOD_NOISE)
    return ToyData(
        images=np.concatenate([id_images, ood_images]),
        labels=np.concatenate([id_labels, ood_labels]),
        domains=["id"] * (n_calibration + n_test) + ["noise"] * n_ood,
        roles=["calibration"] * n_calibration + ["test"] * (n_test + n_ood),
    )


def make_model() -> nn.Module:
    """A small fully convolutional net with dropout; 2 classes (background, disc)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Dropout2d(0.2),
        nn.Conv2d(16, 16, 3, padding=4, dilation=4),
        nn.ReLU(),
        nn.Dropout2d(0.2),
        nn.Conv2d(16, 2, 1),
    )


def train_member(images: torch.Tensor, labels: torch.Tensor, steps: int, generator: torch.Generator) -> nn.Module:
    """Train one member; each image of a batch gets a random rater's labels.

    Sampling the rater at every step makes the softmax learn the raters' disagreement
    (aleatoric); the members differ by their initialisation and data order (epistemic).
    """
    model = make_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(images), (16,), generator=generator)
        rater = torch.randint(RATERS, (16,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch, rater].long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


@torch.no_grad()
def predict(members: list[nn.Module], images: torch.Tensor) -> np.ndarray:
    """Softmax samples, (image, eu, au, class, y, x).

    The cube's axes: ``eu`` = ensemble members (their disagreement is the epistemic
    part), ``au`` = aleatoric samples that each member draws (here MC dropout kept on
    at test time; test-time augmentation or a latent-variable head fit the axis too).
    AU is the mean over members of the entropy of each member's mean sample, so most
    of it comes from the softmax itself, trained on disagreeing raters.
    """
    per_member = []
    for model in members:
        model.eval()
        for module in model.modules():
            if isinstance(module, nn.Dropout2d):
                module.train()  # keep dropout on while predicting: MC dropout
        per_member.append(torch.stack([torch.softmax(model(images), dim=1) for _ in range(SAMPLES)], dim=1))
    return torch.stack(per_member, dim=1).numpy()


def write_cube(path: Path, data: ToyData, members: list[nn.Module], seed: int, batch: int = 16) -> None:
    """Predict batch by batch and append each batch to the cube store (float16 by default)."""
    with uqeval.CubeWriter(
        path,
        n_classes=2,
        eu=MEMBERS,
        au=SAMPLES,
        height=SIZE,
        width=SIZE,
        raters=RATERS,
        model="toy-cnn",
        dataset="toy-discs",
        au_method="mc-dropout",
        eu_method="deep-ensemble",
        seed=seed,
        class_names=["background", "disc"],
        overwrite=True,
    ) as writer:
        for start in range(0, len(data.images), batch):
            part = slice(start, start + batch)
            writer.append(
                predict(members, torch.from_numpy(data.images[part])),
                labels=data.labels[part],
                domain=data.domains[part],
                role=data.roles[part],
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("toy-output"), help="folder for cube.zarr and scores/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (for tests)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    n_train, n_calibration, n_test, n_ood, steps = (64, 8, 24, 24, 60) if args.quick else (256, 32, 96, 64, 200)
    train_images, train_labels = (torch.from_numpy(a) for a in make_images(rng, n_train, ID_NOISE))
    data = make_data(rng, n_calibration, n_test, n_ood)

    generator = torch.Generator().manual_seed(args.seed)
    members = [train_member(train_images, train_labels, steps, generator) for _ in range(MEMBERS)]
    cube = args.out / "cube.zarr"
    write_cube(cube, data, members, args.seed)

    scores = uqeval.score(cube)
    uqeval.save_report(scores, args.out / "scores")
    table = scores.to_dataframe()  # one row per task, split, measure, aggregation and metric
    headline = table.query("metric in ['auroc', 'ncc', 'ace'] and split in ['id', 'noise']")
    print(headline.round(3).to_string(index=False))
    print("\nEntanglement Δ (> 0: the correct measure beats the wrong one):")
    print(pandas.DataFrame(scores.entanglement).round(3).to_string(index=False))
    print(f"\ncube: {cube}\nreport: {args.out / 'scores'}")


if __name__ == "__main__":
    main()
