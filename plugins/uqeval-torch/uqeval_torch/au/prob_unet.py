"""``prob_unet``: the Probabilistic UNet (Kohl et al. 2018; the study's §3.2 and §3.3).

A UNet gives a feature map of the image; a low-dimensional Gaussian latent z, drawn
from a *prior* net that sees the image (at test time) or a *posterior* net that sees
the image and a rater's label (in training), is tiled over the image, concatenated with
the features and turned into logits by a few 1×1 convs (the *fusion head*). Training
minimises the negative evidence lower bound

    loss = CE(fusion(features, z ~ q(z | image, label)), label)
           + β · min(1, (epoch + 1) / warmup_epochs) · KL(q(z | image, label) ‖ p(z | image)),

with the cross-entropy in nats per labelled pixel (mean reduction, which is why the
study's β is small: Kohl et al. sum over pixels) and the KL in nats per image (summed
over the latent, averaged over the batch).

The study's code: latent dimension 6; β = 5e-4 on LIDC and 2.5e-3 on Cháksu, warmed up
linearly over 32 epochs; the UNet, prior and posterior are the shared network with the
deeper channel multipliers scaled by 0.75 (32/64/96/192 channels at full size); the
prior and posterior are its encoder and middle; the fusion head is 4 1×1 convs with
ReLU on the UNet's raw last decoder features (the UNet's own output head goes unused).
MC dropout, when asked for, is in all three nets, not in the fusion head.

The networks and the KL divergence are in :mod:`uqeval_torch.au.prob_unet_network`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from uqeval_torch.options import Options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from uqeval_torch.au.prob_unet_network import GaussianEncoder, ProbUNetNetwork


class ProbUNet(Options):
    """The Probabilistic UNet (Kohl et al. 2018) on the shared attention UNet.

    Parameters
    ----------
    latent_dim : dimensions of z (the study: 6).
    beta : weight of the KL term once warmed up. The study: 5e-4 on LIDC (the default),
        2.5e-3 on Cháksu.
    warmup_epochs : the KL weight at epoch e (from 0) is ``beta · min(1, (e + 1) / warmup_epochs)``,
        so it reaches ``beta`` in the last warm-up epoch (epoch 31 of 32) and is never 0;
        ``warmup_epochs`` ≤ 0 gives ``beta`` from the start.
    width_scale : scale of the deeper channel multipliers of all three nets
        (:meth:`~uqeval_torch.backbone.UNetShape.scaled`; the study: 0.75).
    fusion_layers : 1×1 convs of the fusion head (the study: 4).
    log_sigma_range : hard clamp of the encoders' log σ (no gradient beyond it; the study
        has none). The default (−6, 3) bounds σ to [0.0025, 20]: it keeps exp(−2 log σ_p)
        in the KL below e¹² and z finite when a net puts out extreme values early in
        training, while a latent spread below 0.0025 (a point mass, for a 6-d z fed to
        1×1 convs) or above 20 (z far outside anything the fusion head was trained on) is
        no use to a trained model, so the bounds should not bind.
    """

    name = "prob_unet"
    description = "Probabilistic UNet: prior/posterior nets over a 6-d latent fused with UNet features, ELBO loss"
    deterministic = False
    default_samples = 10

    def __init__(
        self,
        *,
        latent_dim: int = 6,
        beta: float = 5e-4,
        warmup_epochs: int = 32,
        width_scale: float = 0.75,
        fusion_layers: int = 4,
        log_sigma_range: tuple[float, float] = (-6.0, 3.0),
    ):
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1; got {latent_dim}")
        if beta < 0:
            raise ValueError(f"beta must not be negative; got {beta}")
        if not log_sigma_range[0] < log_sigma_range[1]:
            raise ValueError(f"log_sigma_range must be (low, high) with low < high; got {log_sigma_range}")
        self.latent_dim = latent_dim
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.width_scale = width_scale
        self.fusion_layers = fusion_layers
        self.log_sigma_range = log_sigma_range

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> ProbUNetNetwork:
        """The UNet, the prior and posterior encoders (all with ``dropout``, at ``width_scale``) and the fusion head."""
        from uqeval_torch.au.prob_unet_network import FusionHead, GaussianEncoder, ProbUNetNetwork

        unet = backbone(in_channels=in_channels, out_channels=n_classes, dropout=dropout, width_scale=self.width_scale)
        moments = 2 * self.latent_dim

        def encoder(channels: int) -> GaussianEncoder:
            net = backbone(
                in_channels=channels,
                out_channels=moments,
                dropout=dropout,
                width_scale=self.width_scale,
                encoder_only=True,
            )
            return GaussianEncoder(net, self.latent_dim, self.log_sigma_range)

        return ProbUNetNetwork(
            unet,
            encoder(in_channels),
            encoder(in_channels + n_classes),
            FusionHead(unet.feature_channels, self.latent_dim, n_classes, layers=self.fusion_layers),
            n_classes=n_classes,
        )

    def kl_weight(self, epoch: int) -> float:
        """β · min(1, (epoch + 1) / warmup_epochs): the weight of the KL term in epoch ``epoch`` (from 0)."""
        if self.warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, (epoch + 1) / self.warmup_epochs)

    def loss(self, model: ProbUNetNetwork, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """The negative ELBO: CE (nats per labelled pixel) of a reparameterised posterior sample
        + :meth:`kl_weight` · KL(q ‖ p) (nats, summed over the latent, averaged over the batch)."""
        import torch

        from uqeval_torch.au.common import cross_entropy
        from uqeval_torch.au.prob_unet_network import gaussian_kl

        mu_q, log_sigma_q = model.posterior(model.posterior_input(images, labels))
        mu_p, log_sigma_p = model.prior(images)
        z = mu_q + torch.exp(log_sigma_q) * torch.randn_like(mu_q)
        logits = model.fusion(model.unet.features(images), z)
        kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p).mean()
        return cross_entropy(logits, labels) + self.kl_weight(epoch) * kl

    def sample(self, model: ProbUNetNetwork, images: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` maps from z ~ p(z | image): (n, batch, class, y, x) float32 probabilities.

        The UNet and the prior run once; each draw reruns only the fusion head.
        """
        import torch

        features = model.unet.features(images)
        mu, log_sigma = model.prior(images)
        noise = torch.randn((n, *mu.shape), device=mu.device, dtype=mu.dtype)
        draws = [model.fusion(features, mu + torch.exp(log_sigma) * eps) for eps in noise]
        return torch.softmax(torch.stack(draws).float(), dim=2)
