"""The last step of scoring: per-image statistics → tidy rows, Δ and collapse per split.

Each task adds its own rows (its ``rows`` function, :class:`uqeval.tasks.Task`) to one
:class:`~uqeval.task_tables.TaskTables`; what is common to every task (notes on
unlabelled images and aggregation fallbacks, segmentation quality, epistemic
collapse) is added here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from uqeval.builtin_tasks import FD_METRICS
from uqeval.conventions import Conventions
from uqeval.image_statistics import ImageStatistics
from uqeval.metrics.ambiguity import NO_PIXELS
from uqeval.metrics.calibration import ConfidenceHistogram, Reliability
from uqeval.metrics.entanglement import collapse_ratio
from uqeval.names import IGNORE_LABEL, NO_AGGREGATION, POOLED_OOD, TEST
from uqeval.notes import Note, literal
from uqeval.scoring.fitting import Fitted
from uqeval.scoring.sample_rows import sample_score_rows
from uqeval.task_tables import TaskTables, defined_mean, split_masks
from uqeval.tasks import Task

#: The values of a collapse row.
COLLAPSE_VALUES = ("mean_au", "mean_eu", "eu_over_au")


@dataclass(frozen=True)
class Tabulated:
    """The tables of one scoring run (the fields of :class:`uqeval.Scores` of the same names)."""

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[Note]
    n_images: dict[str, int]
    reliability: dict[tuple[str, str], Reliability]


def tabulate(
    statistics: ImageStatistics,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    fitted: Fitted,
    tasks: Sequence[Task],
    aggregations: Sequence[str],
    primary: str,
    conventions: Conventions,
    notes: Sequence[Note] = (),
    histograms: Mapping[str, ConfidenceHistogram] | None = None,
    histogram_domains: Sequence[str] = (),
    fallbacks: Mapping[str, str] | None = None,
    calibration_sums: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    absent_measures: Sequence[str] = (),
    sample_tasks: Sequence[str] | None = None,
) -> Tabulated:
    """Tidy rows, Δ and collapse from the per-image statistics of every image.

    Only ``test`` images are scored, per split: ``id``, each OOD domain, and ``ood``
    (OODD: the mean over OOD domains; AMB, CAL, FD and PQ: all OOD images pooled, or the
    mean over domains with ``ood_split="domain-mean"``); FD and PQ also on ``all``.

    Parameters
    ----------
    statistics : ImageStatistics
        Of every image, in store order.
    domains, roles : (image,) str
    fitted : Fitted
    tasks : sequence of Task
        The tasks the plan kept, in order; each adds its rows.
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
    sample_tasks : sequence of str, optional
        The tasks (``oodd``, ``fd``) whose rows of the sample scores are made; default
        the names of ``tasks`` (the bootstrap makes OODD's and FD's other rows itself).
    """
    scored = roles == TEST
    splits = split_masks(domains, scored)
    tables = TaskTables(
        statistics,
        splits,
        scored,
        domains,
        conventions,
        tuple(aggregations),
        primary,
        notes=list(notes),
        absent=frozenset(absent_measures),
        calibration_sums=calibration_sums,
        histograms=histograms,
        histogram_domains=histogram_domains,
        fitted=fitted,
    )
    unlabelled_noted = False
    for task in tasks:
        if task.needs_labels and not unlabelled_noted:
            _note_unlabelled(tables)
            unlabelled_noted = True
        if task.rows is not None:
            task.rows(tables)
    if not unlabelled_noted:
        _note_unlabelled(tables)

    # The image scores of the samples themselves: OODD and FD rows beside the measures', no Δ.
    sample_rows, sample_notes = sample_score_rows(
        statistics.sample_scores,
        splits,
        tasks=[task.name for task in tasks] if sample_tasks is None else sample_tasks,
        scored=scored,
        risk=statistics.risk,
        fd_metrics=FD_METRICS,
        domain_mean=tables.domain_mean,
    )
    tables.rows += sample_rows
    tables.notes += sample_notes

    if any(task.aggregated for task in tasks):
        _fallback_notes(tables, splits, fallbacks or {})

    if statistics.segmentation is not None:
        for split, chosen in splits.items():
            for metric in ("dice", "ged", "hungarian_iou"):
                values = getattr(statistics.segmentation, metric)[chosen]
                # NaN: an image whose pairs of empty masks were all skipped (empty_pair="skip").
                defined = ~np.isnan(values)
                value = float(values.mean()) if defined.all() else defined_mean(values[defined].tolist())
                tables.add("segmentation", split, NO_AGGREGATION, NO_AGGREGATION, metric, value)

    tables.note_negative_scores()
    collapse = []
    ood_names = tables.ood_names
    for split, chosen in splits.items():
        mean_au = float(statistics.means["au"][chosen].mean())
        mean_eu = float(statistics.means["eu"][chosen].mean())
        ratio = collapse_ratio(mean_eu, mean_au)
        if split == POOLED_OOD and tables.domain_mean:
            # As the study's tables: each domain's values (the ratio of its image means), averaged over domains.
            by_domain = [row for row in collapse if row["split"] in ood_names]
            mean_au, mean_eu, ratio = (defined_mean([row[key] for row in by_domain]) for key in COLLAPSE_VALUES)
        collapse.append({"split": split, "mean_au": mean_au, "mean_eu": mean_eu, "eu_over_au": ratio})
    if fitted.eu_scale != 1.0:
        text = f"EU rescaled by r = {fitted.eu_scale:.4g} (mean AU / mean EU on {fitted.images_from} images)"
        tables.notes.append(Note("eu-rescaled", text))

    n_images = {name: int(chosen.sum()) for name, chosen in splits.items() if name != POOLED_OOD}
    return Tabulated(tables.rows, tables.entanglement, collapse, tables.notes, n_images, tables.reliability)


def _note_unlabelled(tables: TaskTables) -> None:
    """A note counting the test images without a rater label at any pixel (left out of AMB, CAL and FD)."""
    statistics = tables.statistics
    if statistics.ncc is None:
        return
    unlabelled = int((tables.scored & (statistics.ncc["au"].state == NO_PIXELS)).sum())
    if unlabelled:
        text = (
            f"{{count}} test image(s) have no rater label at any pixel (all {IGNORE_LABEL}); "
            "they are left out of AMB, CAL and FD"
        )
        tables.notes.append(Note("unlabelled-images", text, count=unlabelled))


def _fallback_notes(tables: TaskTables, splits: Mapping[str, np.ndarray], fallbacks: Mapping[str, str]) -> None:
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
