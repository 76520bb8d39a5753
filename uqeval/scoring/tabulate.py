"""The last step of scoring: per-image statistics → tidy rows, Δ and collapse per split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from uqeval.conventions import Conventions
from uqeval.image_statistics import Fitted, ImageStatistics
from uqeval.metrics.ambiguity import NO_PIXELS, mean_ncc
from uqeval.metrics.calibration import Reliability, ace, ece, per_image_ace, per_image_ece, reliability
from uqeval.metrics.entanglement import collapse_ratio, entanglement_delta
from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.names import ID_DOMAIN, IGNORE_LABEL, MEASURES, NO_AGGREGATION, POOLED_OOD
from uqeval.tasks import TASKS, Task


@dataclass(frozen=True)
class Tabulated:
    """The tables of one scoring run (the fields of :class:`uqeval.Scores` of the same names)."""

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[str]
    n_images: dict[str, int]
    reliability: dict[tuple[str, str], Reliability]


def _splits(domains: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Image masks of the splits ``id``, each OOD domain, and ``ood`` (all OOD pooled)."""
    splits = {}
    if (scored & (domains == ID_DOMAIN)).any():
        splits[ID_DOMAIN] = scored & (domains == ID_DOMAIN)
    for name in sorted(set(domains[scored]) - {ID_DOMAIN}):
        splits[name] = scored & (domains == name)
    if (scored & (domains != ID_DOMAIN)).any():
        splits[POOLED_OOD] = scored & (domains != ID_DOMAIN)
    return splits


