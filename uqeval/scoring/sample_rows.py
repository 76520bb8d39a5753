"""The rows of the image scores computed from the samples (pairwise Dice, CoV): OOD
detection and failure detection, beside AU, EU and TU and outside Δ.

They are scored as the measures' image scores are (:mod:`uqeval.scoring.tabulate`), on
the same splits, with :data:`~uqeval.names.SAMPLE_AGGREGATION` as their ``aggregation``:
the image score is the measure itself, not a map aggregated. A store without the samples
(a maps store) gets one note instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.names import ALL_TEST, ID_DOMAIN, POOLED_OOD, SAMPLE_AGGREGATION, SAMPLE_MEASURES
from uqeval.notes import Note, literal

#: The note of a run whose tasks would score the sample scores but whose source has no samples.
NO_SAMPLES = f"{' and '.join(SAMPLE_MEASURES)}: skipped, they are computed from the samples and only maps were given"
#: The note of a cube with one member: pairwise Dice has no pair to compare.
ONE_MEMBER = "pairwise_dice: skipped, the cube has one member (eu = 1), so there is no pair of members to compare"


def sample_score_rows(
    sample_scores: Mapping[str, np.ndarray] | None,
    splits: Mapping[str, np.ndarray],
    *,
    tasks: Sequence[str],
    scored: np.ndarray,
    risk: np.ndarray | None,
    fd_metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
    domain_mean: bool = False,
) -> tuple[list[dict], list[Note]]:
    """The OODD and FD rows of the sample scores, and the notes of what was skipped.

    Parameters
    ----------
    sample_scores : mapping or None
        ``pairwise_dice`` and ``cov`` per image, (image,) each
        (:attr:`uqeval.image_statistics.ImageStatistics.sample_scores`); None when the
        source has no samples.
    splits : mapping
        Image masks of ``id``, each OOD domain and ``ood``
        (:func:`uqeval.scoring.tabulate.split_masks`).
    tasks : sequence of str
        The tasks scored: rows for ``oodd`` and ``fd`` among them.
    scored : (image,) bool
        The test images (FD's split ``all``).
    risk : (image,) float or None
        Each image's failure risk (NaN: no rater), None without labels: no FD rows.
    fd_metrics : mapping
        FD's metrics by name, in row order: ``(scores, risks) -> value``.
    domain_mean : bool
        FD's ``ood`` is the mean over the OOD domains (``ood_split="domain-mean"``)
        rather than the OOD images pooled.

    Returns
    -------
    rows : list of dict
        ``task, split, measure, aggregation, metric, value``, as the measures' rows:
        OODD's ``auroc`` and ``fpr95`` per OOD domain (against the ID test images) and
        their means over domains as ``ood``; FD's metrics per split and on ``all``.
    notes : list of Note
    """
    ranked = [task for task in ("oodd", "fd") if task in tasks]
    if not ranked:
        return [], []
    if sample_scores is None:
        return [], [Note("skipped", literal(NO_SAMPLES))]
    notes = []
    measures = {}
    for name in SAMPLE_MEASURES:
        if np.isnan(sample_scores[name]).all():
            notes.append(Note("skipped", literal(ONE_MEMBER)))
        else:
            measures[name] = np.asarray(sample_scores[name], dtype=np.float64)
    rows: list[dict] = []
    ood_names = [name for name in splits if name not in (ID_DOMAIN, POOLED_OOD)]
    if "oodd" in ranked and ID_DOMAIN in splits and ood_names:
        rows += _detection_rows(measures, splits, ood_names)
    if "fd" in ranked and risk is not None:
        rows += _failure_rows(measures, splits, ood_names, scored, risk, fd_metrics, domain_mean)
    return rows, notes


def _row(task: str, split: str, measure: str, metric: str, value: float) -> dict:
    return {
        "task": task,
        "split": split,
        "measure": measure,
        "aggregation": SAMPLE_AGGREGATION,
        "metric": metric,
        "value": float(value),
    }


def _detection_rows(
    measures: Mapping[str, np.ndarray], splits: Mapping[str, np.ndarray], ood_names: Sequence[str]
) -> list[dict]:
    """AUROC and FPR95 per OOD domain against the ID test images; ``ood``: their means over domains."""
    rows = []
    per_domain: dict[str, dict[str, list[float]]] = {name: {"auroc": [], "fpr95": []} for name in measures}
    for domain in ood_names:
        chosen = splits[ID_DOMAIN] | splits[domain]
        positive = splits[domain][chosen]
        for name, values in measures.items():
            for metric, function in (("auroc", auroc), ("fpr95", fpr_at_tpr)):
                value = function(values[chosen], positive)
                per_domain[name][metric].append(value)
                rows.append(_row("oodd", domain, name, metric, value))
    for name in measures:
        for metric in ("auroc", "fpr95"):
            rows.append(_row("oodd", POOLED_OOD, name, metric, float(np.mean(per_domain[name][metric]))))
    return rows


def _failure_rows(
    measures: Mapping[str, np.ndarray],
    splits: Mapping[str, np.ndarray],
    ood_names: Sequence[str],
    scored: np.ndarray,
    risk: np.ndarray,
    fd_metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
    domain_mean: bool,
) -> list[dict]:
    """FD's metrics per split and on ``all``, over the images with a risk."""
    rows = []
    has_risk = ~np.isnan(risk)
    per_split: dict[str, dict[tuple[str, str], float]] = {}
    for split, chosen in {**splits, ALL_TEST: scored}.items():
        images = chosen & has_risk
        if not images.any():
            continue
        if split == POOLED_OOD and domain_mean and per_split:
            values = {
                key: _defined_mean([per_split[name][key] for name in ood_names if name in per_split])
                for key in next(iter(per_split.values()))
            }
        else:
            values = {
                (name, metric): function(scores[images], risk[images])
                for name, scores in measures.items()
                for metric, function in fd_metrics.items()
            }
        per_split[split] = values
        rows += [_row("fd", split, name, metric, value) for (name, metric), value in values.items()]
    return rows


def _defined_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN if none is."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")
