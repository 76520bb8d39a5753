"""Sample sources for any PyTorch segmentation model: EU members × AU samples.

A cube holds, per image, ``eu`` members × ``au`` samples of class probabilities. The
*EU source* says where the members come from; the *AU source* says how each member
draws its samples. Any EU source composes with any AU source, and
:func:`uqeval_torch.writing.write_cube` writes what they draw to a store.

EU sources
    :class:`Ensemble` (several models or checkpoints: a deep ensemble),
    :class:`MCDropout` (one model whose dropout layers keep sampling at test time) and
    :class:`SingleModel` (one model: no EU; uqeval then takes the AU samples as the
    members, the samples-as-members convention).
AU sources
    :class:`Softmax` (one deterministic map), :class:`TestTimeAugmentation` (flips,
    90° rotations, intensity and noise, each inverted exactly on the output) and
    :class:`Sampler` (your own callable: an SSN, a diffusion model, …).

A model is any ``nn.Module`` that maps images ``(batch, channel, y, x)`` to logits
``(batch, class, y, x)`` (or to probabilities with ``outputs="probabilities"``).

Example
-------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Dropout2d(0.2), nn.Conv2d(8, 2, 1))
>>> eu, au = MCDropout(model, members=4), TestTimeAugmentation()
>>> eu.n_dropout_layers, eu.members, au.samples
(1, 4, 8)
>>> draws = draw_samples(eu, au, torch.rand(3, 1, 16, 16))
>>> tuple(draws.shape)  # (image, eu, au, class, y, x)
(3, 4, 8, 2, 16, 16)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from uqeval.errors import UQEvalError

#: The dropout layers MC dropout switches on (their subclasses too, e.g. in third-party models).
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
#: The largest deviation from 1 of a probability map's sum over classes that is accepted.
SUM_TOLERANCE = 1e-3


# ------------------------------------------------------------------------------ members


@dataclass
class Member:
    """One EU member: a model and how to read its output as probabilities.

    Attributes
    ----------
    model : the member's network (in evaluation mode; MC dropout keeps its dropout on).
    source : who made it, for messages (``"member 2 of Ensemble"``).
    outputs : ``"logits"`` or ``"probabilities"``.
    """

    model: nn.Module
    source: str
    outputs: str = "logits"

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The model's class probabilities ``(batch, class, y, x)`` float32 for ``images``.

        Raises
        ------
        UQEvalError
            The output is not a tensor of shape ``(batch, class ≥ 2, y, x)`` with the
            input's batch and spatial size, or (with ``outputs="probabilities"``) is not
            non-negative with sums over ``class`` within :data:`SUM_TOLERANCE` of 1.
        """
        output = self.model(images)
        return check_probabilities(
            _as_probabilities(output, self.outputs, self),
            images,
            f"model {type(self.model).__name__} ({self.source})",
        )


def _as_probabilities(output: Any, outputs: str, member: Member) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise UQEvalError(
            f"model {type(member.model).__name__} ({member.source}) returned a {type(output).__name__}, "
            "not a tensor; wrap it so that it returns (batch, class, y, x) "
            f"{outputs} (e.g. lambda x: model(x)['out'])"
        )
    return torch.softmax(output.float(), dim=1) if outputs == "logits" and output.ndim == 4 else output.float()


def check_probabilities(probabilities: torch.Tensor, images: torch.Tensor, culprit: str) -> torch.Tensor:
    """``probabilities`` if they are ``(batch, class, y, x)`` maps for ``images``; else a message naming ``culprit``."""
    batch, _, height, width = images.shape
    shape = tuple(probabilities.shape)
    if probabilities.ndim != 4 or shape[0] != batch or shape[2:] != (height, width) or shape[1] < 2:
        raise UQEvalError(
            f"{culprit} returned shape {shape} for images of shape {tuple(images.shape)}; expected "
            f"(batch={batch}, class ≥ 2, y={height}, x={width}) class scores for every pixel"
        )
    sums = probabilities.sum(dim=1)
    low, high = float(sums.min()), float(sums.max())
    if not (abs(low - 1) <= SUM_TOLERANCE and abs(high - 1) <= SUM_TOLERANCE) or float(probabilities.min()) < 0:
        raise UQEvalError(
            f"{culprit} returned maps that are not probabilities over the class dim (dim 1): sums range "
            f"{low:.3g}–{high:.3g}, minimum {float(probabilities.min()):.3g}; return softmax probabilities "
            "(or logits with outputs='logits')"
        )
    if not torch.isfinite(probabilities).all():
        raise UQEvalError(f"{culprit} returned NaN or infinite values")
    return probabilities


