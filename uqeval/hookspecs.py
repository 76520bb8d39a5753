"""The hooks a uqeval plugin can implement.

A plugin is a module (or any object) with functions decorated ``@uqeval.hookimpl`` and
named after the hooks below, registered under the entry-point group ``uqeval``::

    [project.entry-points.uqeval]
    my_plugin = "my_package.uqeval_plugin"

Every hook returns a dict of contributions, name → thing; several plugins may
contribute to the same hook, but a name may be taken only once. ``docs/plugins.md``
has a worked example of each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import typer

    from uqeval.aggregate import Aggregator
    from uqeval.methods import AUMethod, DatasetSource, EUMethod

#: Marks the hook specifications below.
hookspec = pluggy.HookspecMarker("uqeval")
#: Marks a plugin's implementation of a hook: ``@uqeval.hookimpl``.
hookimpl = pluggy.HookimplMarker("uqeval")


@hookspec
def uqeval_aggregators() -> dict[str, Callable[[np.ndarray, np.ndarray], float] | Aggregator]:
    """Image-score aggregations, by name (the name given to ``--aggregation``).

    The simple form is a function of one image, ``f(u, pred) -> float``: ``u`` is its
    uncertainty map (y, x) float32 in nats, ``pred`` its predicted classes (y, x)
    integers. The batched form is a :class:`uqeval.aggregate.Aggregator` whose function
    takes (image, y, x) batches and an :class:`~uqeval.aggregate.AggregationParameters`.
    """


@hookspec
def uqeval_au_methods() -> dict[str, AUMethod]:
    """Aleatoric-uncertainty methods (see :class:`uqeval.methods.AUMethod`), by name."""


@hookspec
def uqeval_eu_methods() -> dict[str, EUMethod]:
    """Epistemic-uncertainty methods (see :class:`uqeval.methods.EUMethod`), by name."""


@hookspec
def uqeval_datasets() -> dict[str, DatasetSource]:
    """Datasets (see :class:`uqeval.methods.DatasetSource`), by name."""


@hookspec
def uqeval_cli(app: typer.Typer) -> Any:
    """Add commands to the ``uqeval`` command line: ``@app.command()`` on your functions.

    Called once, before the command line is parsed; the return value is ignored.
    """
