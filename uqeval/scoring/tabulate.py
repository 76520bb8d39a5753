"""The last step of scoring: per-image statistics → tidy rows, Δ and collapse per split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from uqeval.conventions import Conventions
from uqeval.image_statistics import ImageStatistics
from uqeval.metrics.ambiguity import NO_PIXELS, mean_ncc
from uqeval.metrics.calibration import (
    ConfidenceHistogram,
    Reliability,
    ace,
    ece,
    equal_mass_ace,
    reliability,
)
from uqeval.metrics.entanglement import collapse_ratio, entanglement_delta
from uqeval.metrics.failure import augrc, aurc, eaugrc, eaurc
from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.metrics.pavpu import pavpu
from uqeval.names import ALL_TEST, ID_DOMAIN, IGNORE_LABEL, MEASURES, NO_AGGREGATION, POOLED_OOD, TEST
from uqeval.notes import Note, literal
from uqeval.scoring.fitting import Fitted
from uqeval.scoring.sample_rows import sample_score_rows
from uqeval.tasks import TASKS, Task

#: Metric name of the equal-mass ACE rows of CAL.
EQUAL_MASS_ACE = "ace_equal_mass"

#: The metrics of the FD rows, by name, in row order: (scores, risks) → value.
FD_METRICS = {"aurc": aurc, "eaurc": eaurc, "augrc": augrc, "eaugrc": eaugrc}


@dataclass(frozen=True)
class Tabulated:
    """The tables of one scoring run (the fields of :class:`uqeval.Scores` of the same names)."""

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[Note]
    n_images: dict[str, int]
    reliability: dict[tuple[str, str], Reliability]


def split_masks(domains: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Image masks of the splits ``id``, each OOD domain, and ``ood`` (all OOD pooled)."""
    splits = {}
    if (scored & (domains == ID_DOMAIN)).any():
        splits[ID_DOMAIN] = scored & (domains == ID_DOMAIN)
    for name in sorted(set(domains[scored]) - {ID_DOMAIN}):
        splits[name] = scored & (domains == name)
    if (scored & (domains != ID_DOMAIN)).any():
        splits[POOLED_OOD] = scored & (domains != ID_DOMAIN)
    return splits


