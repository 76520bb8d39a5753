"""``none``: no epistemic model; one network, its AU samples used as they are."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from uqeval import UQEvalError
from uqeval.contracts import TrainRoutine

if TYPE_CHECKING:
    from torch import nn


class SingleModel:
    """One network and no epistemic source (the study's "No EU"): the cube has ``eu = 1``.

    uqeval then treats the AU samples as the members, following ValUES, without swapping
    the AU and EU labels; so pair it with a stochastic AU method (SSN, test-time
    augmentation, your :class:`~uqeval_torch.au.sampler.Sampler`). As the ``none`` EU
    method (``SingleModel()``) the network is one training run; as a source for your own
    model, ``SingleModel(model)``.

    Parameters
    ----------
    model : your network (none for the trained method).
    outputs : what ``model`` returns, ``"logits"`` (default) or ``"probabilities"``.
    """

    name = "none"
    description = "no epistemic model: one network, its AU samples used as they are"
    default_members = 1

    def __init__(self, model: nn.Module | None = None, *, outputs: str = "logits") -> None:
        self.models = None
        if model is not None:
            from uqeval_torch.members import prepared

            self.models = prepared([model], "SingleModel", outputs)

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> list[nn.Module]:
        if n_members != 1:
            raise UQEvalError(f"EU method `none` has exactly 1 member, not {n_members}")
        return [routine(seed=seed)]

    def members(
        self, trained: Sequence[nn.Module] | None = None, *, n: int | None = None, seed: int = 0
    ) -> Iterator[nn.Module]:
        from uqeval_torch.members import shared_copy

        if n not in (None, 1):
            raise UQEvalError(f"EU method `none` has exactly 1 member, not {n}")
        if trained is None and self.models is None:
            raise UQEvalError("SingleModel: no network (give a model, or the trained run)")
        yield trained[0].eval() if trained is not None else shared_copy(self.models[0]).eval()
