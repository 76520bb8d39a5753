"""The headline of a run in words: one line per task that reads its Δ.

``report.html`` opens with Δ per task and split and, for each task, a line such as
"on ood, EU detects the shift far better than AU (AUROC 1.000 vs 0.120)". The words
follow Δ's scale (docs/metrics.md): Δ = 1 when the correct measure is far better,
0 when it is no better than the best wrong one, below 0 when a wrong one wins.

========================  =====================================
Δ                         reading
========================  =====================================
Δ ≥ 0.5                   the correct measure *far better*
0.1 ≤ Δ < 0.5             the correct measure *somewhat better*
−0.1 < Δ < 0.1            the correct measure *no better*
Δ ≤ −0.1                  the wrong measure better
undefined                 Δ undefined (the notes say why)
========================  =====================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from uqeval.names import ALL_TEST, ID_DOMAIN, POOLED_OOD
from uqeval.report.tables import SUMMARY_SPLITS, format_value
from uqeval.tasks import TASKS
from uqeval.text import shortened

#: Δ from which the correct measure reads as far better, and below which (in size) as no better.
FAR_BETTER, NO_BETTER = 0.5, 0.1
#: What each task's correct measure does, as a verb phrase ("EU detects the shift …").
TASK_PHRASES = {
    "oodd": "detects the shift",
    "amb": "follows the raters' disagreement",
    "cal": "is calibrated",
    "fd": "detects failures",
}
#: The splits a task's reading may be about, first present wins: the split of the
#: terminal's Δ summary (:data:`~uqeval.report.tables.SUMMARY_SPLITS`: all OOD images
#: pooled for OOD detection, the ID test images for ambiguity and calibration, every test
#: image for failure detection), then the ID, pooled OOD and all test images.
READING_SPLITS = {
    task: tuple(dict.fromkeys((split, ID_DOMAIN, POOLED_OOD, ALL_TEST))) for task, split in SUMMARY_SPLITS.items()
}


def _measures(text: str) -> str:
    return "/".join(part.upper() for part in str(text).split("/"))


def delta_reading(row: Mapping[str, Any]) -> str:
    """One entanglement row (``task, split, correct, wrong, u_correct, u_wrong, delta``) in words.

    >>> delta_reading({"task": "oodd", "split": "ood", "correct": "eu", "wrong": "au",
    ...                "u_correct": 1.0, "u_wrong": 0.12, "delta": 0.85})
    'on ood, EU detects the shift far better than AU (AUROC 1.000 vs 0.120)'
    >>> delta_reading({"task": "fd", "split": "id", "correct": "tu", "wrong": "au",
    ...                "u_correct": 0.073, "u_wrong": 0.074, "delta": 0.01})
    'on id, TU detects failures no better than AU (AURC 0.073 vs 0.074; lower is better)'
    """
    task = TASKS.get(str(row["task"]))
    phrase = TASK_PHRASES.get(str(row["task"]), f"does {shortened(row['task'])}")
    correct, wrong = _measures(row["correct"]), _measures(row["wrong"])
    where = "on all test images, " if row["split"] == ALL_TEST else f"on {shortened(row['split'])}, "
    delta = row.get("delta")
    if delta is None or math.isnan(delta):
        return f"{where}Δ is undefined ({correct} against {wrong}; the notes say why)"
    metric = task.metric.upper() if task is not None else "score"
    lower = "; lower is better" if task is not None and task.lower_is_better else ""
    ours, theirs = format_value(row["u_correct"], digits=3), format_value(row["u_wrong"], digits=3)
    if delta <= -NO_BETTER:
        return f"{where}{wrong} {phrase} better than {correct} ({metric} {theirs} vs {ours}{lower}): entangled"
    degree = "far better" if delta >= FAR_BETTER else "somewhat better" if delta >= NO_BETTER else "no better"
    reading = f"{where}{correct} {phrase} {degree} than {wrong} ({metric} {ours} vs {theirs}{lower})"
    if row["task"] == "oodd" and row["u_correct"] is not None and row["u_correct"] < 0.5:
        reading += f"; below 0.5, {correct} ranks OOD images as less uncertain"
    return reading


def headline_rows(entanglement: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Task → the entanglement row its reading is about (:data:`READING_SPLITS`), in task order."""
    by_task: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in entanglement:
        by_task.setdefault(str(row["task"]), {})[str(row["split"])] = row
    chosen = {}
    for task, rows in by_task.items():
        preferred = [split for split in READING_SPLITS.get(task, ()) if split in rows]
        chosen[task] = rows[preferred[0] if preferred else next(iter(rows))]
    return chosen
