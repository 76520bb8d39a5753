"""MONAI's ``UNet`` to a scored cube: MC dropout × test-time augmentation.

The same run as ``bring_your_own_model.py`` with the network medical-imaging users
already have: ``monai.networks.nets.UNet`` with its ``dropout`` argument, which puts an
``nn.Dropout`` in every convolution unit. ``MCDropout`` finds those layers, switches on
exactly them at test time and leaves MONAI's instance norms in evaluation mode.

    pip install monai uqeval plugins/uqeval-torch      # or: make
    python examples/monai_unet.py --out monai-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bring_your_own_model import batches, train  # the data and training loop of the plain example
from monai.networks.nets import UNet

import uqeval
from uqeval_torch.data.synthetic import SyntheticDataset
from uqeval_torch.sources import MCDropout, TestTimeAugmentation
from uqeval_torch.writing import write_cube


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("monai-output"), help="folder for the store and the report")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    torch.manual_seed(arguments.seed)
    dataset = SyntheticDataset(size=32, n_train=128, n_calibration=16, n_test=24, faint=0.1)
    model = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=dataset.n_classes,
        channels=(16, 32, 64),
        strides=(2, 2),
        num_res_units=1,
        dropout=0.2,
    )
    train(model, dataset, arguments.steps, arguments.seed)

    eu = MCDropout(model, members=4)
    print(f"MC dropout over {eu.n_dropout_layers} dropout layers of MONAI's UNet × test-time augmentation")
    store = write_cube(
        eu,
        TestTimeAugmentation(samples=4),
        batches(dataset),
        arguments.out / "cube.zarr",
        model="MONAI UNet (MC dropout × TTA)",
        dataset="synthetic",
        class_names=dataset.class_names,
        seed=arguments.seed,
        overwrite=True,
    )
    scores = uqeval.score(store)
    uqeval.save_report(scores, arguments.out)
    print(scores)
    for row in scores.entanglement:
        if row["split"] in ("id", "ood"):
            print(f"Δ {row['task']:>4} on {row['split']:<3}: {row['delta']:+.3f}")


if __name__ == "__main__":
    main()
