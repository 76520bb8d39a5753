"""Aggregation strategies: one score per image from an uncertainty map.

Every strategy takes a batch of maps ``u`` (image, [z,] y, x) and predictions ``pred``
of the same shape and returns a float64 score per image; an image may be a volume.
This module only defines them; the built-in plugin (:mod:`uqeval.builtin_plugin`)
offers them by name, and the plugin manager (:mod:`uqeval.plugins`) resolves a name to
an :class:`Aggregator`.

>>> import numpy as np
>>> u = np.ones((1, 4, 4), dtype=np.float32)
>>> pred = np.zeros((1, 4, 4), dtype=np.uint8)
>>> pred[0, 1:3, 1:3] = 1  # a 2×2 object: area 4, border 8
>>> [round(float(function(u, pred, AggregationParameters())[0]), 3) for function in (mean, total, area, border)]
[1.0, 16.0, 4.0, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from uqeval.errors import UQEvalError


@dataclass(frozen=True)
class AggregationParameters:
    """What a strategy may need beyond the maps.

    Attributes
    ----------
    background : int
        Class index of the background (``area`` counts the other pixels or voxels).
    patch_size : int
        Window side ``k`` of ``patch_max`` (clamped per axis to the map's size).
    threshold : float or None
        ``τ`` of the ``threshold`` strategy, fitted on the calibration images
        (:mod:`uqeval.scoring.fitting`).
    """

    background: int = 0
    patch_size: int = 10
    threshold: float | None = None


BatchFunction = Callable[[np.ndarray, np.ndarray, AggregationParameters], np.ndarray]

#: The zero-normaliser convention of ``area`` and ``border``: an image whose normaliser
#: is 0 (no predicted foreground, or no border) is divided by this instead, so that its
#: score is its raw sum ΣU (nats), as in the study's code. Its unit then differs from
#: the other images' (nats per pixel or per neighbour pair): the scorer counts such images
#: in a note (:class:`AggregationFallback`).
ZERO_NORMALISER_DIVISOR = 1


@dataclass(frozen=True)
class AggregationFallback:
    """Where a strategy leaves its formula for a convention, so that reports can count those images.

    Attributes
    ----------
    where : callable
        ``where(pred, parameters) -> (image,) bool``: the images of a batch that fall back.
    what : str
        What those images have, and what their score is instead, as the end of a sentence
        that starts with "N image(s) of a split" (for example "have no predicted border
        (B = 0): their score is ΣU, not ΣU / B").
    """

    where: Callable[[np.ndarray, AggregationParameters], np.ndarray]
    what: str


@dataclass(frozen=True)
class SlabForm:
    """How a strategy scores a volume read in z-slabs, in memory for a few slabs.

    A volume larger than a batch is streamed (docs/volumes.md): each slab gives a few
    partial values, which are combined across the volume's slabs in ``z`` order and
    turned into the score at the end. Built-ins: ``mean`` and ``sum`` keep ``ΣU``,
    ``threshold`` ``ΣU`` and the count over ``τ``, ``area`` ``ΣU`` and ``A``, ``border``
    ``ΣU`` and ``B`` (one plane of halo, for the pairs across the slab boundary),
    ``patch_max`` the largest window sum (``k_z − 1`` planes of halo).

    Attributes
    ----------
    halo : callable
        ``halo(parameters, depth) -> int``: planes before each slab, the last planes of
        the slabs before it, that ``partial`` must see (fewer at the volume's start).
    partial : callable
        ``partial(u, pred, halo, parameters, depth) -> (part,) float64``: ``u`` and
        ``pred`` are (halo + slab planes, y, x) of one volume whose depth is ``depth``;
        the first ``halo`` planes are context, already counted with the slab before.
    reductions : tuple of str
        ``"sum"`` or ``"max"`` per partial value: how a value combines across slabs.
    finish : callable
        ``finish(parts, parameters, shape) -> float``: the volume's score from the
        combined values; ``shape`` is the volume's (z, y, x).
    falls_back : callable or None
        ``falls_back(parts, parameters) -> bool``: whether the volume is scored by the
        strategy's :class:`AggregationFallback` (needed when it has one).
    """

    halo: Callable[[AggregationParameters, int], int]
    partial: Callable[[np.ndarray, np.ndarray, int, AggregationParameters, int], np.ndarray]
    reductions: tuple[str, ...]
    finish: Callable[[np.ndarray, AggregationParameters, tuple[int, ...]], float]
    falls_back: Callable[[np.ndarray, AggregationParameters], bool] | None = None

    def combine(self, parts: np.ndarray | None, more: np.ndarray) -> np.ndarray:
        """Partial values of the slabs so far, combined with the next slab's."""
        more = np.asarray(more, dtype=np.float64)
        if parts is None:
            return more
        maxima = np.array([reduction == "max" for reduction in self.reductions])
        return np.where(maxima, np.maximum(parts, more), parts + more)


@dataclass(frozen=True)
class Aggregator:
    """A named aggregation strategy.

    Attributes
    ----------
    name : str
        The name it is offered under, as given to ``--aggregation``.
    function : callable
        ``function(u, pred, parameters) -> scores``: maps (image, y, x) or, for volumes,
        (image, z, y, x), predictions of the same shape, :class:`AggregationParameters`;
        returns (image,) float64. A strategy that only knows images of one rank may
        raise :class:`~uqeval.errors.UQEvalError` on the other.
    description : str
        One line for listings.
    fitted : bool
        Whether it reads ``parameters.threshold``. The scorer then fits, per measure,
        ``τ = quantile(U, q)`` over the calibration images' pixels or voxels (``q`` their
        background share; docs/metrics.md) and passes it in; the strategy cannot
        choose another fit.
    source : str
        Who contributed it (``uqeval`` for the built-ins, else the plugin's name).
    fallback : AggregationFallback or None
        Where it scores an image by a convention instead of its formula (``area`` and
        ``border`` with a zero normaliser); the scorer counts those images in a note.
    slabs : SlabForm or None
        How it scores a volume streamed in z-slabs; without one, it cannot score
        volumes larger than a batch (the scorer says so).
    """

    name: str
    function: BatchFunction
    description: str
    fitted: bool = False
    source: str = "uqeval"
    fallback: AggregationFallback | None = None
    slabs: SlabForm | None = None

    def __call__(self, u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
        u, pred = _check_batch(u, pred, self.name)
        if self.fitted and parameters.threshold is None:
            raise UQEvalError(f"aggregation {self.name!r} needs a threshold fitted on calibration images")
        scores = np.asarray(self.function(u, pred, parameters), dtype=np.float64)
        if scores.shape != (u.shape[0],):
            raise UQEvalError(
                f"aggregation {self.name!r} ({self.source}) returned shape {scores.shape}; expected ({u.shape[0]},)"
            )
        return scores


def _check_batch(u: np.ndarray, pred: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u)
    pred = np.asarray(pred)
    if u.ndim not in (3, 4) or pred.shape != u.shape:
        raise UQEvalError(
            f"aggregation {name!r}: expected maps and predictions of equal shape (image, y, x) "
            f"or (image, z, y, x); got {u.shape} and {pred.shape}"
        )
    return u, pred


def spatial_axes(maps: np.ndarray) -> tuple[int, ...]:
    """The axes of a batch after the image axis: ``(1, 2)`` for (image, y, x), ``(1, 2, 3)`` for volumes."""
    return tuple(range(1, maps.ndim))


def _volumes(maps: np.ndarray) -> np.ndarray:
    """A batch as C-contiguous (image, z, y, x): a 2D batch becomes volumes of depth 1."""
    maps = np.ascontiguousarray(maps)
    return maps[:, None] if maps.ndim == 3 else maps


def _sums(u: np.ndarray) -> np.ndarray:
    return u.sum(axis=spatial_axes(u), dtype=np.float64)


def mean(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Mean of U over the image's pixels (a volume's voxels)."""
    return _sums(u) / math.prod(u.shape[1:])


def total(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Sum of U over the image's pixels (a volume's voxels), in nats."""
    return _sums(u)


def patch_max(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Largest mean of U over a stride-1 window of ``k_y × k_x`` pixels (``k_z × k_y × k_x`` voxels).

    ``k_z = min(k, depth)``, ``k_y = min(k, height)`` and ``k_x = min(k, width)``: the
    window is clamped to the image along each axis. Window sums are float64: a running
    sum of ``k_z`` planes along ``z``, then a summed-area table of each such plane, so
    the cost per voxel does not grow with ``k``.
    """
    from uqeval import _aggregation_kernels  # numba is loaded when a map is scored, not on import

    volumes = _volumes(u)
    if volumes.dtype not in (np.float32, np.float64):
        volumes = volumes.astype(np.float64)
    n_images, depth, height, width = volumes.shape
    window_z, window_y, window_x = (min(parameters.patch_size, side) for side in (depth, height, width))
    n_tasks = -(-(depth - window_z + 1) // _aggregation_kernels.PLANES_PER_TASK)
    best = np.empty((n_images, n_tasks))
    _aggregation_kernels.patch_max_kernel(volumes, window_z, window_y, window_x, best)
    return best.max(axis=1) / (window_z * window_y * window_x)


def threshold(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Mean of U over the pixels (voxels) with ``U ≥ τ``; 0 where there are none."""
    axes = spatial_axes(u)
    above = u >= parameters.threshold
    counts = above.sum(axis=axes)
    sums = np.where(above, u, 0).sum(axis=axes, dtype=np.float64)
    return np.divide(sums, counts, out=np.zeros(len(u)), where=counts > 0)


def foreground_area(pred: np.ndarray, background: int) -> np.ndarray:
    """``A``: pixels (voxels) per image whose predicted class is not ``background``."""
    return (pred != background).sum(axis=spatial_axes(pred))


def border_length(pred: np.ndarray) -> np.ndarray:
    """``B``: neighbour pairs per image whose predicted classes differ.

    4-neighbour pixel pairs of an (image, y, x) batch; 6-neighbour voxel pairs (along
    ``z``, ``y`` and ``x``) of an (image, z, y, x) batch. (image,) int64.
    """
    from uqeval import _aggregation_kernels  # numba is loaded when a map is scored, not on import

    volumes = _volumes(np.asarray(pred))
    if volumes.dtype.kind not in "iub":
        volumes = volumes.astype(np.float64)
    counts = np.empty(volumes.shape[:2], dtype=np.int64)
    _aggregation_kernels.border_kernel(volumes, counts)
    return counts.sum(axis=1)


def normalised(sums: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """``sums / normaliser``, with :data:`ZERO_NORMALISER_DIVISOR` where the normaliser is 0."""
    return sums / np.where(normaliser == 0, ZERO_NORMALISER_DIVISOR, normaliser)


def no_foreground(pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """The images whose prediction is background everywhere (``A = 0``)."""
    return foreground_area(pred, parameters.background) == 0


def no_border(pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """The images whose prediction is one class everywhere (``B = 0``)."""
    return border_length(pred) == 0


def area(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """``ΣU / A`` with ``A`` the predicted foreground area (:data:`ZERO_NORMALISER_DIVISOR` when ``A = 0``)."""
    return normalised(_sums(u), foreground_area(pred, parameters.background))


def border(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """``ΣU / B`` with ``B`` the border length of ``pred`` (:data:`ZERO_NORMALISER_DIVISOR` when ``B = 0``)."""
    return normalised(_sums(u), border_length(pred))


def per_image(function: Callable[[np.ndarray, np.ndarray], float]) -> BatchFunction:
    """Lift ``function(u, pred) -> float`` of one image to the batch form."""

    def batched(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
        return np.array([float(function(u[i], pred[i])) for i in range(len(u))], dtype=np.float64)

    return batched


# The slab forms of the built-in strategies (:class:`SlabForm`).


def _no_halo(parameters: AggregationParameters, depth: int) -> int:
    return 0


def _slab_sum(u: np.ndarray, halo: int) -> float:
    return float(np.sum(u[halo:], dtype=np.float64))


def _window(parameters: AggregationParameters, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(parameters.patch_size, side) for side in shape)


def _patch_halo(parameters: AggregationParameters, depth: int) -> int:
    return min(parameters.patch_size, depth) - 1


def _patch_partial(u, pred, halo, parameters, depth) -> np.ndarray:
    from uqeval import _aggregation_kernels

    planes = np.ascontiguousarray(u)[None]
    if planes.dtype not in (np.float32, np.float64):
        planes = planes.astype(np.float64)
    window_z, window_y, window_x = _window(parameters, (depth, *u.shape[1:]))
    n_tasks = -(-(planes.shape[1] - window_z + 1) // _aggregation_kernels.PLANES_PER_TASK)
    if n_tasks <= 0:
        return np.array([-np.inf])
    best = np.empty((1, n_tasks))
    _aggregation_kernels.patch_max_kernel(planes, window_z, window_y, window_x, best)
    return np.array([best.max()])


def _border_partial(u, pred, halo, parameters, depth) -> np.ndarray:
    slab = pred[halo:]
    pairs = int(border_length(slab[None])[0])
    if halo:
        pairs += int(np.count_nonzero(pred[halo - 1] != slab[0]))
    return np.array([_slab_sum(u, halo), pairs])


SLAB_FORMS: dict[str, SlabForm] = {
    "mean": SlabForm(
        _no_halo,
        lambda u, pred, halo, parameters, depth: np.array([_slab_sum(u, halo)]),
        ("sum",),
        lambda parts, parameters, shape: parts[0] / math.prod(shape),
    ),
    "sum": SlabForm(
        _no_halo,
        lambda u, pred, halo, parameters, depth: np.array([_slab_sum(u, halo)]),
        ("sum",),
        lambda parts, parameters, shape: parts[0],
    ),
    "threshold": SlabForm(
        _no_halo,
        lambda u, pred, halo, parameters, depth: np.array(
            [float(np.sum(u[u >= parameters.threshold], dtype=np.float64)), np.count_nonzero(u >= parameters.threshold)]
        ),
        ("sum", "sum"),
        lambda parts, parameters, shape: parts[0] / parts[1] if parts[1] > 0 else 0.0,
    ),
    "area": SlabForm(
        _no_halo,
        lambda u, pred, halo, parameters, depth: np.array(
            [_slab_sum(u, halo), np.count_nonzero(pred != parameters.background)]
        ),
        ("sum", "sum"),
        lambda parts, parameters, shape: float(normalised(parts[0], parts[1])),
        lambda parts, parameters: bool(parts[1] == 0),
    ),
    "border": SlabForm(
        lambda parameters, depth: 1,
        _border_partial,
        ("sum", "sum"),
        lambda parts, parameters, shape: float(normalised(parts[0], parts[1])),
        lambda parts, parameters: bool(parts[1] == 0),
    ),
    "patch_max": SlabForm(
        _patch_halo,
        _patch_partial,
        ("max",),
        lambda parts, parameters, shape: parts[0] / math.prod(_window(parameters, shape)),
    ),
}
