"""MONAI's ``UNet`` to a scored cube: MC dropout × test-time augmentation.

The same run as ``bring_your_own_model.py`` with the network medical-imaging users
already have: ``monai.networks.nets.UNet`` with its ``dropout`` argument, which puts an
``nn.Dropout`` in every convolution unit. ``MCDropout`` finds those layers, gives each
member one fixed mask for exactly them and leaves MONAI's instance norms in evaluation mode.
Measured: 36 s of CPU with one torch thread (``OMP_NUM_THREADS=1``, torch 2.13, MONAI 1.6),
and 104 s of wall time on a 2-core machine busy with other jobs.

    pip install ./ "./plugins/uqeval-torch[examples]"      # from the repository root (MONAI); or: make
    python examples/monai_unet.py --out monai-output
"""

from __future__ import annotations

import torch
from bring_your_own_model import (  # the data, training and scoring of the plain example
    parse_arguments,
    score_mc_dropout_with_tta,
    synthetic_shapes,
    train,
)
from monai.networks.nets import UNet


def main() -> None:
    arguments = parse_arguments(__doc__.split("\n")[0], "monai-output")
    torch.manual_seed(arguments.seed)
    dataset = synthetic_shapes()
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
    score_mc_dropout_with_tta(model, "MONAI's UNet", dataset, arguments.out, arguments.seed)


if __name__ == "__main__":
    main()
