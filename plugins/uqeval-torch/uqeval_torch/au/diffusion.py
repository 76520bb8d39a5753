"""``diffusion``: a conditional diffusion model over categorical maps (the study's §3.2).

The clean sample is the one-hot label map mapped to {−1, 1}, ``x0 = 2·onehot − 1``
(batch, class, y, x). Time is continuous, ``t`` ∈ [0, 1] from clean to pure noise, and
the noising process with input scaling ``b`` (Chen 2023, "On the importance of noise
scheduling for diffusion models") is

    x_t = √γ(t)·b·x0 + √(1 − γ(t))·ε,     ε ~ N(0, I),

with the cosine schedule γ(t) = ᾱ(t) of Nichol & Dhariwal (2021) (:func:`cosine_gamma`).
The network is the shared UNet with a timestep embedding in every ResBlock; it sees the
image concatenated with ``x_t / std(t)`` (:func:`input_std`), and its softmax head
predicts the clean one-hot map p̂ (so its estimate of the scaled clean sample is
``b·(2p̂ − 1)``, bounded by ±b like the data). Training minimises the mean squared error
between p̂ and the one-hot labels with the same weight at every ``t`` ~ U(0, 1).
Sampling is deterministic DDIM (η = 0, Song et al. 2021) over ``steps`` uniform steps
from ``t = 1`` to ``t = 0``, starting from x_1 ~ N(0, I); a sample is the last step's p̂,
a probability map that is not discretised (the study's A.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from uqeval_torch.au.common import IGNORE_LABEL, one_hot

#: b, the factor on the clean sample in ``x_t`` (the study: 0.1; Chen 2023's input scaling).
INPUT_SCALE = 0.1
#: DDIM steps from t = 1 to t = 0 (the study: 10).
DDIM_STEPS = 10
#: s, the offset of the cosine schedule that keeps γ just below 1 near t = 0 (Nichol & Dhariwal 2021).
SCHEDULE_OFFSET = 0.008
#: The floor of γ. Without it γ(1) is cos(π/2)², i.e. rounding error (≈ 2e-15 in float32),
#: not a number the schedule chose; 1e-5 is far below anything that matters here: with
#: b = 0.1 the signal-to-noise ratio γb²/(1 − γ) at t = 1 is 1e-7.
GAMMA_MIN = 1e-5


def cosine_gamma(t: torch.Tensor, offset: float = SCHEDULE_OFFSET, gamma_min: float = GAMMA_MIN) -> torch.Tensor:
    """The cosine schedule: the signal variance γ(t) = ᾱ(t) at times ``t`` ∈ [0, 1].

    γ(t) = cos(((t + s)/(1 + s))·π/2)² / cos((s/(1 + s))·π/2)², clipped to [γ_min, 1], so
    γ(0) = 1 exactly, γ decreases monotonically and γ(1) = γ_min.

    Parameters
    ----------
    t : tensor of times, any shape; a float dtype (the result has the same).
    offset : s.
    gamma_min : γ_min.

    Examples
    --------
    >>> cosine_gamma(torch.tensor([0.0, 1.0]))
    tensor([1.0000e+00, 1.0000e-05])
    """

    def unnormalised(time: torch.Tensor) -> torch.Tensor:
        return torch.cos((time + offset) / (1 + offset) * (math.pi / 2)) ** 2

    # The same operations on t = 0 give the normaliser, so γ(0) = x / x = 1 exactly.
    return (unnormalised(t) / unnormalised(torch.zeros_like(t))).clamp(gamma_min, 1.0)


def _per_image(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A per-image value (batch,) broadcast against maps (batch, class, y, x); a float as it is."""
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        return value.reshape(-1, *([1] * (like.ndim - 1)))
    return value


