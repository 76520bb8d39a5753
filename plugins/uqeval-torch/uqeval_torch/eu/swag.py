r"""``swag`` and ``swag_diag``: SWA-Gaussian over the weights (Maddox et al. 2019).

While the network trains, the raw (not EMA) weights are snapshotted at the end of each
of the last ``K = 30`` epochs (every epoch when there are fewer); the collector keeps
their running mean :math:`\bar\theta`, their running second moment
:math:`\overline{\theta^2}` and the last ``K`` deviations
:math:`D_k = \theta_k - \bar\theta_k` (from the mean as updated by that snapshot). A
member is a draw

.. math::

    \theta = \bar\theta + \sqrt{s}\left(\sqrt{\max(\overline{\theta^2} - \bar\theta^2, 10^{-30})}
    \odot z_1 + \frac{D^\top z_2}{\sqrt{K - 1}}\right), \quad z_1 \sim N(0, I),\ z_2 \sim N(0, I_K)

with scale ``s = 1`` and ``z_2`` shared by every tensor; ``swag_diag`` (SWAG-D) drops the
low-rank term. A draw overwrites every parameter of the network. Collecting does not
change training, so one run serves ``none`` (its EMA weights), ``swag`` and
``swag_diag``. A run of fewer than :data:`MIN_EPOCHS` epochs still finishes (``none``
needs no moments); only drawing ``swag`` or ``swag_diag`` members from it is refused.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from uqeval import UQEvalError
from uqeval.contracts import TrainRoutine

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Snapshots kept (the study's K).
SNAPSHOTS = 30
#: Floor of the diagonal variance under the square root.
VARIANCE_FLOOR = 1e-30
#: Epochs a run needs before members can be drawn: one snapshot per epoch, and a
#: variance needs 2.
MIN_EPOCHS = 2


class SWAGMoments:
    """The collector (``uqeval.contracts.Collector``) of SWAG's moments, one snapshot per epoch.

    Parameters
    ----------
    snapshots : the last this many epochs are snapshotted (all epochs when fewer).
    """

    def __init__(self, snapshots: int = SNAPSHOTS) -> None:
        self.snapshots = snapshots
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}
        self.square: dict[str, torch.Tensor] = {}
        self.deviations: list[dict[str, torch.Tensor]] = []

    def epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        import torch

        if epoch < epochs - self.snapshots:
            return
        self.count += 1
        weight = 1.0 / self.count
        deviation = {}
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                value = parameter.detach().float().cpu()
                if name not in self.mean:
                    self.mean[name] = torch.zeros_like(value)
                    self.square[name] = torch.zeros_like(value)
                self.mean[name].mul_(1 - weight).add_(value, alpha=weight)
                self.square[name].mul_(1 - weight).add_(value * value, alpha=weight)
                deviation[name] = value - self.mean[name]
        self.deviations = [*self.deviations, deviation][-self.snapshots :]

    def state_dict(self) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots,
            "count": self.count,
            "mean": self.mean,
            "square": self.square,
            "deviations": self.deviations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = int(state["snapshots"])
        self.count = int(state["count"])
        self.mean = dict(state["mean"])
        self.square = dict(state["square"])
        self.deviations = [dict(deviation) for deviation in state["deviations"]]

    def draw(self, generator: torch.Generator, *, low_rank: bool, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """One set of weights (float32, on the CPU) from the Gaussian."""
        import torch

        if self.count < 2:
            raise UQEvalError(f"SWAG needs at least 2 snapshots (epochs) to draw from, not {self.count}")
        k = len(self.deviations)
        z2 = torch.randn(k, generator=generator) if low_rank else None
        drawn = {}
        for name, mean in self.mean.items():
            spread = (self.square[name] - mean * mean).clamp_min(VARIANCE_FLOOR).sqrt()
            sample = spread * torch.randn(mean.shape, generator=generator)
            if low_rank:
                columns = torch.stack([deviation[name] for deviation in self.deviations])
                sample = sample + torch.tensordot(z2, columns, dims=1) / math.sqrt(k - 1)
            drawn[name] = mean + math.sqrt(scale) * sample
        return drawn


class SWAGRun(list):
    """The trained object of SWAG: ``[EMA network]`` (what ``none`` predicts with) and ``moments``."""

    def __init__(self, models: list[nn.Module], *, moments: SWAGMoments) -> None:
        super().__init__(models)
        self.moments = moments

    @property
    def note(self) -> str:
        """What a reader should know about the moments ("" when nothing)."""
        if self.moments.count < MIN_EPOCHS:
            return (
                f"SWAG: {self.moments.count} epoch(s) snapshotted, too few to predict as swag or swag_diag "
                f"(they need at least {MIN_EPOCHS}); the run serves --eu none (its EMA weights)"
            )
        if self.moments.count < self.moments.snapshots:
            return (
                f"SWAG: {self.moments.count} epochs, fewer than the study's {self.moments.snapshots} snapshots; "
                "every epoch was snapshotted"
            )
        return ""


class SWAG:
    """SWA-Gaussian (``swag``, low-rank + diagonal) or SWAG-D (``swag_diag``, diagonal only).

    Training runs the routine once with a :class:`SWAGMoments` collector and keeps what
    it collected, however few epochs that is; members are draws from the Gaussian, seeded
    by the prediction's seed, and need a run of at least :attr:`min_epochs` epochs.
    """

    default_members = 10
    #: Epochs a run needs for members to be drawn from it (``uqeval study`` checks its grid against it).
    min_epochs = MIN_EPOCHS
    #: The EU methods one run of this method can be predicted as (the weights are the same).
    serves = ("swag", "swag_diag", "none")

    def __init__(self, *, low_rank: bool = True, snapshots: int = SNAPSHOTS, scale: float = 1.0) -> None:
        self.low_rank = low_rank
        self.snapshots = snapshots
        self.scale = scale
        self.name = "swag" if low_rank else "swag_diag"
        self.description = (
            "SWAG: Gaussian over the weights of the last 30 epochs, low-rank + diagonal (default 10 draws)"
            if low_rank
            else "SWAG-D: Gaussian over the weights of the last 30 epochs, diagonal only (default 10 draws)"
        )

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> SWAGRun:
        collector = SWAGMoments(self.snapshots)
        model = routine(seed=seed, collector=collector)
        return SWAGRun([model], moments=collector)

    def members(self, trained: Any, *, n: int, seed: int) -> Iterator[nn.Module]:
        """``n`` draws; refused (before any is drawn) for a run without moments or with too few."""
        model = trained[0]
        moments = getattr(trained, "moments", None)
        if moments is None:
            raise UQEvalError(f"EU method {self.name!r} needs a run trained with SWAG collection (--eu swag)")
        if moments.count < self.min_epochs:
            raise UQEvalError(
                f"EU method {self.name!r} needs at least {self.min_epochs} epochs to collect its moments; the run "
                f"has {moments.count} snapshot(s): train with --epochs {self.min_epochs} or more"
            )
        return self._draws(model, moments, n, seed)

    def _draws(self, model: nn.Module, moments: SWAGMoments, n: int, seed: int) -> Iterator[nn.Module]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        for _ in range(n):
            member = copy.deepcopy(model).eval()
            drawn = moments.draw(generator, low_rank=self.low_rank, scale=self.scale)
            with torch.no_grad():
                for name, parameter in member.named_parameters():
                    parameter.copy_(drawn[name].to(device=device, dtype=parameter.dtype))
            yield member
