"""The ``ssn`` AU method: the low-rank logit Gaussian, its Monte-Carlo loss and its samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from uqeval.contracts import AUMethod
from uqeval_torch.au.common import IGNORE_LABEL
from uqeval_torch.au.ssn import SSN
from uqeval_torch.au.ssn_network import SSNNetwork, monte_carlo_nll, sample_logits
from uqeval_torch.backbone import Backbone, Head

N_CLASSES = 3
SIDE = 32


def randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Redraw the weights of ``module`` (its zero-initialised last conv included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))


def tiny_model(method: SSN, *, seed: int = 0, dropout: float = 0.0, random_heads: bool = True) -> SSNNetwork:
    """A tiny SSN; ``random_heads`` redraws the three zero-initialised heads so that μ, d and P vary."""
    torch.manual_seed(seed)
    model = method.build(Backbone("tiny"), in_channels=1, n_classes=N_CLASSES, dropout=dropout)
    if random_heads:
        for index, head in enumerate((model.backbone.head, model.diagonal_head, model.factor_head)):
            randomise(head, seed + 10 + index, std=0.3)
    return model


def tiny_batch(*, seed: int = 1, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 1, SIDE, SIDE, generator=generator)
    labels = torch.randint(0, N_CLASSES, (batch, SIDE, SIDE), generator=generator)
    labels[:, :4, :] = IGNORE_LABEL
    return images, labels


def fixed_distribution(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ, P, d of a 3-class 8×8 map (event 192, rank 4) for two images, with strong off-diagonal covariance."""
    generator = torch.Generator().manual_seed(seed)
    event, rank = N_CLASSES * 8 * 8, 4
    mean = 2.0 * torch.randn(2, event, generator=generator)
    factor = 0.7 * torch.randn(2, event, rank, generator=generator)
    diagonal = 0.1 + torch.rand(2, event, generator=generator)
    return mean, factor, diagonal


def reference_nll(logit_samples: np.ndarray, labels: np.ndarray) -> float:
    """−mean_b (logsumexp_s Σ_labelled pixels log softmax(η_s)[label] − log S), in numpy float64."""
    log_probs = logit_samples - logsumexp(logit_samples, axis=2, keepdims=True)  # (S, B, C, y, x)
    valid = labels != IGNORE_LABEL
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[None, :, None], axis=2)[:, :, 0]
    per_sample = (picked * valid).sum(axis=(-2, -1))  # (S, B)
    per_image = logsumexp(per_sample, axis=0) - np.log(len(logit_samples))
    return float(-per_image.mean())


def test_ssn_satisfies_the_au_method_protocol():
    method = SSN()
    assert isinstance(method, AUMethod)
    assert (method.name, method.deterministic, method.default_samples) == ("ssn", False, 10)
    assert (method.rank, method.epsilon, method.mc_samples, method.diagonal_only_epochs) == (10, 1e-5, 10, 10)
    with pytest.raises(ValueError, match="mc_samples"):
        SSN(mc_samples=0)
    with pytest.raises(ValueError, match="epsilon"):
        SSN(epsilon=0.0)


def test_heads_are_the_studys():
    model = tiny_model(SSN(rank=4), random_heads=False)
    for head, channels in ((model.diagonal_head, N_CLASSES), (model.factor_head, 4 * N_CLASSES)):
        assert isinstance(head, Head)
        assert head.conv.kernel_size == (3, 3) and head.conv.out_channels == channels
        assert head.norm.num_channels == model.backbone.feature_channels
    # Zero-initialised: a fresh network has μ = 0, d = softplus(0) + ε = log 2 + ε and P = 0.
    images, _ = tiny_batch()
    with torch.no_grad():
        mean, factor, diagonal = model.distribution(images)
    assert not mean.any() and not factor.any()
    torch.testing.assert_close(diagonal, torch.full_like(diagonal, math.log(2) + 1e-5))


def test_samples_have_the_low_rank_plus_diagonal_covariance():
    mean, factor, diagonal = fixed_distribution()
    torch.manual_seed(0)
    n = 20_000
    samples = sample_logits(mean, factor, diagonal, n).double()  # (n, 2, 192)
    mean, factor, diagonal = mean.double(), factor.double(), diagonal.double()
    covariance = torch.distributions.LowRankMultivariateNormal(mean, factor, diagonal).covariance_matrix
    torch.testing.assert_close(covariance, factor @ factor.transpose(1, 2) + torch.diag_embed(diagonal))
    for image in range(2):
        centred = samples[:, image] - samples[:, image].mean(0)
        empirical = centred.T @ centred / (n - 1)
        variances = torch.diagonal(covariance[image])
        # Standard error of a sample covariance entry: sqrt((Σ_ii Σ_jj + Σ_ij²) / n).
        standard_error = ((variances[:, None] * variances[None, :] + covariance[image] ** 2) / n).sqrt()
        assert ((empirical - covariance[image]).abs() / standard_error).max() < 6
        mean_error = (samples[:, image].mean(0) - mean[image]).abs() / (variances / n).sqrt()
        assert mean_error.max() < 6
    # The off-diagonal part is substantial, so a diagonal-only sampler would fail the check above.
    off_diagonal = covariance[0] - torch.diag_embed(torch.diagonal(covariance[0]))
    assert off_diagonal.abs().max() > 1.0


