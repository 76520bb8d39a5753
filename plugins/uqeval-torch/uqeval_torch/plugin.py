"""The ``uqeval`` entry point of uqeval-torch: its hook implementations.

Nothing here imports torch: the core loads this module on every ``uqeval`` command. The
hooks hand out the method and dataset classes, whose modules import torch (and scipy,
OpenCV) only inside the methods that use them, so ``uqeval plugins`` lists them all,
options included, without loading torch.
"""

from __future__ import annotations

from typing import Any

import typer

from uqeval import hookimpl


@hookimpl
def uqeval_au_methods() -> dict[str, Any]:
    from uqeval_torch.au.diffusion import Diffusion
    from uqeval_torch.au.prob_unet import ProbUNet
    from uqeval_torch.au.softmax import Softmax
    from uqeval_torch.au.ssn import SSN
    from uqeval_torch.au.tta import TestTimeAugmentation

    return {method.name: method for method in (Softmax(), SSN(), ProbUNet(), Diffusion(), TestTimeAugmentation())}


@hookimpl
def uqeval_eu_methods() -> dict[str, Any]:
    from uqeval_torch.eu.dropout import MCDropout
    from uqeval_torch.eu.ensemble import Ensemble
    from uqeval_torch.eu.none import SingleModel
    from uqeval_torch.eu.swag import SWAG

    methods = (SingleModel(), MCDropout(), SWAG(low_rank=False), SWAG(low_rank=True), Ensemble())
    return {method.name: method for method in methods}


@hookimpl
def uqeval_datasets() -> dict[str, Any]:
    from uqeval_torch.data.chaksu import ChaksuDataset
    from uqeval_torch.data.lidc import LIDCDataset
    from uqeval_torch.data.synthetic import SyntheticDataset

    datasets = (SyntheticDataset(), LIDCDataset(), ChaksuDataset())
    return {dataset.name: dataset for dataset in datasets}


@hookimpl
def uqeval_cli(app: typer.Typer) -> None:
    from uqeval_torch.cli import add_commands

    add_commands(app)
