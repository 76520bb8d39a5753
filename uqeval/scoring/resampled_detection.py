r"""OODD's rows in every bootstrap resample at once, from image counts.

As in :mod:`uqeval.scoring.resampled_failure`, a resample is a count per image; the
images of an OOD domain and the ID test images, sorted by descending score, fall into
groups of tied scores, each with ``p_g`` OOD (positive) and ``q_g`` ID images drawn.
With ``P``, ``Q`` the totals and ``Q_{<g}`` the ID images drawn below group ``g``,

.. math:: \mathrm{AUROC} = \frac{1}{PQ} \sum_g p_g \left(Q_{<g} + \tfrac12 q_g\right)

(the Mann–Whitney statistic with ties counted ½, as :func:`uqeval.metrics.oodd.auroc`),
and FPR95 is the false positive rate of the first group end whose true positive rate
``Σ_{h≤g} p_h / P`` reaches 0.95 (:func:`~uqeval.metrics.oodd.fpr_at_tpr`). The
``ood`` rows are the means over domains, as the tabulation's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uqeval.names import ID_DOMAIN, POOLED_OOD
from uqeval.scoring.resampled_failure import resampled_deltas
from uqeval.tasks import TASKS

#: The target true positive rate of FPR95.
TARGET_TPR = 0.95


def resampled_detection_metrics(
    scores: np.ndarray, positive: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and FPR95 of ``scores`` (image,) against ``positive`` (image,) bool in each
    resample ``counts`` (resample, image)."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    drawn = counts[:, order]
    positives = np.add.reduceat(drawn * positive[order], starts, axis=1)
    negatives = np.add.reduceat(drawn * ~positive[order], starts, axis=1)
    total_positive = positives.sum(axis=1)
    total_negative = negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = total_negative[:, None] - np.cumsum(negatives, axis=1)
        area = np.sum(positives * (below + negatives / 2), axis=1) / (total_positive * total_negative)
        tpr = np.cumsum(positives, axis=1) / total_positive[:, None]
        fpr = np.cumsum(negatives, axis=1) / total_negative[:, None]
    first = np.argmax(tpr >= TARGET_TPR, axis=1)
    return area, fpr[np.arange(len(counts)), first]


def resampled_detection(
    statistics_scores: Mapping[str, Mapping[str, np.ndarray]],
    means: Mapping[str, np.ndarray],
    splits: Mapping[str, np.ndarray],
    counts: np.ndarray,
    *,
    aggregations: Sequence[str],
    primary: str,
    both_zero: str,
) -> tuple[dict[tuple[str, ...], np.ndarray], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """OODD's rows and Δ in every resample, as :func:`uqeval.scoring.tabulate.tabulate`
    makes them (none without ID or OOD test images); returns as
    :func:`uqeval.scoring.resampled_failure.resampled_fd`."""
    rows: dict[tuple[str, ...], np.ndarray] = {}
    deltas: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    ood_names = [name for name in splits if name not in (ID_DOMAIN, POOLED_OOD)]
    if ID_DOMAIN not in splits or not ood_names:
        return rows, deltas
    task = TASKS["oodd"]
    for aggregation in aggregations:
        per_domain: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for name in ood_names:
            chosen = splits[ID_DOMAIN] | splits[name]
            positive = splits[name][chosen]
            per_domain[name] = {"auroc": {}, "fpr95": {}}
            for measure, scores in statistics_scores[aggregation].items():
                area, fpr = resampled_detection_metrics(scores[chosen], positive, counts[:, chosen])
                per_domain[name]["auroc"][measure], per_domain[name]["fpr95"][measure] = area, fpr
                rows[("oodd", name, measure, aggregation, "auroc")] = area
                rows[("oodd", name, measure, aggregation, "fpr95")] = fpr
        means_over = {
            metric: {
                measure: np.mean([per_domain[name][metric][measure] for name in ood_names], axis=0)
                for measure in statistics_scores[aggregation]
            }
            for metric in ("auroc", "fpr95")
        }
        for metric, by_measure in means_over.items():
            for measure, values in by_measure.items():
                rows[("oodd", POOLED_OOD, measure, aggregation, metric)] = values
        if aggregation == primary:
            for name in ood_names:
                images = splits[ID_DOMAIN] | splits[name]
                deltas[("oodd", name)] = resampled_deltas(
                    task, per_domain[name]["auroc"], means, images, counts[:, images], both_zero
                )
            images = splits[ID_DOMAIN] | splits[POOLED_OOD]
            deltas[("oodd", POOLED_OOD)] = resampled_deltas(
                task, means_over["auroc"], means, images, counts[:, images], both_zero
            )
    return rows, deltas
