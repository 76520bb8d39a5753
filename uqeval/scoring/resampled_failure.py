r"""FD's rows in every bootstrap resample at once, from image counts instead of resampled arrays.

A resample is a count per image (how often it was drawn). Drawn twice, an image is two
tied scores, so the tie rule of :mod:`uqeval.metrics.failure` (a run of tied scores
counts in expectation over its orders) turns a resample into groups of the original
images' distinct scores, each with ``m_g`` images drawn and risk sum ``S_g``. With
``K_g`` and ``B_g`` the count and risk drawn before group ``g``, ``n`` in all and
``H`` the harmonic numbers,

.. math:: \mathrm{AURC} = \frac{1}{n} \sum_g \Big[ B_g (H_{K_g + m_g} - H_{K_g})
    + \frac{S_g}{m_g} \big(m_g - K_g (H_{K_g + m_g} - H_{K_g})\big) \Big]

(the sum over ``k`` inside a group of ``(B_g + j S_g / m_g) / (K_g + j)``), and AUGRC
is the trapezoid over the groups' ends ``((K_g + m_g) / n, (B_g + S_g) / n)``. This is
:func:`~uqeval.metrics.failure.aurc` and :func:`~uqeval.metrics.failure.augrc` of the
resampled arrays up to rounding, for all resamples in a few array operations, where
tabulating each resample would sort and scan again (FD was most of a resample's cost).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uqeval.metrics.entanglement import entanglement_delta
from uqeval.names import ALL_TEST, POOLED_OOD
from uqeval.tasks import TASKS

#: The FD metrics computed here, in the order of the FD rows.
FD_NAMES = ("aurc", "eaurc", "augrc", "eaugrc")


def _groups(key: np.ndarray, counts: np.ndarray, risks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample and group of tied ``key`` values (ascending): images drawn ``m_g`` and their risk ``S_g``."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    drawn = counts[:, order]
    return np.add.reduceat(drawn, starts, axis=1), np.add.reduceat(drawn * risks[order], starts, axis=1)


def _aurc(drawn: np.ndarray, risk: np.ndarray, n: np.ndarray, harmonic: np.ndarray) -> np.ndarray:
    before = (np.cumsum(drawn, axis=1) - drawn).astype(np.int64)
    risk_before = np.cumsum(risk, axis=1) - risk
    steps = harmonic[before + drawn.astype(np.int64)] - harmonic[before]
    mean_risk = np.divide(risk, drawn, out=np.zeros_like(risk), where=drawn > 0)
    return np.sum(risk_before * steps + mean_risk * (drawn - before * steps), axis=1) / n


def _augrc(drawn: np.ndarray, risk: np.ndarray, n: np.ndarray) -> np.ndarray:
    generalized = np.cumsum(risk, axis=1) / n[:, None]
    previous = generalized - risk / n[:, None]
    return np.sum(drawn / n[:, None] * (previous + generalized) / 2, axis=1)


def resampled_fd_metrics(scores: np.ndarray, risks: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """AURC, E-AURC, AUGRC and E-AUGRC of the images ``scores``, ``risks`` (image,) in
    each resample ``counts`` (resample, image); NaN where a resample draws no image."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, int(n.max(initial=0)) + 1))))
    with np.errstate(invalid="ignore", divide="ignore"):
        by_score = _groups(scores, counts, risks)
        by_risk = _groups(risks, counts, risks)
        aurc, ideal_aurc = _aurc(*by_score, n, harmonic), _aurc(*by_risk, n, harmonic)
        augrc, ideal_augrc = _augrc(*by_score, n), _augrc(*by_risk, n)
    values = {"aurc": aurc, "eaurc": aurc - ideal_aurc, "augrc": augrc, "eaugrc": augrc - ideal_augrc}
    return {name: np.where(n > 0, value, np.nan) for name, value in values.items()}


def resampled_fd(
    statistics_scores: Mapping[str, Mapping[str, np.ndarray]],
    means: Mapping[str, np.ndarray],
    risk: np.ndarray,
    splits: Mapping[str, np.ndarray],
    scored: np.ndarray,
    counts: np.ndarray,
    *,
    aggregations: Sequence[str],
    primary: str,
    domain_mean: bool,
    both_zero: str,
) -> tuple[dict[tuple[str, ...], np.ndarray], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """FD's rows and Δ in every resample, as :func:`uqeval.scoring.tabulate.tabulate` makes them.

    Returns
    -------
    rows : dict
        ``(task, split, measure, aggregation, metric)`` → (resample,) values.
    deltas : dict
        ``(task, split)`` → ``u_correct``, ``u_wrong``, ``delta`` (resample,).
    """
    task = TASKS["fd"]
    has_risk = ~np.isnan(risk)
    fd_splits = {**splits, ALL_TEST: scored}
    ood_names = [name for name in splits if name not in ("id", POOLED_OOD)]
    rows: dict[tuple[str, ...], np.ndarray] = {}
    deltas: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for aggregation in aggregations:
        per_split: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for split, chosen in fd_splits.items():
            images = chosen & has_risk
            if not images.any():
                continue
            drawn = counts[:, images]
            metrics: dict[str, dict[str, np.ndarray]] = {name: {} for name in FD_NAMES}
            for measure, scores in statistics_scores[aggregation].items():
                for name, values in resampled_fd_metrics(scores[images], risk[images], drawn).items():
                    metrics[name][measure] = values
            if split == POOLED_OOD and domain_mean and per_split:
                metrics = {
                    name: {
                        measure: _defined_means([per_split[d][name][measure] for d in ood_names if d in per_split])
                        for measure in metrics[name]
                    }
                    for name in FD_NAMES
                }
            per_split[split] = metrics
            for name in FD_NAMES:
                for measure, values in metrics[name].items():
                    rows[("fd", split, measure, aggregation, name)] = values
            if aggregation == primary:
                deltas[("fd", split)] = resampled_deltas(task, metrics["aurc"], means, images, drawn, both_zero)
    return rows, deltas


def _defined_means(values: Sequence[np.ndarray]) -> np.ndarray:
    """Per resample, the mean of the values that are not NaN (NaN where none is)."""
    stacked = np.array(values)
    defined = ~np.isnan(stacked)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    number = defined.sum(axis=0)
    return np.divide(total, number, out=np.full(total.shape, np.nan), where=number > 0)


def resampled_deltas(
    task,
    values: Mapping[str, np.ndarray],
    means: Mapping[str, np.ndarray],
    images: np.ndarray,
    drawn: np.ndarray,
    both_zero: str,
) -> dict[str, np.ndarray]:
    """Δ per resample, with ``_Tables.add_delta``'s rules: the best wrong measure, and NaN
    when a compared measure is 0 at every pixel of the images drawn."""
    n = drawn.shape[0]
    compared = (task.correct, *task.wrong)
    # A measure is 0 on a resample's images when every image it drew has a zero mean.
    nonzero = {measure: (drawn[:, means[measure][images] != 0] > 0).any(axis=1) for measure in compared}
    out = {name: np.full(n, np.nan) for name in ("u_correct", "u_wrong", "delta")}
    pick = min if task.lower_is_better else max
    for resample in range(n):
        u_correct = float(values[task.correct][resample])
        wrong = pick(task.wrong, key=lambda measure: values[measure][resample])
        u_wrong = float(values[wrong][resample])
        out["u_correct"][resample], out["u_wrong"][resample] = u_correct, u_wrong
        if all(nonzero[measure][resample] for measure in compared):
            out["delta"][resample] = entanglement_delta(
                u_correct, u_wrong, lower_is_better=task.lower_is_better, both_zero=both_zero
            )
    return out
