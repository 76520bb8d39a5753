"""uqeval's own contributions, registered through the same hooks as any plugin."""

from __future__ import annotations

from uqeval.aggregate import AGGREGATORS, Aggregator
from uqeval.hookspecs import hookimpl


@hookimpl
def uqeval_aggregators() -> dict[str, Aggregator]:
    """The built-in aggregations (and any added in code with :func:`uqeval.aggregate.register_aggregator`)."""
    return dict(AGGREGATORS)
