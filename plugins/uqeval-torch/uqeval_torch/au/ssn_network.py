"""The tensors of ``ssn`` (:mod:`uqeval_torch.au.ssn`, where the model and its loss are
described): the network with its diagonal and factor heads, the reparameterised logit
sampler and the Monte-Carlo likelihood."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uqeval_torch.au.common import IGNORE_LABEL
from uqeval_torch.backbone import Head


def sample_logits(mean: torch.Tensor, factor: torch.Tensor | None, diagonal: torch.Tensor, n: int) -> torch.Tensor:
    """Draw ``n`` logit vectors from N(μ, P Pᵀ + diag(d)) per image: η = μ + P z_R + √d ⊙ z.

    Parameters
    ----------
    mean : (batch, event) μ.
    factor : (batch, event, rank) the covariance factor P; None for P = 0.
    diagonal : (batch, event) the diagonal variances d (> 0).
    n : number of samples.

    Returns
    -------
    (n, batch, event) float32 logit samples, differentiable in μ, P and d
    (reparameterisation). The randomness comes from torch's global RNG: z_R first
    (when there is a factor), then z.
    """
    mean, diagonal = mean.float(), diagonal.float()
    batch, event = mean.shape
    # Autocast would run the einsum (a bmm) in bf16; the covariance must stay float32.
    with torch.autocast(device_type=mean.device.type, enabled=False):
        deviation = torch.zeros(n, batch, event, device=mean.device, dtype=torch.float32)
        if factor is not None:
            z_rank = torch.randn(n, batch, factor.shape[-1], device=mean.device, dtype=torch.float32)
            deviation = torch.einsum("ber,sbr->sbe", factor.float(), z_rank)
        z_diagonal = torch.randn(n, batch, event, device=mean.device, dtype=torch.float32)
        return mean + deviation + diagonal.sqrt() * z_diagonal


def monte_carlo_nll(logit_samples: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The SSN loss from logit samples: −mean_b (logsumexp_s Σ_pixels log p_s(label) − log S).

    Parameters
    ----------
    logit_samples : (samples S, batch, class, y, x) logits η_s.
    labels : (batch, y, x) class indices; 255 = ignored (left out of the pixel sums).

    Returns
    -------
    Scalar float32: the negative Monte-Carlo log-likelihood of each image's label map,
    in nats per image, averaged over the batch. An image without labelled pixels adds 0
    (with a gradient).
    """
    n_samples, batch = logit_samples.shape[:2]
    expanded_labels = labels.long().unsqueeze(0).expand(n_samples, *labels.shape).flatten(0, 1)
    pixel_log_likelihood = -F.cross_entropy(
        logit_samples.float().flatten(0, 1), expanded_labels, ignore_index=IGNORE_LABEL, reduction="none"
    )  # (S·batch, y, x), 0 at ignored pixels
    sample_log_likelihood = pixel_log_likelihood.sum(dim=(-2, -1)).view(n_samples, batch)
    image_log_likelihood = torch.logsumexp(sample_log_likelihood, dim=0) - math.log(n_samples)
    return -image_log_likelihood.mean()


class SSNNetwork(nn.Module):
    """The backbone (its head gives μ) plus the diagonal and factor heads on its last features.

    Parameters
    ----------
    backbone : the attention UNet, built with ``out_channels = n_classes``.
    n_classes, rank, epsilon : see :class:`SSN`.

    Calling the module gives the mean logits μ (batch, class, y, x).
    """

    def __init__(self, backbone: nn.Module, *, n_classes: int, rank: int, epsilon: float):
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.rank = rank
        self.epsilon = epsilon
        self.diagonal_head = Head(backbone.feature_channels, n_classes)
        self.factor_head = Head(backbone.feature_channels, n_classes * rank)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The mean logits μ: (batch, class, y, x)."""
        return self.backbone(images)

    def distribution(
        self, images: torch.Tensor, *, with_factor: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The logit distribution N(μ, P Pᵀ + diag(d)) of each image, over the flattened map.

        Parameters
        ----------
        images : (batch, channel, y, x).
        with_factor : False gives P = 0 (None), without running the factor head.

        Returns
        -------
        mean : (batch, event) μ, with event = class·y·x in ``(batch, class, y, x).flatten(1)`` order.
        factor : (batch, event, rank) P, or None.
        diagonal : (batch, event) d = softplus(d̃) + ε.

        All float32.
        """
        features = self.backbone.features(images)
        batch, _, height, width = features.shape
        mean = self.backbone.head_of(features).float().flatten(1)
        diagonal = F.softplus(self.diagonal_head(features).float().flatten(1)) + self.epsilon
        if not with_factor:
            return mean, None, diagonal
        # Channel r·class + c of the factor head is column r of P at class c.
        # reshape, not view: under channels_last the head's output is not contiguous in (channel, y, x) order.
        factor = self.factor_head(features).float().reshape(batch, self.rank, self.n_classes * height * width)
        return mean, factor.transpose(1, 2), diagonal

    def sample_logits(self, images: torch.Tensor, n: int, *, with_factor: bool = True) -> torch.Tensor:
        """``n`` logit maps per image, μ + P z_R + √d ⊙ z: (n, batch, class, y, x) float32."""
        mean, factor, diagonal = self.distribution(images, with_factor=with_factor)
        samples = sample_logits(mean, factor, diagonal, n)
        return samples.view(n, images.shape[0], self.n_classes, *images.shape[-2:])