class EUSource(Protocol):
    """Where the EU members come from."""

    members: int

    def open(self, device: torch.device) -> contextlib.AbstractContextManager[list[Member]]:
        """The members on ``device``, ready to predict; the models' modes are restored on exit."""
        ...


def _check_outputs(outputs: str) -> str:
    if outputs not in ("logits", "probabilities"):
        raise UQEvalError(f"outputs must be 'logits' or 'probabilities', not {outputs!r}")
    return outputs


def _check_module(model: Any, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UQEvalError(f"{where} must be a torch.nn.Module, got {type(model).__name__}")
    return model


@contextlib.contextmanager
def _evaluating(models: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """Every module of ``models`` in evaluation mode on ``device``; the modes are restored after."""
    modes = [[(module, module.training) for module in model.modules()] for model in models]
    try:
        for model in models:
            model.to(device).eval()
        yield
    finally:
        for saved in modes:
            for module, training in saved:
                module.train(training)


class Ensemble:
    """A deep ensemble: one member per model.

    Parameters
    ----------
    models : at least 2 ``nn.Module``, same input and output (see :meth:`from_checkpoints`).
    outputs : what the models return, ``"logits"`` (default) or ``"probabilities"``.
    """

    def __init__(self, models: Sequence[nn.Module], *, outputs: str = "logits") -> None:
        self.models = [_check_module(model, f"Ensemble: model {index}") for index, model in enumerate(models)]
        if len(self.models) < 2:
            raise UQEvalError(f"Ensemble: a deep ensemble needs at least 2 models, got {len(self.models)}")
        self.outputs = _check_outputs(outputs)
        self.members = len(self.models)

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | Path], build: Callable[[], nn.Module], *, outputs: str = "logits"
    ) -> Ensemble:
        """An ensemble of ``build()`` networks, each loaded from one checkpoint file.

        A checkpoint holds a state dict, or a dict with one under ``"state_dict"`` or
        ``"model"`` (as Lightning and many training scripts save them); it is read with
        ``torch.load(..., weights_only=True)``.
        """
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
            model = _check_module(build(), "Ensemble: build()")
            try:
                model.load_state_dict(state)
            except RuntimeError as error:
                raise UQEvalError(f"Ensemble: checkpoint {path} does not fit build()'s network: {error}") from None
            models.append(model)
        return cls(models, outputs=outputs)

    @contextlib.contextmanager
    def open(self, device: torch.device) -> Iterator[list[Member]]:
        with _evaluating(self.models, device):
            yield [
                Member(model, f"member {index} of Ensemble", self.outputs) for index, model in enumerate(self.models)
            ]


class SingleModel:
    """One model and no epistemic source: the cube has ``eu = 1``.

    uqeval then treats the AU samples as the members (the samples-as-members convention),
    so pair it with a stochastic AU source (test-time augmentation, your sampler).
    """

    def __init__(self, model: nn.Module, *, outputs: str = "logits") -> None:
        self.model = _check_module(model, "SingleModel: model")
        self.outputs = _check_outputs(outputs)
        self.members = 1

    @contextlib.contextmanager
    def open(self, device: torch.device) -> Iterator[list[Member]]:
        with _evaluating([self.model], device):
            yield [Member(self.model, "SingleModel", self.outputs)]


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """Every dropout module of ``model`` (:data:`DROPOUT_TYPES` and their subclasses), in module order."""
    return [module for module in model.modules() if isinstance(module, DROPOUT_TYPES)]


