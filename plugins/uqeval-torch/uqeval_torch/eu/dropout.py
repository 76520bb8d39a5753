"""``dropout``: Monte Carlo dropout (Gal & Ghahramani 2016), one network whose dropout stays on.

The network is trained once with channel-wise dropout (p = 0.2, one per ResBlock, as the
study); at test time its EMA weights are evaluated with every other layer in evaluation
mode and the dropout layers still sampling, so each forward pass is a member.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from uqeval.contracts import TrainRoutine
from uqeval.errors import UQEvalError
from uqeval_torch.backbone import set_mc_dropout


class MCDropout:
    """One network trained with dropout ``p``; its members are forward passes with dropout on.

    A member is the network with dropout sampling; the mask is drawn anew at every
    network call, so an AU method that calls the network once per sample (diffusion's
    steps) draws a mask per call, as the study's code does by default. The masks follow
    the global torch generator, which prediction seeds per batch.
    """

    name = "dropout"
    description = "MC dropout: one network, channel-wise dropout p = 0.2 kept on at test time (default 10 members)"
    default_members = 10

    def __init__(self, probability: float = 0.2) -> None:
        if not 0.0 < probability < 1.0:
            raise UQEvalError(f"MC dropout: the dropout probability must lie in (0, 1), not {probability}")
        self.probability = probability

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        return [routine(seed=seed, dropout=self.probability)]

    def members(self, trained: Any, *, n: int, seed: int) -> Iterator[nn.Module]:
        if n < 1:
            raise UQEvalError(f"MC dropout needs at least 1 member, not {n}")
        model = trained[0].eval()
        if set_mc_dropout(model, True) == 0:
            raise UQEvalError("MC dropout: the network has no dropout layer to sample (was it trained with dropout?)")
        for _ in range(n):
            yield model
