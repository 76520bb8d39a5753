"""The ``diffusion`` AU method: schedule, noising, DDIM, sampling and loss."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from uqeval.contracts import AUMethod  # noqa: E402
from uqeval_torch.au.diffusion import (  # noqa: E402
    GAMMA_MIN,
    SCHEDULE_OFFSET,
    Diffusion,
    cosine_gamma,
    ddim_step,
    input_std,
    noised,
)
from uqeval_torch.backbone import Backbone  # noqa: E402

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
    torch.manual_seed(seed)
    return Diffusion().build(Backbone("tiny"), in_channels=in_channels, n_classes=n_classes, dropout=dropout)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_schedule_end_points(dtype):
    gamma = cosine_gamma(torch.tensor([0.0, 1.0], dtype=dtype))
    assert gamma[0].item() == 1.0
    assert gamma[1].item() == pytest.approx(GAMMA_MIN, rel=1e-6)
    assert cosine_gamma(torch.tensor([1.0], dtype=dtype), gamma_min=1e-3).item() == pytest.approx(1e-3, rel=1e-6)


def test_schedule_is_monotone_and_matches_the_closed_form():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    gamma = cosine_gamma(t)
    steps = gamma[1:] - gamma[:-1]
    assert (steps <= 0).all()
    assert (steps[gamma[1:] > GAMMA_MIN] < 0).all()  # strictly decreasing until the floor
    s = SCHEDULE_OFFSET
    half_way = math.cos((0.5 + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    assert cosine_gamma(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(half_way, rel=1e-12)
    assert half_way == pytest.approx(0.4938, abs=1e-4)  # just below 1/2: the offset shifts the curve
    # The schedule of the method instance follows its options.
    method = Diffusion(schedule_offset=0.0, gamma_min=1e-4)
    assert method.gamma(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(0.5, rel=1e-12)
    assert method.gamma(torch.tensor([1.0])).item() == pytest.approx(1e-4, rel=1e-6)


# --- noising ----------------------------------------------------------------------------------


def test_noising_marginal_matches_mean_and_variance():
    torch.manual_seed(0)
    draws, b = 200_000, 0.1
    x0 = torch.tensor([-1.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    for gamma in (0.9, 0.3, 0.01):
        x_t = noised(x0.expand(draws, 3, 1, 1), gamma, torch.randn(draws, 3, 1, 1), b)
        mean, variance = x_t.mean(0).flatten(), x_t.var(0).flatten()
        expected_mean = math.sqrt(gamma) * b * x0.flatten()
        standard_error = math.sqrt((1 - gamma) / draws)
        assert torch.allclose(mean, expected_mean, atol=5 * standard_error)
        assert torch.allclose(variance, torch.full((3,), 1 - gamma), rtol=0.02)


def test_noising_takes_one_gamma_per_image():
    x0 = torch.ones(2, 2, 4, 4)
    noise = torch.ones(2, 2, 4, 4)
    x_t = noised(x0, torch.tensor([1.0, 0.36]), noise, 0.5)
    assert torch.allclose(x_t[0], torch.full((2, 4, 4), 0.5))  # √1·0.5·1 + 0
    assert torch.allclose(x_t[1], torch.full((2, 4, 4), 0.6 * 0.5 + 0.8))  # √.36·0.5 + √.64


def test_network_input_has_unit_variance():
    torch.manual_seed(1)
    x0 = torch.randint(0, 2, (20_000, 2, 1, 1)).float() * 2 - 1
    for gamma in (0.999, 0.5, 0.001):
        x_t = noised(x0, gamma, torch.randn_like(x0), 0.1)
        assert (x_t / input_std(gamma, 0.1)).pow(2).mean().item() == pytest.approx(1.0, rel=0.03)
    assert input_std(1.0, 0.1).item() == pytest.approx(0.1)
    assert input_std(0.0, 0.1).item() == 1.0


def test_clean_maps_are_plus_minus_one_and_uniform_where_unlabelled():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    x0 = Diffusion().clean_maps(labels, 3)
    assert x0[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]
    assert x0[0, :, 0, 1].tolist() == [-1.0, -1.0, 1.0]
    assert x0[0, :, 1, 1].tolist() == [-1.0, 1.0, -1.0]
    assert x0[0, :, 1, 0].tolist() == pytest.approx([-1 / 3] * 3)  # 2·(1/3) − 1


# --- DDIM -------------------------------------------------------------------------------------


def test_ddim_step_with_the_true_clean_sample_keeps_the_noise():
    generator = torch.Generator().manual_seed(2)
    b = 0.1
    x0 = torch.randint(0, 2, (3, 2, 8, 8), generator=generator).double() * 2 - 1
    noise = torch.randn(3, 2, 8, 8, generator=generator, dtype=torch.float64)
    for gamma_t, gamma_s in [(GAMMA_MIN, 0.05), (0.05, 0.5), (0.5, 0.99)]:
        x_t = noised(x0, gamma_t, noise, b)
        x_s = ddim_step(x_t, b * x0, gamma_t, gamma_s)
        expected = math.sqrt(gamma_s) * b * x0 + math.sqrt(1 - gamma_s) * noise
        assert torch.allclose(x_s, expected, rtol=0, atol=1e-12)
    # One γ per image, as a tensor.
    gamma_t, gamma_s = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.3, 0.5, 0.9])
    x_t = noised(x0.float(), gamma_t, noise.float(), b)
    x_s = ddim_step(x_t, b * x0.float(), gamma_t, gamma_s)
    assert torch.allclose(x_s, noised(x0.float(), gamma_s, noise.float(), b), atol=1e-6)


def test_ddim_step_to_time_zero_returns_the_prediction_exactly():
    generator = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 3, 8, 8, generator=generator)
    prediction = 0.1 * (2 * torch.rand(2, 3, 8, 8, generator=generator) - 1)  # need not match x_t
    assert torch.equal(ddim_step(x_t, prediction, 0.7, 1.0), prediction)
    assert torch.equal(
        ddim_step(x_t, prediction, float(cosine_gamma(torch.tensor(0.1))), cosine_gamma(torch.tensor(0.0))), prediction
    )


def test_sampler_with_an_oracle_returns_its_map_along_one_noise_trajectory():
    n, n_classes, b = 3, 3, 0.1
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

    # Ten calls at t = 1, 0.9, …, 0.1, each on the repeated images.
    times = [t for _, t in oracle.calls]
    assert len(times) == 10
    assert torch.allclose(torch.stack([t[0] for t in times]), 1 - torch.arange(10) / 10)
    assert all((t == t[0]).all() and t.shape == (n * 2,) for t in times)
    assert all(torch.equal(x[:, :1], images.repeat(n, 1, 1, 1)) for x, _ in oracle.calls)

    # The first input is x_1 ~ N(0, I) drawn from the global RNG (normalised by std(1) ≈ 1).
    torch.manual_seed(6)
    x_1 = torch.randn(n * 2, n_classes, 8, 8)
    gamma_1 = cosine_gamma(torch.tensor(1.0))
    assert torch.allclose(oracle.calls[0][0][:, 1:], x_1 / input_std(gamma_1, b))

    # With the true x0 deterministic DDIM keeps ε: every input is √γ·b·x0 + √(1−γ)·ε of the same ε.
    x0_scaled = b * (2 * oracle.hot.repeat(n, 1, 1, 1) - 1)
    noises = []
    for x, t in oracle.calls:
        gamma = cosine_gamma(t[:1])
        x_t = x[:, 1:] * input_std(gamma, b)
        noises.append((x_t - gamma.sqrt() * x0_scaled) / (1 - gamma).sqrt())
    for noise in noises[1:]:
        assert torch.allclose(noise, noises[0], atol=1e-5)
    assert torch.allclose(noises[0], x_1, atol=1e-3)  # ε ≈ x_1 since γ(1) = 1e-5


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


# --- loss -------------------------------------------------------------------------------------


def independent_loss(model, images, labels, t, noise, b=0.1):
    """The loss written out: masks by boolean indexing, x0 by hand."""
    n_classes = noise.shape[1]
    labelled = labels != 255
    hot = torch.zeros(noise.shape)
    for c in range(n_classes):
        hot[:, c] = ((labels == c) & labelled).float()
    x0 = torch.where(labelled[:, None], 2 * hot - 1, torch.full_like(hot, 2 / n_classes - 1))
    s = SCHEDULE_OFFSET
    gamma = (torch.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2)) ** 2
    gamma = gamma.clamp(GAMMA_MIN, 1)[:, None, None, None]
    x_t = gamma.sqrt() * b * x0 + (1 - gamma).sqrt() * noise
    x_in = x_t / (gamma * b**2 + 1 - gamma).sqrt()
    predicted = torch.softmax(model(torch.cat([images, x_in], 1), t), 1)
    errors = ((predicted - hot) ** 2).permute(0, 2, 3, 1)[labelled]  # (labelled pixels, class)
    return errors.mean()


def test_loss_equals_an_independent_computation_and_ignores_unlabelled_pixels():
    model = tiny_model(n_classes=3)
    images, labels = images_of(10), labels_of(11, n_classes=3)
    method = Diffusion()
    torch.manual_seed(12)
    loss = method.loss(model, images, labels, epoch=0)
    torch.manual_seed(12)
    t, noise = torch.rand(2), torch.randn(2, 3, SIDE, SIDE)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(independent_loss(model, images, labels, t, noise).item(), rel=1e-5)
    # A different t gives a different loss: t is drawn per image and used.
    other_t = independent_loss(model, images, labels, torch.tensor([0.05, 0.95]), noise).item()
    assert method.loss_at(model, images, labels, torch.tensor([0.05, 0.95]), noise).item() == pytest.approx(
        other_t, rel=1e-5
    )
    assert other_t != pytest.approx(loss.item(), rel=1e-3)


def test_unlabelled_pixels_do_not_count():
    n_classes = 2
    labels = labels_of(13, n_classes=n_classes)
    oracle = Oracle(labels, n_classes)
    t, noise = torch.tensor([0.3, 0.8]), torch.randn(2, n_classes, SIDE, SIDE)
    method = Diffusion()
    assert method.loss_at(oracle, images_of(14), labels, t, noise).item() == 0.0  # oracle: zero loss
    # The oracle is right except on the ignored square (it predicts class 1 there): still zero.
    wrong_where_ignored = labels.clone()
    wrong_where_ignored[0, :8, :8] = 1
    oracle_wrong = Oracle(wrong_where_ignored, n_classes)
    oracle_wrong.hot[0, :, :8, :8] = torch.tensor([0.0, 1.0])[:, None, None]
    assert method.loss_at(oracle_wrong, images_of(14), labels, t, noise).item() == 0.0
    # One wrong labelled pixel of the 2·32·32 − 64 counts with (1² + 1²)/2 per pixel.
    oracle_one_wrong = Oracle(labels, n_classes)
    oracle_one_wrong.hot[1, :, 0, 0] = 1 - oracle_one_wrong.hot[1, :, 0, 0]
    expected = 1.0 / (2 * SIDE * SIDE - 64)
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
    assert fixed_loss() < 0.92 * before  # 0.264 → 0.225 with 1 CPU thread


# --- the contract -----------------------------------------------------------------------------


def test_diffusion_is_an_au_method_with_a_conditioned_timestep_network():
    method = Diffusion()
    assert isinstance(method, AUMethod)
    assert (method.name, method.deterministic, method.default_samples) == ("diffusion", False, 10)
    assert (method.input_scale, method.steps) == (0.1, 10)
    model = tiny_model(n_classes=3, in_channels=2, dropout=0.2)
    assert model.stem.in_channels == 2 + 3  # image channels + the noised map's classes
    assert model.out_channels == 3
    resblocks = [m for m in model.modules() if m.__class__.__name__ == "ResBlock"]
    assert resblocks and all(block.embedding is not None for block in resblocks)
    assert any(isinstance(m, nn.Dropout2d) and m.p == 0.2 for m in model.modules())


def test_options_are_checked():
    with pytest.raises(ValueError, match="steps"):
        Diffusion(steps=0)
    with pytest.raises(ValueError, match="input_scale"):
        Diffusion(input_scale=0.0)
    with pytest.raises(ValueError, match="gamma_min"):
        Diffusion(gamma_min=0.0)
