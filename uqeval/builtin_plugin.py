"""uqeval's own contributions, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from uqeval import aggregation
from uqeval.aggregation import AggregationFallback, Aggregator
from uqeval.hookspecs import hookimpl
from uqeval.importers.contract import Importer
from uqeval.tasks import TASKS, Task

if TYPE_CHECKING:
    from uqeval.task_tables import TaskTables


@hookimpl
def uqeval_aggregators() -> dict[str, Aggregator]:
    """The built-in aggregation strategies (docs/metrics.md defines each)."""
    strategies = (
        Aggregator("mean", aggregation.mean, "mean of U over the image (voxels of a volume)"),
        Aggregator("sum", aggregation.total, "sum of U over the image (voxels of a volume)"),
        Aggregator(
            "patch_max",
            aggregation.patch_max,
            "largest mean of U over a k×k (volumes: k×k×k) window, k = 10 clamped per axis",
        ),
        Aggregator(
            "threshold",
            aggregation.threshold,
            "mean of U where U ≥ τ, τ fitted on calibration images",
            fitted=True,
        ),
        Aggregator(
            "area",
            aggregation.area,
            "ΣU / A, A the predicted foreground area (pixels or voxels)",
            fallback=AggregationFallback(
                aggregation.no_foreground, "have no predicted foreground (A = 0): their score is ΣU, not ΣU / A"
            ),
        ),
        Aggregator(
            "border",
            aggregation.border,
            "ΣU / B, B the border of the prediction (4-neighbour pixel or 6-neighbour voxel pairs)",
            fallback=AggregationFallback(
                aggregation.no_border, "have no predicted border (B = 0): their score is ΣU, not ΣU / B"
            ),
        ),
    )
    # Every built-in also scores volumes streamed in z-slabs.
    return {strategy.name: replace(strategy, slabs=aggregation.SLAB_FORMS[strategy.name]) for strategy in strategies}


@hookimpl
def uqeval_importers() -> dict[str, Importer]:
    """The built-in importers (docs/import.md); each module is imported when it is asked for."""
    from uqeval.importers.files import import_files
    from uqeval.importers.nnunet import import_nnunet
    from uqeval.importers.values import import_values

    return {
        "nnunet": Importer("nnunet", import_nnunet),
        "files": Importer("files", import_files),
        "values": Importer("values", import_values),
    }


@hookimpl
def uqeval_tasks() -> dict[str, Task]:
    """The built-in tasks (docs/metrics.md): OOD detection, ambiguity modelling, calibration,
    failure detection and predictive quality."""
    return {name: replace(task, rows=_rows_of(name)) for name, task in TASKS.items()}


def _rows_of(name: str) -> Callable[[TaskTables], None]:
    """Task ``name``'s rows function, which imports the metrics (and with them numba) when
    it is first called: listing the tasks (``uqeval plugins``) needs neither."""

    def rows(tables: TaskTables) -> None:
        from uqeval.builtin_tasks import BUILTIN_ROWS

        BUILTIN_ROWS[name](tables)

    rows.__name__ = rows.__qualname__ = f"{name}_rows"
    return rows
