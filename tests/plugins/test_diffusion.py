"""The ``diffusion`` AU method: schedule, noising, DDIM, sampling and loss."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from uqeval.contracts import AUMethod  # noqa: E402
from uqeval_torch.au.diffusion import Diffusion  # noqa: E402
from uqeval_torch.au.diffusion_process import (  # noqa: E402
    cosine_gamma,
    ddim_step,
    input_scaled_gamma,
    noised,
    schedule_gamma,
    stratified_times,
)
from uqeval_torch.backbone import Backbone, ResBlock  # noqa: E402

SIDE = 32


def labels_of(seed: int, batch: int = 2, n_classes: int = 2) -> torch.Tensor:
    """Random class maps (batch, y, x) with a square of ignored pixels in the first image."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (batch, SIDE, SIDE), generator=generator)
    labels[0, :8, :8] = 255
    return labels


def images_of(seed: int, batch: int = 2, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def tiny_model(n_classes: int = 2, in_channels: int = 1, seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """A tiny diffusion network with its zero-initialised head redrawn, so that its output varies."""
    torch.manual_seed(seed)
    model = Diffusion().build(Backbone("tiny"), in_channels=in_channels, n_classes=n_classes, dropout=dropout)
    with torch.no_grad():
        model.head.conv.weight.normal_(std=0.3)
    return model


def logit(p: float) -> float:
    return math.log(p / (1 - p))


class Oracle(nn.Module):
    """Predicts the true one-hot map of each image whatever its input; records its calls."""

    def __init__(self, labels: torch.Tensor, n_classes: int):
        super().__init__()
        self.out_channels = n_classes
        self.hot = nn.functional.one_hot(labels.clamp(max=n_classes - 1), n_classes).permute(0, 3, 1, 2).float()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), t.clone()))
        repeats = x.shape[0] // self.hot.shape[0]
        # softmax of ±100 is 1 and e^-200 = 0 in float32: the exact one-hot map.
        return 100.0 * (2 * self.hot.repeat(repeats, 1, 1, 1) - 1)


# --- schedule ---------------------------------------------------------------------------------


def test_input_scaling_is_the_signal_fraction_of_the_scaled_and_renormalised_sample():
    # b·√γ·x0 + √(1 − γ)·ε divided by its standard deviation √(b²γ + 1 − γ) has signal
    # coefficient b√γ/√(b²γ + 1 − γ), whose square is γ' = b²γ / ((b² − 1)γ + 1).
    gamma = torch.linspace(0, 1, 101, dtype=torch.float64)
    for b in (0.1, 0.5, 2.0):
        renormalised = (b * gamma.sqrt() / (b**2 * gamma + 1 - gamma).sqrt()) ** 2
        torch.testing.assert_close(input_scaled_gamma(gamma, b), renormalised)
        torch.testing.assert_close(input_scaled_gamma(gamma, b), b**2 * gamma / ((b**2 - 1) * gamma + 1))
    torch.testing.assert_close(input_scaled_gamma(gamma, 1.0), gamma)


def test_schedule_end_points_have_log_snr_plus_minus_ten():
    gamma = schedule_gamma(torch.tensor([0.0, 1.0]))
    assert gamma.dtype == torch.float64
    assert gamma[0].item() == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-14)
    assert gamma[1].item() == pytest.approx(1 / (1 + math.exp(10)), rel=1e-12)
    assert logit(gamma[0].item()) == pytest.approx(10.0, abs=1e-9)
    assert logit(gamma[1].item()) == pytest.approx(-10.0, abs=1e-9)
    other = schedule_gamma(torch.tensor([0.0, 1.0]), logsnr_range=(-5.0, 3.0))
    assert [logit(g) for g in other.tolist()] == pytest.approx([3.0, -5.0], abs=1e-9)


def test_schedule_is_an_affine_map_of_the_input_scaled_cosine():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    gamma = schedule_gamma(t)
    assert (gamma[1:] < gamma[:-1]).all()  # strictly decreasing
    # Written out independently: γ₀ = cos²(πt/2), γ' = 0.01γ₀/(−0.99γ₀ + 1) runs from 1 to 0,
    # so the affine map is σ(−10) + (σ(10) − σ(−10))·γ'.
    plain = torch.cos(t * math.pi / 2) ** 2
    scaled = 0.01 * plain / (1 - 0.99 * plain)
    low, high = 1 / (1 + math.exp(10)), 1 / (1 + math.exp(-10))
    torch.testing.assert_close(gamma, low + (high - low) * scaled, atol=1e-15, rtol=1e-12)
    torch.testing.assert_close(cosine_gamma(torch.tensor([0.5], dtype=torch.float64)), torch.tensor([0.5]).double())
    # Half way the input scaling keeps only ~1 % of the signal variance.
    assert schedule_gamma(0.5).item() == pytest.approx(0.01 / 1.01 * (high - low) + low, rel=1e-12)
    # The method instance follows its options.
    assert Diffusion(input_scale=1.0).gamma(0.5).item() == pytest.approx(0.5 * (high - low) + low, rel=1e-12)


