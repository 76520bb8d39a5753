"""The dropout layers of a network and the fixed masks that thin it, for ``dropout``
(:mod:`uqeval_torch.eu.dropout`, where MC dropout's members are described)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: The dropout layers MC dropout samples (their subclasses too, e.g. in third-party models).
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
#: Those whose mask covers whole channels (the others mask every element).
_CHANNEL_WISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)
#: Those that keep SELU's mean and variance (torch's alpha dropout formula).
_ALPHA_TYPES = (nn.AlphaDropout, nn.FeatureAlphaDropout)
#: SELU's −λα, the value alpha dropout sets dropped units to.
_SELU_ALPHA = 1.7580993408473766


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """Every dropout module of ``model`` (:data:`DROPOUT_TYPES` and their subclasses), in module order."""
    return [module for module in model.modules() if isinstance(module, DROPOUT_TYPES)]


class FixedMask:
    """A forward hook that makes a dropout layer (in evaluation mode, so the identity) drop with one fixed mask.

    The mask is drawn from a generator seeded by ``seed``, on the CPU (the same mask on
    every device), of shape ``(1, channel, 1, …)`` for channel-wise dropout and
    ``(1, *input.shape[1:])`` for element-wise dropout: shared by every image of a batch.
    A kept unit is scaled by 1/(1 − p) (alpha dropout: torch's affine correction), as in
    training.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}

    def mask(self, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The 0/1 keep mask of ``layer`` for ``inputs``, in their dtype and on their device."""
        if isinstance(layer, _CHANNEL_WISE):
            shape = (1, inputs.shape[1], *([1] * (inputs.ndim - 2)))
        else:
            shape = (1, *inputs.shape[1:])
        key = (shape, inputs.device, inputs.dtype)
        if key not in self._masks:
            generator = torch.Generator().manual_seed(self.seed)
            keep = torch.rand(shape, generator=generator) >= layer.p
            self._masks[key] = keep.to(device=inputs.device, dtype=inputs.dtype)
        return self._masks[key]

    def __call__(self, layer: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        inputs = args[0]
        p = float(layer.p)
        if p >= 1.0:
            return torch.zeros_like(inputs)
        mask = self.mask(layer, inputs)
        if isinstance(layer, _ALPHA_TYPES):
            a = 1.0 / math.sqrt((_SELU_ALPHA**2 * p + 1.0) * (1.0 - p))
            return inputs * mask * a + (mask - 1.0) * (_SELU_ALPHA * a) + _SELU_ALPHA * a * p
        return inputs * mask / (1.0 - p)
