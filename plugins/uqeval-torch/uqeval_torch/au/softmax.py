"""``softmax``: a deterministic UNet trained with cross-entropy (the study's §3.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from uqeval_torch.options import Options

if TYPE_CHECKING:
    import torch
    from torch import nn


class Softmax(Options):
    """The plain segmentation network: one softmax map per image.

    It is deterministic, so it needs an EU method with several members (an ensemble,
    MC dropout, SWAG) to be decomposed; with ``none`` training is refused. For a model of
    your own, ``Softmax()`` reads its logits (or, through the EU source's
    ``outputs="probabilities"``, its probabilities).
    """

    name = "softmax"
    description = "deterministic UNet with a softmax head, cross-entropy loss"
    deterministic = True
    default_samples = 1

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> nn.Module:
        return backbone(in_channels=in_channels, out_channels=n_classes, dropout=dropout)

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """Cross-entropy, nats per labelled pixel."""
        from uqeval_torch.au.common import cross_entropy

        return cross_entropy(model(images), labels)

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """The softmax map, repeated ``n`` times: (n, batch, class, y, x)."""
        import torch

        probabilities = torch.softmax(model(images).float(), dim=1)
        return probabilities.unsqueeze(0).expand(n, *probabilities.shape)
