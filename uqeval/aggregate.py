"""Aggregation strategies: one score per image from an uncertainty map.

Every strategy takes a batch of maps ``u`` (image, y, x) and predictions ``pred``
(image, y, x) and returns a float64 score per image. They are registered by name in
:data:`AGGREGATORS`; :func:`get_aggregator` looks one up with a clear error.

>>> import numpy as np
>>> u = np.ones((1, 4, 4), dtype=np.float32)
>>> pred = np.zeros((1, 4, 4), dtype=np.uint8)
>>> pred[0, 1:3, 1:3] = 1  # a 2×2 object: area 4, border 8
>>> [round(float(aggregate(name, u, pred)[0]), 3) for name in ("mean", "sum", "area", "border")]
[1.0, 16.0, 4.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from uqeval.errors import UQEvalError


@dataclass(frozen=True)
class AggregationParameters:
    """What a strategy may need beyond the maps.

    Attributes
    ----------
    background : int
        Class index of the background (``area`` counts the other pixels).
    patch_size : int
        Window side ``k`` of ``patch_max``.
    threshold : float or None
        ``τ`` of the ``threshold`` strategy, fitted by :func:`fit_threshold`.
    """

    background: int = 0
    patch_size: int = 10
    threshold: float | None = None


BatchFunction = Callable[[np.ndarray, np.ndarray, AggregationParameters], np.ndarray]


@dataclass(frozen=True)
class Aggregator:
    """A named aggregation strategy.

    Attributes
    ----------
    name : str
        Registry key, as given to ``--aggregation``.
    function : callable
        ``function(u, pred, parameters) -> scores``: maps (image, y, x), predictions
        (image, y, x), :class:`AggregationParameters`; returns (image,) float64.
    description : str
        One line for listings.
    fitted : bool
        Whether it needs ``parameters.threshold`` fitted on calibration images first.
    source : str
        Who contributed it (``uqeval`` for the built-ins, else the plugin's name).
    """

    name: str
    function: BatchFunction
    description: str
    fitted: bool = False
    source: str = "uqeval"

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
    if u.ndim != 3 or pred.shape != u.shape:
        raise UQEvalError(
            f"aggregation {name!r}: expected maps and predictions of equal shape (image, y, x); "
            f"got {u.shape} and {pred.shape}"
        )
    return u, pred


def _sums(u: np.ndarray) -> np.ndarray:
    return u.sum(axis=(1, 2), dtype=np.float64)


def mean(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Mean of U over the image."""
    return _sums(u) / (u.shape[1] * u.shape[2])


def total(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Sum of U over the image (nats)."""
    return _sums(u)


def patch_max(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Largest mean of U over a stride-1 window of ``k_y × k_x`` pixels.

    ``k_y = min(k, height)`` and ``k_x = min(k, width)``: the window is clamped to the
    image along each axis. Window sums come from a float64 summed-area table, so the
    cost does not grow with ``k``.
    """
    n_images, height, width = u.shape
    window_y = min(parameters.patch_size, height)
    window_x = min(parameters.patch_size, width)
    table = np.zeros((n_images, height + 1, width + 1))
    np.cumsum(u, axis=1, dtype=np.float64, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    windows = (
        table[:, window_y:, window_x:]
        - table[:, :-window_y, window_x:]
        - table[:, window_y:, :-window_x]
        + table[:, :-window_y, :-window_x]
    )
    return windows.max(axis=(1, 2)) / (window_y * window_x)


def threshold(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """Mean of U over the pixels with ``U ≥ τ``; 0 where there are none."""
    above = u >= parameters.threshold
    counts = above.sum(axis=(1, 2))
    sums = np.where(above, u, 0).sum(axis=(1, 2), dtype=np.float64)
    return np.divide(sums, counts, out=np.zeros(len(u)), where=counts > 0)


def foreground_area(pred: np.ndarray, background: int) -> np.ndarray:
    """``A``: pixels per image whose predicted class is not ``background``."""
    return (pred != background).sum(axis=(1, 2))


def border_length(pred: np.ndarray) -> np.ndarray:
    """``B``: 4-neighbour pixel pairs per image whose predicted classes differ."""
    vertical = (pred[:, 1:, :] != pred[:, :-1, :]).sum(axis=(1, 2))
    horizontal = (pred[:, :, 1:] != pred[:, :, :-1]).sum(axis=(1, 2))
    return vertical + horizontal


def _normalised(sums: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    # The study's convention: a zero normaliser divides by 1, not by 0.
    return sums / np.maximum(normaliser, 1)


def area(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """``ΣU / A`` with ``A`` the predicted foreground area (divided by 1 when ``A = 0``)."""
    return _normalised(_sums(u), foreground_area(pred, parameters.background))


def border(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
    """``ΣU / B`` with ``B`` the border length of ``pred`` (divided by 1 when ``B = 0``)."""
    return _normalised(_sums(u), border_length(pred))


#: Built-in strategies by name; :func:`register_aggregator` adds more.
AGGREGATORS: dict[str, Aggregator] = {
    aggregator.name: aggregator
    for aggregator in (
        Aggregator("mean", mean, "mean of U over the image"),
        Aggregator("sum", total, "sum of U over the image"),
        Aggregator("patch_max", patch_max, "largest mean of U over a k×k window (k = 10)"),
        Aggregator("threshold", threshold, "mean of U where U ≥ τ, τ fitted on calibration images", fitted=True),
        Aggregator("area", area, "sum of U over the predicted foreground area"),
        Aggregator("border", border, "sum of U over the border length of the prediction"),
    )
}


def register_aggregator(aggregator: Aggregator, registry: dict[str, Aggregator] | None = None) -> None:
    """Add ``aggregator`` to ``registry`` (default :data:`AGGREGATORS`, which the built-in
    plugin offers); a taken name is an error. A package should rather offer its
    strategies through the ``uqeval_aggregators`` hook (``docs/plugins.md``)."""
    default = registry is None
    registry = AGGREGATORS if registry is None else registry
    existing = registry.get(aggregator.name)
    if existing is not None and existing is not aggregator:
        raise UQEvalError(
            f"aggregation {aggregator.name!r} is offered by both {existing.source} and {aggregator.source}"
        )
    registry[aggregator.name] = aggregator
    if default:
        from uqeval.plugins import forget_contributions

        forget_contributions()


def per_image(function: Callable[[np.ndarray, np.ndarray], float]) -> BatchFunction:
    """Lift ``function(u, pred) -> float`` of one image to the batch form."""

    def batched(u: np.ndarray, pred: np.ndarray, parameters: AggregationParameters) -> np.ndarray:
        return np.array([float(function(u[i], pred[i])) for i in range(len(u))], dtype=np.float64)

    return batched


def get_aggregator(name: str, registry: Mapping[str, Aggregator] | None = None) -> Aggregator:
    """The strategy registered as ``name``: built-in, from a plugin, or in ``registry`` when given.

    An unknown name lists the known ones, and any plugin that failed to load.
    """
    problems = ""
    if registry is None:
        from uqeval.plugins import plugin_manager

        manager = plugin_manager()
        manager.lookup("uqeval_aggregators", name)  # a name two plugins offer raises here, naming both
        registry = manager.aggregators()
        problems = manager.problems_note()
    try:
        return registry[name]
    except KeyError:
        raise UQEvalError(
            f"unknown aggregation {name!r}; choose one of {', '.join(sorted(registry))}{problems}"
        ) from None


def aggregate(
    name: str,
    u: np.ndarray,
    pred: np.ndarray,
    parameters: AggregationParameters | None = None,
) -> np.ndarray:
    """Scores of a batch of maps under the strategy ``name``.

    Parameters
    ----------
    name : str
        A registered strategy (``mean``, ``sum``, ``patch_max``, ``threshold``, ``area``,
        ``border`` or a plugin's).
    u : (image, y, x) float array
        Uncertainty maps, nats per pixel.
    pred : (image, y, x) int array
        Predicted classes.
    parameters : AggregationParameters, optional
        Background class, patch size and (for ``threshold``) ``τ``.

    Returns
    -------
    (image,) float64
    """
    return get_aggregator(name)(u, pred, parameters or AggregationParameters())


def fit_threshold(u: np.ndarray, pred: np.ndarray, *, background: int = 0, method: str = "linear") -> float:
    """``τ`` of the ``threshold`` strategy from calibration images.

    ``q`` is the mean over the images of the fraction of pixels predicted as
    ``background``; ``τ = quantile(U, q)`` over every pixel of the images pooled
    (``numpy.quantile`` with ``method``).

    Parameters
    ----------
    u, pred : (image, y, x)
        Maps and predictions of the calibration images.
    """
    u, pred = _check_batch(u, pred, "threshold")
    if u.shape[0] == 0:
        raise UQEvalError("aggregation 'threshold': no calibration images to fit τ on")
    fraction = float((pred == background).mean(axis=(1, 2)).mean())
    return float(np.quantile(u, fraction, method=method))
