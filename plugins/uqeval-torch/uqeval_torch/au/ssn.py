"""``ssn``: Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020; the study's §3.2).

The logits of a whole image are one Gaussian vector over the flattened map
(event size E = class·y·x) with a low-rank-plus-diagonal covariance::

    η ~ N(μ, P Pᵀ + D),    μ ∈ ℝᴱ,  P ∈ ℝᴱˣᴿ (rank R = 10),  D = diag(d),  d = exp(log d̃) + ε  (ε = 1e-5)

μ is the backbone's own head; ``log d̃`` (class channels) and P (class·rank channels)
come from two 1×1 convs on the backbone's last decoder features. Samples are drawn by
the reparameterisation ``η = μ + P z_R + √d ⊙ z``, z_R ~ N(0, I_R), z ~ N(0, I_E), which
never forms or factorises the E×E covariance (torch's ``LowRankMultivariateNormal``
builds a Cholesky factor eagerly, and that fails or is slow inside a training loop).

Loss (the paper's Monte-Carlo integral of the likelihood, their eq. 5), per image b::

    L_b = −log (1/S) Σ_s exp( Σ_pixels log softmax(η_s)[label] )
        = −( logsumexp_s Σ_pixels log p(label | η_s) − log S )

with S = 20 antithetic samples (10 draws and their mirror images around μ, as in the
paper's code). The paper sums L_b over the pixels and averages it over the batch; we
divide the batch's Σ_b L_b by its number of labelled pixels, so the loss is in nats
per labelled pixel like :func:`~uqeval_torch.au.common.cross_entropy`, and equals the
cross-entropy of μ when the covariance vanishes. Ignored pixels (255) are left out of
the sums. The first ``mean_only_epochs`` epochs (the study: 10) train μ alone with that
cross-entropy before the covariance heads join in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from uqeval_torch.au.common import IGNORE_LABEL, cross_entropy
from uqeval_torch.backbone import group_norm


def sample_logits(
    mean: torch.Tensor, factor: torch.Tensor, diagonal: torch.Tensor, n: int, *, antithetic: bool = False
) -> torch.Tensor:
    """Draw ``n`` logit vectors from N(μ, P Pᵀ + diag(d)) per image: η = μ + P z_R + √d ⊙ z.

    Parameters
    ----------
    mean : (batch, event) μ.
    factor : (batch, event, rank) the covariance factor P.
    diagonal : (batch, event) the diagonal variances d (> 0).
    n : number of samples; even when ``antithetic``.
    antithetic : draw n/2 deviations δ and return μ + δ followed by μ − δ (same order),
        so sample i and sample i + n/2 average to μ exactly.

    Returns
    -------
    (n, batch, event) float32 logit samples, differentiable in μ, P and d
    (reparameterisation). The randomness comes from torch's global RNG.
    """
    if antithetic and n % 2:
        raise ValueError(f"antithetic sampling needs an even number of samples; got {n}")
    mean, factor, diagonal = mean.float(), factor.float(), diagonal.float()
    batch, event, rank = factor.shape
    draws = n // 2 if antithetic else n
    # Autocast would run the einsum (a bmm) in bf16; the covariance must stay float32.
    with torch.autocast(device_type=mean.device.type, enabled=False):
        z_rank = torch.randn(draws, batch, rank, device=mean.device, dtype=torch.float32)
        z_diagonal = torch.randn(draws, batch, event, device=mean.device, dtype=torch.float32)
        deviation = torch.einsum("ber,sbr->sbe", factor, z_rank) + diagonal.sqrt() * z_diagonal
        if antithetic:
            deviation = torch.cat([deviation, -deviation])
        return mean + deviation


def monte_carlo_nll(logit_samples: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The SSN loss from logit samples: −Σ_b (logsumexp_s Σ_pixels log p_s(label) − log S) / labelled pixels.

    Parameters
    ----------
    logit_samples : (samples S, batch, class, y, x) logits η_s.
    labels : (batch, y, x) class indices; 255 = ignored (left out of the pixel sums and
        of the count).

    Returns
    -------
    Scalar float32: the negative Monte-Carlo log-likelihood of the batch's label maps, in
    nats per labelled pixel (0 with a gradient for a batch without labelled pixels).
    """
    n_samples, batch = logit_samples.shape[:2]
    expanded_labels = labels.long().unsqueeze(0).expand(n_samples, *labels.shape).flatten(0, 1)
    pixel_log_likelihood = -F.cross_entropy(
        logit_samples.float().flatten(0, 1), expanded_labels, ignore_index=IGNORE_LABEL, reduction="none"
    )  # (S·batch, y, x), 0 at ignored pixels
    sample_log_likelihood = pixel_log_likelihood.sum(dim=(-2, -1)).view(n_samples, batch)
    image_log_likelihood = torch.logsumexp(sample_log_likelihood, dim=0) - math.log(n_samples)
    return -image_log_likelihood.sum() / (labels != IGNORE_LABEL).sum().clamp(min=1)


