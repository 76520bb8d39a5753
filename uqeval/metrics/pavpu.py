r"""PAvPU (Mukhoti & Gal, 2018): how often a pixel is accurate and certain, or inaccurate and uncertain.

A pixel counts when at least one rater labelled it. It is *accurate* when at least half
of those raters agree with the prediction, :math:`w \ge 0.5`, and *certain* when its
uncertainty is below a threshold, :math:`U < \tau`. With the counts over the pooled
pixels of a split,

.. math:: \mathrm{PAvPU} = \frac{n_{\mathrm{ac}} + n_{\mathrm{iu}}}{N},

``n_ac`` the accurate and certain pixels, ``n_iu`` the inaccurate and uncertain ones and
``N`` all counted pixels; higher is better, in [0, 1]. ``τ`` is fitted on the calibration
ID pixels (:func:`pavpu_threshold`): the quantile of ``U`` at ``q``, the fraction of them
that are accurate, so that about as many pixels are called certain as are accurate.

The counts are sums over pixels, so they add up over images and over the z-slabs of a
volume, and a split's PAvPU is that of its images' counts summed.

>>> import numpy as np
>>> u = np.array([[0.1, 0.2, 0.7, 0.9]])
>>> counts = pavpu_counts(u, agree=np.array([[2, 1, 0, 2]]), valid=np.array([[2, 2, 2, 2]]), threshold=0.5)
>>> counts.tolist()  # accurate: the first, second and fourth; certain: the first two
[[2, 1, 4]]
>>> pavpu(counts)
0.75
"""

from __future__ import annotations

import numpy as np

from uqeval.errors import UQEvalError

#: The columns of :func:`pavpu_counts`.
PAVPU_COUNTS = ("accurate_certain", "inaccurate_uncertain", "pixels")


def accurate(agree: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``w = agree / valid ≥ 0.5``, in integers (``2·agree ≥ valid``), where ``valid > 0``; False elsewhere."""
    agree = np.asarray(agree)
    valid = np.asarray(valid)
    return (valid > 0) & (2 * agree >= valid)


def certain(u: np.ndarray, threshold: float) -> np.ndarray:
    """``U < τ`` as in float64, without a float64 copy of a float32 map: for a float32
    ``u``, ``u < τ`` exactly when ``u`` is below the smallest float32 not below ``τ``."""
    u = np.asarray(u)
    if u.dtype != np.float32:
        return np.asarray(u, dtype=np.float64) < float(threshold)
    bound = np.float32(threshold)
    if float(bound) < float(threshold):
        bound = np.nextafter(bound, np.float32(np.inf))
    return u < bound


def pavpu_counts(u: np.ndarray, agree: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, the PAvPU counts of its pixels.

    Parameters
    ----------
    u : (image, ...) float
        The uncertainty map (nats); compared with ``threshold`` as in float64 (:func:`certain`).
    agree, valid : (image, ...) int
        Raters who agree with the prediction, and raters who labelled the pixel
        (:class:`~uqeval.metrics.ambiguity.RaterStatistics`); a pixel with ``valid = 0``
        does not count.
    threshold : float
        ``τ``: a pixel is certain when ``U < τ``.

    Returns
    -------
    (image, 3) int64
        Accurate and certain pixels, inaccurate and uncertain pixels, counted pixels
        (:data:`PAVPU_COUNTS`).
    """
    u = np.asarray(u)
    if u.ndim < 1 or np.shape(agree) != u.shape or np.shape(valid) != u.shape:
        raise UQEvalError(
            f"PAvPU: maps, agreement and rater counts must share one shape (image, ...); "
            f"got {u.shape}, {np.shape(agree)}, {np.shape(valid)}"
        )
    n_images = u.shape[0]
    counted = np.asarray(valid).reshape(n_images, -1) > 0
    right = accurate(agree, valid).reshape(n_images, -1)
    below = certain(u, threshold).reshape(n_images, -1)
    counts = np.empty((n_images, 3), dtype=np.int64)
    counts[:, 0] = np.count_nonzero(right & below, axis=1)
    counts[:, 1] = np.count_nonzero(counted > (right | below), axis=1)  # counted, inaccurate and uncertain
    counts[:, 2] = np.count_nonzero(counted, axis=1)
    return counts


def pavpu(counts: np.ndarray) -> float:
    """PAvPU of the pixels whose :func:`pavpu_counts` are the rows of ``counts`` (summed); NaN without a pixel."""
    total = np.asarray(counts, dtype=np.int64).reshape(-1, 3).sum(axis=0)
    if total[2] == 0:
        return float("nan")
    return float((total[0] + total[1]) / total[2])


def pavpu_threshold(u: np.ndarray, accurate_fraction: float, *, method: str = "linear") -> float:
    r"""``τ = quantile(U, q)`` over the calibration pixels, ``q`` the fraction of them that is accurate.

    ``numpy.quantile`` with ``method`` over ``U`` as given (the float32 maps) at ``q``
    as a float64, so that numpy interpolates in float64; with the default
    ``linear`` and the ``n`` values sorted, :math:`u_{(0)} \le \dots \le u_{(n-1)}`, it
    is :math:`u_{(j)} + f\,(u_{(j+1)} - u_{(j)})` with :math:`j + f = q\,(n - 1)`.
    ``q = 0`` gives the smallest ``U`` (no pixel below it is certain) and ``q = 1`` the
    largest (the pixels at the largest value are uncertain).
    This keeps every value; a run fits the same ``τ``, to the last bit, from counts
    in two looks at the calibration maps (:mod:`uqeval.metrics.order_statistics`,
    :class:`~uqeval.scoring.fitting.PAvPUThresholds`).

    Parameters
    ----------
    u : array
        ``U`` of the counted calibration pixels.
    accurate_fraction : float in [0, 1]
        ``q``.
    method : str
        The ``numpy.quantile`` method (the conventions' ``quantile_method``).

    Raises
    ------
    UQEvalError
        Without a pixel, or with ``q`` outside [0, 1].
    """
    u = np.asarray(u).ravel()
    if not np.issubdtype(u.dtype, np.floating):
        u = u.astype(np.float64)
    if u.size == 0:
        raise UQEvalError("PAvPU: no calibration pixel with a rater label to fit τ on")
    if not 0.0 <= accurate_fraction <= 1.0:
        raise UQEvalError(f"PAvPU: the accurate fraction is {accurate_fraction}; expected a value in [0, 1]")
    # A float64 level, as numpy.mean gives it: numpy then returns a float64 also for float32 values.
    return float(np.quantile(u, np.float64(accurate_fraction), method=method))
