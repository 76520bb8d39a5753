r"""Calibration: Platt scaling of an uncertainty measure, then ACE, ECE and reliability.

Per pixel, the correctness ``w`` is the fraction of raters whose label equals the
prediction. A measure ``U`` becomes a confidence by Platt scaling its negative,
``c = σ(b - a·U)``, with ``(a, b)`` the weighted logistic fit of ``w`` on calibration
pixels with Platt's smoothed targets. Everything accumulates in fixed-size tables, so
pixels stream through without the memory growing with their number. Maps may be images
(image, y, x) or volumes (image, z, y, x): a voxel counts as a pixel does.

>>> import numpy as np
>>> table = PlattTable()
>>> u = np.array([[[0.05, 0.1, 0.3, 0.6, 0.7]]], dtype=np.float32)  # 1 image, 1×5
>>> table.add(u, agree=np.array([[[2, 2, 1, 2, 0]]]), valid=np.full((1, 1, 5), 2))
>>> fit = table.fit()
>>> round(fit.slope, 3), round(fit.intercept, 3)
(2.329, 1.528)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.metrics import _kernels


def _flat_maps(u: np.ndarray, agree: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = np.asarray(u)
    agree = np.asarray(agree)
    valid = np.asarray(valid)
    if not (u.shape == agree.shape == valid.shape) or u.ndim < 2:
        raise UQEvalError(
            f"calibration: maps, agreement and rater counts must share one shape (image, ...); "
            f"got {u.shape}, {agree.shape}, {valid.shape}"
        )
    n_images = u.shape[0]
    return (
        np.ascontiguousarray(u, dtype=np.float32).reshape(n_images, -1),
        np.ascontiguousarray(agree, dtype=np.int32).reshape(n_images, -1),
        np.ascontiguousarray(valid, dtype=np.int32).reshape(n_images, -1),
    )


@dataclass(frozen=True)
class PlattFit:
    """Platt parameters of one measure: ``confidence = σ(intercept - slope·U)``.

    Attributes
    ----------
    slope, intercept : float
        ``a`` and ``b``; ``a > 0`` when more uncertainty means less often correct.
    n_pixels : int
        Calibration pixels the fit saw.
    note : str
        Empty for a regular fit; otherwise why the fit is degenerate.
    """

    slope: float
    intercept: float
    n_pixels: int
    note: str = ""

    def check_usable(self) -> None:
        """Raise unless the parameters give confidences (a finite slope, an intercept that
        is not NaN; ±inf is the limit of data that are all correct or all wrong)."""
        if not math.isfinite(self.slope) or math.isnan(self.intercept):
            raise UQEvalError(f"calibration: Platt parameters ({self.slope}, {self.intercept}) are not usable")

    def confidence(self, u: np.ndarray) -> np.ndarray:
        """``σ(b - a·U)`` in float64."""
        z = np.multiply(u, -self.slope, dtype=np.float64)
        z += self.intercept
        return _sigmoid(z)


#: Bins of the study's Platt fit: log-spaced edges from 1e-12 to 1e2 nats.
BINNED_PLATT_EDGES = np.logspace(-12, 2, num=257, dtype=np.float64)


def platt_targets(positives: float, negatives: float) -> tuple[float, float]:
    r"""Platt's smoothed targets of the positives and the negatives.

    .. math:: t_+ = \frac{N_+ + 1}{N_+ + 2}, \qquad t_- = \frac{1}{N_- + 2}

    with ``N₊`` and ``N₋`` the total weight of the positive and negative samples (a
    Bayesian prior; Platt 1999, §2.2, and scikit-learn's sigmoid calibration). They keep
    the fit finite when ``U`` separates correct and wrong pixels.

    >>> platt_targets(8.0, 0.0)
    (0.9, 0.5)
    """
    return (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0)


class _AdditiveTable:
    """A table of sums over pixels (``table``), merged by addition."""

    table: np.ndarray

    def merge(self, other: Self) -> Self:
        """Add the pixels of ``other`` to this table; returns self."""
        self.table += other.table
        return self


class PlattTable(_AdditiveTable):
    """Sufficient statistics for the Platt fit of one measure, additive over pixels.

    Pixels are grouped by ``U`` rounded to a relative 2**-12 (the float32 exponent and
    top 12 mantissa bits); per group the table keeps ``n``, ``Σw``, ``ΣU`` and ``Σw·U``.
    The likelihood's linear terms are then exact, and its log-partition term is
    evaluated at each group's mean ``U``, off by a relative ~1e-8, far below the
    parameters' sampling noise. Tables of several workers merge by addition.
    """

    def __init__(self) -> None:
        self.table = np.zeros((_kernels.PLATT_KEYS, 4))

    def add(self, u: np.ndarray, agree: np.ndarray, valid: np.ndarray) -> None:
        """Add pixels: maps ``u``, agreeing raters ``agree`` and counted raters ``valid`` (same shape)."""
        flat_u, flat_agree, flat_valid = _flat_maps(u, agree, valid)
        _kernels.platt_table_kernel(flat_u, flat_u.view(np.uint32), flat_agree, flat_valid, self.table)

    @property
    def n_pixels(self) -> int:
        return int(self.table[:, 0].sum())

    def fit(self, *, max_iterations: int = 100, tolerance: float = 1e-12) -> PlattFit:
        r"""Platt's fit on the table: every pixel a positive of weight ``w`` and a
        negative of weight ``1 - w``, with Platt's smoothed targets.

        Minimises

        .. math:: \sum_i \left[\log(1 + e^{z_i}) - t_i z_i\right], \qquad z_i = b - a U_i,
            \quad t_i = t_- + (t_+ - t_-)\, w_i

        with ``(t₊, t₋)`` = :func:`platt_targets` of ``N₊ = Σw`` and ``N₋ = Σ(1 − w)``.
        The targets lie strictly inside (0, 1), so the optimum is finite even when
        ``U`` separates correct and wrong pixels (which is noted); a
        constant ``U`` gives ``a = 0, b = logit(mean t)``. The solution is exact (damped
        Newton steps to a relative 1e-12), not an optimiser's stopping point.
        """
        used = self.table[self.table[:, 0] > 0]
        count, correct, sum_u, sum_wu = used.T
        n = float(count.sum())
        if n == 0:
            raise UQEvalError("calibration: no calibration pixel with a rater to fit Platt scaling on")
        positives = float(correct.sum())
        high, low = platt_targets(positives, n - positives)
        target = low * count + (high - low) * correct
        target_u = low * sum_u + (high - low) * sum_wu
        return _fit_groups(
            sum_u / count,
            count,
            target,
            target_u,
            correct,
            n_pixels=int(n),
            unit="pixel",
            max_iterations=max_iterations,
            tolerance=tolerance,
        )


class BinnedPlattTable(_AdditiveTable):
    """The study's Platt fit: (rater, pixel) pairs on 256 log-spaced bins of ``U``.

    Bin ``k`` holds ``U`` in ``[e_k, e_{k+1})`` of :data:`BINNED_PLATT_EDGES`
    (``numpy.digitize`` against those float64 edges), ``U`` below 1e-12 (0 included) in
    the first bin and from 1e2 up in the last. Per bin the table keeps the pairs, the
    correct pairs, ``ΣU`` over the pairs and the pixels; additive over pixels.
    """

    def __init__(self) -> None:
        self.table = np.zeros((len(BINNED_PLATT_EDGES) - 1, 4))

    def add(self, u: np.ndarray, agree: np.ndarray, valid: np.ndarray) -> None:
        """Add pixels: maps ``u``, agreeing raters ``agree`` and counted raters ``valid`` (same shape)."""
        flat_u, flat_agree, flat_valid = _flat_maps(u, agree, valid)
        rated = flat_valid > 0
        values = flat_u[rated].astype(np.float64)
        bins = np.clip(np.digitize(values, BINNED_PLATT_EDGES) - 1, 0, len(self.table) - 1)
        pairs = flat_valid[rated].astype(np.float64)
        length = len(self.table)
        self.table[:, 0] += np.bincount(bins, weights=pairs, minlength=length)
        self.table[:, 1] += np.bincount(bins, weights=flat_agree[rated].astype(np.float64), minlength=length)
        self.table[:, 2] += np.bincount(bins, weights=pairs * values, minlength=length)
        self.table[:, 3] += np.bincount(bins, minlength=length)

    @property
    def n_pixels(self) -> int:
        return int(self.table[:, 3].sum())

    def fit(self, *, max_iterations: int = 100, tolerance: float = 1e-12) -> PlattFit:
        r"""The study's fit: in each non-empty bin, its correct pairs are a positive and its
        wrong pairs a negative sample at the bin's mean ``Ū_b``, weighted by their counts,
        with Platt's smoothed targets (:func:`platt_targets` of the correct and wrong pairs):

        .. math:: \sum_b \left[n_b \log(1 + e^{z_b}) - (t_+ P_b + t_- (n_b - P_b))\, z_b\right],
            \qquad z_b = b - a\,\bar U_b

        solved exactly (the study calls scikit-learn's ``_sigmoid_calibration``, whose
        L-BFGS-B stops near this optimum).
        """
        used = self.table[self.table[:, 0] > 0]
        pairs, correct, sum_u, pixels = used.T
        n = float(pairs.sum())
        if n == 0:
            raise UQEvalError("calibration: no calibration pixel with a rater to fit Platt scaling on")
        positives = float(correct.sum())
        high, low = platt_targets(positives, n - positives)
        mean_u = sum_u / pairs
        target = low * pairs + (high - low) * correct
        return _fit_groups(
            mean_u,
            pairs,
            target,
            target * mean_u,
            correct,
            n_pixels=int(pixels.sum()),
            unit="rater label",
            max_iterations=max_iterations,
            tolerance=tolerance,
        )


def _fit_groups(
    x: np.ndarray,
    count: np.ndarray,
    target: np.ndarray,
    target_x: np.ndarray,
    correct: np.ndarray,
    *,
    n_pixels: int,
    unit: str,
    max_iterations: int,
    tolerance: float,
) -> PlattFit:
    """Minimise ``Σ_g [count_g log(1 + e^{z_g}) - target_g z_g]`` with ``z_g = b - a x_g``,
    where ``target_x`` holds ``Σ t·x`` per group (exact linear terms) and ``correct``
    the correct weight per group (for the notes)."""
    n = float(count.sum())
    total_target = float(target.sum())
    positives = float(correct.sum())
    notes = []
    if positives >= n or positives <= 0:
        side = "correct" if positives >= n else "wrong"
        notes.append(f"every calibration {unit} is {side}, so the fit only has Platt's prior to go on")
    if len(x) == 1:
        notes.append("U is constant on the calibration pixels")
        return PlattFit(0.0, _logit(total_target / n), n_pixels, "; ".join(notes))
    # Centre U so the Newton system is well conditioned: z = b' - a (U - centre).
    centre = float((count * x).sum() / n)
    offset = x - centre
    linear_x = float(target_x.sum()) - centre * total_target

    def objective(slope: float, intercept: float) -> float:
        z = intercept - slope * offset
        return float((count * np.logaddexp(0.0, z)).sum() - intercept * total_target + slope * linear_x)

    slope, intercept = 0.0, _logit(total_target / n)
    value = objective(slope, intercept)
    converged = False
    for _ in range(max_iterations):
        p = _sigmoid(intercept - slope * offset)
        h = count * p * (1 - p)
        gradient = np.array([linear_x - float((count * p * offset).sum()), float((count * p).sum()) - total_target])
        cross = -float((h * offset).sum())
        hessian = np.array([[float((h * offset * offset).sum()), cross], [cross, float(h.sum())]])
        if np.linalg.det(hessian) <= 0:
            break
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-12:
            candidate = (slope - scale * step[0], intercept - scale * step[1])
            candidate_value = objective(*candidate)
            if candidate_value <= value:
                break
            scale /= 2
        else:
            converged = True  # no descent left: at the optimum to machine precision
            break
        slope, intercept = candidate
        value = candidate_value
        if np.all(np.abs(scale * step) <= tolerance * (1 + np.abs([slope, intercept]))):
            converged = True
            break
    if not converged:
        notes.append(f"the Platt fit did not converge in {max_iterations} Newton steps")
    if _separated(x, count, correct):
        notes.append(f"U separates correct and wrong calibration {unit}s; Platt's smoothed targets keep the fit finite")
    return PlattFit(float(slope), float(intercept + slope * centre), n_pixels, "; ".join(notes))


def _separated(mean_u: np.ndarray, count: np.ndarray, correct: np.ndarray) -> bool:
    """Whether ``U`` (quasi-)separates the groups: all correct below one group and all wrong above it,
    or the reverse; the likelihood without a prior then has no finite optimum."""
    if correct.sum() <= 0 or correct.sum() >= count.sum():
        return False
    order = np.argsort(mean_u, kind="stable")
    all_correct = (correct >= count)[order]
    all_wrong = (correct <= 0)[order]
    for low, high in ((all_correct, all_wrong), (all_wrong, all_correct)):
        first_other = int(np.argmin(low)) if not low.all() else len(low)
        if high[first_other + 1 :].all():
            return True
    return False


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))``, in place on a float64 array ``z`` the caller owns."""
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        return np.reciprocal(z, out=z)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def platt_table(method: str = "smoothed") -> PlattTable | BinnedPlattTable:
    """An empty table for the Platt fit ``method``: ``smoothed`` (:class:`PlattTable`)
    or ``binned-smoothed`` (:class:`BinnedPlattTable`, the study's)."""
    if method == "smoothed":
        return PlattTable()
    if method == "binned-smoothed":
        return BinnedPlattTable()
    raise UQEvalError(f"calibration: Platt method is {method!r}; expected 'smoothed' or 'binned-smoothed'")


def fit_platt(u: np.ndarray, agree: np.ndarray, valid: np.ndarray, *, method: str = "smoothed") -> PlattFit:
    """Platt parameters of one measure on calibration pixels.

    Parameters
    ----------
    u : (image, y, x) or (image, z, y, x) float
        Uncertainty maps of the calibration images (volumes: every voxel is a sample,
        as every pixel is of an image).
    agree, valid : int, the shape of ``u``
        Raters agreeing with ``pred`` and raters counted, per pixel
        (:func:`uqeval.metrics.ambiguity.rater_statistics`).
    method : ``"smoothed"`` or ``"binned-smoothed"``
        Every pixel, with Platt's smoothed targets (:meth:`PlattTable.fit`), or the
        study's fit on 256 log-spaced bins (:meth:`BinnedPlattTable.fit`).

    See Also
    --------
    sklearn.calibration._sigmoid_calibration : on ``-U``, each pixel entered as a
        positive of weight ``w`` and a negative of weight ``1 - w`` (``smoothed``), or
        each bin's correct and wrong pairs at its mean ``U`` (``binned-smoothed``): the
        reference in the tests.
    """
    table = platt_table(method)
    table.add(u, agree, valid)
    return table.fit()


class CalibrationTable:
    """Per image and equal-width confidence bin: pixel count, Σ confidence and Σ correctness.

    ``table`` has shape (image, bins, 3). Bin ``k`` holds confidences in
    ``[k/bins, (k+1)/bins)``, the last bin also 1; so a confidence of exactly 0 or 1
    lands in the first or last bin. ``equal_mass``, when computed (the per-image
    scope), holds each image's own :func:`equal_mass_ace` (NaN without pixels).
    """

    def __init__(self, table: np.ndarray, equal_mass: np.ndarray | None = None) -> None:
        self.table = table
        self.equal_mass = equal_mass

    @classmethod
    def from_maps(
        cls,
        u: np.ndarray,
        agree: np.ndarray,
        valid: np.ndarray,
        fit: PlattFit,
        *,
        bins: int = 20,
        equal_mass: bool = False,
        confidence: np.ndarray | None = None,
    ) -> CalibrationTable:
        """Bin every pixel with a rater by its Platt confidence ``σ(b - a·U)``; with
        ``equal_mass``, also give each image its equal-mass ACE (exact, per image).

        ``confidence`` may give ``fit.confidence(u)`` computed already.
        """
        flat_u, flat_agree, flat_valid = _flat_maps(u, agree, valid)
        table = np.zeros((flat_u.shape[0], bins, 3))
        fit.check_usable()
        flat_confidence = _flat_confidence(fit, flat_u, confidence)
        _kernels.calibration_kernel(flat_confidence, flat_agree, flat_valid, table)
        per_image = None
        if equal_mass:
            per_image = np.empty(flat_u.shape[0])
            for image in range(flat_u.shape[0]):
                scored = flat_valid[image] > 0
                correct = flat_agree[image, scored] / flat_valid[image, scored]
                per_image[image] = equal_mass_ace_of_pixels(flat_confidence[image, scored], correct, bins=bins)
        return cls(table, per_image)

    def take(self, images: np.ndarray) -> CalibrationTable:
        """The tables of some images (boolean mask or indices), in that order."""
        return CalibrationTable(self.table[images], None if self.equal_mass is None else self.equal_mass[images])

    @classmethod
    def concatenate(cls, parts: Sequence[CalibrationTable]) -> CalibrationTable:
        """The tables of consecutive batches of images, joined."""
        equal_mass = None
        if parts[0].equal_mass is not None:
            equal_mass = np.concatenate([part.equal_mass for part in parts])
        return cls(np.concatenate([part.table for part in parts]), equal_mass)

    def pooled(self, images: np.ndarray | None = None) -> np.ndarray:
        """(bins, 3) sums over the chosen images (boolean mask or indices; default all)."""
        chosen = self.table if images is None else self.table[images]
        return chosen.sum(axis=0)


def _errors(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = bins[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(bins[..., 2] - bins[..., 1]) / count
    return count, gap, count > 0


def ace(bins: np.ndarray) -> float:
    r"""Average calibration error of a (bins, 3) table: equal weight per non-empty bin.

    .. math:: \mathrm{ACE} = \frac{1}{|\{b : n_b > 0\}|} \sum_{b : n_b > 0} |\mathrm{acc}_b - \mathrm{conf}_b|

    with ``acc_b`` the mean correctness and ``conf_b`` the mean confidence in bin ``b``.
    NaN for an empty table.
    """
    _, gap, used = _errors(bins)
    return float(gap[used].mean()) if used.any() else float("nan")


def ece(bins: np.ndarray) -> float:
    r"""Expected calibration error: ``Σ_b (n_b / n) |acc_b - conf_b|``, NaN for an empty table."""
    count, gap, used = _errors(bins)
    return float((count[used] * gap[used]).sum() / count.sum()) if used.any() else float("nan")


def _per_image(table: CalibrationTable, images: np.ndarray | None, weighted: bool) -> float:
    return ImageCalibration.of(table).mean("ece" if weighted else "ace", images)


@dataclass(frozen=True)
class ImageCalibration:
    """Each image's own calibration errors: what the per-image scope needs of a
    :class:`CalibrationTable`, three numbers per image instead of its bins × 3.

    Attributes
    ----------
    ace, ece : (image,) float64
        The image's :func:`ace` and :func:`ece` over its own bins; NaN for an image
        without a scored pixel.
    equal_mass : (image,) float64 or None
        Its equal-mass ACE (:attr:`CalibrationTable.equal_mass`), when computed.
    """

    ace: np.ndarray
    ece: np.ndarray
    equal_mass: np.ndarray | None = None

    @classmethod
    def of(cls, table: CalibrationTable, *, all_correct: str = "correct") -> ImageCalibration:
        """The errors of each image of ``table``.

        ``all_correct="wrong"`` scores an image whose every pixel is correct (``w = 1``
        everywhere) as if every pixel were wrong (accuracy 0 in each bin), as the
        study's per-image ACE does: its ``label_binarize`` of a single class gives 0.
        """
        if all_correct not in ("correct", "wrong"):
            raise UQEvalError(f"calibration: all_correct is {all_correct!r}; expected 'correct' or 'wrong'")
        bins = table.table
        if all_correct == "wrong":
            # Σw is a sum of exact 1.0s on such an image, so the test is exact.
            entirely = (bins[..., 0].sum(axis=1) > 0) & (bins[..., 2] == bins[..., 0]).all(axis=1)
            if entirely.any():
                bins = bins.copy()
                bins[entirely, :, 2] = 0.0
        count, gap, used = _errors(bins)
        gap = np.where(used, gap, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            image_ace = gap.sum(axis=1) / used.sum(axis=1)
            image_ece = (count * gap).sum(axis=1) / count.sum(axis=1)
        has_pixels = used.any(axis=1)
        return cls(np.where(has_pixels, image_ace, np.nan), np.where(has_pixels, image_ece, np.nan), table.equal_mass)

    def take(self, images: np.ndarray) -> ImageCalibration:
        """The errors of some images (boolean mask or indices), in that order."""
        return ImageCalibration(
            self.ace[images], self.ece[images], None if self.equal_mass is None else self.equal_mass[images]
        )

    @classmethod
    def concatenate(cls, parts: Sequence[ImageCalibration]) -> ImageCalibration:
        """The errors of consecutive batches of images, joined."""
        equal_mass = None
        if parts[0].equal_mass is not None:
            equal_mass = np.concatenate([part.equal_mass for part in parts])
        ace_values = np.concatenate([part.ace for part in parts])
        return cls(ace_values, np.concatenate([part.ece for part in parts]), equal_mass)

    def mean(self, name: str, images: np.ndarray | None = None) -> float:
        """Mean over the chosen images with a scored pixel of ``ace``, ``ece`` or ``equal_mass``; NaN if none."""
        values = getattr(self, name)
        if values is None:
            raise UQEvalError("calibration: the tables were made without per-image equal-mass ACE")
        return _defined_mean(values, images)


def equal_mass_ace(groups: np.ndarray, *, bins: int = 20) -> float:
    r"""ACE over bins of equal pixel count, from pixels grouped by confidence.

    The ``n`` pixels, ordered by ascending confidence, are cut into ``bins`` runs of
    equal count as :func:`numpy.array_split` cuts them (the first ``n mod bins`` runs
    one pixel longer); with ``acc_b`` and ``conf_b`` the mean correctness and
    confidence of run ``b``,

    .. math:: \mathrm{ACE}_{\text{equal mass}} = \frac{1}{|\{b : n_b > 0\}|}
        \sum_{b : n_b > 0} |\mathrm{acc}_b - \mathrm{conf}_b|

    Pixels of one group (equal confidence) are ordered at random, so a group that a
    cut splits counts in expectation over its orders: each side gets its share of the
    group's ``Σw`` and ``Σconfidence`` in proportion to its pixels. With every
    confidence distinct this is exactly the ``array_split`` of the sorted pixels.

    Parameters
    ----------
    groups : (group, 3) float
        Per group of pixels: count ``n``, ``Σw`` and ``Σconfidence`` (any order; empty
        groups are ignored).
    bins : int

    Returns
    -------
    float
        NaN when there is no pixel.

    Examples
    --------
    >>> groups = np.array([[1, 1.0, 0.9], [1, 0.0, 0.2], [1, 1.0, 0.8], [1, 0.0, 0.3]])
    >>> round(equal_mass_ace(groups, bins=2), 3)  # runs {0.2, 0.3} and {0.8, 0.9}
    0.2
    """
    groups = np.asarray(groups, dtype=np.float64)
    groups = groups[groups[:, 0] > 0]
    total = float(groups[:, 0].sum())
    if total == 0:
        return float("nan")
    order = np.argsort(groups[:, 2] / groups[:, 0], kind="stable")
    cumulative = np.vstack([np.zeros(3), np.cumsum(groups[order], axis=0)])
    count = round(total)
    sizes = np.full(bins, count // bins)
    sizes[: count % bins] += 1
    edges = np.r_[0, np.cumsum(sizes)].astype(np.float64)
    # Σw and Σconfidence of the first x pixels, linear inside a group: proportional shares.
    correct = np.diff(np.interp(edges, cumulative[:, 0], cumulative[:, 1]))
    confidence = np.diff(np.interp(edges, cumulative[:, 0], cumulative[:, 2]))
    used = sizes > 0
    return float(np.mean(np.abs(correct[used] - confidence[used]) / sizes[used]))


def equal_mass_ace_of_pixels(confidence: np.ndarray, correct: np.ndarray, *, bins: int = 20) -> float:
    """:func:`equal_mass_ace` of single pixels: confidences and correctness ``w``, 1-d.

    Pixels of exactly equal confidence form one group.
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidence.shape != correct.shape:
        raise UQEvalError(f"calibration: {confidence.size} confidences but {correct.size} correctness values")
    values, inverse = np.unique(confidence, return_inverse=True)
    groups = np.column_stack(
        [
            np.bincount(inverse, minlength=values.size),
            np.bincount(inverse, weights=correct, minlength=values.size),
            np.bincount(inverse, weights=confidence, minlength=values.size),
        ]
    )
    return equal_mass_ace(groups, bins=bins)


def _flat_confidence(fit: PlattFit, flat_u: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """``fit.confidence`` of the (image, pixel) maps ``flat_u``, or ``confidence`` given for them."""
    if confidence is None:
        return fit.confidence(flat_u)
    return np.ascontiguousarray(confidence, dtype=np.float64).reshape(flat_u.shape)


#: A ``touched`` argument with no room: the dense table alone is wanted.
_NO_CELLS = np.empty(0, dtype=np.int64)
#: Per thread, a zeroed (group, key, 3) table reused by :func:`sparse_confidence_histogram`.
_SCRATCH = threading.local()


def sparse_confidence_histogram(
    u: np.ndarray,
    agree: np.ndarray,
    valid: np.ndarray,
    fit: PlattFit,
    groups: np.ndarray,
    n_groups: int,
    confidence: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``ConfidenceHistogram(n_groups)``, :meth:`~ConfidenceHistogram.add` and
    :meth:`~ConfidenceHistogram.sparse` in one, without a fresh table.

    A table has about 120,000 keys; a batch of images fills a small share of them.
    Zeroing a fresh table and scanning it for non-empty cells would cost more than
    filling it, so a zeroed table is kept per thread, the kernel lists the cells it
    fills, and only those are read and zeroed again. ``confidence`` may give
    ``fit.confidence(u)`` computed already.

    Returns
    -------
    (indices (cell, 2) of (group, key), rows (cell, 3) int64), in the order the pixels
    first reached each cell: :meth:`ConfidenceHistogram.add_sparse` adds them in any order.
    """
    flat_u, flat_agree, flat_valid = _flat_maps(u, agree, valid)
    fit.check_usable()
    table = getattr(_SCRATCH, "table", None)
    if table is None or table.shape[0] < n_groups or not _SCRATCH.clean:
        table = np.zeros((max(n_groups, 1), _kernels.PLATT_KEYS, 3), dtype=np.int64)
        _SCRATCH.table = table
    used = table[:n_groups]
    touched = np.empty(flat_valid.size, dtype=np.int64)
    _SCRATCH.clean = False  # until the filled cells are zeroed again, even on an interrupt
    count = _kernels.confidence_histogram_kernel(
        flat_u,
        flat_u.view(np.uint32),
        _flat_confidence(fit, flat_u, confidence),
        flat_agree,
        flat_valid,
        np.asarray(groups, dtype=np.int64),
        used,
        touched,
    )
    cells = np.empty((count, 2), dtype=np.int64)
    rows = np.empty((count, 3), dtype=np.int64)
    _kernels.take_cells_kernel(used, touched[:count], cells, rows)
    _SCRATCH.clean = True
    return cells, rows


class ConfidenceHistogram:
    """Pixels of some images grouped like the :class:`PlattTable` (``U`` to a relative
    2**-12), per group: count, ``Σw`` and ``Σconfidence`` under one Platt fit.

    Additive over pixels, so a split's equal-mass ACE streams: the tables of its
    images' domains are merged and handed to :func:`equal_mass_ace`. Pixels whose ``U``
    share a key count as one group of equal confidence; their confidences differ by
    less than ``0.25 · a · U · 2**-12``. ``w`` and the confidence are summed in fixed
    point (units of 2**-32), so the sums, and the ACE, do not depend on the order or
    batching of the pixels.

    Parameters
    ----------
    n_groups : int
        Tables kept side by side (one per domain, say).
    """

    def __init__(self, n_groups: int = 1) -> None:
        self.table = np.zeros((n_groups, _kernels.PLATT_KEYS, 3), dtype=np.int64)

    def add(
        self, u: np.ndarray, agree: np.ndarray, valid: np.ndarray, fit: PlattFit, groups: np.ndarray | None = None
    ) -> None:
        """Add the pixels of images ``u`` (image, ...) to table ``groups[image]`` (``-1``:
        left out; default all in table 0)."""
        flat_u, flat_agree, flat_valid = _flat_maps(u, agree, valid)
        if groups is None:
            groups = np.zeros(flat_u.shape[0], dtype=np.int64)
        fit.check_usable()
        _kernels.confidence_histogram_kernel(
            flat_u,
            flat_u.view(np.uint32),
            fit.confidence(flat_u),
            flat_agree,
            flat_valid,
            np.asarray(groups, dtype=np.int64),
            self.table,
            _NO_CELLS,
        )

    def groups(self, chosen: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(key, 3) sums over the chosen tables (default all), for :func:`equal_mass_ace`."""
        summed = self.table.sum(axis=0) if chosen is None else self.table[list(chosen)].sum(axis=0)
        return summed / np.array([1.0, _kernels.FIXED_POINT, _kernels.FIXED_POINT])

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, rows)`` of the non-empty (group, key) cells: small enough to ship."""
        cells = np.nonzero(self.table[..., 0])
        return np.stack(cells, axis=1), self.table[cells]

    def add_sparse(self, cells: tuple[np.ndarray, np.ndarray]) -> None:
        """Add cells from :meth:`sparse` of another histogram of the same shape."""
        indices, rows = cells
        _kernels.add_cells_kernel(self.table, np.asarray(indices, dtype=np.int64), np.asarray(rows, dtype=np.int64))


def per_image_ace(table: CalibrationTable, images: np.ndarray | None = None) -> float:
    """Mean over images (with at least one scored pixel) of each image's own ACE."""
    return _per_image(table, images, weighted=False)


def per_image_ece(table: CalibrationTable, images: np.ndarray | None = None) -> float:
    """Mean over images (with at least one scored pixel) of each image's own ECE."""
    return _per_image(table, images, weighted=True)


def per_image_equal_mass_ace(table: CalibrationTable, images: np.ndarray | None = None) -> float:
    """Mean over images (with at least one scored pixel) of each image's own equal-mass ACE."""
    if table.equal_mass is None:
        raise UQEvalError("calibration: the tables were made without per-image equal-mass ACE")
    return _defined_mean(table.equal_mass, images)


def _defined_mean(values: np.ndarray, images: np.ndarray | None) -> float:
    """Mean of the chosen values that are not NaN (images with a scored pixel); NaN if none."""
    values = values if images is None else values[images]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data, one entry per bin (NaN accuracy/confidence when empty)."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {
            name: [float(v) for v in getattr(self, name)]
            for name in ("lower", "upper", "count", "confidence", "accuracy")
        }


def reliability(bins: np.ndarray) -> Reliability:
    """Per-bin pixel count, mean confidence and accuracy of a (bins, 3) table."""
    n_bins = bins.shape[0]
    edges = np.arange(n_bins + 1) / n_bins
    count = bins[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(edges[:-1], edges[1:], count, bins[:, 1] / count, bins[:, 2] / count)