def _domain_means(
    per_split: Mapping[str, Mapping[str, Mapping[str, float]]], ood_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``ood``'s metrics under ``ood_split="domain-mean"``: per metric and measure, the
    unweighted mean of the OOD domains' values (those defined; NaN when none is)."""
    means: dict[str, dict[str, float]] = {}
    for metric in next(iter(per_split.values())):
        means[metric] = {}
        for measure in MEASURES:
            values = [per_split[name][metric][measure] for name in ood_names if name in per_split]
            means[metric][measure] = _defined_mean(values)
    return means


#: The values of a collapse row.
COLLAPSE_VALUES = ("mean_au", "mean_eu", "eu_over_au")


def _defined_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN if none is."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


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


class _Tables:
    """The rows, Δ rows and notes of one run, filled task by task."""

    def __init__(
        self,
        statistics: ImageStatistics,
        conventions: Conventions,
        primary: str,
        notes: Sequence[Note],
        absent_measures: Sequence[str] = (),
    ) -> None:
        self.statistics = statistics
        self.conventions = conventions
        self.primary = primary
        self.rows: list[dict] = []
        self.entanglement: list[dict] = []
        self.notes = list(notes)
        self.negative: dict[Task, list[str]] = {}
        self.absent = frozenset(absent_measures)

    def note_negative_scores(self) -> None:
        """One note per task whose score is negative on some split (Δ then leaves [−1, 1])."""
        for task, splits in self.negative.items():
            text = (
                f"{{task}}: {task.metric} is negative on {literal(', '.join(splits))}; with a negative score Δ "
                "leaves [−1, 1] (its range is (−5, 3])"
            )
            self.notes.append(Note("negative-score", text, task=task.name))

    def add(self, task: str, split: str, measure: str, aggregation: str, metric: str, value: float) -> None:
        self.rows.append(
            {
                "task": task,
                "split": split,
                "measure": measure,
                "aggregation": aggregation,
                "metric": metric,
                "value": float(value),
            }
        )

    def zero_measures(self, images: np.ndarray) -> list[str]:
        """The measures that are 0 at every pixel of these images (none without images)."""
        if not images.any():
            return []
        return [measure for measure in MEASURES if not self.statistics.means[measure][images].any()]

    def add_delta(
        self,
        task: Task,
        split: str,
        values: Mapping[str, float],
        images: np.ndarray,
        best_wrong: tuple[str, float] | None = None,
    ) -> None:
        """Δ of ``task`` on ``split`` from the measures' scores ``values``; ``images``
        are those the scores come from. Undefined when a compared measure is 0 on them.

        ``best_wrong`` gives the wrong measure(s) and ``U_w`` when they are not one
        measure's score (``cal_ood_delta="domain-min-mean"``)."""
        if best_wrong is None:
            pick = min if task.lower_is_better else max
            wrong = pick(task.wrong, key=lambda m: values[m])
            u_wrong = float(values[wrong])
        else:
            wrong, u_wrong = best_wrong[0], float(best_wrong[1])
        u_correct = float(values[task.correct])
        zero = [measure for measure in self.zero_measures(images) if measure in (task.correct, *task.wrong)]
        if zero:
            delta = float("nan")
            names = " and ".join(measure.upper() for measure in zero)
            text = (
                f"{{task}}: Δ on {{split}} is undefined: {names} is 0 at every pixel "
                f"(no {'uncertainty' if 'tu' in zero else 'part'} to separate), so it cannot win or lose"
            )
            self.notes.append(Note("delta-undefined", text, task=task.name, split=split))
        else:
            delta = entanglement_delta(
                u_correct, u_wrong, lower_is_better=task.lower_is_better, both_zero=self.conventions.delta_both_zero
            )
            if np.isnan(delta):
                text = (
                    f"{{task}}: Δ on {{split}} is undefined ({task.metric} of {task.correct} and {wrong}: "
                    f"{u_correct:.4g}, {u_wrong:.4g})"
                )
                self.notes.append(Note("delta-undefined", text, task=task.name, split=split))
            negative = [(m, v) for m, v in ((task.correct, u_correct), (wrong, u_wrong)) if v < 0]
            if negative:
                listed = ", ".join(f"{m.upper()} {v:.3g}" for m, v in negative)
                self.negative.setdefault(task, []).append(f"{split} ({listed}: Δ {delta:.3g})")
        self.entanglement.append(
            {
                "task": task.name,
                "split": split,
                "correct": task.correct,
                "wrong": wrong,
                "u_correct": u_correct,
                "u_wrong": u_wrong,
                "delta": delta,
            }
        )


def tabulate(
    statistics: ImageStatistics,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    fitted: Fitted,
    tasks: Sequence[str],
    aggregations: Sequence[str],
    primary: str,
    conventions: Conventions,
    notes: Sequence[Note] = (),
    histograms: Mapping[str, ConfidenceHistogram] | None = None,
    histogram_domains: Sequence[str] = (),
    fallbacks: Mapping[str, str] | None = None,
    calibration_sums: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    absent_measures: Sequence[str] = (),
) -> Tabulated:
    """Tidy rows, Δ and collapse from the per-image statistics of every image.

    Only ``test`` images are scored, per split: ``id``, each OOD domain, and ``ood``
    (OODD: the mean over OOD domains; AMB, CAL and FD: all OOD images pooled, or the
    mean over domains with ``ood_split="domain-mean"``); FD also on ``all``.

    Parameters
    ----------
    statistics : ImageStatistics
        Of every image, in store order.
    domains, roles : (image,) str
    fitted : Fitted
    tasks : sequence of str
        The tasks the plan kept.
    aggregations : sequence of str
        Names of the aggregations scored, ``primary`` among them.
    primary : str
        The aggregation whose OODD and FD scores Δ is computed from.
    conventions : Conventions
    notes : sequence of Note
        Notes so far; the result's notes continue them.
    histograms : mapping, optional
        Per measure, the test pixels' :class:`ConfidenceHistogram` with one table per
        domain of ``histogram_domains``, for the pooled equal-mass ACE.
    fallbacks : mapping, optional
        Per aggregation that has a fallback convention, what its fallen-back images
        have and score (:attr:`uqeval.aggregation.AggregationFallback.what`); the
        test images it applies to are counted in a note per split.
    calibration_sums : mapping, optional
        ``calibration_sums[measure][split]``: the (bins, 3) calibration table of the
        split's images summed (:class:`uqeval.scoring.pooling.OrderedSums`); needed
        for CAL.
    absent_measures : sequence of str
        Measures a maps store does not give (their stand-ins' rows are dropped
        afterwards, :mod:`uqeval.scoring.given_measures`): notes that name measures
        one by one leave them out.
    """
    scored = roles == TEST
    splits = split_masks(domains, scored)
    ood_names = [name for name in splits if name not in (ID_DOMAIN, POOLED_OOD)]
    tables = _Tables(statistics, conventions, primary, notes, absent_measures)
    reliabilities: dict[tuple[str, str], Reliability] = {}
    domain_mean = conventions.ood_split == "domain-mean"

    if "oodd" in tasks:
        _detection(tables, splits, ood_names, aggregations)

    if statistics.ncc is not None:
        unlabelled = int((scored & (statistics.ncc["au"].state == NO_PIXELS)).sum())
        if unlabelled:
            text = (
                f"{{count}} test image(s) have no rater label at any pixel (all {IGNORE_LABEL}); "
                "they are left out of AMB, CAL and FD"
            )
            tables.notes.append(Note("unlabelled-images", text, count=unlabelled))

    if "amb" in tasks and statistics.ncc is not None:
        per_split: dict[str, dict[str, dict[str, float]]] = {}
        for split, chosen in splits.items():
            values, constant = {}, {}
            for measure in MEASURES:
                correlation = statistics.ncc[measure]
                subset = type(correlation)(correlation.correlation[chosen], correlation.state[chosen])
                values[measure], constant[measure] = mean_ncc(subset, constant=conventions.ncc_constant)
            if split == POOLED_OOD and domain_mean:
                values = _domain_means(per_split, ood_names)["ncc"]
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
                    note = Note(
                        "constant-maps", text, task="amb", split=split, measure=measure, count=constant[measure]
                    )
                    tables.notes.append(note)
            tables.add_delta(TASKS["amb"], split, values, chosen)

    if "cal" in tasks and statistics.calibration is not None and calibration_sums:
        per_split = {}
        for split, chosen in splits.items():
            metrics: dict[str, dict[str, float]] = {"ace": {}, "ece": {}, EQUAL_MASS_ACE: {}}
            if statistics.pavpu is not None:
                metrics["pavpu"] = {measure: pavpu(statistics.pavpu[measure][chosen]) for measure in MEASURES}
            for measure in MEASURES:
                per_image = statistics.calibration[measure]
                pooled = calibration_sums[measure][split]
                if conventions.ace_scope == "pooled":
                    metrics["ace"][measure], metrics["ece"][measure] = ace(pooled), ece(pooled)
                    metrics[EQUAL_MASS_ACE][measure] = _pooled_equal_mass(
                        histograms, histogram_domains, domains[chosen], measure, conventions.calibration_bins
                    )
                else:
                    metrics["ace"][measure] = per_image.mean("ace", chosen)
                    metrics["ece"][measure] = per_image.mean("ece", chosen)
                    metrics[EQUAL_MASS_ACE][measure] = per_image.mean("equal_mass", chosen)
                reliabilities[(split, measure)] = reliability(pooled)
            best_wrong = None
            if split == POOLED_OOD and domain_mean:
                metrics = _domain_means(per_split, ood_names)
                if conventions.cal_ood_delta == "domain-min-mean":
                    best_wrong = _mean_of_domain_minima(per_split, ood_names, TASKS["cal"].wrong)
            per_split[split] = metrics
            for measure in MEASURES:
                for metric in metrics:
                    tables.add("cal", split, measure, NO_AGGREGATION, metric, metrics[metric][measure])
            tables.add_delta(TASKS["cal"], split, metrics["ace"], chosen, best_wrong)

    if "fd" in tasks and statistics.risk is not None:
        _failure_detection(tables, splits, ood_names, aggregations, scored)

    # The image scores of the samples themselves: OODD and FD rows beside the measures', no Δ.
    sample_rows, sample_notes = sample_score_rows(
        statistics.sample_scores,
        splits,
        tasks=tasks,
        scored=scored,
        risk=statistics.risk,
        fd_metrics=FD_METRICS,
        domain_mean=domain_mean,
    )
    tables.rows += sample_rows
    tables.notes += sample_notes

    if {"oodd", "fd"} & set(tasks):
        _fallback_notes(tables, splits, fallbacks or {})

    if statistics.segmentation is not None:
        for split, chosen in splits.items():
            for metric in ("dice", "ged", "hungarian_iou"):
                values = getattr(statistics.segmentation, metric)[chosen]
                # NaN: an image whose pairs of empty masks were all skipped (empty_pair="skip").
                defined = ~np.isnan(values)
                value = float(values.mean()) if defined.all() else _defined_mean(values[defined].tolist())
                tables.add("segmentation", split, NO_AGGREGATION, NO_AGGREGATION, metric, value)

    tables.note_negative_scores()
    collapse = []
    for split, chosen in splits.items():
        mean_au = float(statistics.means["au"][chosen].mean())
        mean_eu = float(statistics.means["eu"][chosen].mean())
        ratio = collapse_ratio(mean_eu, mean_au)
        if split == POOLED_OOD and domain_mean:
            # As the study's tables: each domain's values (the ratio of its image means), averaged over domains.
            domains = [row for row in collapse if row["split"] in ood_names]
            mean_au, mean_eu, ratio = (_defined_mean([row[key] for row in domains]) for key in COLLAPSE_VALUES)
        collapse.append({"split": split, "mean_au": mean_au, "mean_eu": mean_eu, "eu_over_au": ratio})
    if fitted.eu_scale != 1.0:
        text = f"EU rescaled by r = {fitted.eu_scale:.4g} (mean AU / mean EU on {fitted.images_from} images)"
        tables.notes.append(Note("eu-rescaled", text))

    n_images = {name: int(chosen.sum()) for name, chosen in splits.items() if name != POOLED_OOD}
    return Tabulated(tables.rows, tables.entanglement, collapse, tables.notes, n_images, reliabilities)


def _fallback_notes(tables: _Tables, splits: Mapping[str, np.ndarray], fallbacks: Mapping[str, str]) -> None:
    """A note per aggregation and split that counts the test images the aggregation
    scored by its fallback convention (``border`` of an image with no border, …)."""
    for aggregation, what in fallbacks.items():
        images = tables.statistics.fallbacks.get(aggregation)
        if images is None:
            continue
        for split, chosen in splits.items():
            count = int((images & chosen).sum())
            if count and split != POOLED_OOD:  # the pooled split repeats its domains' images
                text = "{count} {split} test image(s) " + literal(what) + literal(f" (aggregation {aggregation!r})")
                tables.notes.append(Note("aggregation-fallback", text, split=split, count=count))


def _detection(tables: _Tables, splits: Mapping[str, np.ndarray], ood_names: list[str], aggregations) -> None:
    """OODD rows per aggregation: AUROC and FPR95 per OOD domain (against the ID test
    images) and their means over domains as ``ood``; Δ for the conventions' aggregation."""
    if ID_DOMAIN not in splits or not ood_names:
        missing = "ID" if ID_DOMAIN not in splits else "OOD"
        tables.notes.append(Note("skipped", f"{{task}}: skipped, there are no {missing} test images", task="oodd"))
        return
    pooled: dict[str, dict[str, float]] = {}
    below: set[tuple[str, str]] = set()
    for aggregation in aggregations:
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
        tables.notes.append(_below_chance_note(tables, splits, ood_names, pooled, below))


def _below_chance_note(
    tables: _Tables,
    splits: Mapping[str, np.ndarray],
    ood_names: list[str],
    pooled: Mapping[str, Mapping[str, float]],
    below: set[tuple[str, str]],
) -> Note:
    """One note for every OODD AUROC below 0.5: what it means, and each such measure's
    ``ood`` AUROC with its other image scores beside it (with ``mean``, the image's mean
    ``U``, even when it was not asked for: the means are at hand)."""
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


def _failure_detection(
    tables: _Tables,
    splits: Mapping[str, np.ndarray],
    ood_names: list[str],
    aggregations: Sequence[str],
    scored: np.ndarray,
) -> None:
    """FD rows per aggregation: AURC, E-AURC, AUGRC and E-AUGRC per split and on ``all`` test images;
    Δ for the primary aggregation."""
    risk = tables.statistics.risk
    has_risk = ~np.isnan(risk)  # images without a rater label are noted with AMB and CAL
    fd_splits = {**splits, ALL_TEST: scored}
    domain_mean = tables.conventions.ood_split == "domain-mean"
    for aggregation in aggregations:
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
            if split == POOLED_OOD and domain_mean and per_split:
                metrics = _domain_means(per_split, ood_names)
            per_split[split] = metrics
            for measure in MEASURES:
                for metric in FD_METRICS:
                    tables.add("fd", split, measure, aggregation, metric, metrics[metric][measure])
            if aggregation == tables.primary:
                tables.add_delta(TASKS["fd"], split, metrics["aurc"], images)


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
