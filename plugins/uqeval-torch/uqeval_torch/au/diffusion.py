"""``diffusion``: a conditional diffusion model over categorical maps (the study's §3.2).

The clean sample is the one-hot label map, ``x0`` ∈ {0, 1} (batch, class, y, x). Time is
continuous, ``t`` ∈ [0, 1] from clean to pure noise, and the noised sample is the
variance-preserving

    x_t = √γ(t)·x0 + √(1 − γ(t))·ε,     ε ~ N(0, I),

with the study's schedule (:func:`~uqeval_torch.au.diffusion_process.schedule_gamma`),
built in three steps as its code does:

1. the cosine schedule γ₀(t) = cos²(πt/2);
2. input scaling by b = 0.1 (Chen 2023, "On the importance of noise scheduling for
   diffusion models") as a change of schedule, γ₁ = b²γ₀ / ((b² − 1)γ₀ + 1). This is the
   signal fraction of b·x0·√γ₀ + √(1 − γ₀)·ε once that is divided by its standard
   deviation √(b²γ₀ + 1 − γ₀), so the network's input needs no further normalisation;
3. the log signal-to-noise ratio log(γ/(1 − γ)) confined to [−10, 10] by an affine map of
   γ₁ that sends γ₁(0) to sigmoid(10) and γ₁(1) to sigmoid(−10).

The network is the shared UNet with a timestep embedding; it sees the image concatenated
with x_t and ``t``, and its softmax head predicts x0 as a probability map p̂. Training
minimises the mean squared error between p̂ and x0 over each image's labelled pixels and
classes, with the same weight at every ``t``, averaged over the batch; the batch's times
are stratified, one in each of ``batch`` equal intervals of [0, 1], in random order.
Sampling is deterministic DDIM (η = 0, Song et al. 2021) over ``steps`` uniform steps
from ``t = 1`` to ``t = 0``, starting from x_1 ~ N(0, I); a sample is the last step's p̂,
a probability map that is not discretised (the study's A.3).

The schedule, the noising and the DDIM step are in :mod:`uqeval_torch.au.diffusion_process`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from uqeval_torch.options import Options

if TYPE_CHECKING:
    import torch
    from torch import nn

#: b, the input scaling (the study: 0.1).
INPUT_SCALE = 0.1
#: DDIM steps from t = 1 to t = 0 (the study: 10).
DDIM_STEPS = 10
#: The range of log(γ / (1 − γ)) from t = 1 to t = 0 (the study: ±10).
LOGSNR_RANGE = (-10.0, 10.0)


class Diffusion(Options):
    """Conditional diffusion of categorical maps with a softmax x0-prediction head.

    Parameters
    ----------
    input_scale : b of the schedule (:func:`~uqeval_torch.au.diffusion_process.schedule_gamma`); the study: 0.1.
    steps : DDIM steps of :meth:`sample`; the study: 10.
    logsnr_range : the log-SNR at t = 1 and t = 0; the study: (−10, 10).

    Notes
    -----
    The model :meth:`build` returns is the backbone itself, taking
    ``cat([images, x_t], 1)`` (batch, image channels + classes, y, x) and ``t`` (batch,);
    the class count is read from its ``out_channels``. Unlabelled pixels (label 255) have
    an all-zero x0, as in the study's code, and do not count in the loss.
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
        logsnr_range: tuple[float, float] = LOGSNR_RANGE,
    ):
        if not input_scale > 0:
            raise ValueError(f"input_scale must be positive; got {input_scale}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1; got {steps}")
        if not logsnr_range[0] < logsnr_range[1]:
            raise ValueError(f"logsnr_range must be (min, max) with min < max; got {logsnr_range}")
        self.input_scale = input_scale
        self.steps = steps
        self.logsnr_range = logsnr_range

    def gamma(self, t: torch.Tensor | float) -> torch.Tensor:
        """γ(t) of this method's schedule (:func:`~uqeval_torch.au.diffusion_process.schedule_gamma`), float64."""
        from uqeval_torch.au.diffusion_process import schedule_gamma

        return schedule_gamma(t, self.input_scale, self.logsnr_range)

    def build(
        self, backbone: Callable[..., nn.Module], *, in_channels: int, n_classes: int, dropout: float = 0.0
    ) -> nn.Module:
        return backbone(in_channels=in_channels + n_classes, out_channels=n_classes, dropout=dropout, timestep=True)

    def denoise(self, model: nn.Module, images: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p̂: the network's softmax estimate of the clean one-hot map, (batch, class, y, x) float32.

        Parameters
        ----------
        images : (batch, channel, y, x).
        x_t : (batch, class, y, x) noised sample.
        t : (batch,) times in [0, 1].
        """
        import torch

        logits = model(torch.cat([images, x_t.to(images.dtype)], dim=1), t)
        return torch.softmax(logits.float(), dim=1)

    def loss_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """The loss for given times ``t`` (batch,) and noise ε (batch, class, y, x), float32.

        Per image, the mean over labelled pixels and classes of (p̂ − x0)², where p̂ is
        :meth:`denoise` of x_t = √γ(t)·x0 + √(1 − γ(t))·ε; then the mean over the batch
        (an image without labelled pixels adds 0).
        """
        from uqeval_torch.au.common import IGNORE_LABEL, one_hot
        from uqeval_torch.au.diffusion_process import noised

        n_classes = noise.shape[1]
        x0 = one_hot(labels, n_classes)
        x_t = noised(x0, self.gamma(t).float(), noise.float())
        predicted = self.denoise(model, images, x_t, t)
        labelled = (labels != IGNORE_LABEL)[:, None].float()
        squared_errors = ((predicted - x0) ** 2 * labelled).sum(dim=(1, 2, 3))
        return (squared_errors / (labelled.sum(dim=(1, 2, 3)) * n_classes).clamp(min=1)).mean()

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
        """MSE of the softmax head against the one-hot labels, uniform weights over stratified t.

        Draws t with :func:`~uqeval_torch.au.diffusion_process.stratified_times` and then
        ``ε = torch.randn(batch, class, y, x)`` (in that order, from torch's global RNG) and
        returns :meth:`loss_at`. ``epoch`` is unused.
        """
        import torch

        from uqeval_torch.au.diffusion_process import stratified_times

        n_classes = model.out_channels
        batch, _, height, width = images.shape
        t = stratified_times(batch, images.device)
        noise = torch.randn(batch, n_classes, height, width, device=images.device)
        return self.loss_at(model, images, labels, t, noise)

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` maps per image by DDIM from x_1 ~ N(0, I): (n, batch, class, y, x) float32.

        All ``n`` samples of all images run through the network together, as one batch of
        ``n``·batch (sample k of image j at index k·batch + j), so memory grows with
        ``n``·batch. Step i (from 0) predicts p̂ at t = 1 − i/steps and, but for the last,
        takes :func:`~uqeval_torch.au.diffusion_process.ddim_step` with x̂0 = p̂ to
        t = 1 − (i + 1)/steps; the last step's p̂ is returned.
        """
        import torch

        from uqeval_torch.au.diffusion_process import ddim_step

        n_classes = model.out_channels
        batch, _, height, width = images.shape
        repeated = images.repeat(n, 1, 1, 1)
        x_t = torch.randn(n * batch, n_classes, height, width, device=images.device)
        times = 1 - torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
        gammas = self.gamma(times).tolist()
        predicted = torch.empty(0)
        for step in range(self.steps):
            t = torch.full((n * batch,), float(times[step]), device=images.device)
            predicted = self.denoise(model, repeated, x_t, t)
            if step < self.steps - 1:
                x_t = ddim_step(x_t, predicted, gammas[step], gammas[step + 1])
        return predicted.reshape(n, batch, n_classes, height, width)
