"""The noising process of ``diffusion`` (:mod:`uqeval_torch.au.diffusion`, where the model
is described), in tensors: the study's schedule γ(t), stratified training times, noised
samples and the DDIM step."""

from __future__ import annotations

import math

import torch

from uqeval_torch.au.diffusion import INPUT_SCALE, LOGSNR_RANGE


def cosine_gamma(t: torch.Tensor) -> torch.Tensor:
    """γ₀(t) = cos²(πt/2), the plain cosine schedule (no offset)."""
    return torch.cos(t * (math.pi / 2)) ** 2


def input_scaled_gamma(gamma: torch.Tensor, input_scale: float) -> torch.Tensor:
    """γ' = b²γ / ((b² − 1)γ + 1): the schedule ``gamma`` with the clean sample scaled by b = ``input_scale``."""
    b2 = input_scale**2
    return b2 * gamma / ((b2 - 1) * gamma + 1)


def schedule_gamma(
    t: torch.Tensor | float, input_scale: float = INPUT_SCALE, logsnr_range: tuple[float, float] = LOGSNR_RANGE
) -> torch.Tensor:
    """The study's signal variance γ(t): cosine, input-scaled, with its log-SNR confined to ``logsnr_range``.

    γ(t) = slope·γ'(t) + bias with γ' = :func:`input_scaled_gamma` of :func:`cosine_gamma`,
    slope and bias chosen so that γ(0) = sigmoid(max) and γ(1) = sigmoid(min).

    Parameters
    ----------
    t : times in [0, 1], any shape.
    input_scale : b.
    logsnr_range : (min, max) of log(γ/(1 − γ)), reached at t = 1 and t = 0.

    Returns
    -------
    γ(t), float64 (computed in float64, as the study does), shaped like ``t``.

    Examples
    --------
    >>> gamma = schedule_gamma(torch.tensor([0.0, 1.0]))
    >>> torch.log(gamma / (1 - gamma))
    tensor([ 10.0000, -10.0000], dtype=torch.float64)
    """
    t = torch.as_tensor(t).to(torch.float64)
    low, high = logsnr_range
    if not low < high:
        raise ValueError(f"logsnr_range must be (min, max) with min < max; got {logsnr_range}")
    end_points = input_scaled_gamma(cosine_gamma(torch.tensor([0.0, 1.0], dtype=torch.float64)), input_scale)
    targets = torch.sigmoid(torch.tensor([high, low], dtype=torch.float64))
    slope = float((targets[0] - targets[1]) / (end_points[0] - end_points[1]))
    bias = float(targets[1] - end_points[1] * slope)
    return input_scaled_gamma(cosine_gamma(t), input_scale) * slope + bias


def stratified_times(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(batch,) times, one uniform in each interval [i/batch, (i+1)/batch), in random order.

    Draws ``torch.randperm(batch)`` then ``torch.rand(batch)`` from torch's global RNG.
    """
    return ((torch.randperm(batch) + torch.rand(batch)) / batch).to(device)


def _per_image(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A float or per-image values (batch,) as a tensor that broadcasts against maps (batch, class, y, x)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape(-1, *([1] * (like.ndim - 1))) if value.ndim == 1 else value


def noised(x0: torch.Tensor, gamma: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √γ·x0 + √(1 − γ)·ε.

    Parameters
    ----------
    x0 : (batch, class, y, x) clean maps.
    gamma : γ(t), a float or one per image (batch,).
    noise : ε, shaped like ``x0``.
    """
    gamma = _per_image(gamma, x0)
    return gamma.sqrt() * x0 + (1 - gamma).sqrt() * noise


def ddim_step(
    x_t: torch.Tensor, x0_prediction: torch.Tensor, gamma_t: torch.Tensor | float, gamma_s: torch.Tensor | float
) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from time t to an earlier time s.

    ε̂ = (x_t − √γ_t·x̂0)/√(1 − γ_t),    x_s = √γ_s·x̂0 + √(1 − γ_s)·ε̂.

    The noise estimate is kept, so with the true x0 and x_t built from it the step lands
    on the same noise's x_s; with γ_s = 1 it returns x̂0 exactly.

    Parameters
    ----------
    x_t : (batch, class, y, x) current sample.
    x0_prediction : x̂0, the predicted clean sample.
    gamma_t, gamma_s : γ at t and s, floats or one per image (batch,); γ_t < 1.
    """
    gamma_t, gamma_s = _per_image(gamma_t, x_t), _per_image(gamma_s, x_t)
    noise_prediction = (x_t - gamma_t.sqrt() * x0_prediction) / (1 - gamma_t).sqrt()
    return gamma_s.sqrt() * x0_prediction + (1 - gamma_s).sqrt() * noise_prediction
