"""The rows of the built-in tasks, OODD, AMB, CAL, FD and PQ, from every image's statistics.

Each function is a task's ``rows`` (:class:`uqeval.tasks.Task`): it reads the engine's
per-image statistics through a :class:`~uqeval.task_tables.TaskTables` and adds rows,
Δ and notes to it, exactly as a plugin's task does. docs/metrics.md defines every metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uqeval.metrics.ambiguity import mean_ncc
from uqeval.metrics.calibration import ConfidenceHistogram, ace, ece, equal_mass_ace, reliability
from uqeval.metrics.failure import augrc, aurc, eaugrc, eaurc
from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.metrics.pavpu import pavpu
from uqeval.names import ALL_TEST, ID_DOMAIN, MEASURES, NO_AGGREGATION, POOLED_OOD
from uqeval.notes import Note, literal
from uqeval.predictive_rows import predictive_rows
from uqeval.task_tables import TaskTables, domain_means
from uqeval.tasks import TASKS

#: Metric name of the equal-mass ACE rows of CAL.
EQUAL_MASS_ACE = "ace_equal_mass"

#: The metrics of the FD rows, by name, in row order: (scores, risks) → value.
FD_METRICS = {"aurc": aurc, "eaurc": eaurc, "augrc": augrc, "eaugrc": eaugrc}


def detection_rows(tables: TaskTables) -> None:
    """OODD rows per aggregation: AUROC and FPR95 per OOD domain (against the ID test
    images) and their means over domains as ``ood``; Δ for the conventions' aggregation."""
    splits, ood_names = tables.splits, tables.ood_names
    if ID_DOMAIN not in splits or not ood_names:
        missing = "ID" if ID_DOMAIN not in splits else "OOD"
        tables.note("skipped", f"{{task}}: skipped, there are no {missing} test images", task="oodd")
        return
    pooled: dict[str, dict[str, float]] = {}
    below: set[tuple[str, str]] = set()
    for aggregation in tables.aggregations:
        by_measure = tables.statistics.scores[aggregation]
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
                tables.add("oodd", name, measure, aggregation, "auroc", per_domain[name][measure])
                tables.add("oodd", name, measure, aggregation, "fpr95", false_positives[measure][-1])
        means = {measure: float(np.mean([per_domain[n][measure] for n in ood_names])) for measure in MEASURES}
        for measure in MEASURES:
            tables.add("oodd", POOLED_OOD, measure, aggregation, "auroc", means[measure])
            tables.add("oodd", POOLED_OOD, measure, aggregation, "fpr95", float(np.mean(false_positives[measure])))
        if aggregation == tables.primary:
            for name in ood_names:
                tables.add_delta(TASKS["oodd"], name, per_domain[name], splits[ID_DOMAIN] | splits[name])
            tables.add_delta(TASKS["oodd"], POOLED_OOD, means, splits[ID_DOMAIN] | splits[POOLED_OOD])
        pooled[aggregation] = means
        below |= {
            (measure, aggregation)
            for measure in MEASURES
            if measure not in tables.absent
            and (any(per_domain[name][measure] < 0.5 for name in ood_names) or means[measure] < 0.5)
        }
    if below:
        tables.notes.append(_below_chance_note(tables, pooled, below))


def _below_chance_note(
    tables: TaskTables, pooled: Mapping[str, Mapping[str, float]], below: set[tuple[str, str]]
) -> Note:
    """One note for every OODD AUROC below 0.5: what it means, and each such measure's
    ``ood`` AUROC with its other image scores beside it (with ``mean``, the image's mean
    ``U``, even when it was not asked for: the means are at hand)."""
    splits, ood_names = tables.splits, tables.ood_names
    if "mean" not in pooled:
        pooled = dict(pooled)
        chosen = {name: splits[ID_DOMAIN] | splits[name] for name in ood_names}
        pooled["mean"] = {
            measure: float(
                np.mean(
                    [
                        auroc(tables.statistics.means[measure][chosen[name]], splits[name][chosen[name]])
                        for name in ood_names
                    ]
                )
            )
            for measure in MEASURES
        }
    parts = []
    for measure in MEASURES:
        flagged = [aggregation for aggregation in pooled if (measure, aggregation) in below]
        if not flagged:
            continue
        values = ", ".join(f"{aggregation} {pooled[aggregation][measure]:.3f}" for aggregation in pooled)
        parts.append(f"{measure.upper()} with {' and '.join(flagged)} (ood AUROC by image score: {values})")
    text = (
        "{task}: an AUROC below 0.5 means the measure ranks OOD images as less uncertain than ID images, "
        "the further below, the more consistently: " + literal("; ".join(parts))
    )
    return Note("auroc-below-chance", text, task="oodd")


def ambiguity_rows(tables: TaskTables) -> None:
    """AMB rows: the mean NCC of each measure with the raters' variance per split, and Δ."""
    statistics = tables.statistics
    if statistics.ncc is None:
        return
    conventions = tables.conventions
    per_split: dict[str, dict[str, dict[str, float]]] = {}
    for split, chosen in tables.splits.items():
        values, constant = {}, {}
        for measure in MEASURES:
            correlation = statistics.ncc[measure]
            subset = type(correlation)(correlation.correlation[chosen], correlation.state[chosen])
            values[measure], constant[measure] = mean_ncc(subset, constant=conventions.ncc_constant)
        if split == POOLED_OOD and tables.domain_mean:
            values = domain_means(per_split, tables.ood_names)["ncc"]
        per_split[split] = {"ncc": values}
        for measure in MEASURES:
            tables.add("amb", split, measure, NO_AGGREGATION, "ncc", values[measure])
            tables.add("amb", split, measure, NO_AGGREGATION, "ncc_constant", constant[measure])
            if constant[measure] and split != POOLED_OOD:
                action = "left out" if conventions.ncc_constant == "skip" else "scored 0"
                text = (
                    "{task}: {count} {split} image(s) have a constant rater-variance or {MEASURE} map and "
                    f"were {action}"
                )
                tables.note("constant-maps", text, task="amb", split=split, measure=measure, count=constant[measure])
        tables.add_delta(TASKS["amb"], split, values, chosen)


