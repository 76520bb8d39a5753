"""``ensemble``: a deep ensemble, N networks trained from different seeds (Lakshminarayanan et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from uqeval import UQEvalError
from uqeval.contracts import TrainRoutine

if TYPE_CHECKING:
    from torch import nn


class Ensemble:
    """A deep ensemble: one member per network.

    As the ``ensemble`` EU method (``Ensemble()``) member ``i`` is the training routine run
    with seed ``seed + i`` (its own initialisation, data order and noise; the study uses
    N = 5). As a source for your own models (``Ensemble(models)``, or
    :meth:`from_checkpoints`) the members are ``models``.

    Parameters
    ----------
    models : at least 2 ``nn.Module`` with the same input and output (none for the trained method).
    outputs : what the models return, ``"logits"`` (default) or ``"probabilities"``.
    """

    name = "ensemble"
    description = "deep ensemble: N networks trained from different seeds (default 5)"

    def __init__(self, models: Sequence[nn.Module] | None = None, *, outputs: str = "logits") -> None:
        self.models = None
        self.default_members = 5
        if models is not None:
            if len(models) < 2:
                raise UQEvalError(f"Ensemble: a deep ensemble needs at least 2 models, got {len(models)}")
            from uqeval_torch.members import prepared

            self.models = prepared(list(models), "Ensemble", outputs)
            self.default_members = len(self.models)

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | Path], build: Callable[[], nn.Module], *, outputs: str = "logits"
    ) -> Ensemble:
        """An ensemble of ``build()`` networks, each loaded from one checkpoint file.

        A checkpoint holds a state dict, or a dict with one under ``"state_dict"`` or
        ``"model"`` (as Lightning and many training scripts save them); it is read with
        ``torch.load(..., weights_only=True)``.
        """
        import torch
        from torch import nn

        models = []
        for path in paths:
            try:
                saved = torch.load(Path(path), map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as error:
                raise UQEvalError(f"Ensemble: cannot read checkpoint {path}: {error}") from None
            state = saved
            for key in ("state_dict", "model"):
                if isinstance(saved, dict) and isinstance(saved.get(key), dict):
                    state = saved[key]
            model = build()
            if not isinstance(model, nn.Module):
                raise UQEvalError(f"Ensemble: build() must return a torch.nn.Module, got {type(model).__name__}")
            try:
                model.load_state_dict(state)
            except RuntimeError as error:
                raise UQEvalError(f"Ensemble: checkpoint {path} does not fit build()'s network: {error}") from None
            models.append(model)
        return cls(models, outputs=outputs)

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        if n_members < 2:
            raise UQEvalError(f"an ensemble needs at least 2 members, not {n_members}")
        return [routine(seed=seed + member) for member in range(n_members)]

    def members(
        self, trained: Sequence[nn.Module] | None = None, *, n: int | None = None, seed: int = 0
    ) -> Iterator[nn.Module]:
        """The first ``n`` networks (default all), in evaluation mode."""
        from uqeval_torch.members import shared_copy

        networks = list(trained if trained is not None else self.models or [])
        n = len(networks) if n is None else n
        if not 1 <= n <= len(networks):
            raise UQEvalError(f"the ensemble has {len(networks)} trained members; cannot predict with {n}")
        for model in networks[:n]:
            # Your models are copied (sharing their weights), so that their own modes stay as they are.
            yield (shared_copy(model) if trained is None else model).eval()
