"""uqeval's own contributions, registered through the same hooks as any plugin."""

from __future__ import annotations

from uqeval import aggregation
from uqeval.aggregation import AggregationFallback, Aggregator
from uqeval.hookspecs import hookimpl


@hookimpl
def uqeval_aggregators() -> dict[str, Aggregator]:
    """The built-in aggregation strategies (docs/metrics.md defines each)."""
    return {
        strategy.name: strategy
        for strategy in (
            Aggregator("mean", aggregation.mean, "mean of U over the image"),
            Aggregator("sum", aggregation.total, "sum of U over the image"),
            Aggregator("patch_max", aggregation.patch_max, "largest mean of U over a k×k window (k = 10, clamped)"),
            Aggregator(
                "threshold",
                aggregation.threshold,
                "mean of U where U ≥ τ, τ fitted on calibration images",
                fitted=True,
            ),
            Aggregator(
                "area",
                aggregation.area,
                "ΣU / A, A the predicted foreground area (pixels)",
                fallback=AggregationFallback(
                    aggregation.no_foreground, "have no predicted foreground (A = 0): their score is ΣU, not ΣU / A"
                ),
            ),
            Aggregator(
                "border",
                aggregation.border,
                "ΣU / B, B the border length of the prediction (pixel pairs)",
                fallback=AggregationFallback(
                    aggregation.no_border, "have no predicted border (B = 0): their score is ΣU, not ΣU / B"
                ),
            ),
        )
    }