def test_without_a_factor_samples_are_independent_per_logit():
    mean, _, diagonal = fixed_distribution()
    torch.manual_seed(0)
    samples = sample_logits(mean, None, diagonal, 4)
    torch.manual_seed(0)
    expected = mean + diagonal.sqrt() * torch.randn(4, 2, 192)
    torch.testing.assert_close(samples, expected)


def test_distribution_layout_matches_the_heads():
    model = tiny_model(SSN(rank=4, epsilon=0.5))
    images, _ = tiny_batch()
    with torch.no_grad():
        mean, factor, diagonal = model.distribution(images)
        mean_map = model(images)
        features = model.backbone.features(images)
        factor_map = model.factor_head(features)  # (batch, rank·class, y, x)
        diagonal_map = model.diagonal_head(features)
    event = N_CLASSES * SIDE * SIDE
    assert (mean.shape, factor.shape, diagonal.shape) == ((2, event), (2, event, 4), (2, event))
    torch.testing.assert_close(mean, mean_map.flatten(1))
    torch.testing.assert_close(diagonal, torch.log1p(diagonal_map.flatten(1).exp()) + 0.5)
    # Event index (c, y, x) of rank column r is channel r·class + c of the factor head.
    torch.testing.assert_close(factor[1, (2 * SIDE + 5) * SIDE + 7, 3], factor_map[1, 3 * N_CLASSES + 2, 5, 7])
    assert factor.abs().mean() > 0.01


