"""Your own networks as EU members: checked outputs, and the seeds members and batches draw from.

An EU source built on your models (:class:`~uqeval_torch.eu.ensemble.Ensemble`,
:class:`~uqeval_torch.eu.dropout.MCDropout`, :class:`~uqeval_torch.eu.none.SingleModel`)
wraps each in a :class:`ModelOutput`, so that a model that returns the wrong thing is
named in the message, and a model that returns probabilities serves every AU method
(which all take the softmax of what the network returns).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from uqeval import SUM_TOLERANCE, UQEvalError

#: What a model may return.
OUTPUTS = ("logits", "probabilities")


def mix_seeds(*numbers: int) -> int:
    """One 32-bit seed from several integers (numpy's ``SeedSequence`` of their absolute
    values): ``(seed, batch)`` for a batch's draws, ``(seed, member, layer)`` for a dropout mask."""
    return int(np.random.SeedSequence([abs(int(number)) for number in numbers]).generate_state(1)[0])


def spatial_text(images: torch.Tensor) -> str:
    """The spatial sizes of ``(batch, channel, [z,] y, x)`` images as the messages write them: ``y=8, x=8``."""
    names = ("z", "y", "x")[-(images.ndim - 2) :] if images.ndim in (4, 5) else ()
    return ", ".join(f"{name}={size}" for name, size in zip(names, images.shape[2:], strict=True))


def check_maps(maps: torch.Tensor, images: torch.Tensor, culprit: str) -> torch.Tensor:
    """``maps`` if they are ``(batch, class ≥ 2, [z,] y, x)`` for ``images``; else a message naming ``culprit``."""
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    shape = tuple(maps.shape)
    if maps.ndim != images.ndim or shape[0] != batch or shape[2:] != spatial or shape[1] < 2:
        element = "voxel" if len(spatial) == 3 else "pixel"
        raise UQEvalError(
            f"{culprit} returned shape {shape} for images of shape {tuple(images.shape)}; expected "
            f"(batch={batch}, class ≥ 2, {spatial_text(images)}) class scores for every {element}"
        )
    return maps


def check_probabilities(probabilities: torch.Tensor, images: torch.Tensor, culprit: str) -> torch.Tensor:
    """``probabilities`` if they are ``(batch, class, [z,] y, x)`` maps for ``images`` that are
    non-negative, finite and sum to 1 over ``class`` within :data:`uqeval.SUM_TOLERANCE`."""
    check_maps(probabilities, images, culprit)
    sums = probabilities.sum(dim=1)
    low, high = float(sums.min()), float(sums.max())
    if not (abs(low - 1) <= SUM_TOLERANCE and abs(high - 1) <= SUM_TOLERANCE) or float(probabilities.min()) < 0:
        raise UQEvalError(
            f"{culprit} returned maps that are not probabilities over the class dim (dim 1): sums range "
            f"{low:.3g}–{high:.3g}, minimum {float(probabilities.min()):.3g}; return softmax probabilities "
            "(or logits with outputs='logits')"
        )
    if not torch.isfinite(probabilities).all():
        raise UQEvalError(f"{culprit} returned NaN or infinite values")
    return probabilities


class ModelOutput(nn.Module):
    """Your model, its output checked and given as logits.

    Parameters
    ----------
    model : maps images ``(batch, channel, [z,] y, x)`` to ``(batch, class, [z,] y, x)``.
    source : who holds it, for messages (``"member 2 of Ensemble"``).
    outputs : ``"logits"``, or ``"probabilities"``, which are checked and returned as
        their logarithm (logits whose softmax is the probabilities).
    """

    def __init__(self, model: nn.Module, source: str, outputs: str = "logits") -> None:
        super().__init__()
        self.model, self.source, self.outputs = model, source, outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        culprit = f"model {type(self.model).__name__} ({self.source})"
        if not isinstance(output, torch.Tensor):
            raise UQEvalError(
                f"{culprit} returned a {type(output).__name__}, not a tensor; wrap it so that it returns "
                f"(batch, class, [z,] y, x) {self.outputs} (e.g. lambda x: model(x)['out'])"
            )
        if self.outputs == "logits":
            return check_maps(output, images, culprit)
        return torch.log(check_probabilities(output.float(), images, culprit))


def prepared(models: Sequence[Any], owner: str, outputs: str) -> list[nn.Module]:
    """``models`` each wrapped in a :class:`ModelOutput`, after checking they are modules."""
    if outputs not in OUTPUTS:
        raise UQEvalError(f"outputs must be 'logits' or 'probabilities', not {outputs!r}")
    wrapped = []
    for index, model in enumerate(models):
        if not isinstance(model, nn.Module):
            raise UQEvalError(f"{owner}: model {index} must be a torch.nn.Module, got {type(model).__name__}")
        source = f"member {index} of {owner}" if len(models) > 1 else owner
        wrapped.append(ModelOutput(model, source, outputs))
    return wrapped


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its parameters and buffers (no weights are copied).

    The copy's modes and hooks are its own, so a member can be put in evaluation mode and
    given masks without touching ``model``.
    """
    memo = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)
