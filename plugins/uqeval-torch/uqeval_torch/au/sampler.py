"""Your own stochastic sampler as an AU method: ``function(model, images, n)`` → ``n`` probability maps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from uqeval import UQEvalError


class Sampler:
    """Your own stochastic sampler (an SSN, a diffusion model, …) as an AU method that is not trained here.

    Parameters
    ----------
    function : takes the member's model, images ``(batch, channel, y, x)`` and ``n``;
        returns probabilities ``(n, batch, class, y, x)`` (softmax over ``class``). Draw
        randomness from the global torch generator: the writer seeds it per batch.
    samples : the default ``n``, at least 2.
    name : for messages and the store (default: the function's name).
    """

    deterministic = False

    def __init__(
        self, function: Callable[[nn.Module, torch.Tensor, int], torch.Tensor], *, samples: int, name: str | None = None
    ) -> None:
        if not callable(function):
            raise UQEvalError(f"Sampler: function must be callable, got {type(function).__name__}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise UQEvalError(f"Sampler: samples must be an integer of at least 2, got {samples!r}")
        self.function, self.default_samples = function, samples
        self.name = name or getattr(function, "__name__", type(function).__name__)
        self.description = f"your sampler {self.name!r}"

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """``function(model, images, n)``: (n, batch, class, y, x) probabilities."""
        return self.function(model, images, n)