def noised(
    x0: torch.Tensor, gamma: torch.Tensor | float, noise: torch.Tensor, input_scale: float = INPUT_SCALE
) -> torch.Tensor:
    """x_t = √γ·b·x0 + √(1 − γ)·ε: the noised sample, mean √γ·b·x0 and variance 1 − γ.

    Parameters
    ----------
    x0 : (batch, class, y, x) clean maps in [−1, 1].
    gamma : γ(t), a float or one per image (batch,).
    noise : ε, shaped like ``x0``.
    input_scale : b.
    """
    gamma = torch.as_tensor(_per_image(gamma, x0), dtype=x0.dtype, device=x0.device)
    return gamma.sqrt() * input_scale * x0 + (1 - gamma).sqrt() * noise


def input_std(gamma: torch.Tensor | float, input_scale: float = INPUT_SCALE) -> torch.Tensor:
    """√(γ·b² + 1 − γ): the root mean square of x_t for clean values of unit magnitude.

    The network sees x_t divided by it, so its input has unit variance at every t
    (Chen 2023, §3.2). Chen's Algorithm 1 divides by each example's empirical standard
    deviation instead; for x0 ∈ {−1, 1} (E[x0²] = 1) that converges to this value, and the
    analytic one makes a pixel's input independent of the rest of the map (and of how
    much of it is labelled).
    """
    gamma = torch.as_tensor(gamma)
    return (gamma * input_scale**2 + 1 - gamma).sqrt()


