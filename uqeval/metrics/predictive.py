r"""Predictive quality of the mean prediction: Brier score, NLL, ECE and temperature scaling.

The mean prediction ``m`` (the predictive distribution, mean over every sample) is
scored against every rater's label at every pixel (or voxel) over the *pairs*
``(rater, pixel)`` whose label is not the ignore label; each rater's label counts once.

- Brier (Brier 1950): mean over pairs of ``Σ_c (m_c − 1[l = c])²``;
- NLL: mean over pairs of ``−ln max(m_l, 10⁻⁷)``;
- ECE (Naeini et al. 2015; Guo et al. 2017): the confidence ``max_c m_c`` against the
  accuracy ``w``, the fraction of a pixel's raters whose label is ``pred`` (as CAL's
  ``w``), over 20 equal-width bins; a pixel with a rater counts once;
- temperature scaling (Guo et al. 2017): ``p = softmax(ln max(m, 10⁻⁷) / T)`` with
  ``T`` in ``[0.05, 20]`` minimising the NLL of the calibration pairs.

Everything is a sum per image (:class:`PredictiveSums`), so pixels stream and images
can be resampled; the temperature fit keeps the calibration pixels' mean predictions
(:class:`TemperatureData`) and solves for ``T`` exactly.

>>> mean = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], dtype=np.float32)[None]  # 1 image, 2 classes, 1×2
>>> labels = np.array([[[[0, 1]], [[0, 255]]]], dtype=np.uint8)  # 2 raters; rater 1 skips pixel 2
>>> sums = predictive_sums(mean, labels, agree=np.array([[[2, 1]]]), valid=np.array([[[2, 1]]]))
>>> metrics = predictive_metrics(sums)
>>> round(metrics["brier"], 4), round(metrics["nll"], 4)  # pairs: (0.9 → 0) twice, (0.8 → 1) once
(0.04, 0.1446)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.metrics import _kernels
from uqeval.metrics.calibration import ece
from uqeval.names import IGNORE_LABEL

#: The probability below which NLL and the log-probabilities of temperature scaling are floored.
PROBABILITY_FLOOR = 1e-7
#: Equal-width confidence bins of the ECE on [0, 1].
ECE_BINS = 20
#: The temperatures ``T`` is fitted within.
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: The ``measure`` of every ``pq`` row: the mean prediction is scored, not an uncertainty measure.
PQ_MEASURE = "mean"
#: The metrics of the ``pq`` rows, in row order (``temperature`` is one row on ``id``).
PQ_METRICS = ("brier", "nll", "ece", "brier_ts", "nll_ts", "ece_ts")


def _flat(mean: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean)
    labels = np.asarray(labels)
    if mean.ndim < 3 or labels.ndim != mean.ndim or mean.shape[0] != labels.shape[0]:
        raise UQEvalError(
            f"predictive quality: expected mean (image, class, ...) and labels (image, rater, ...) of the same "
            f"images and pixels; got {mean.shape} and {labels.shape}"
        )
    if mean.shape[2:] != labels.shape[2:]:
        raise UQEvalError(f"predictive quality: mean {mean.shape} and labels {labels.shape} differ in their pixels")
    n_images = mean.shape[0]
    return (
        np.ascontiguousarray(mean, dtype=np.float32).reshape(n_images, mean.shape[1], -1),
        np.ascontiguousarray(labels).reshape(n_images, labels.shape[1], -1),
    )


@dataclass(frozen=True)
class PredictiveSums:
    """Per image, the sums the ``pq`` metrics are ratios of (image axis first).

    Attributes
    ----------
    pairs : (image,) int64
        (rater, pixel) pairs whose label is not ignored.
    brier, nll : (image,) float64
        Sums over those pairs of the Brier score and the NLL of the mean prediction.
    ece : (image, bins, 3) float64
        The ECE table: per equal-width bin of the confidence ``max_c m_c``, the pixels
        with a rater, their ``Σ confidence`` and their ``Σ w`` (as
        :class:`~uqeval.metrics.calibration.CalibrationTable`).
    brier_ts, nll_ts, ece_ts
        The same after temperature scaling; None when no temperature was given.
    """

    pairs: np.ndarray
    brier: np.ndarray
    nll: np.ndarray
    ece: np.ndarray
    brier_ts: np.ndarray | None = None
    nll_ts: np.ndarray | None = None
    ece_ts: np.ndarray | None = None

    _FIELDS = ("pairs", "brier", "nll", "ece", "brier_ts", "nll_ts", "ece_ts")

    def _map(self, apply) -> PredictiveSums:
        return PredictiveSums(**{name: None if getattr(self, name) is None else apply(name) for name in self._FIELDS})

    def take(self, images: np.ndarray) -> PredictiveSums:
        """The sums of some images (positions or a boolean mask), in that order."""
        return self._map(lambda name: getattr(self, name)[images])

    @classmethod
    def concatenate(cls, parts: Sequence[PredictiveSums]) -> PredictiveSums:
        """The sums of consecutive batches of images, joined."""
        return parts[0]._map(lambda name: np.concatenate([getattr(part, name) for part in parts]))

    def __add__(self, other: PredictiveSums) -> PredictiveSums:
        """The sums of the same images over two sets of pixels (the z-slabs of a volume)."""
        return self._map(lambda name: getattr(self, name) + getattr(other, name))


def predictive_sums(
    mean: np.ndarray,
    labels: np.ndarray,
    agree: np.ndarray,
    valid: np.ndarray,
    *,
    temperature: float | None = None,
    ignore: int = IGNORE_LABEL,
    bins: int = ECE_BINS,
) -> PredictiveSums:
    """The :class:`PredictiveSums` of a batch of images.

    Parameters
    ----------
    mean : (image, class, y, x) or (image, class, z, y, x) float
        The mean prediction.
    labels : (image, rater, ...) int
        The raters' labels; ``ignore`` marks a pixel a rater did not label.
    agree, valid : (image, ...) int
        Raters whose label is ``pred`` (the argmax of ``mean``), and raters counted
        (:func:`~uqeval.metrics.ambiguity.rater_statistics`): ``w = agree / valid``.
    temperature : float, optional
        ``T``: the ``_ts`` sums are added, of ``softmax(ln max(m, 10⁻⁷) / T)``.
    """
    flat_mean, flat_labels = _flat(mean, labels)
    n_images, n_classes, n_pixels = flat_mean.shape
    flat_agree = np.ascontiguousarray(agree, dtype=np.int32).reshape(n_images, -1)
    flat_valid = np.ascontiguousarray(valid, dtype=np.int32).reshape(n_images, -1)
    if flat_valid.shape[1] != n_pixels:
        raise UQEvalError(f"predictive quality: rater counts {np.shape(valid)} do not match mean {np.shape(mean)}")

    def scored(inverse_temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        brier, nll = np.zeros(n_images), np.zeros(n_images)
        pairs = np.zeros(n_images, dtype=np.int64)
        confidence = np.empty((n_images, n_pixels))
        _kernels.predictive_kernel(
            flat_mean,
            flat_labels,
            n_classes,
            ignore,
            inverse_temperature,
            PROBABILITY_FLOOR,
            brier,
            nll,
            pairs,
            confidence,
        )
        table = np.zeros((n_images, bins, 3))
        _kernels.calibration_kernel(confidence, flat_agree, flat_valid, table)
        return pairs, brier, nll, table

    pairs, brier, nll, table = scored(0.0)
    sums = PredictiveSums(pairs, brier, nll, table)
    if temperature is not None:
        _, brier_ts, nll_ts, table_ts = scored(1.0 / temperature)
        sums = replace(sums, brier_ts=brier_ts, nll_ts=nll_ts, ece_ts=table_ts)
    return sums


def predictive_metrics(sums: PredictiveSums, images: np.ndarray | None = None) -> dict[str, float]:
    """Brier, NLL and ECE (and their ``_ts`` versions, when scaled) of the chosen images'
    pairs pooled (boolean mask or positions; default all). NaN without a pair."""
    chosen = sums if images is None else sums.take(images)
    pairs = float(chosen.pairs.sum())
    metrics = {}
    for suffix in ("", "_ts"):
        brier, nll, table = (getattr(chosen, name + suffix) for name in ("brier", "nll", "ece"))
        if brier is None:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            metrics["brier" + suffix] = float(brier.sum() / pairs) if pairs else float("nan")
            metrics["nll" + suffix] = float(nll.sum() / pairs) if pairs else float("nan")
        metrics["ece" + suffix] = ece(table.sum(axis=0))
    return metrics


@dataclass(frozen=True)
class TemperatureFit:
    """The temperature ``T`` of temperature scaling, and what it was fitted on.

    Attributes
    ----------
    temperature : float
    n_pairs : int
        Calibration (rater, pixel) pairs.
    nll : float
        Their mean NLL at ``T``.
    note : str
        Empty, or why ``T`` lies on a bound of :data:`TEMPERATURE_BOUNDS`.
    """

    temperature: float
    n_pairs: int
    nll: float
    note: str = ""


class TemperatureData:
    """What the temperature fit needs of the calibration pixels, additive over pixels.

    The NLL of ``softmax(β z)`` (``β = 1/T``, ``z = ln max(m, 10⁻⁷)``) over the pairs is

    .. math:: L(β) = \\sum_i \\left[n_i \\,\\mathrm{LSE}(β z_i) - β a_i\\right],
        \\qquad a_i = \\sum_{r} z_{i, l_{ri}}

    over the pixels ``i`` with a rater, ``n_i`` of them. Each such pixel's ``m`` is kept
    (float32) with ``n_i`` and ``a_i`` (float64): ``4·C + 10`` bytes per calibration
    pixel. ``L`` is convex in ``β``, so :meth:`fit` finds its minimum exactly; it sums
    over the pixels in the order they were added, as one array, so that ``T`` does not
    depend on how they were batched.
    """

    def __init__(self) -> None:
        self.n_pairs = 0
        self.means: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.linear: list[np.ndarray] = []

    def add(self, mean: np.ndarray, labels: np.ndarray, ignore: int = IGNORE_LABEL) -> None:
        """Add pixels: ``mean`` (image, class, ...) and ``labels`` (image, rater, ...)."""
        flat_mean, flat_labels = _flat(mean, labels)
        n_classes, n_raters = flat_mean.shape[1], flat_labels.shape[1]
        rows = np.moveaxis(flat_mean, 1, 2).reshape(-1, n_classes)  # (image·pixel, class)
        by_pixel = np.moveaxis(flat_labels, 1, 2).reshape(-1, n_raters)  # (image·pixel, rater)
        labelled = (by_pixel != ignore) & (by_pixel < n_classes)
        counted = labelled.sum(axis=1)
        chosen = counted > 0
        logs = np.log(np.maximum(rows[chosen].astype(np.float64), PROBABILITY_FLOOR))
        picked = np.take_along_axis(logs, np.where(labelled[chosen], by_pixel[chosen], 0).astype(np.intp), axis=1)
        self.linear.append(np.where(labelled[chosen], picked, 0.0).sum(axis=1))
        self.n_pairs += int(counted.sum())
        self.means.append(rows[chosen])
        self.weights.append(counted[chosen].astype(np.float64))

    def merge(self, other: TemperatureData) -> TemperatureData:
        """Add the pixels of ``other`` (after these); returns self."""
        self.n_pairs += other.n_pairs
        self.means.extend(other.means)
        self.weights.extend(other.weights)
        self.linear.extend(other.linear)
        return self

    def _joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pixels' ``z`` (float64, taken once for the passes of a fit), raters and
        linear terms, each as one array in the order the pixels were added."""
        n_classes = self.means[0].shape[1] if self.means else 1
        means = np.concatenate(self.means) if self.means else np.empty((0, n_classes), np.float32)
        logs = np.log(np.maximum(means.astype(np.float64), PROBABILITY_FLOOR))
        weights = np.concatenate(self.weights) if self.weights else np.empty(0)
        return logs, weights, np.concatenate(self.linear) if self.linear else np.empty(0)

    def nll(self, temperature: float) -> float:
        """The mean NLL of the pairs at ``temperature``."""
        value, _, _ = _kernels.temperature_moments_kernel(*self._joined(), 1.0 / temperature)
        return value / self.n_pairs

    def fit(self, *, tolerance: float = 1e-12, max_iterations: int = 100) -> TemperatureFit:
        """``T`` minimising the NLL on :data:`TEMPERATURE_BOUNDS`.

        Newton steps on ``L'(β) = 0`` (exact sums of ``L'`` and ``L''`` over every
        pixel), kept inside a bracket that bisection shrinks whenever a step would leave
        it, to a relative ``tolerance`` in ``β``; ``L`` is convex, so this is its
        minimum. A bound is returned (and noted) when ``L'`` does not change sign.
        """
        if self.n_pairs == 0:
            raise UQEvalError("temperature scaling: no calibration pixel has a rater label")
        joined = self._joined()

        def moments(beta: float) -> tuple[float, float, float]:
            return _kernels.temperature_moments_kernel(*joined, beta)

        # L' is increasing: its root is bracketed by [low, high]; a bound is looked at
        # only when a step would leave the bracket on its side.
        bounds = (1.0 / TEMPERATURE_BOUNDS[1], 1.0 / TEMPERATURE_BOUNDS[0])
        low, high = bounds
        note = ""
        beta = 1.0
        value, gradient, curvature = moments(beta)
        for _ in range(max_iterations):
            step = gradient / curvature if curvature > 0 else np.inf * np.sign(gradient)
            if gradient == 0 or abs(step) <= tolerance * beta:
                break  # the next Newton step is below the tolerance: β is the minimum
            if gradient > 0:
                high = beta
            else:
                low = beta
            candidate = beta - step
            if not low < candidate < high:
                bound = high if candidate >= high else low
                if bound in bounds:
                    bound_value, bound_gradient, _ = moments(bound)
                    if (bound_gradient <= 0) if bound == high else (bound_gradient >= 0):
                        beta, value = bound, bound_value
                        which = "largest" if bound == 1.0 / TEMPERATURE_BOUNDS[1] else "smallest"
                        note = f"the NLL is least at the {which} temperature, {1.0 / bound:g}"
                        break
                    bounds = tuple(b for b in bounds if b != bound)  # the root lies inside: not again
                candidate = 0.5 * (low + high)
            beta = candidate
            value, gradient, curvature = moments(beta)
        temperature = 1.0 / beta
        return TemperatureFit(float(temperature), self.n_pairs, float(value / self.n_pairs), note)
        return TemperatureFit(float(temperature), self.n_pairs, float(self.nll(temperature)), note)
