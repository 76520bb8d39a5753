"""The ``prob_unet`` AU method: KL, warm-up, loss, clamping, sampling and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from uqeval.contracts import AUMethod
from uqeval_torch.au.prob_unet import ProbUNet
from uqeval_torch.au.prob_unet_network import ProbUNetNetwork, gaussian_kl
from uqeval_torch.backbone import Backbone, ResBlock
from uqeval_torch.eu.dropout_masks import dropout_layers

IN_CHANNELS, N_CLASSES, SIDE, BATCH = 1, 2, 32, 2


def tiny_model(method: ProbUNet | None = None, seed: int = 0) -> ProbUNetNetwork:
    torch.manual_seed(seed)
    return (method or ProbUNet()).build(Backbone("tiny"), in_channels=IN_CHANNELS, n_classes=N_CLASSES)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a bright square and labels marking it, a few pixels ignored (255)."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.randn(BATCH, IN_CHANNELS, SIDE, SIDE, generator=generator)
    images[:, :, 8:20, 10:24] += 1.0
    labels = torch.zeros(BATCH, SIDE, SIDE, dtype=torch.long)
    labels[:, 8:20, 10:24] = 1
    labels[:, :2, :] = 255
    return images, labels


def test_is_an_au_method_with_its_attributes():
    method = ProbUNet()
    assert isinstance(method, AUMethod)
    assert (method.name, method.deterministic, method.default_samples) == ("prob_unet", False, 10)
    assert (method.latent_dim, method.beta, method.warmup_epochs, method.width_scale) == (6, 5e-4, 32, 0.75)
    assert method.fusion_layers == 4
    assert ProbUNet(beta=2.5e-3).beta == 2.5e-3  # the study's Cháksu setting
    with pytest.raises(ValueError, match="beta"):
        ProbUNet(beta=-1.0)


def test_build_scales_all_three_nets_and_sizes_the_encoders_inputs():
    model = tiny_model()
    # Tiny width 8 with the study's multipliers (1, 2, 4, 8) × 0.75 → (1, 2, 3, 6).
    for net in (model.unet, model.prior.encoder, model.posterior.encoder):
        assert net.shape.channels == [8, 16, 24, 48]
    width = 8
    assert model.unet.feature_channels == width
    assert model.prior.encoder.stem.weight.shape[:2] == (width, IN_CHANNELS)
    assert model.posterior.encoder.stem.weight.shape[:2] == (width, IN_CHANNELS + N_CLASSES)
    assert model.prior.to_moments.in_channels == 48
    # Four 1×1 convs: (features + z) → features → features → features → classes, ReLU between.
    assert [conv.in_channels for conv in model.fusion.convs] == [width + 6, width, width, width]
    assert model.fusion.convs[-1].out_channels == N_CLASSES
    assert all(conv.kernel_size == (1, 1) for conv in model.fusion.convs)


def test_fusion_head_is_relu_convs_on_the_raw_features():
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(BATCH, 8, 4, 4, generator=generator)
    z = torch.randn(BATCH, 6, generator=generator)
    with torch.no_grad():
        h = torch.cat([features, z[:, :, None, None].expand(-1, -1, 4, 4)], dim=1)
        for index, conv in enumerate(model.fusion.convs):
            h = conv(torch.relu(h) if index else h)
        torch.testing.assert_close(model.fusion(features, z), h)
        images, _ = batch()
        torch.manual_seed(1)
        logits = model(images)
        torch.manual_seed(1)
        mu, log_sigma = model.prior(images)
        expected = model.fusion(model.unet.features(images), mu + log_sigma.exp() * torch.randn(BATCH, 6))
        torch.testing.assert_close(logits, expected)


def test_dropout_is_in_all_three_nets_and_not_in_the_fusion_head():
    torch.manual_seed(0)
    model = ProbUNet().build(Backbone("tiny"), in_channels=IN_CHANNELS, n_classes=N_CLASSES, dropout=0.2)
    for net in (model.unet, model.prior, model.posterior):
        layers = [m for m in net.modules() if isinstance(m, torch.nn.Dropout2d)]
        assert layers and len(layers) == len([m for m in net.modules() if isinstance(m, ResBlock)])
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in model.fusion.modules())
    assert len(dropout_layers(model)) == 22 + 10 + 10


def test_sample_gives_probability_maps():
    model = tiny_model().eval()
    images, _ = batch()
    with torch.no_grad():
        probabilities = ProbUNet().sample(model, images, 4)
    assert probabilities.shape == (4, BATCH, N_CLASSES, SIDE, SIDE)
    assert probabilities.dtype == torch.float32
    assert probabilities.min() >= 0
    torch.testing.assert_close(probabilities.sum(dim=2), torch.ones(4, BATCH, SIDE, SIDE))


def test_gaussian_kl_matches_torch_distributions_and_vanishes_for_equal_gaussians():
    generator = torch.Generator().manual_seed(0)
    mu_q, log_sigma_q, mu_p, log_sigma_p = (torch.randn(3, 6, generator=generator) for _ in range(4))
    expected = kl_divergence(Normal(mu_q, log_sigma_q.exp()), Normal(mu_p, log_sigma_p.exp())).sum(dim=-1)
    kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, expected)
    torch.testing.assert_close(gaussian_kl(mu_q, log_sigma_q, mu_q, log_sigma_q), torch.zeros(3))


@pytest.mark.parametrize(("epoch", "fraction"), [(0, 1 / 32), (15, 0.5), (31, 1.0), (100, 1.0)])
def test_kl_weight_warms_up_linearly_over_32_epochs(epoch, fraction):
    assert ProbUNet().kl_weight(epoch) == pytest.approx(5e-4 * fraction)
    assert ProbUNet(beta=2.5e-3, warmup_epochs=0).kl_weight(epoch) == pytest.approx(2.5e-3)


def test_loss_is_cross_entropy_of_a_posterior_sample_plus_weighted_kl():
    method = ProbUNet(beta=0.05)  # large enough that a wrong KL term would show
    model = tiny_model(method).train()
    images, labels = batch()
    torch.manual_seed(7)
    loss = method.loss(model, images, labels, epoch=3)

    torch.manual_seed(7)
    valid = labels != 255
    label_maps = F.one_hot(labels.clamp(max=N_CLASSES - 1), N_CLASSES).permute(0, 3, 1, 2) * valid[:, None]
    mu_q, log_sigma_q = model.posterior(torch.cat([images, label_maps.float()], dim=1))
    mu_p, log_sigma_p = model.prior(images)
    z = mu_q + log_sigma_q.exp() * torch.randn(BATCH, 6)
    logits = model.fusion(model.unet.features(images), z)
    cross_entropy = F.cross_entropy(logits, labels, ignore_index=255)
    kl = kl_divergence(Normal(mu_q, log_sigma_q.exp()), Normal(mu_p, log_sigma_p.exp())).sum(dim=1).mean()
    assert kl > 1e-3
    torch.testing.assert_close(loss, cross_entropy + 0.05 * (4 / 32) * kl)


def test_log_sigma_is_clamped_and_mu_is_not():
    model = tiny_model(ProbUNet(log_sigma_range=(-6.0, 3.0)))
    images, _ = batch()
    head = model.prior.to_moments
    assert model.prior.to_moments.weight.std() > 0.01  # Kaiming-normal, not zero
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([50.0, -50.0, 0.0, 1.0, 2.0, 3.0, 80.0, -80.0, 2.5, -5.5, 3.5, -6.5]))
        mu, log_sigma = model.prior(images)
    torch.testing.assert_close(mu, torch.tensor([[50.0, -50.0, 0.0, 1.0, 2.0, 3.0]] * BATCH))
    torch.testing.assert_close(log_sigma, torch.tensor([[3.0, -6.0, 2.5, -5.5, 3.0, -6.0]] * BATCH))


def test_sample_reruns_only_the_fusion_head_and_repeats_for_a_seed():
    method = ProbUNet()
    model = tiny_model(method).eval()
    images, _ = batch()
    calls = {"unet": 0, "prior": 0, "posterior": 0, "fusion": 0}
    parts = {"unet": model.unet.stem, "prior": model.prior, "posterior": model.posterior, "fusion": model.fusion}
    for name, part in parts.items():
        part.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    with torch.no_grad():
        torch.manual_seed(3)
        first = method.sample(model, images, 5)
        assert calls == {"unet": 1, "prior": 1, "posterior": 0, "fusion": 5}
        torch.manual_seed(3)
        again = method.sample(model, images, 5)
        assert calls == {"unet": 2, "prior": 2, "posterior": 0, "fusion": 10}
    assert torch.equal(first, again)
    differences = (first[1:] - first[0]).abs().amax(dim=(1, 2, 3, 4))
    assert (differences > 1e-4).all()


def test_posterior_depends_on_the_label_and_prior_does_not_see_it():
    model = tiny_model().eval()
    images, labels = batch()
    with torch.no_grad():
        mu_true, _ = model.posterior(model.posterior_input(images, labels))
        mu_flipped, _ = model.posterior(model.posterior_input(images, torch.where(labels == 255, 255, 1 - labels)))
        appended = model.posterior_input(images, labels)[:, IN_CHANNELS:]
    assert (mu_true - mu_flipped).abs().max() > 1e-3
    assert appended.shape == (BATCH, N_CLASSES, SIDE, SIDE)
    torch.testing.assert_close(appended[:, :, :2].sum(), torch.tensor(0.0))  # ignored rows
    torch.testing.assert_close(appended[:, 1, 8:20, 10:24], torch.ones(BATCH, 12, 14))
    torch.testing.assert_close(appended[:, 1, 2:].sum(), torch.tensor(float(BATCH * 12 * 14)))
    assert model.prior.encoder.stem.in_channels == IN_CHANNELS


def test_every_parameter_gets_a_gradient_but_the_studys_unused_ones():
    # The UNet's own output head and the ResBlocks' timestep projections exist, unused, as in
    # the study's code. Every other parameter is reached (the zero-initialised convs block
    # some gradients in the first step, so take one step first).
    method = ProbUNet()
    model = tiny_model(method).train()
    images, labels = batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    method.loss(model, images, labels, epoch=0).backward()
    optimiser.step()
    optimiser.zero_grad()
    torch.manual_seed(1)
    method.loss(model, images, labels, epoch=0).backward()
    unused = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    expected = {name for name, _ in model.named_parameters() if name.startswith("unet.head.")}
    expected |= {name for name, _ in model.named_parameters() if ".timestep_projection." in name}
    assert unused == expected


def test_state_dict_round_trips_to_the_same_samples():
    method = ProbUNet()
    trained, fresh = tiny_model(method, seed=0).eval(), tiny_model(method, seed=1).eval()
    fresh.load_state_dict(trained.state_dict())
    images, _ = batch()
    with torch.no_grad():
        torch.manual_seed(5)
        expected = method.sample(trained, images, 3)
        torch.manual_seed(5)
        assert torch.equal(method.sample(fresh, images, 3), expected)


def test_loss_under_bf16_autocast_is_float32_and_close():
    method = ProbUNet()
    model = tiny_model(method).train()
    images, labels = batch()
    torch.manual_seed(2)
    exact = method.loss(model, images, labels, epoch=40)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method.loss(model, images, labels, epoch=40)
    assert mixed.dtype == torch.float32
    assert abs(mixed.item() - exact.item()) < 0.02


def test_a_few_optimiser_steps_lower_the_loss():
    method = ProbUNet(beta=1e-2, warmup_epochs=1)
    model = tiny_model(method).train()
    images, labels = batch()

    def evaluate() -> float:
        torch.manual_seed(11)
        with torch.no_grad():
            return method.loss(model, images, labels, epoch=0).item()

    before = evaluate()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(10):
        torch.manual_seed(step)
        optimiser.zero_grad()
        method.loss(model, images, labels, epoch=0).backward()
        optimiser.step()
    after = evaluate()
    assert after < 0.85 * before