class SSNNetwork(nn.Module):
    """The backbone (its head gives μ) plus 1×1-conv heads for log d̃ and P on its last features.

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
        channels = backbone.feature_channels
        # The covariance heads see the features normalised and activated as the mean head sees them.
        self.covariance_norm = group_norm(channels)
        self.log_diagonal_head = nn.Conv2d(channels, n_classes, 1)
        self.factor_head = nn.Conv2d(channels, n_classes * rank, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The mean logits μ: (batch, class, y, x)."""
        return self.backbone(images)

    def distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logit distribution N(μ, P Pᵀ + diag(d)) of each image, over the flattened map.

        Returns
        -------
        mean : (batch, event) μ, with event = class·y·x in ``(batch, class, y, x).flatten(1)`` order.
        factor : (batch, event, rank) P.
        diagonal : (batch, event) d = exp(log d̃) + ε.

        All float32.
        """
        features = self.backbone.features(images)
        batch, _, height, width = features.shape
        mean = self.backbone.head_of(features).float().flatten(1)
        activated = F.silu(self.covariance_norm(features))
        diagonal = self.log_diagonal_head(activated).float().flatten(1).exp() + self.epsilon
        factor = self.factor_head(activated).float().view(batch, self.rank, self.n_classes * height * width)
        return mean, factor.transpose(1, 2), diagonal

    def sample_logits(self, images: torch.Tensor, n: int, *, antithetic: bool = False) -> torch.Tensor:
        """``n`` logit maps per image, μ + P z_R + √d ⊙ z: (n, batch, class, y, x) float32."""
        mean, factor, diagonal = self.distribution(images)
        samples = sample_logits(mean, factor, diagonal, n, antithetic=antithetic)
        return samples.view(n, images.shape[0], self.n_classes, *images.shape[-2:])


class SSN:
    """Stochastic Segmentation Network: a low-rank Gaussian over the logits of the whole image.

    Parameters
    ----------
    rank : rank R of the covariance factor P (the study: 10).
    epsilon : ε added to the diagonal variances (the study: 1e-5).
    mc_samples : S, logit samples of the Monte-Carlo likelihood; even (S/2 draws and their
        mirror images around μ).
    mean_only_epochs : epochs (from 0) that train μ alone with cross-entropy (the study: 10).
    """

    name = "ssn"
    description = "Stochastic Segmentation Network: low-rank Gaussian over the logits, Monte-Carlo likelihood"
    deterministic = False
    default_samples = 10

    def __init__(self, *, rank: int = 10, epsilon: float = 1e-5, mc_samples: int = 20, mean_only_epochs: int = 10):
        if rank < 1:
            raise ValueError(f"rank must be at least 1; got {rank}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive; got {epsilon}")
        if mc_samples < 2 or mc_samples % 2:
            raise ValueError(f"mc_samples must be even and at least 2 (antithetic pairs); got {mc_samples}")
        self.rank = rank
        self.epsilon = epsilon
        self.mc_samples = mc_samples
        self.mean_only_epochs = mean_only_epochs

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> SSNNetwork:
        net = backbone(in_channels=in_channels, out_channels=n_classes, dropout=dropout)
        return SSNNetwork(net, n_classes=n_classes, rank=self.rank, epsilon=self.epsilon)

    def loss(self, model: SSNNetwork, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """Nats per labelled pixel: cross-entropy of μ before ``mean_only_epochs``, then the
        negative Monte-Carlo log-likelihood (:func:`monte_carlo_nll`) of ``mc_samples``
        antithetic logit samples."""
        if epoch < self.mean_only_epochs:
            return cross_entropy(model(images), labels)
        return monte_carlo_nll(model.sample_logits(images, self.mc_samples, antithetic=True), labels)

    def sample(self, model: SSNNetwork, images: torch.Tensor, n: int) -> torch.Tensor:
        """Softmax of ``n`` independent logit samples: (n, batch, class, y, x) float32."""
        return torch.softmax(model.sample_logits(images, n), dim=2)
