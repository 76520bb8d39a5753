"""The downstream tasks: what each one needs, and how it turns statistics into rows.

A :class:`Task` is contributed through the plugin hook ``uqeval_tasks``, the built-in
ones (OODD, AMB, CAL, FD) by :mod:`uqeval.builtin_plugin` like any third party's. It
says which measure theory calls correct for it and which are wrong (for the
entanglement Δ, docs/metrics.md), what data it cannot do without, and two functions:

* ``statistics(inputs) -> {name: (image, ...) array}``: the per-image statistics it
  needs from a batch of maps (:class:`TaskInputs`). Each must be a **sum over
  pixels** (voxels): a volume read in z-slabs gets the sum of its slabs' values, and
  images are concatenated, so the statistics of a store stay a few numbers per image.
  The built-in tasks need none of their own: they use the engine's shared ones
  (image scores, NCC, calibration tables, failure risk).
* ``rows(tables)``: adds the task's rows (and Δ) from the statistics of every image,
  through :class:`uqeval.task_tables.TaskTables`.

:data:`TASKS` holds the built-in tasks' descriptions, which the report uses to title
and caption their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uqeval.names import NO_AGGREGATION

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class TaskInputs:
    """What a task's ``statistics`` function sees of a batch of images (or of a slab of one volume).

    Attributes
    ----------
    mean : (image, class, y, x) float32
        The mean prediction over every sample (``(image, class, z, y, x)`` for volumes).
    au, eu, tu : (image, y, x) float32
        The uncertainty maps in nats, as decomposed (before any EU rescaling).
    pred : (image, y, x) int
        The predicted class, the argmax of ``mean``.
    labels : (image, rater, y, x) int or None
        The raters' labels (``-1`` where ignored); None when the store has none.
    samples : (image, eu, au, class, y, x) float32 or None
        The samples themselves, only for a task with ``needs_samples`` and a cube store.
    n_classes, background : int
    """

    mean: np.ndarray
    au: np.ndarray
    eu: np.ndarray
    tu: np.ndarray
    pred: np.ndarray
    labels: np.ndarray | None
    samples: np.ndarray | None
    n_classes: int
    background: int


@dataclass(frozen=True)
class Task:
    """A downstream task of the uncertainty measures.

    Attributes
    ----------
    name : str
        Key in rows (``oodd``, ``amb``, ``cal``, ``fd``, ``pq``, or a plugin's).
    title : str
    metric : str
        Metric that ranks the measures (``auroc``, ``ncc``, ``ace``, ``aurc``), or the
        task's headline metric (``pq``: ``nll``).
    correct : str or None
        The measure theory says should do best; None for a task that scores no
        uncertainty measure (``pq`` scores the mean prediction), which has no Δ.
    wrong : tuple of str
        The others; ``U_w`` is the best of them (empty without ``correct``).
    lower_is_better : bool
    needs_labels, needs_ood : bool
        What data the task cannot do without: it is skipped, with a note, without it.
    aggregated : bool
        Whether the task ranks images by their scores, so that it is scored once per
        aggregation (rows carry their aggregation) and Δ uses the conventions' one.
    rows : callable or None
        ``rows(tables)``: adds the task's rows and Δ (:class:`uqeval.task_tables.TaskTables`).
    statistics : callable or None
        ``statistics(inputs) -> dict``: the task's own per-image sums of a batch
        (:class:`TaskInputs`); None for a task that uses only the engine's statistics.
    needs_samples : bool
        Whether ``statistics`` reads :attr:`TaskInputs.samples` (a maps store has none:
        the task is then skipped with a note).
    """

    name: str
    title: str
    metric: str
    correct: str | None
    wrong: tuple[str, ...]
    lower_is_better: bool
    needs_labels: bool
    needs_ood: bool
    aggregated: bool = False
    rows: Callable[[Any], None] | None = None
    statistics: Callable[[TaskInputs], dict[str, Any]] | None = None
    needs_samples: bool = False

    @property
    def has_delta(self) -> bool:
        """Whether the task has an entanglement Δ (a correct and a wrong measure)."""
        return self.correct is not None and bool(self.wrong)


TASKS: dict[str, Task] = {
    "oodd": Task(
        "oodd", "OOD detection", "auroc", "eu", ("au",), False, needs_labels=False, needs_ood=True, aggregated=True
    ),
    "amb": Task("amb", "ambiguity modelling", "ncc", "au", ("eu",), False, needs_labels=True, needs_ood=False),
    "cal": Task("cal", "calibration", "ace", "tu", ("au", "eu"), True, needs_labels=True, needs_ood=False),
    # TU is expected to win failure detection: a prediction fails where it is wrong, and
    # the predictive entropy covers both causes, ambiguous data (AU) and a model out of
    # its depth (EU); either alone misses the other's failures.
    "fd": Task(
        "fd", "failure detection", "aurc", "tu", ("au", "eu"), True, needs_labels=True, needs_ood=False, aggregated=True
    ),
    # The predictive quality of the mean prediction: Brier, NLL, ECE, before and after
    # temperature scaling; it ranks no uncertainty measure, so it has no Δ.
    "pq": Task(
        "pq", "predictive quality of the mean prediction", "nll", None, (), True, needs_labels=True, needs_ood=False
    ),
}


def task_description(name: str, rows: Iterable[Mapping[str, Any]] = ()) -> Task:
    """How to show task ``name``'s rows: a built-in task's own description, or one read
    off a plugin task's rows (title its name, metric its first row's, no Δ, aggregated
    when a row carries an aggregation), so that a saved report shows without the plugin.
    """
    if name in TASKS:
        return TASKS[name]
    own = [row for row in rows if row["task"] == name]
    metric = str(own[0]["metric"]) if own else ""
    aggregated = any(row["aggregation"] != NO_AGGREGATION for row in own)
    return Task(name, name, metric, None, (), False, needs_labels=False, needs_ood=False, aggregated=aggregated)
