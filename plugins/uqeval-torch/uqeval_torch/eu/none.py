"""``none``: no epistemic model; one trained network, its AU samples used as they are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from uqeval.contracts import TrainRoutine
from uqeval.errors import UQEvalError


class NoEU:
    """One network from one training run (the study's "No EU").

    Its cube has ``eu = 1``; uqeval then treats the AU samples as the members, following
    ValUES, without swapping the AU and EU labels.
    """

    name = "none"
    description = "no epistemic model: one network, its AU samples used as they are"
    default_members = 1

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        if n_members != 1:
            raise UQEvalError(f"EU method `none` has exactly 1 member, not {n_members}")
        return [routine(seed=seed)]

    def members(self, trained: Any, *, n: int, seed: int) -> Iterator[nn.Module]:
        if n != 1:
            raise UQEvalError(f"EU method `none` has exactly 1 member, not {n}")
        yield trained[0].eval()