def test_loss_equals_a_numpy_logsumexp_on_the_same_samples():
    method = SSN(rank=4, mc_samples=6, diagonal_only_epochs=2)
    model = tiny_model(method)
    images, labels = tiny_batch()
    torch.manual_seed(5)
    loss = method.loss(model, images, labels, epoch=2)
    torch.manual_seed(5)
    with torch.no_grad():
        drawn = model.sample_logits(images, 6)
    assert drawn.shape == (6, 2, N_CLASSES, SIDE, SIDE)
    expected = reference_nll(drawn.double().numpy(), labels.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Nats per image: of the order of the labelled pixels (28·32) times a cross-entropy, not per pixel.
    assert loss.item() > 28 * 32 * 0.5


def test_the_factor_is_zero_in_the_diagonal_only_epochs():
    method = SSN(rank=4, mc_samples=5, diagonal_only_epochs=3)
    model = tiny_model(method)
    images, labels = tiny_batch()
    with torch.no_grad():
        mean, _, diagonal = model.distribution(images)
    for epoch in range(3):
        torch.manual_seed(epoch)
        loss = method.loss(model, images, labels, epoch=epoch)
        torch.manual_seed(epoch)
        samples = sample_logits(mean, None, diagonal, 5).view(5, 2, N_CLASSES, SIDE, SIDE)
        assert loss.item() == pytest.approx(monte_carlo_nll(samples, labels).item(), rel=1e-6)
    torch.manual_seed(3)
    with_factor = method.loss(model, images, labels, epoch=3).item()
    torch.manual_seed(3)
    samples = sample_logits(mean, None, diagonal, 5).view(5, 2, N_CLASSES, SIDE, SIDE)
    assert with_factor != pytest.approx(monte_carlo_nll(samples, labels).item(), rel=1e-3)


def test_ignored_pixels_do_not_change_the_loss():
    generator = torch.Generator().manual_seed(3)
    logit_samples = torch.randn(4, 2, N_CLASSES, 8, 8, generator=generator)
    labels = torch.randint(0, N_CLASSES, (2, 8, 8), generator=generator)
    labels[0, :3] = IGNORE_LABEL
    labels[1, :, 6:] = IGNORE_LABEL
    altered = logit_samples.clone()
    ignored = (labels == IGNORE_LABEL)[None, :, None].expand_as(altered)
    altered[ignored] = 50.0 * torch.randn(int(ignored.sum()), generator=generator)
    loss = monte_carlo_nll(logit_samples, labels).item()
    assert monte_carlo_nll(altered, labels).item() == pytest.approx(loss, rel=1e-6)
    assert loss == pytest.approx(reference_nll(logit_samples.double().numpy(), labels.numpy()), rel=1e-6)
    assert monte_carlo_nll(logit_samples, torch.full_like(labels, IGNORE_LABEL)).item() == 0.0


def test_loss_is_the_summed_cross_entropy_of_the_mean_as_the_covariance_vanishes():
    mean, _, _ = fixed_distribution()
    labels = torch.randint(0, N_CLASSES, (2, 8, 8), generator=torch.Generator().manual_seed(4))
    mean_map = mean.view(2, N_CLASSES, 8, 8)
    # Nats per image: the cross-entropy summed over each image's pixels, averaged over images.
    expected = torch.nn.functional.cross_entropy(mean_map, labels, reduction="sum").item() / 2
    torch.manual_seed(0)
    gaps = []
    for variance in (1e-2, 1e-4, 1e-8):
        samples = sample_logits(mean, torch.zeros(2, 192, 3), torch.full((2, 192), variance), 10)
        gaps.append(abs(monte_carlo_nll(samples.view(10, 2, N_CLASSES, 8, 8), labels).item() - expected))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


@pytest.mark.parametrize("epoch", [0, 1])
def test_a_few_optimiser_steps_lower_the_loss(epoch: int):
    method = SSN(rank=4, mc_samples=4, diagonal_only_epochs=1)
    model = tiny_model(method)
    images, labels = tiny_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_noise_loss() -> torch.Tensor:
        torch.manual_seed(7)
        return method.loss(model, images, labels, epoch=epoch)

    before = fixed_noise_loss().item()
    for _ in range(5):
        optimiser.zero_grad()
        fixed_noise_loss().backward()
        optimiser.step()
    assert fixed_noise_loss().item() < 0.98 * before
    assert model.diagonal_head.conv.weight.grad is not None
    factor_trained = model.factor_head.conv.weight.grad is not None
    assert factor_trained == (epoch >= 1)  # P joins after the diagonal-only epochs


def test_sample_shapes_sums_and_seed_determinism():
    method = SSN(rank=4)
    model = tiny_model(method).eval()
    images, _ = tiny_batch()
    with torch.no_grad():
        torch.manual_seed(11)
        first = method.sample(model, images, 3)
        torch.manual_seed(11)
        again = method.sample(model, images, 3)
        torch.manual_seed(12)
        other = method.sample(model, images, 3)
    assert first.shape == (3, 2, N_CLASSES, SIDE, SIDE)
    assert first.dtype == torch.float32
    torch.testing.assert_close(first.sum(dim=2), torch.ones(3, 2, SIDE, SIDE))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert (first[0] - first[1]).abs().max() > 0.1  # samples differ from each other


def test_dropout_goes_to_the_backbone_and_the_state_dict_round_trips():
    method = SSN(rank=4)
    model = tiny_model(method, dropout=0.2)
    rates = {m.p for m in model.backbone.modules() if isinstance(m, torch.nn.Dropout2d)}
    assert rates == {0.2}
    assert not any(
        isinstance(m, torch.nn.Dropout2d) for head in (model.diagonal_head, model.factor_head) for m in head.modules()
    )
    copy = tiny_model(method, seed=9, dropout=0.2)
    copy.load_state_dict(model.state_dict())
    images, _ = tiny_batch()
    model.eval()
    copy.eval()
    with torch.no_grad():
        for a, b in zip(model.distribution(images), copy.distribution(images), strict=True):
            assert torch.equal(a, b)


def test_sampling_and_loss_stay_float32_under_bf16_autocast():
    mean, factor, diagonal = fixed_distribution()
    torch.manual_seed(0)
    plain = sample_logits(mean, factor, diagonal, 4)
    torch.manual_seed(0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        autocast = sample_logits(mean.bfloat16(), factor, diagonal, 4)
        method = SSN(rank=4, diagonal_only_epochs=0)
        images, labels = tiny_batch()
        loss = method.loss(tiny_model(method), images, labels, epoch=0)
    assert autocast.dtype == torch.float32
    # Only μ's rounding to bf16 differs; a bf16 P z_R would be off by ~1e-2.
    torch.testing.assert_close(autocast, plain - mean + mean.bfloat16().float(), atol=1e-5, rtol=1e-5)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


def test_a_channels_last_network_gives_the_same_samples_and_loss():
    # The factor head's output is not contiguous in (channel, y, x) order under channels_last: a view of it failed.
    method = SSN(rank=4)
    model = tiny_model(method).eval()
    images, labels = tiny_batch()
    torch.manual_seed(5)
    plain = method.sample(model, images, 3)
    plain_loss = method.loss(model, images, labels, epoch=20)
    model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)
    torch.testing.assert_close(method.sample(model, images, 3), plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.loss(model, images, labels, epoch=20), plain_loss, rtol=1e-5, atol=1e-5)
