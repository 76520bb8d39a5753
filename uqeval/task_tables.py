"""The tables a task fills: its rows, its Δ and its notes, from every image's statistics.

Each task's ``rows`` function (:class:`uqeval.tasks.Task`) gets one :class:`TaskTables`
holding what it may read (the per-image statistics of every image, the test splits,
the conventions, the pooled sums of the engine) and what it writes
(:meth:`TaskTables.add`, :meth:`TaskTables.add_delta`, :meth:`TaskTables.note`). A
plugin's task gets the same object as a built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uqeval.conventions import Conventions
from uqeval.image_statistics import ImageStatistics
from uqeval.metrics.calibration import ConfidenceHistogram, Reliability
from uqeval.metrics.entanglement import entanglement_delta
from uqeval.names import ID_DOMAIN, MEASURES, POOLED_OOD
from uqeval.notes import Note, literal
from uqeval.tasks import Task


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


def defined_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN if none is."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def domain_means(
    per_split: Mapping[str, Mapping[str, Mapping[str, float]]], ood_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``ood``'s metrics under ``ood_split="domain-mean"``: per metric and measure, the
    unweighted mean of the OOD domains' values (those defined; NaN when none is)."""
    means: dict[str, dict[str, float]] = {}
    for metric in next(iter(per_split.values())):
        means[metric] = {}
        for measure in next(iter(per_split.values()))[metric]:
            values = [per_split[name][metric][measure] for name in ood_names if name in per_split]
            means[metric][measure] = defined_mean(values)
    return means


@dataclass
class TaskTables:
    """The rows, Δ rows and notes of one run, filled task by task.

    Attributes
    ----------
    statistics : ImageStatistics
        Of every image, in store order; a plugin task's own sums are in
        ``statistics.tasks[task_name]``.
    splits : dict
        Split name → (image,) bool mask of its test images: ``id``, each OOD domain,
        and ``ood`` (every OOD image).
    scored : (image,) bool
        Every test image (FD's ``all`` split).
    conventions : Conventions
    aggregations : tuple of str
        The image scores scored; ``primary``, Δ's, among them.
    primary : str
    absent : frozenset of str
        Measures a maps store does not give: their rows are dropped afterwards, and
        notes that name measures one by one leave them out.
    calibration_sums : mapping or None
        ``[measure][split]``: the (bins, 3) calibration tables of the split's images summed.
    histograms : mapping or None
        Per measure, the test pixels' confidence histogram, one table per domain of
        ``histogram_domains`` (the pooled equal-mass ACE).
    rows, entanglement, notes : list
        What the tasks add.
    reliability : dict
        ``(split, measure)`` → the reliability diagram CAL draws.
    fitted : Fitted or None
        The parameters fitted on calibration images (:class:`uqeval.scoring.fitting.Fitted`).
    """

    statistics: ImageStatistics
    splits: dict[str, np.ndarray]
    scored: np.ndarray
    domains: np.ndarray
    conventions: Conventions
    aggregations: tuple[str, ...]
    primary: str
    notes: list[Note] = field(default_factory=list)
    absent: frozenset[str] = frozenset()
    calibration_sums: Mapping[str, Mapping[str, np.ndarray]] | None = None
    histograms: Mapping[str, ConfidenceHistogram] | None = None
    histogram_domains: Sequence[str] = ()
    rows: list[dict] = field(default_factory=list)
    entanglement: list[dict] = field(default_factory=list)
    reliability: dict[tuple[str, str], Reliability] = field(default_factory=dict)
    negative: dict[Task, list[str]] = field(default_factory=dict)
    fitted: Any = None

    @property
    def ood_names(self) -> list[str]:
        """The OOD domains with test images, in split order."""
        return [name for name in self.splits if name not in (ID_DOMAIN, POOLED_OOD)]

    @property
    def domain_mean(self) -> bool:
        """Whether ``ood`` is the mean over OOD domains (``ood_split="domain-mean"``)
        rather than every OOD image pooled."""
        return self.conventions.ood_split == "domain-mean"

    def add(self, task: str, split: str, measure: str, aggregation: str, metric: str, value: float) -> None:
        """One row: ``task``'s ``metric`` of ``measure`` on ``split`` (``aggregation``: ``none`` unless aggregated)."""
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

    def note(self, kind: str, text: str, **fields: object) -> None:
        """A note; ``text`` may hold ``{task}``, ``{split}``, ``{count}`` … filled from ``fields``
        (:class:`uqeval.notes.Note`); wrap a store's strings with :func:`uqeval.notes.literal`."""
        self.notes.append(Note(kind, text, **fields))

    def zero_measures(self, images: np.ndarray) -> list[str]:
        """The measures that are 0 at every pixel of these images (none without images)."""
        if not images.any():
            return []
        return [measure for measure in MEASURES if not self.statistics.means[measure][images].any()]

    def note_negative_scores(self) -> None:
        """One note per task whose score is negative on some split (Δ then leaves [−1, 1])."""
        for task, splits in self.negative.items():
            text = (
                f"{{task}}: {task.metric} is negative on {literal(', '.join(splits))}; with a negative score Δ "
                "leaves [−1, 1] (its range is (−5, 3])"
            )
            self.notes.append(Note("negative-score", text, task=task.name))

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
        if not task.has_delta:
            raise ValueError(f"task {task.name!r} has no correct and wrong measures, so no Δ")
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
