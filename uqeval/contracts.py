"""The contracts of AU methods, EU methods and datasets that plugins implement.

They are :class:`typing.Protocol` classes: a plugin's class matches by having the
attributes and methods, without inheriting from anything in uqeval. The core never
imports a deep-learning framework; ``Model`` and ``Tensor`` below are whatever the
plugin's framework uses (``torch.nn.Module`` and ``torch.Tensor`` for the reference
families in ``plugins/uqeval-torch``).

How the pieces meet, for one model ``(AU method, EU method)`` on a dataset::

    def routine(seed, dropout=0.0, on_step=None, collector=None):  # the trainer's training loop
        model = au.build(backbone, in_channels=ds.in_channels, n_classes=ds.n_classes, dropout=dropout)
        for step, batch in ...:                          # AdamW, EMA, …
            loss = au.loss(model, batch.images, batch.labels, epoch=epoch)
            ...
            if on_step: on_step(model, step, epoch)      # e.g. SWAG collects moments
        if collector: collector.epoch_end(model, epoch, epochs)  # after every epoch
        return model

    trained = eu.train(routine, n_members=5, seed=0)     # N runs, one run with dropout, …
    for member in eu.members(trained, n=5, seed=0):      # E models at test time
        probs = au.sample(member, images, n=10)          # (10, batch, class, y, x)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: The framework's model type (``torch.nn.Module`` in the reference families).
Model = Any
#: The framework's tensor type (``torch.Tensor`` in the reference families).
Tensor = Any


class Collector(Protocol):
    """What an EU method gathers while a model trains (SWAG's moments), and keeps.

    The training routine calls :meth:`epoch_end` after the last step of every epoch and
    stores :meth:`state_dict` with the model's checkpoints and with the finished model,
    so an interrupted run resumes with exactly the state it had, and a finished run
    loaded for prediction gets it back through :meth:`load_state_dict`.
    """

    def epoch_end(self, model: Model, epoch: int, epochs: int) -> None:
        """After epoch ``epoch`` (from 0) of ``epochs``, with the raw (not averaged) weights."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainRoutine(Protocol):
    """Trains one model from scratch and returns it.

    Parameters
    ----------
    seed : int
        Seeds initialisation and data order.
    dropout : float
        Dropout probability the AU method builds into the network (0: none).
    on_step : callable, optional
        ``on_step(model, step, epoch)`` after every optimiser step, with the step count
        and the epoch (from 0) of the run. Its state is not saved: for anything that
        must survive an interrupted run, use a ``collector``.
    collector : Collector, optional
        Called at every epoch's end and saved with the checkpoints and the finished
        model (SWAG collects its moments so). A finished model is returned with the
        collector's state restored; one trained without a collector is an error.
    """

    def __call__(
        self,
        *,
        seed: int,
        dropout: float = 0.0,
        on_step: Callable[[Model, int, int], None] | None = None,
        collector: Collector | None = None,
    ) -> Model: ...


@runtime_checkable
class AUMethod(Protocol):
    """An aleatoric-uncertainty method: how a network models the data's ambiguity.

    Attributes
    ----------
    name : str
        As in the cube's ``au_method`` attribute (``softmax``, ``ssn``, …).
    description : str
        One line for ``uqeval plugins``.
    deterministic : bool
        True when :meth:`sample` gives the same map every time (``softmax``): such a
        method needs an EU method with several members to be decomposed.
    default_samples : int
        Samples per member written to a cube unless asked otherwise.
    """

    name: str
    description: str
    deterministic: bool
    default_samples: int

    def build(self, backbone: Callable[..., Model], *, in_channels: int, n_classes: int, dropout: float = 0.0) -> Model:
        """The full network: ``backbone(in_channels=…, out_channels=…, dropout=…)`` with the
        method's heads or extra networks around it."""
        ...

    def loss(self, model: Model, images: Tensor, labels: Tensor, *, epoch: int) -> Tensor:
        """The training loss of a batch: images (batch, channel, y, x), one rater's labels
        (batch, y, x) as class indices (255 = ignore); ``epoch`` drives warm-ups."""
        ...

    def sample(self, model: Model, images: Tensor, n: int) -> Tensor:
        """``n`` softmax probability maps per image: (n, batch, class, y, x)."""
        ...


@runtime_checkable
class EUMethod(Protocol):
    """An epistemic-uncertainty method: how training yields several plausible models.

    Attributes
    ----------
    name : str
        As in the cube's ``eu_method`` attribute (``none``, ``ensemble``, ``dropout``, …).
    description : str
        One line for ``uqeval plugins``.
    default_members : int
        Members per image written to a cube unless asked otherwise (1 for ``none``).
    """

    name: str
    description: str
    default_members: int

    def train(self, routine: TrainRoutine, *, n_members: int, seed: int) -> Any:
        """Run the training routine as the method needs (N seeds for an ensemble, once
        with dropout, once collecting SWAG moments) and return what :meth:`members`
        needs."""
        ...

    def members(self, trained: Any, *, n: int, seed: int) -> Iterator[Model]:
        """Yield ``n`` member models for prediction: in evaluation mode except for what
        makes them members (MC dropout keeps its dropout layers active); ``seed`` drives
        any sampling (dropout masks, SWAG weights)."""
        ...


@dataclass(frozen=True)
class Sample:
    """One image of a dataset with its raters' labels.

    Attributes
    ----------
    image_id : str
    image : (channel, y, x) float32
    labels : (rater, y, x) uint8
        Class per pixel per rater; 255 = not labelled.
    domain : str
        ``id`` or the name of an OOD shift.
    role : str
        ``train``, ``calibration`` or ``test``.
    """

    image_id: str
    image: np.ndarray
    labels: np.ndarray
    domain: str
    role: str


@runtime_checkable
class DatasetSource(Protocol):
    """A dataset: images with rater labels, split into roles and domains.

    Attributes
    ----------
    name : str
        As in the cube's ``dataset`` attribute.
    description : str
        One line for ``uqeval plugins``.
    in_channels, n_classes : int
    class_names : sequence of str
    domains : sequence of str
        ``id`` first, then the OOD shifts.

    A dataset without options has ``options()`` return ``{}`` and ``configure()``
    return itself.
    """

    name: str
    description: str
    in_channels: int
    n_classes: int
    class_names: Sequence[str]
    domains: Sequence[str]

    def samples(self, role: str, domain: str = "id", *, seed: int = 0) -> Iterable[Sample]:
        """The images of a role (``train``, ``calibration``, ``test``) and domain.

        The same arguments give the same images in the same order. ``seed`` picks
        whatever a dataset draws at random (a synthetic dataset's shapes and raters, an
        OOD shift's noise); a dataset without randomness ignores it. A domain that has
        no images of that role (OOD domains have no ``train`` images) yields nothing.
        """
        ...

    def options(self) -> Mapping[str, Any]:
        """The option values in force (``{"size": 64}``): what :meth:`configure` takes,
        recorded with a training run so that it can be rebuilt."""
        ...

    def configure(self, **options: Any) -> DatasetSource:
        """A copy with some options changed, from ``uqeval train --data-option name=value``;
        values may arrive as strings and are converted. An unknown name or a bad value
        raises :class:`uqeval.UQEvalError` naming it."""
        ...
