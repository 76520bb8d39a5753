"""The networks and tensors of ``prob_unet`` (:mod:`uqeval_torch.au.prob_unet`, where the
model and its loss are described): the prior and posterior encoders, the fusion head, the
whole network and the KL divergence of two diagonal Gaussians."""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from uqeval_torch.au.common import one_hot


def gaussian_kl(
    mu_q: torch.Tensor, log_sigma_q: torch.Tensor, mu_p: torch.Tensor, log_sigma_p: torch.Tensor
) -> torch.Tensor:
    """KL(q ‖ p) of two diagonal Gaussians, summed over the latent dimensions: (batch, latent) → (batch,) nats.

    KL = Σ_d [ log σ_p − log σ_q + (σ_q² + (μ_q − μ_p)²) / (2 σ_p²) − 1/2 ], computed in float32.
    """
    mu_q, log_sigma_q, mu_p, log_sigma_p = (t.float() for t in (mu_q, log_sigma_q, mu_p, log_sigma_p))
    variance_ratio = torch.exp(2.0 * (log_sigma_q - log_sigma_p))
    mean_term = (mu_q - mu_p) ** 2 * torch.exp(-2.0 * log_sigma_p)
    return (log_sigma_p - log_sigma_q + 0.5 * (variance_ratio + mean_term) - 0.5).sum(dim=-1)


class GaussianEncoder(nn.Module):
    """An image (or image + one-hot label) → a diagonal Gaussian over the latent: (μ, log σ), each (batch, latent).

    The encoder's deepest map is averaged over the pixels and a 1×1 conv gives 2·latent
    channels (as the study's code: no normalisation before it; Kaiming-normal weights,
    biases N(0, 0.01²)); log σ is clamped to ``log_sigma_range``. μ and log σ are float32.
    """

    def __init__(self, encoder: nn.Module, latent_dim: int, log_sigma_range: tuple[float, float]):
        super().__init__()
        self.encoder = encoder
        self.to_moments = nn.Conv2d(encoder.out_channels, 2 * latent_dim, 1)
        nn.init.kaiming_normal_(self.to_moments.weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(self.to_moments.bias, std=1e-2)
        self.log_sigma_range = (float(log_sigma_range[0]), float(log_sigma_range[1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.encoder(x).mean(dim=(-2, -1), keepdim=True)
        mu, log_sigma = self.to_moments(pooled).flatten(1).float().chunk(2, dim=1)
        return mu, log_sigma.clamp(*self.log_sigma_range)


class FusionHead(nn.Module):
    """UNet features (batch, feature, y, x) and a latent z (batch, latent) → logits (batch, class, y, x).

    z is tiled over the image and concatenated with the features; then ``layers`` 1×1
    convs with ReLU between them, the hidden ones as wide as the features, the last one
    to the classes (the study: 4 layers).
    """

    def __init__(self, feature_channels: int, latent_dim: int, n_classes: int, *, layers: int = 4):
        super().__init__()
        if layers < 1:
            raise ValueError(f"the fusion head needs at least one layer; got {layers}")
        widths = [feature_channels + latent_dim] + [feature_channels] * (layers - 1) + [n_classes]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in pairwise(widths))

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tiled = z.to(features.dtype)[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        h = torch.cat([features, tiled], dim=1)
        for index, conv in enumerate(self.convs):
            h = conv(F.relu(h) if index else h)
        return h


class ProbUNetNetwork(nn.Module):
    """The Prob. UNet: a UNet, a prior and a posterior encoder, and a fusion head.

    Attributes
    ----------
    unet : the UNet; ``unet.features(images)`` (batch, width, y, x) feeds the fusion head.
        Its output head is kept, unused, as in the study's code (its parameters count).
    prior : :class:`GaussianEncoder` of the image, p(z | image).
    posterior : :class:`GaussianEncoder` of the image and the label's one-hot map, q(z | image, label).
    fusion : :class:`FusionHead`.
    """

    def __init__(
        self,
        unet: nn.Module,
        prior: GaussianEncoder,
        posterior: GaussianEncoder,
        fusion: FusionHead,
        *,
        n_classes: int,
    ):
        super().__init__()
        self.unet = unet
        self.prior = prior
        self.posterior = posterior
        self.fusion = fusion
        self.n_classes = n_classes

    def posterior_input(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images with the labels' one-hot maps appended (ignored pixels all zero): (batch, channel + class, y, x)."""
        return torch.cat([images, one_hot(labels, self.n_classes).to(images.dtype)], dim=1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, class, y, x) of one z drawn from the posterior when ``labels`` are given, else the prior."""
        mu, log_sigma = self.prior(images) if labels is None else self.posterior(self.posterior_input(images, labels))
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu)
        return self.fusion(self.unet.features(images), z)