def ddim_step(
    x_t: torch.Tensor,
    x0_prediction: torch.Tensor,
    gamma_t: torch.Tensor | float,
    gamma_s: torch.Tensor | float,
) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from time t to an earlier time s.

    ε̂ = (x_t − √γ_t·x̂0)/√(1 − γ_t),    x_s = √γ_s·x̂0 + √(1 − γ_s)·ε̂.

    The noise estimate is kept, so with the true x0 (scaled, b·x0) and x_t built from it
    the step lands on the same noise's x_s; with γ_s = 1 (s = 0) it returns x̂0 exactly.

    Parameters
    ----------
    x_t : (batch, class, y, x) current sample.
    x0_prediction : x̂0, the predicted clean sample in the units of x_t (b·(2p̂ − 1)).
    gamma_t, gamma_s : γ at t and s, floats or one per image (batch,); γ_t < 1.
    """
    gamma_t = torch.as_tensor(_per_image(gamma_t, x_t), dtype=x_t.dtype, device=x_t.device)
    gamma_s = torch.as_tensor(_per_image(gamma_s, x_t), dtype=x_t.dtype, device=x_t.device)
    noise_prediction = (x_t - gamma_t.sqrt() * x0_prediction) / (1 - gamma_t).sqrt()
    return gamma_s.sqrt() * x0_prediction + (1 - gamma_s).sqrt() * noise_prediction


class Diffusion:
    """Conditional diffusion of categorical maps with a softmax x0-prediction head.

    Parameters
    ----------
    input_scale : b, the factor on the clean map in x_t (Chen 2023); the study: 0.1.
    steps : DDIM steps of :meth:`sample`; the study: 10.
    schedule_offset : s of the cosine schedule.
    gamma_min : the floor of γ (see :data:`GAMMA_MIN`).

    Notes
    -----
    The model :meth:`build` returns is the backbone itself, taking
    ``cat([images, x_t / std(t)], 1)`` (batch, image channels + classes, y, x) and ``t``
    (batch,); the class count is read from its ``out_channels``. Unlabelled pixels
    (label 255) have no clean class: their x0 is that of the uniform class distribution,
    2/n_classes − 1 in every channel, and they do not count in the loss.
    """

    name = "diffusion"
    description = "conditional diffusion of the one-hot map (softmax x0 head, cosine schedule b=0.1, DDIM 10 steps)"
    deterministic = False
    default_samples = 10

    def __init__(
        self,
        *,
        input_scale: float = INPUT_SCALE,
        steps: int = DDIM_STEPS,
        schedule_offset: float = SCHEDULE_OFFSET,
        gamma_min: float = GAMMA_MIN,
    ):
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive; got {input_scale}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1; got {steps}")
        if not 0 < gamma_min < 1:
            raise ValueError(f"gamma_min must lie in (0, 1); got {gamma_min}")
        self.input_scale = input_scale
        self.steps = steps
        self.schedule_offset = schedule_offset
        self.gamma_min = gamma_min

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """γ(t) of this method's schedule (:func:`cosine_gamma`)."""
        return cosine_gamma(t, self.schedule_offset, self.gamma_min)

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> nn.Module:
        return backbone(in_channels=in_channels + n_classes, out_channels=n_classes, dropout=dropout, timestep=True)

    def clean_maps(self, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
        """x0 = 2·onehot − 1 (batch, class, y, x) float32; unlabelled pixels 2/n_classes − 1."""
        hot = one_hot(labels, n_classes)
        uniform = torch.full_like(hot, 1.0 / n_classes)
        return 2 * torch.where((labels != IGNORE_LABEL)[:, None], hot, uniform) - 1

    def denoise(self, model: nn.Module, images: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p̂: the network's softmax estimate of the clean one-hot map, (batch, class, y, x) float32.

        Parameters
        ----------
        images : (batch, channel, y, x).
        x_t : (batch, class, y, x) noised sample (not yet normalised).
        t : (batch,) times in [0, 1].
        """
        scaled_input = x_t / _per_image(input_std(self.gamma(t), self.input_scale), x_t)
        logits = model(torch.cat([images, scaled_input.to(images.dtype)], dim=1), t)
        return torch.softmax(logits.float(), dim=1)

    def loss_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """The loss for given times ``t`` (batch,) and noise ε (batch, class, y, x).

        The mean over labelled pixels and classes of (p̂ − onehot)², in float32, where p̂ is
        :meth:`denoise` of x_t = √γ(t)·b·x0 + √(1 − γ(t))·ε.
        """
        n_classes = noise.shape[1]
        x_t = noised(self.clean_maps(labels, n_classes), self.gamma(t.float()), noise.float(), self.input_scale)
        predicted = self.denoise(model, images, x_t, t)
        labelled = (labels != IGNORE_LABEL)[:, None].float()
        squared_errors = (predicted - one_hot(labels, n_classes)) ** 2 * labelled
        return squared_errors.sum() / (labelled.sum().clamp(min=1) * n_classes)

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """MSE of the softmax head against the one-hot labels, uniform over t ~ U(0, 1).

        Draws ``t = torch.rand(batch)`` and then ``ε = torch.randn(batch, class, y, x)``
        (in that order, from torch's global RNG) and returns :meth:`loss_at`; squared
        probability error per class per labelled pixel. ``epoch`` is unused.
        """
        n_classes = model.out_channels
        batch, _, height, width = images.shape
        t = torch.rand(batch, device=images.device)
        noise = torch.randn(batch, n_classes, height, width, device=images.device)
        return self.loss_at(model, images, labels, t, noise)

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` maps per image by DDIM from x_1 ~ N(0, I): (n, batch, class, y, x) float32.

        The batch is repeated ``n`` times and all samples run together, so memory grows
        with ``n``·batch. Steps go from t_i = 1 − i/steps to t_{i+1}; each predicts p̂,
        sets x̂0 = b·(2p̂ − 1) and takes :func:`ddim_step`; the last step's p̂ is returned.
        """
        n_classes = model.out_channels
        batch, _, height, width = images.shape
        repeated = images.repeat(n, 1, 1, 1)
        x_t = torch.randn(n * batch, n_classes, height, width, device=images.device)
        # 1 − i/steps is exact at both ends: t_0 = 1 and t_steps = 0, where γ = 1 and x_s = x̂0.
        times = 1 - torch.arange(self.steps + 1, device=images.device, dtype=torch.float32) / self.steps
        gammas = self.gamma(times)
        predicted = torch.empty(0)
        for step in range(self.steps):
            t = times[step].expand(n * batch)
            predicted = self.denoise(model, repeated, x_t, t)
            x0_prediction = self.input_scale * (2 * predicted - 1)
            x_t = ddim_step(x_t, x0_prediction, gammas[step], gammas[step + 1])
        return predicted.reshape(n, batch, n_classes, height, width)