class MCDropout:
    """Monte Carlo dropout on any model: its dropout layers sample at test time.

    Every dropout module (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
    ``FeatureAlphaDropout`` and their subclasses, also inside third-party models) is put
    in training mode; every other module (batch and group norm, …) stays in evaluation
    mode. Functional dropout (``F.dropout(x, training=True)`` in ``forward``) cannot be
    found this way and is not counted.

    Parameters
    ----------
    model : the network; refused if it holds no dropout module.
    members : forward passes per image, one member each (at least 2).
    outputs : ``"logits"`` (default) or ``"probabilities"``.
    fixed_masks : with ``True`` (default) a member draws the same dropout masks every
        time it is called on a batch, so that an AU source that calls it several times
        (test-time augmentation) samples one thinned network per member: every dropout
        module draws from a generator seeded by (batch seed, member, module), and the
        global generator is left as it was, so the model's own randomness is untouched.
        With ``False`` masks are drawn anew at every call, from the global generator.

    Attributes
    ----------
    n_dropout_layers : how many dropout modules were found.
    """

    def __init__(self, model: nn.Module, *, members: int = 10, outputs: str = "logits", fixed_masks: bool = True):
        self.model = _check_module(model, "MCDropout: model")
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise UQEvalError(f"MCDropout: members must be an integer of at least 2, got {members!r}")
        self.layers = dropout_layers(self.model)
        if not self.layers:
            raise UQEvalError(
                f"MCDropout: model {type(self.model).__name__} has no dropout module "
                f"({', '.join(kind.__name__ for kind in DROPOUT_TYPES)}); add dropout to the network, "
                "or use Ensemble or SingleModel"
            )
        self.members = members
        self.outputs = _check_outputs(outputs)
        self.fixed_masks = fixed_masks
        self.n_dropout_layers = len(self.layers)
        self._member = 0
        self._batch_seed = 0

    def reseed(self, batch_seed: int) -> None:
        """Make the masks of the next batch depend on ``batch_seed`` (called by the writer per batch)."""
        self._batch_seed = int(batch_seed)

    @contextlib.contextmanager
    def open(self, device: torch.device) -> Iterator[list[Member]]:
        handles = []
        with _evaluating([self.model], device):
            for layer in self.layers:
                layer.train()
            if self.fixed_masks:
                for index, layer in enumerate(self.layers):
                    handles.append(layer.register_forward_pre_hook(self._seed_hook(index)))
                    handles.append(layer.register_forward_hook(_restore_hook))
            try:
                yield [_DropoutMember(self, member) for member in range(self.members)]
            finally:
                for handle in handles:
                    handle.remove()

    def _seed_hook(self, index: int) -> Callable[..., None]:
        def seed(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            tensor = inputs[0]
            module._uqeval_rng_state = _rng_state(tensor.device)  # type: ignore[attr-defined]
            torch.manual_seed(_mix(self._batch_seed, self._member, index))

        return seed


class _DropoutMember(Member):
    def __init__(self, source: MCDropout, member: int) -> None:
        super().__init__(source.model, f"member {member} of MCDropout", source.outputs)
        self._source, self._index = source, member

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        self._source._member = self._index
        return super().probabilities(images)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
    cpu, cuda = module._uqeval_rng_state  # type: ignore[attr-defined]
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, inputs[0].device)


def _mix(*numbers: int) -> int:
    return int(np.random.SeedSequence([abs(int(number)) for number in numbers]).generate_state(1)[0])


# ------------------------------------------------------------------------------- AU sources