def test_stratified_times_have_one_in_each_interval():
    torch.manual_seed(0)
    t = stratified_times(8)
    assert t.shape == (8,)
    assert sorted(torch.floor(t * 8).long().tolist()) == list(range(8))
    assert not torch.equal(torch.floor(t * 8).long(), torch.arange(8))  # in random order
    torch.manual_seed(0)
    permutation, offsets = torch.randperm(8), torch.rand(8)
    torch.testing.assert_close(t, (permutation + offsets) / 8)


# --- noising ----------------------------------------------------------------------------------


def test_noising_marginal_matches_mean_and_variance():
    torch.manual_seed(0)
    draws = 200_000
    x0 = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    for gamma in (0.9, 0.3, 0.01):
        x_t = noised(x0.expand(draws, 2, 1, 1), gamma, torch.randn(draws, 2, 1, 1))
        mean, variance = x_t.mean(0).flatten(), x_t.var(0).flatten()
        standard_error = math.sqrt((1 - gamma) / draws)
        assert torch.allclose(mean, math.sqrt(gamma) * x0.flatten(), atol=5 * standard_error)
        assert torch.allclose(variance, torch.full((2,), 1 - gamma), rtol=0.02)


def test_noising_takes_one_gamma_per_image():
    x0 = torch.ones(2, 2, 4, 4)
    noise = torch.ones(2, 2, 4, 4)
    x_t = noised(x0, torch.tensor([1.0, 0.36]), noise)
    assert torch.allclose(x_t[0], torch.ones(2, 4, 4))  # √1·1 + 0
    assert torch.allclose(x_t[1], torch.full((2, 4, 4), 0.6 + 0.8))  # √.36 + √.64


# --- DDIM -------------------------------------------------------------------------------------


def test_ddim_step_with_the_true_clean_sample_keeps_the_noise():
    generator = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 2, (3, 2, 8, 8), generator=generator).double()
    noise = torch.randn(3, 2, 8, 8, generator=generator, dtype=torch.float64)
    gammas = schedule_gamma(torch.tensor([1.0, 0.9, 0.5, 0.1]))
    for gamma_t, gamma_s in zip(gammas[:-1].tolist(), gammas[1:].tolist(), strict=True):
        x_t = noised(x0, gamma_t, noise)
        x_s = ddim_step(x_t, x0, gamma_t, gamma_s)
        expected = math.sqrt(gamma_s) * x0 + math.sqrt(1 - gamma_s) * noise
        assert torch.allclose(x_s, expected, rtol=0, atol=1e-12)
    # One γ per image, as a tensor.
    gamma_t, gamma_s = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.3, 0.5, 0.9])
    x_t = noised(x0.float(), gamma_t, noise.float())
    x_s = ddim_step(x_t, x0.float(), gamma_t, gamma_s)
    assert torch.allclose(x_s, noised(x0.float(), gamma_s, noise.float()), atol=1e-6)


def test_ddim_step_to_gamma_one_returns_the_prediction_exactly():
    generator = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 3, 8, 8, generator=generator)
    prediction = torch.rand(2, 3, 8, 8, generator=generator)  # need not match x_t
    assert torch.equal(ddim_step(x_t, prediction, 0.7, 1.0), prediction)


