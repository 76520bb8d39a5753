"""The downstream tasks as data.

Each :class:`Task` says which measure theory calls correct for it, which are wrong,
its metric and whether lower is better; the entanglement Δ of a task compares the
correct measure with the best wrong one (docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """A downstream task of the uncertainty measures.

    Attributes
    ----------
    name : str
        Key in rows (``oodd``, ``amb``, ``cal``, ``fd``, ``pq``).
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
        What data the task cannot do without.
    aggregated : bool
        Whether the task ranks images by their scores, so that it is scored once per
        aggregation (rows carry their aggregation) and Δ uses the conventions' one.
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

    @property
    def has_delta(self) -> bool:
        """Whether the task compares a correct measure with wrong ones (Δ)."""
        return self.correct is not None


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