class AUSource(Protocol):
    """How a member draws its AU samples."""

    samples: int
    deterministic: bool

    def sample(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        """``samples`` probability maps ``(samples, batch, class, y, x)`` of ``member`` for ``images``."""
        ...


class Softmax:
    """The member's softmax map: one deterministic sample."""

    samples = 1
    deterministic = True

    def sample(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        return member.probabilities(images).unsqueeze(0)


@dataclass(frozen=True)
class Transform:
    """A test-time transform: ``forward`` on the images, ``inverse`` on the output maps.

    Both take and return ``(batch, channels, y, x)`` tensors; ``inverse`` must undo the
    spatial part of ``forward`` exactly (an intensity change needs none: the identity).
    """

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def flips_and_rotations(square: bool = True) -> list[Transform]:
    """The symmetries of the pixel grid, each with its exact inverse.

    With ``square`` the 8 of the dihedral group (identity, 90°, 180°, 270° rotations, the
    flips along y and x, the transpose and the anti-transpose); otherwise the 4 that keep
    a rectangle's shape (identity, flips along y and x, 180° rotation).
    """

    def rotation(k: int) -> Transform:
        return Transform(
            f"rotate {90 * k}°",
            lambda t: torch.rot90(t, k, dims=(-2, -1)),
            lambda t: torch.rot90(t, -k, dims=(-2, -1)),
        )

    def flip(dim: int, name: str) -> Transform:
        return Transform(name, lambda t: torch.flip(t, dims=(dim,)), lambda t: torch.flip(t, dims=(dim,)))

    transpose = Transform("transpose", lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1))
    anti = Transform(
        "anti-transpose",
        lambda t: torch.rot90(t, 2, dims=(-2, -1)).transpose(-2, -1),
        lambda t: torch.rot90(t.transpose(-2, -1), -2, dims=(-2, -1)),
    )
    group = [Transform("identity", _identity, _identity), flip(-2, "flip y"), flip(-1, "flip x"), rotation(2)]
    return [*group, rotation(1), rotation(3), transpose, anti] if square else group


def intensity(scale: float = 1.0, shift: float = 0.0) -> Transform:
    """``scale · image + shift`` (in units of each image's standard deviation for ``shift``)."""
    return Transform(
        f"intensity ×{scale:g}{shift:+g}σ",
        lambda t: scale * t + shift * t.std(dim=(-3, -2, -1), keepdim=True),
        _identity,
    )


def gaussian_noise(relative_std: float = 0.05) -> Transform:
    """Additive gaussian noise of ``relative_std`` times each image's standard deviation.

    The noise comes from the global torch generator, which the writer seeds per batch, so
    a rerun draws the same noise.
    """
    return Transform(
        f"noise {relative_std:g}σ",
        lambda t: t + relative_std * t.std(dim=(-3, -2, -1), keepdim=True) * torch.randn_like(t),
        _identity,
    )


class TestTimeAugmentation:
    """Test-time augmentation: one sample per transform, its output mapped back.

    Parameters
    ----------
    transforms : the :class:`Transform` list; default :func:`flips_and_rotations` (the 8
        symmetries of a square grid; a non-square image gets the 4 that keep its shape).
        Add :func:`intensity` and :func:`gaussian_noise` for intensity perturbations.
    samples : how many of ``transforms`` to use (the first ``samples``; default all).

    A network that is equivariant to the transforms (e.g. made of 1×1 convolutions) gives
    identical samples: the inversion is exact.
    """

    __test__ = False  # not a pytest test class
    deterministic = False

    def __init__(self, transforms: Sequence[Transform] | None = None, *, samples: int | None = None) -> None:
        self.transforms = list(transforms) if transforms is not None else None
        if self.transforms is not None and not all(isinstance(item, Transform) for item in self.transforms):
            raise UQEvalError("TestTimeAugmentation: transforms must be uqeval_torch.sources.Transform objects")
        available = len(self.transforms) if self.transforms is not None else 8
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise UQEvalError(f"TestTimeAugmentation: samples must be a positive integer, got {samples!r}")
        if samples is not None and samples > available:
            raise UQEvalError(f"TestTimeAugmentation: {samples} samples asked for, but only {available} transforms")
        if available < 2 and samples is None:
            raise UQEvalError("TestTimeAugmentation: at least 2 transforms are needed to sample")
        self.samples = samples or available

    def chosen(self, height: int, width: int) -> list[Transform]:
        """The transforms used on images of ``height`` × ``width`` px."""
        transforms = self.transforms if self.transforms is not None else flips_and_rotations(height == width)
        if self.samples > len(transforms):
            raise UQEvalError(
                f"TestTimeAugmentation: {self.samples} samples asked for, but non-square images "
                f"({height}×{width}) have only {len(transforms)} flips and rotations; pass samples ≤ {len(transforms)}"
            )
        return transforms[: self.samples]

    def sample(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        draws = []
        for transform in self.chosen(*images.shape[-2:]):
            probabilities = member.probabilities(transform.forward(images))
            back = transform.inverse(probabilities)
            draws.append(check_probabilities(back, images, f"the inverse of TTA transform {transform.name!r}"))
        return torch.stack(draws)


class Sampler:
    """Your own stochastic sampler: ``function(model, images, n)`` → ``n`` probability maps.

    Parameters
    ----------
    function : takes the member's model, images ``(batch, channel, y, x)`` and ``n``;
        returns probabilities ``(n, batch, class, y, x)`` (softmax over ``class``). Draw
        randomness from the global torch generator: the writer seeds it per batch.
    samples : ``n``, at least 2.
    name : for messages (default: the function's name).
    """

    deterministic = False

    def __init__(self, function: Callable[[nn.Module, torch.Tensor, int], torch.Tensor], *, samples: int, name=None):
        if not callable(function):
            raise UQEvalError(f"Sampler: function must be callable, got {type(function).__name__}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise UQEvalError(f"Sampler: samples must be an integer of at least 2, got {samples!r}")
        self.function, self.samples = function, samples
        self.name = name or getattr(function, "__name__", type(function).__name__)

    def sample(self, member: Member, images: torch.Tensor) -> torch.Tensor:
        culprit = f"sampler {self.name!r} on model {type(member.model).__name__} ({member.source})"
        drawn = self.function(member.model, images, self.samples)
        if not isinstance(drawn, torch.Tensor) or drawn.ndim != 5 or drawn.shape[0] != self.samples:
            shape = tuple(drawn.shape) if isinstance(drawn, torch.Tensor) else type(drawn).__name__
            raise UQEvalError(
                f"{culprit} returned {shape}; expected a tensor of shape (n={self.samples}, batch, class, y, x)"
            )
        for draw in drawn:
            check_probabilities(draw.float(), images, culprit)
        return drawn.float()


def describe(eu: Any, au: Any) -> dict[str, Any]:
    """Store attributes naming the sources of this module (``eu_source``, ``au_source`` and
    their settings); other sources (``uqeval predict``'s) name themselves."""
    attrs: dict[str, Any] = {}
    for key, source in (("eu_source", eu), ("au_source", au)):
        if type(source).__module__ == __name__:
            attrs[key] = type(source).__name__
    if isinstance(eu, MCDropout):
        attrs.update(dropout_layers=eu.n_dropout_layers, fixed_masks=eu.fixed_masks)
    if isinstance(au, TestTimeAugmentation) and au.transforms is not None:
        attrs["tta_transforms"] = [transform.name for transform in au.transforms[: au.samples]]
    return attrs


def draw_samples(eu: EUSource, au: AUSource, images: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Every member's AU samples for a batch: ``(image, eu, au, class, y, x)`` float32.

    The global torch generator is seeded by ``seed`` first (and MC dropout's masks by it),
    so the same call gives the same draws. Runs under ``torch.no_grad``.
    """
    torch.manual_seed(_mix(seed))
    if hasattr(eu, "reseed"):
        eu.reseed(seed)
    with torch.no_grad(), eu.open(images.device) as members:
        return sample_members(members, au, images)


def sample_members(members: Sequence[Member], au: AUSource, images: torch.Tensor) -> torch.Tensor:
    """Each member's AU samples for ``images``, as ``(image, eu, au, class, y, x)`` float32."""
    cube = torch.stack([au.sample(member, images).float() for member in members])  # (eu, au, image, …)
    return cube.permute(2, 0, 1, 3, 4, 5)