def test_sampler_with_an_oracle_returns_its_map_along_one_noise_trajectory():
    n, n_classes = 3, 3
    labels = torch.randint(0, n_classes, (2, 8, 8), generator=torch.Generator().manual_seed(4))
    images = images_of(5)[:, :, :8, :8]
    oracle = Oracle(labels, n_classes)
    method = Diffusion(steps=10)
    torch.manual_seed(6)
    samples = method.sample(oracle, images, n)
    assert samples.shape == (n, 2, n_classes, 8, 8)
    assert samples.dtype == torch.float32
    for k in range(n):
        assert torch.equal(samples[k], oracle.hot)  # sample k of image j is the oracle's map of image j

    # Ten network calls at t = 1, 0.9, …, 0.1, each one batch of all n·2 samples.
    times = [t for _, t in oracle.calls]
    assert len(times) == 10
    assert torch.allclose(torch.stack([t[0] for t in times]), 1 - torch.arange(10) / 10)
    assert all((t == t[0]).all() and t.shape == (n * 2,) for t in times)
    assert all(torch.equal(x[:, :1], images.repeat(n, 1, 1, 1)) for x, _ in oracle.calls)

    # The first input is x_1 ~ N(0, I) from the global RNG, as it is (no normalisation).
    torch.manual_seed(6)
    x_1 = torch.randn(n * 2, n_classes, 8, 8)
    assert torch.equal(oracle.calls[0][0][:, 1:], x_1)

    # With the true x0 deterministic DDIM keeps ε: every input is √γ·x0 + √(1−γ)·ε of the same ε,
    # which is x_1 up to √γ(1)·x0 ≈ 0.007 (γ(1) = sigmoid(−10)).
    x0 = oracle.hot.repeat(n, 1, 1, 1)
    noises = []
    for x, t in oracle.calls:
        gamma = schedule_gamma(t[0]).item()
        noises.append((x[:, 1:] - math.sqrt(gamma) * x0) / math.sqrt(1 - gamma))
    for noise in noises[1:]:
        assert torch.allclose(noise, noises[0], atol=1e-4)
    assert torch.allclose(noises[0], x_1, atol=0.01)


def test_sampling_draws_all_samples_in_one_network_batch():
    model = tiny_model(n_classes=2).eval()
    sizes = []
    model.register_forward_pre_hook(lambda _, inputs: sizes.append(inputs[0].shape[0]))
    with torch.no_grad():
        Diffusion(steps=3).sample(model, images_of(1, batch=2), 5)
    assert sizes == [10, 10, 10]


# --- sampling with a network ------------------------------------------------------------------


def test_samples_are_probability_maps_deterministic_for_a_seed_and_different():
    model = tiny_model(n_classes=3).eval()
    images = images_of(7)
    method = Diffusion(steps=3)
    with torch.no_grad():
        torch.manual_seed(8)
        first = method.sample(model, images, 4)
        torch.manual_seed(8)
        again = method.sample(model, images, 4)
        torch.manual_seed(9)
        other = method.sample(model, images, 4)
    assert first.shape == (4, 2, 3, SIDE, SIDE)
    assert first.dtype == torch.float32
    assert torch.allclose(first.sum(2), torch.ones(4, 2, SIDE, SIDE), atol=1e-5)
    assert (first >= 0).all()
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    assert (first[0] - first[1]).abs().max() > 1e-3  # samples of one image differ from each other


def test_a_fresh_network_predicts_the_uniform_map():
    # The head's last conv starts at zero: p̂ = 1/classes everywhere.
    torch.manual_seed(0)
    model = Diffusion().build(Backbone("tiny"), in_channels=1, n_classes=4)
    with torch.no_grad():
        samples = Diffusion(steps=2).sample(model, images_of(1), 2)
    torch.testing.assert_close(samples, torch.full_like(samples, 0.25))


# --- loss -------------------------------------------------------------------------------------


def independent_loss(model, images, labels, t, noise):
    """The loss written out: x0 in {0, 1} by hand, γ from the closed form, per-image means by indexing."""
    n_classes = noise.shape[1]
    labelled = labels != 255
    hot = torch.zeros(noise.shape)
    for c in range(n_classes):
        hot[:, c] = ((labels == c) & labelled).float()
    plain = torch.cos(t.double() * math.pi / 2) ** 2
    scaled = 0.01 * plain / (1 - 0.99 * plain)
    low, high = 1 / (1 + math.exp(10)), 1 / (1 + math.exp(-10))
    gamma = (low + (high - low) * scaled).float()[:, None, None, None]
    x_t = gamma.sqrt() * hot + (1 - gamma).sqrt() * noise
    predicted = torch.softmax(model(torch.cat([images, x_t], 1), t), 1)
    per_image = [((predicted[b] - hot[b]) ** 2).permute(1, 2, 0)[labelled[b]].mean() for b in range(len(labels))]
    return torch.stack(per_image).mean()


