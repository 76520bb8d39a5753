"""MONAI's 3D ``UNet`` to a scored store of volumes: MC dropout × test-time flips, per volume and per slice.

Small synthetic volumes of ``16 × 32 × 24`` voxels (z, y, x; 3 × 1 × 1 mm) hold one or
two blurred ellipsoids in noise, each drawn by 4 raters who put its edge at a different
depth of the blur. MONAI's ``UNet(spatial_dims=3, dropout=0.2)`` trains on random
``16 × 16 × 16`` patches of them, about a minute on a CPU. Then:

- **EU:** MC dropout, 4 members (one fixed mask per dropout layer of MONAI's
  convolution units; its instance norms stay in evaluation mode);
- **AU:** test-time augmentation, the first 4 volume flips (none, z, y, x), each
  flipped back on the output;
- **patches:** each volume is predicted from overlapping ``16 × 16 × 16`` windows
  (``write_cube(..., patch_size=...)``, MONAI's sliding window);

``write_cube`` writes calibration and test volumes (``id``) and two shifts of the test
volumes (``noise``: three times the noise, ``contrast``: a third of the contrast) to
``OUT/cube.zarr``, volume by volume and member by member. The store is scored per volume
(``OUT/scores``) and per z-slice (``OUT/scores-slice``, ``uqeval score --unit slice``).
Measured with one torch thread (``OMP_NUM_THREADS=1``, torch 2.13, MONAI 1.6): 61 s of
CPU in all for the default 1500 steps (training about 43 s of it), 2 min 29 s of wall
time on a 2-core machine busy with other jobs; ``--steps 150`` about 35 s of CPU. On a
busy machine also set ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads that spin while they
wait (torch's, and the numba kernels' that check each written member) made sampling
tens of times slower there.

    pip install ./ "./plugins/uqeval-torch[examples]"      # from the repository root (MONAI); or: make
    python examples/monai_unet_3d.py --out monai-3d-output
    uqeval score monai-3d-output/cube.zarr --unit slice     # the same store, from the command line
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

import uqeval
from uqeval_torch.sources import MCDropout, TestTimeAugmentation
from uqeval_torch.writing import write_cube

#: Voxels per volume (z, y, x) and their size in mm: thick slices, as in many CT and MR series.
SHAPE = (16, 32, 24)
SPACING = (3.0, 1.0, 1.0)
#: The network's patch: whole along z, smaller than the volume along y and x.
PATCH = (16, 16, 16)
#: Where each rater puts an ellipsoid's edge, in units of its radius: they disagree inside the blur.
RATER_EDGES = (0.8, 0.93, 1.07, 1.2)
#: The blur of an ellipsoid's edge (a logistic ramp), in units of its radius.
BLUR = 0.15


def synthetic_volume(rng: np.random.Generator, *, noise: float = 0.25, contrast: float = 1.0):
    """One volume ``(1, z, y, x)`` float32 and its raters' labels ``(rater, z, y, x)`` uint8."""
    grid = np.meshgrid(*(np.arange(size) + 0.5 for size in SHAPE), indexing="ij")
    distance = np.full(SHAPE, np.inf)  # to the nearest ellipsoid's centre, in units of its radius
    for _ in range(rng.integers(1, 3)):
        centre = rng.uniform((5, 8, 7), (11, 24, 17))
        radii_mm = rng.uniform(6.0, 11.0, size=3)
        radii = radii_mm / np.array(SPACING)
        squared = sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, radii, strict=True))
        distance = np.minimum(distance, np.sqrt(squared))
    signal = contrast / (1.0 + np.exp((distance - 1.0) / BLUR))
    image = signal + noise * rng.standard_normal(SHAPE)
    labels = np.stack([distance <= edge for edge in RATER_EDGES]).astype(np.uint8)
    return image[None].astype(np.float32), labels


def synthetic_set(n: int, seed: int, **shift: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` volumes ``(n, 1, z, y, x)`` and labels ``(n, rater, z, y, x)``."""
    rng = np.random.default_rng(seed)
    pairs = [synthetic_volume(rng, **shift) for _ in range(n)]
    return np.stack([image for image, _ in pairs]), np.stack([labels for _, labels in pairs])


def train(model: nn.Module, steps: int, seed: int, batch: int = 4) -> None:
    """Cross-entropy on random ``PATCH`` crops, against a random rater per crop and step."""
    images, labels = (torch.from_numpy(array) for array in synthetic_set(48, seed + 1))
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        picked = torch.randint(0, len(images), (batch,), generator=generator)
        rater = torch.randint(0, labels.shape[1], (batch,), generator=generator)
        corners = [
            torch.randint(0, size - patch + 1, (1,), generator=generator).item()
            for size, patch in zip(SHAPE, PATCH, strict=True)
        ]
        crop = tuple(slice(start, start + patch) for start, patch in zip(corners, PATCH, strict=True))
        loss = nn.functional.cross_entropy(
            model(images[picked][(slice(None), slice(None), *crop)]),
            labels[picked, rater][(slice(None), *crop)].long(),
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def batches(seed: int, per_split: int = 8) -> Iterator[dict]:
    """Calibration and test volumes (``id``), then the test volumes' twins under two shifts."""
    splits = [
        ("calibration", "id", {}),
        ("test", "id", {}),
        ("test", "noise", {"noise": 0.75}),
        ("test", "contrast", {"contrast": 1 / 3}),
    ]
    for number, (role, domain, shift) in enumerate(splits):
        # The shifted volumes are the ID test volumes' twins: the same shapes, drawn from the same seed.
        images, labels = synthetic_set(per_split, seed + 100 + min(number, 1), **shift)
        for start in range(0, per_split, 4):
            yield {
                "image": torch.from_numpy(images[start : start + 4]),
                "labels": labels[start : start + 4],
                "domain": domain,
                "role": role,
                "image_id": [f"{domain}-{role}-{index:02d}" for index in range(start, min(start + 4, per_split))],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("monai-3d-output"), help="folder for the store and reports")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (the default takes about a minute)")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    torch.manual_seed(arguments.seed)
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=1,
        dropout=0.2,
    )
    train(model, arguments.steps, arguments.seed)

    eu = MCDropout(model, members=4)
    au = TestTimeAugmentation(samples=4)
    print(f"MC dropout over {eu.n_dropout_layers} dropout layers of MONAI's 3D UNet × 4 test-time flips")
    store = write_cube(
        eu,
        au,
        batches(arguments.seed),
        arguments.out / "cube.zarr",
        patch_size=PATCH,
        spacing=SPACING,
        model="MONAI UNet 3D (MC dropout × TTA flips)",
        dataset="synthetic ellipsoids 16×32×24",
        class_names=["background", "ellipsoid"],
        seed=arguments.seed,
        overwrite=True,
        progress=False,
    )
    for unit, folder in (("volume", "scores"), ("slice", "scores-slice")):
        scores = uqeval.score(store, unit=unit)
        uqeval.save_report(scores, arguments.out / folder)
        print(f"\nper {unit}: {arguments.out / folder}")
        print(scores)
        for row in scores.entanglement:
            if row["split"] in ("id", "ood"):
                print(f"Δ {row['task']:>4} on {row['split']:<3}: {row['delta']:+.3f}")


if __name__ == "__main__":
    main()
