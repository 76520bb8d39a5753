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
        Key in rows (``oodd``, ``amb``, ``cal``).
    title : str
    metric : str
        Metric that ranks the measures (``auroc``, ``ncc``, ``ace``).
    correct : str
        The measure theory says should do best.
    wrong : tuple of str
        The others; ``U_w`` is the best of them.
    lower_is_better : bool
    needs_labels, needs_ood : bool
        What data the task cannot do without.
    """

    name: str
    title: str
    metric: str
    correct: str
    wrong: tuple[str, ...]
    lower_is_better: bool
    needs_labels: bool
    needs_ood: bool


TASKS: dict[str, Task] = {
    "oodd": Task("oodd", "OOD detection", "auroc", "eu", ("au",), False, needs_labels=False, needs_ood=True),
    "amb": Task("amb", "ambiguity modelling", "ncc", "au", ("eu",), False, needs_labels=True, needs_ood=False),
    "cal": Task("cal", "calibration", "ace", "tu", ("au", "eu"), True, needs_labels=True, needs_ood=False),
}