def test_loss_equals_an_independent_computation_and_ignores_unlabelled_pixels():
    model = tiny_model(n_classes=3)
    images, labels = images_of(10), labels_of(11, n_classes=3)
    method = Diffusion()
    torch.manual_seed(12)
    loss = method.loss(model, images, labels, epoch=0)
    torch.manual_seed(12)
    t = stratified_times(2)
    noise = torch.randn(2, 3, SIDE, SIDE)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(independent_loss(model, images, labels, t, noise).item(), rel=1e-5)
    # A different t gives a different loss: t is drawn per image and used.
    other_t = independent_loss(model, images, labels, torch.tensor([0.05, 0.95]), noise).item()
    assert method.loss_at(model, images, labels, torch.tensor([0.05, 0.95]), noise).item() == pytest.approx(
        other_t, rel=1e-5
    )
    assert other_t != pytest.approx(loss.item(), rel=1e-3)


def test_unlabelled_pixels_do_not_count_and_images_weigh_the_same():
    n_classes = 2
    labels = labels_of(13, n_classes=n_classes)
    oracle = Oracle(labels, n_classes)
    t, noise = torch.tensor([0.3, 0.8]), torch.randn(2, n_classes, SIDE, SIDE)
    method = Diffusion()
    assert method.loss_at(oracle, images_of(14), labels, t, noise).item() == 0.0  # oracle: zero loss
    # The network sees x0 = 0 (every class) at the ignored square: noise only.
    ignored_input = oracle.calls[0][0][0, 1:, :8, :8]
    gamma = schedule_gamma(0.3).item()
    torch.testing.assert_close(ignored_input, math.sqrt(1 - gamma) * noise[0, :, :8, :8])
    # The oracle is right except on the ignored square: still zero.
    wrong_where_ignored = labels.clone()
    wrong_where_ignored[0, :8, :8] = 1
    oracle_wrong = Oracle(wrong_where_ignored, n_classes)
    oracle_wrong.hot[0, :, :8, :8] = torch.tensor([0.0, 1.0])[:, None, None]
    assert method.loss_at(oracle_wrong, images_of(14), labels, t, noise).item() == 0.0
    # One wrong labelled pixel counts (1² + 1²)/2 per pixel within its own image, then half in the batch mean.
    for image, labelled in ((0, SIDE * SIDE - 64), (1, SIDE * SIDE)):
        oracle_one_wrong = Oracle(labels, n_classes)
        oracle_one_wrong.hot[image, :, 20, 20] = 1 - oracle_one_wrong.hot[image, :, 20, 20]
        expected = 1.0 / labelled / 2
        assert method.loss_at(oracle_one_wrong, images_of(14), labels, t, noise).item() == pytest.approx(expected)
    # No labelled pixel: 0, not NaN, with a gradient.
    model = tiny_model()
    empty = method.loss_at(model, images_of(14), torch.full_like(labels, 255), t, noise)
    assert empty.item() == 0.0
    empty.backward()


def test_a_few_optimiser_steps_lower_the_loss():
    model = tiny_model()
    method = Diffusion()
    images, labels = images_of(15), labels_of(16)

    def fixed_loss() -> float:
        torch.manual_seed(17)
        with torch.no_grad():
            return method.loss(model, images, labels, epoch=0).item()

    before = fixed_loss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(18)
    for _ in range(6):
        optimiser.zero_grad()
        method.loss(model, images, labels, epoch=0).backward()
        optimiser.step()
    assert fixed_loss() < 0.92 * before


# --- the contract -----------------------------------------------------------------------------


def test_diffusion_is_an_au_method_with_a_conditioned_timestep_network():
    method = Diffusion()
    assert isinstance(method, AUMethod)
    assert (method.name, method.deterministic, method.default_samples) == ("diffusion", False, 10)
    assert (method.input_scale, method.steps, method.logsnr_range) == (0.1, 10, (-10.0, 10.0))
    model = tiny_model(n_classes=3, in_channels=2, dropout=0.2)
    assert model.stem.in_channels == 2 + 3  # image channels + the noised map's classes
    assert model.out_channels == 3
    assert model.time_embedding is not None
    resblocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len([m for m in model.modules() if isinstance(m, nn.Dropout2d) and m.p == 0.2]) == len(resblocks)


def test_options_are_checked():
    with pytest.raises(ValueError, match="steps"):
        Diffusion(steps=0)
    with pytest.raises(ValueError, match="input_scale"):
        Diffusion(input_scale=0.0)
    with pytest.raises(ValueError, match="logsnr_range"):
        Diffusion(logsnr_range=(1.0, -1.0))
