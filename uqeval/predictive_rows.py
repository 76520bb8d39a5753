"""The rows of the ``pq`` task: the predictive quality of the mean prediction per split.

Each split's Brier, NLL and ECE pool its test images' (rater, pixel) pairs
(:func:`uqeval.metrics.predictive.predictive_metrics`): on ``id``, each OOD domain,
``ood`` (every OOD image pooled, or the mean over OOD domains with
``ood_split="domain-mean"``, as CAL) and ``all`` test images (as FD). The fitted
temperature is one row, ``temperature`` on ``id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from uqeval.image_statistics import ImageStatistics
from uqeval.metrics.predictive import PQ_MEASURE, PQ_METRICS, predictive_metrics
from uqeval.names import ALL_TEST, ID_DOMAIN, NO_AGGREGATION, POOLED_OOD
from uqeval.notes import Note, literal
from uqeval.task_tables import TaskTables

if TYPE_CHECKING:
    from uqeval.scoring.fitting import Fitted


def pq_rows(
    statistics: ImageStatistics,
    splits: Mapping[str, np.ndarray],
    ood_names: Sequence[str],
    scored: np.ndarray,
    fitted: Fitted,
    *,
    domain_mean: bool = False,
) -> tuple[list[dict], list[Note]]:
    """The ``pq`` rows and notes of a run.

    Parameters
    ----------
    statistics : ImageStatistics
        With :attr:`~uqeval.image_statistics.ImageStatistics.predictive`.
    splits : mapping
        ``id``, each OOD domain and ``ood`` → (image,) bool of their test images
        (:func:`uqeval.task_tables.split_masks`).
    ood_names : sequence of str
        The OOD domains.
    scored : (image,) bool
        Every test image (split ``all``).
    fitted : Fitted
        Its ``temperature`` gives the ``temperature`` row (the ``_ts`` sums come with
        ``statistics``); without it that row is left out, with a note unless nothing
        was fitted at all (no ID image: the ``no-id`` warning says so).
    domain_mean : bool
        ``ood`` as the mean over OOD domains of their values (NaN ones left out).
    """
    sums = statistics.predictive
    rows: list[dict] = []
    notes: list[Note] = []
    per_split: dict[str, dict[str, float]] = {}
    for split, chosen in {**splits, ALL_TEST: scored}.items():
        metrics = predictive_metrics(sums, chosen)
        if split == POOLED_OOD and domain_mean:
            metrics = {name: _defined_mean([per_split[domain][name] for domain in ood_names]) for name in metrics}
        per_split[split] = metrics
        rows += [_row(split, name, metrics[name]) for name in PQ_METRICS if name in metrics]
    temperature = fitted.temperature
    if temperature is None and fitted.n_images:  # without ID images, the no-id warning says nothing is fitted
        text = "{task}: temperature scaling left out: no ID pixel with a rater label to fit the temperature on"
        notes.append(Note("skipped", text, task="pq"))
    elif temperature is not None:
        rows.append(_row(ID_DOMAIN, "temperature", temperature.temperature))
        if temperature.note:
            notes.append(
                Note("temperature-bound", "{task}: temperature scaling: " + literal(temperature.note), task="pq")
            )
    return rows, notes


def predictive_rows(tables: TaskTables) -> None:
    """The ``pq`` task's rows function (:class:`uqeval.tasks.Task`): :func:`pq_rows` of a run."""
    if tables.statistics.predictive is None:
        return
    rows, notes = pq_rows(
        tables.statistics,
        tables.splits,
        tables.ood_names,
        tables.scored,
        tables.fitted,
        domain_mean=tables.domain_mean,
    )
    tables.rows += rows
    tables.notes += notes


def _row(split: str, metric: str, value: float) -> dict:
    return {
        "task": "pq",
        "split": split,
        "measure": PQ_MEASURE,
        "aggregation": NO_AGGREGATION,
        "metric": metric,
        "value": float(value),
    }


def _defined_mean(values: Sequence[float]) -> float:
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")
