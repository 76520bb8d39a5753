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

The network, the sampler and the loss are in :mod:`uqeval_torch.au.ssn_network`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from uqeval_torch.options import Options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from uqeval_torch.au.ssn_network import SSNNetwork


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
        from uqeval_torch.au.ssn_network import SSNNetwork

        net = backbone(in_channels=in_channels, out_channels=n_classes, dropout=dropout)
        return SSNNetwork(net, n_classes=n_classes, rank=self.rank, epsilon=self.epsilon)

    def loss(self, model: SSNNetwork, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """The negative Monte-Carlo log-likelihood (:func:`~uqeval_torch.au.ssn_network.monte_carlo_nll`,
        nats per image) of ``mc_samples`` logit samples; P = 0 before epoch ``diagonal_only_epochs``."""
        from uqeval_torch.au.ssn_network import monte_carlo_nll

        with_factor = epoch >= self.diagonal_only_epochs
        return monte_carlo_nll(model.sample_logits(images, self.mc_samples, with_factor=with_factor), labels)

    def sample(self, model: SSNNetwork, images: torch.Tensor, n: int) -> torch.Tensor:
        """Softmax of ``n`` independent logit samples: (n, batch, class, y, x) float32."""
        import torch

        return torch.softmax(model.sample_logits(images, n), dim=2)