def tabulate(
    statistics: ImageStatistics,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    fitted: Fitted,
    tasks: Sequence[str],
    aggregations: Sequence[str],
    conventions: Conventions,
    notes: Sequence[str] = (),
) -> Tabulated:
    """Tidy rows, Δ and collapse from the per-image statistics of every image.

    Only ``test`` images are scored, per split: ``id``, each OOD domain, and ``ood``
    (all OOD images pooled; OODD's pooled value is the mean over OOD domains).

    Parameters
    ----------
    statistics : ImageStatistics
        Of every image, in store order.
    domains, roles : (image,) str
    fitted : Fitted
    tasks : sequence of str
        The tasks the plan kept.
    aggregations : sequence of str
        Names of the aggregations scored, the conventions' one among them.
    conventions : Conventions
    notes : sequence of str
        Notes so far; the result's notes continue them.
    """
    notes = list(notes or [])
    scored = roles == "test"
    splits = _splits(domains, scored)
    ood_names = [name for name in splits if name not in (ID_DOMAIN, POOLED_OOD)]
    rows: list[dict] = []
    entanglement: list[dict] = []
    reliabilities: dict[tuple[str, str], Reliability] = {}

    def add(task: str, split: str, measure: str, aggregation: str, metric: str, value: float) -> None:
        rows.append(
            {
                "task": task,
                "split": split,
                "measure": measure,
                "aggregation": aggregation,
                "metric": metric,
                "value": float(value),
            }
        )

    def add_delta(task: Task, split: str, values: Mapping[str, float]) -> None:
        wrong = (
            min(task.wrong, key=lambda m: values[m])
            if task.lower_is_better
            else max(task.wrong, key=lambda m: values[m])
        )
        delta = entanglement_delta(values[task.correct], values[wrong], lower_is_better=task.lower_is_better)
        if np.isnan(delta):
            notes.append(
                f"{task.name}: Δ on {split} is undefined ({task.metric} of {task.correct} and {wrong}: "
                f"{values[task.correct]:.4g}, {values[wrong]:.4g})"
            )
        entanglement.append(
            {
                "task": task.name,
                "split": split,
                "correct": task.correct,
                "wrong": wrong,
                "u_correct": float(values[task.correct]),
                "u_wrong": float(values[wrong]),
                "delta": delta,
            }
        )

    if "oodd" in tasks:
        if ID_DOMAIN not in splits or not ood_names:
            missing = "ID" if ID_DOMAIN not in splits else "OOD"
            notes.append(f"oodd: skipped, there are no {missing} test images")
        else:
            for aggregation in aggregations:
                by_measure = statistics.scores[aggregation]
                per_domain: dict[str, dict[str, float]] = {}
                false_positives: dict[str, list[float]] = {measure: [] for measure in MEASURES}
                for name in ood_names:
                    chosen = splits[ID_DOMAIN] | splits[name]
                    positive = splits[name][chosen]
                    per_domain[name] = {}
                    for measure in MEASURES:
                        values = by_measure[measure][chosen]
                        per_domain[name][measure] = auroc(values, positive)
                        false_positives[measure].append(fpr_at_tpr(values, positive))
                        add("oodd", name, measure, aggregation, "auroc", per_domain[name][measure])
                        add("oodd", name, measure, aggregation, "fpr95", false_positives[measure][-1])
                means = {measure: float(np.mean([per_domain[n][measure] for n in ood_names])) for measure in MEASURES}
                for measure in MEASURES:
                    add("oodd", POOLED_OOD, measure, aggregation, "auroc", means[measure])
                    add("oodd", POOLED_OOD, measure, aggregation, "fpr95", float(np.mean(false_positives[measure])))
                if aggregation == conventions.aggregation:
                    for name in [*ood_names, POOLED_OOD]:
                        add_delta(TASKS["oodd"], name, per_domain.get(name, means))

    if statistics.ncc is not None:
        unlabelled = int((scored & (statistics.ncc["au"].state == NO_PIXELS)).sum())
        if unlabelled:
            notes.append(
                f"{unlabelled} test image(s) have no rater label at any pixel (all {IGNORE_LABEL}); "
                "they are left out of AMB and CAL"
            )

    if "amb" in tasks and statistics.ncc is not None:
        for split, chosen in splits.items():
            values = {}
            for measure in MEASURES:
                correlation = statistics.ncc[measure]
                subset = type(correlation)(correlation.correlation[chosen], correlation.state[chosen])
                values[measure], n_constant = mean_ncc(subset, constant=conventions.ncc_constant)
                add("amb", split, measure, NO_AGGREGATION, "ncc", values[measure])
                add("amb", split, measure, NO_AGGREGATION, "ncc_constant", n_constant)
                if n_constant:
                    action = "left out" if conventions.ncc_constant == "skip" else "scored 0"
                    notes.append(
                        f"amb: {n_constant} {split} image(s) have a constant rater-variance or "
                        f"{measure.upper()} map and were {action}"
                    )
            add_delta(TASKS["amb"], split, values)

    if "cal" in tasks and statistics.calibration is not None:
        for split, chosen in splits.items():
            values = {}
            for measure in MEASURES:
                table = statistics.calibration[measure]
                pooled = table.pooled(chosen)
                if conventions.ace_scope == "pooled":
                    values[measure], error = ace(pooled), ece(pooled)
                else:
                    values[measure], error = per_image_ace(table, chosen), per_image_ece(table, chosen)
                add("cal", split, measure, NO_AGGREGATION, "ace", values[measure])
                add("cal", split, measure, NO_AGGREGATION, "ece", error)
                reliabilities[(split, measure)] = reliability(pooled)
            add_delta(TASKS["cal"], split, values)

    if statistics.segmentation is not None:
        for split, chosen in splits.items():
            for metric in ("dice", "ged", "hungarian_iou"):
                add(
                    "segmentation",
                    split,
                    NO_AGGREGATION,
                    NO_AGGREGATION,
                    metric,
                    float(getattr(statistics.segmentation, metric)[chosen].mean()),
                )

    collapse = []
    for split, chosen in splits.items():
        mean_au = float(statistics.means["au"][chosen].mean())
        mean_eu = float(statistics.means["eu"][chosen].mean())
        collapse.append(
            {
                "split": split,
                "mean_au": mean_au,
                "mean_eu": mean_eu,
                "eu_over_au": collapse_ratio(mean_eu, mean_au),
            }
        )
    if fitted.eu_scale != 1.0:
        notes.append(f"EU rescaled by r = {fitted.eu_scale:.4g} (mean AU / mean EU on {fitted.images_from} images)")

    n_images = {name: int(chosen.sum()) for name, chosen in splits.items() if name != POOLED_OOD}
    return Tabulated(rows, entanglement, collapse, notes, n_images, reliabilities)
