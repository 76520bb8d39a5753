"""The per-image sums of the tasks that bring their own ``statistics`` function.

A plugin's task (:class:`uqeval.tasks.Task`) sees each batch of images, or each z-slab
of a volume, as a :class:`~uqeval.tasks.TaskInputs`, and returns sums per image. Here
they are computed, checked and, for a volume read in slabs, added up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.names import MEASURES
from uqeval.scoring.sources import Loaded
from uqeval.tasks import Task, TaskInputs


def task_sums(
    tasks: Sequence[Task],
    loaded: Loaded,
    maps: Mapping[str, np.ndarray],
    *,
    n_classes: int,
    background: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Each task's per-image sums of one batch (image axis first, float64).

    Parameters
    ----------
    tasks : sequence of Task
        Those with a ``statistics`` function.
    loaded : Loaded
        The batch as read (its labels, and its samples for a task that needs them).
    maps : mapping
        ``au``, ``eu``, ``tu``, ``pred`` and ``mean`` as decomposed.

    Raises
    ------
    UQEvalError
        When a task's function fails or returns something other than a dict of arrays
        with one row per image; the message names the task.
    """
    if not tasks:
        return {}
    samples = None
    if any(task.needs_samples for task in tasks):
        samples = loaded.in_planes().cubes
    n_images = maps["pred"].shape[0]
    inputs = TaskInputs(
        mean=maps.get("mean"),
        **{measure: maps[measure] for measure in MEASURES},
        pred=maps["pred"],
        labels=loaded.labels,
        samples=samples,
        n_classes=n_classes,
        background=background,
    )
    sums = {}
    for task in tasks:
        try:
            found = task.statistics(inputs)
        except UQEvalError:
            raise
        except Exception as error:
            raise UQEvalError(f"task {task.name!r}: its statistics failed: {type(error).__name__}: {error}") from error
        sums[task.name] = _checked(task.name, found, n_images)
    return sums


def _checked(name: str, found: object, n_images: int) -> dict[str, np.ndarray]:
    if not isinstance(found, Mapping):
        raise UQEvalError(f"task {name!r}: statistics returned {type(found).__name__}; expected a dict of arrays")
    checked = {}
    for key, values in found.items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 0 or array.shape[0] != n_images:
            raise UQEvalError(
                f"task {name!r}: statistic {key!r} has shape {array.shape}; "
                f"expected one row per image ({n_images}, ...)"
            )
        checked[str(key)] = array
    return checked


class VolumeTaskSums:
    """The tasks' sums of one volume, added slab by slab."""

    def __init__(self, tasks: Sequence[Task], *, n_classes: int, background: int) -> None:
        self.tasks = tuple(tasks)
        self.n_classes, self.background = n_classes, background
        self._sums: dict[str, dict[str, np.ndarray]] = {}

    def add(self, loaded: Loaded, maps: Mapping[str, np.ndarray]) -> None:
        """Add a slab: ``maps`` with an image axis of 1, as :func:`task_sums` takes them."""
        slab = task_sums(self.tasks, loaded, maps, n_classes=self.n_classes, background=self.background)
        for task, sums in slab.items():
            kept = self._sums.setdefault(task, {})
            for key, values in sums.items():
                if key in kept and kept[key].shape != values.shape:
                    raise UQEvalError(
                        f"task {task!r}: statistic {key!r} changed shape between slabs of a volume "
                        f"({kept[key].shape} then {values.shape}); it must be a sum of fixed shape"
                    )
                kept[key] = kept[key] + values if key in kept else values.copy()

    def result(self) -> dict[str, dict[str, np.ndarray]]:
        return self._sums