def calibration_rows(tables: TaskTables) -> None:
    """CAL rows per split: ACE, ECE, the equal-mass ACE (and PAvPU when fitted) per
    measure, pooled over the split's pixels or averaged over its images
    (``ace_scope``), the reliability diagrams, and Δ of the ACE."""
    statistics, conventions = tables.statistics, tables.conventions
    if statistics.calibration is None or not tables.calibration_sums:
        return
    per_split: dict[str, dict[str, dict[str, float]]] = {}
    for split, chosen in tables.splits.items():
        metrics: dict[str, dict[str, float]] = {"ace": {}, "ece": {}, EQUAL_MASS_ACE: {}}
        if statistics.pavpu is not None:
            metrics["pavpu"] = {measure: pavpu(statistics.pavpu[measure][chosen]) for measure in MEASURES}
        for measure in MEASURES:
            per_image = statistics.calibration[measure]
            pooled = tables.calibration_sums[measure][split]
            if conventions.ace_scope == "pooled":
                metrics["ace"][measure], metrics["ece"][measure] = ace(pooled), ece(pooled)
                metrics[EQUAL_MASS_ACE][measure] = _pooled_equal_mass(
                    tables.histograms,
                    tables.histogram_domains,
                    tables.domains[chosen],
                    measure,
                    conventions.calibration_bins,
                )
            else:
                metrics["ace"][measure] = per_image.mean("ace", chosen)
                metrics["ece"][measure] = per_image.mean("ece", chosen)
                metrics[EQUAL_MASS_ACE][measure] = per_image.mean("equal_mass", chosen)
            tables.reliability[(split, measure)] = reliability(pooled)
        best_wrong = None
        if split == POOLED_OOD and tables.domain_mean:
            metrics = domain_means(per_split, tables.ood_names)
            if conventions.cal_ood_delta == "domain-min-mean":
                best_wrong = _mean_of_domain_minima(per_split, tables.ood_names, TASKS["cal"].wrong)
        per_split[split] = metrics
        for measure in MEASURES:
            for metric in metrics:
                tables.add("cal", split, measure, NO_AGGREGATION, metric, metrics[metric][measure])
        tables.add_delta(TASKS["cal"], split, metrics["ace"], chosen, best_wrong)


def _mean_of_domain_minima(
    per_split: Mapping[str, Mapping[str, Mapping[str, float]]], ood_names: Sequence[str], wrong: Sequence[str]
) -> tuple[str, float]:
    """CAL's ``U_w`` on ``ood`` as the study's table computes it: the mean over OOD
    domains of each domain's smallest ACE among the ``wrong`` measures (domains where
    none is defined are left out), and the measures that were smallest, joined by ``/``."""
    minima, chosen = [], set()
    for name in ood_names:
        defined = {m: per_split[name]["ace"][m] for m in wrong if not np.isnan(per_split[name]["ace"][m])}
        if defined:
            best = min(defined, key=lambda m: defined[m])
            minima.append(defined[best])
            chosen.add(best)
    if not minima:
        return "/".join(wrong), float("nan")
    return "/".join(m for m in wrong if m in chosen), float(np.mean(minima))


def _pooled_equal_mass(
    histograms: Mapping[str, ConfidenceHistogram] | None,
    histogram_domains: Sequence[str],
    split_domains: np.ndarray,
    measure: str,
    bins: int,
) -> float:
    """Equal-mass ACE of every pixel of a split, from its domains' histograms."""
    if histograms is None:
        return float("nan")
    present = set(split_domains.tolist())
    codes = [code for code, domain in enumerate(histogram_domains) if domain in present]
    return equal_mass_ace(histograms[measure].groups(codes), bins=bins)


def failure_rows(tables: TaskTables) -> None:
    """FD rows per aggregation: AURC, E-AURC, AUGRC and E-AUGRC per split and on ``all``
    test images; Δ for the primary aggregation."""
    risk = tables.statistics.risk
    if risk is None:
        return
    has_risk = ~np.isnan(risk)  # images without a rater label are noted with AMB and CAL
    fd_splits = {**tables.splits, ALL_TEST: tables.scored}
    for aggregation in tables.aggregations:
        by_measure = tables.statistics.scores[aggregation]
        per_split: dict[str, dict[str, dict[str, float]]] = {}
        for split, chosen in fd_splits.items():
            images = chosen & has_risk
            if not images.any():
                continue
            metrics: dict[str, dict[str, float]] = {name: {} for name in FD_METRICS}
            for measure in MEASURES:
                for name, metric in FD_METRICS.items():
                    metrics[name][measure] = metric(by_measure[measure][images], risk[images])
            if split == POOLED_OOD and tables.domain_mean and per_split:
                metrics = domain_means(per_split, tables.ood_names)
            per_split[split] = metrics
            for measure in MEASURES:
                for metric in FD_METRICS:
                    tables.add("fd", split, measure, aggregation, metric, metrics[metric][measure])
            if aggregation == tables.primary:
                tables.add_delta(TASKS["fd"], split, metrics["aurc"], images)


#: Each built-in task's rows, by task name.
BUILTIN_ROWS = {
    "oodd": detection_rows,
    "amb": ambiguity_rows,
    "cal": calibration_rows,
    "fd": failure_rows,
    "pq": predictive_rows,
}
