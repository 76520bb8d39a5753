"""``ssn``: Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020; the study's §3.2).

The logits of a whole image are one Gaussian vector over the flattened map
(event size E = class·y·x) with a low-rank-plus-diagonal covariance::

    η ~ N(μ, P Pᵀ + D),    μ ∈ ℝᴱ,  P ∈ ℝᴱˣᴿ (rank R = 10),  D = diag(d),  d = softplus(d̃) + ε  (ε = 1e-5)

μ is the backbone's own head; d̃ (class channels) and P (rank·class channels) come from
two more heads of the same kind (GroupNorm → SiLU → 3×3 conv, zero-initialised) on the
backbone's last decoder features, as in the study's code. Samples are drawn by the
reparameterisation ``η = μ + P z_R + √d ⊙ z``, z_R ~ N(0, I_R), z ~ N(0, I_E), which never
forms or factorises the E×E covariance (torch's ``LowRankMultivariateNormal`` builds a
Cholesky factor eagerly, and that fails or is slow inside a training loop).

Loss (the paper's Monte-Carlo integral of the likelihood, their eq. 5), per image b::

    L_b = −log (1/S) Σ_s exp( Σ_pixels log softmax(η_s)[label] )
        = −( logsumexp_s Σ_pixels log p(label | η_s) − log S )

with S = 10 independent samples, averaged over the batch: the study's loss, in nats
per image (summed over pixels, not divided by their number). Ignored pixels (255) are
left out of the sums. For the first ``diagonal_only_epochs`` epochs (the study: 10) the
covariance factor is zero, so the samples are μ + √d ⊙ z and only μ and d train.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from uqeval_torch.au.common import IGNORE_LABEL
from uqeval_torch.backbone import Head
from uqeval_torch.options import Options


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


class SSN(Options):
    """Stochastic Segmentation Network: a low-rank Gaussian over the logits of the whole image.

    Parameters
    ----------
    rank : rank R of the covariance factor P (the study: 10).
    epsilon : ε added to the diagonal variances (the study: 1e-5).
    mc_samples : S, independent logit samples of the Monte-Carlo likelihood (the study: 10).
    diagonal_only_epochs : epochs (from 0) in which P is zero (the study: 10).
    """

    name = "ssn"
    description = "Stochastic Segmentation Network: low-rank Gaussian over the logits, Monte-Carlo likelihood"
    deterministic = False
    default_samples = 10

    def __init__(self, *, rank: int = 10, epsilon: float = 1e-5, mc_samples: int = 10, diagonal_only_epochs: int = 10):
        if rank < 1:
            raise ValueError(f"rank must be at least 1; got {rank}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive; got {epsilon}")
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be at least 1; got {mc_samples}")
        self.rank = rank
        self.epsilon = epsilon
        self.mc_samples = mc_samples
        self.diagonal_only_epochs = diagonal_only_epochs

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> SSNNetwork:
        net = backbone(in_channels=in_channels, out_channels=n_classes, dropout=dropout)
        return SSNNetwork(net, n_classes=n_classes, rank=self.rank, epsilon=self.epsilon)

    def loss(self, model: SSNNetwork, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """The negative Monte-Carlo log-likelihood (:func:`monte_carlo_nll`, nats per image) of
        ``mc_samples`` logit samples; P = 0 before epoch ``diagonal_only_epochs``."""
        with_factor = epoch >= self.diagonal_only_epochs
        return monte_carlo_nll(model.sample_logits(images, self.mc_samples, with_factor=with_factor), labels)

    def sample(self, model: SSNNetwork, images: torch.Tensor, n: int) -> torch.Tensor:
        """Softmax of ``n`` independent logit samples: (n, batch, class, y, x) float32."""
        return torch.softmax(model.sample_logits(images, n), dim=2)
