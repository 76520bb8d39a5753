"""``ensemble``: a deep ensemble, N networks trained from different seeds (Lakshminarayanan et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from uqeval.contracts import TrainRoutine
from uqeval.errors import UQEvalError


class Ensemble:
    """N independently trained networks: member ``i`` is the routine run with seed ``seed + i``
    (its own initialisation, data order and noise). The study uses N = 5."""

    name = "ensemble"
    description = "deep ensemble: N networks trained from different seeds (default 5)"
    default_members = 5

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        if n_members < 2:
            raise UQEvalError(f"an ensemble needs at least 2 members, not {n_members}")
        return [routine(seed=seed + member) for member in range(n_members)]

    def members(self, trained: Any, *, n: int, seed: int) -> Iterator[nn.Module]:
        if not 1 <= n <= len(trained):
            raise UQEvalError(f"the ensemble has {len(trained)} trained members; cannot predict with {n}")
        for model in trained[:n]:
            yield model.eval()
