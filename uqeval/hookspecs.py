"""The hooks a uqeval plugin can implement.

A plugin is a module (or any object) with functions decorated ``@uqeval.hookimpl`` and
named after the hooks below, registered under the entry-point group ``uqeval``::

    [project.entry-points.uqeval]
    my_plugin = "my_package.uqeval_plugin"

Every hook but :func:`uqeval_cli` returns a dict of contributions, name → thing;
several plugins may contribute to the same hook, but a name may be taken only once.
``docs/plugins.md`` has a worked example of each.

What holds for every contribution hook:

* **When it is called**: on the first lookup of its kind in a process (``uqeval score``
  asks for aggregations before it reads the store, ``uqeval train`` for methods and
  datasets, ``uqeval plugins`` for all), never at import.
* **Caching**: once per process; the contributions are kept until a plugin is
  registered (:meth:`uqeval.plugins.PluginManager.register`), after which the next
  lookup calls the hook again.
* **On an error**: a hook that raises, returns something other than a dict, or offers
  something that breaks its contract is recorded as a problem of that plugin
  (``uqeval plugins`` shows it, every command warns once on stderr); the plugin's other
  hooks and every other plugin still count.
* **On a duplicate name**: a name a built-in already has is left out (the built-in
  wins); a name two plugins offer is left out for both, and using it is an error that
  names both plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import typer

    from uqeval.aggregation import Aggregator
    from uqeval.contracts import AUMethod, DatasetSource, EUMethod
    from uqeval.importers.contract import Importer, ImportSummary
    from uqeval.tasks import Task

#: Marks the hook specifications below.
hookspec = pluggy.HookspecMarker("uqeval")
#: Marks a plugin's implementation of a hook: ``@uqeval.hookimpl``.
hookimpl = pluggy.HookimplMarker("uqeval")


@hookspec
def uqeval_aggregators() -> dict[str, Callable[[np.ndarray, np.ndarray], float] | Aggregator]:
    """Image-score aggregations, by name (the name given to ``--aggregation``).

    The simple form is a function of one image, ``f(u, pred) -> float``: ``u`` is its
    uncertainty map (y, x) float32 in nats, ``pred`` its predicted classes (y, x)
    integers; for a volume both are (z, y, x). The batched form is a
    :class:`uqeval.Aggregator` whose function takes (image, y, x) or (image, z, y, x)
    batches and an :class:`~uqeval.aggregation.AggregationParameters`.

    Called on the first aggregation lookup (``uqeval score`` resolves
    ``--aggregation`` before reading the store); cached per process. Errors and
    duplicate names: see the module docstring.
    """


@hookspec
def uqeval_au_methods() -> dict[str, AUMethod]:
    """Aleatoric-uncertainty methods (see :class:`uqeval.AUMethod`), by name.

    Called on the first AU-method lookup (``uqeval train --au``, ``uqeval plugins``);
    cached per process. Each is checked against the contract; errors and duplicate
    names: see the module docstring.
    """


@hookspec
def uqeval_eu_methods() -> dict[str, EUMethod]:
    """Epistemic-uncertainty methods (see :class:`uqeval.EUMethod`), by name.

    Called on the first EU-method lookup (``uqeval train --eu``, ``uqeval plugins``);
    cached per process. Each is checked against the contract; errors and duplicate
    names: see the module docstring.
    """


@hookspec
def uqeval_datasets() -> dict[str, DatasetSource]:
    """Datasets (see :class:`uqeval.DatasetSource`), by name.

    Called on the first dataset lookup (``uqeval train --data``, ``uqeval plugins``);
    cached per process, so a dataset should load its files lazily, in
    :meth:`~uqeval.DatasetSource.samples`. Each is checked against the contract;
    errors and duplicate names: see the module docstring.
    """


@hookspec
def uqeval_importers() -> dict[str, Importer | Callable[..., ImportSummary]]:
    """Importers of predictions on disk, by format name (``uqeval import FORMAT``).

    Each is a :class:`uqeval.Importer` or a plain function ``f(**options) ->
    uqeval.ImportSummary`` whose parameters, annotated for typer, are the command's
    arguments and options (the first line of its docstring describes it). It writes a
    store through :class:`uqeval.CubeWriter` and raises :class:`uqeval.UQEvalError` for
    bad input.

    Called when ``uqeval import`` looks up its formats (and by ``uqeval plugins``),
    never at start-up; cached per process. Errors and duplicate names: see the module
    docstring.
    """


@hookspec
def uqeval_tasks() -> dict[str, Task]:
    """Downstream tasks, by name (the name given to ``--tasks``): each a :class:`uqeval.Task`.

    A task declares what data it needs (labels, OOD images, the samples), the
    per-image sums it computes from each batch of maps (``statistics``, optional) and
    how it turns every image's statistics into rows and Δ (``rows``); see
    :mod:`uqeval.tasks`. The built-in tasks ``oodd``, ``amb``, ``cal`` and ``fd`` come
    through this hook too. Every task found is scored unless ``--tasks`` names some.

    Called when ``uqeval score`` resolves its tasks (and by ``uqeval plugins``); cached
    per process. Errors and duplicate names: see the module docstring.
    """


@hookspec
def uqeval_cli(app: typer.Typer) -> Any:
    """Add commands to the ``uqeval`` command line: ``@app.command()`` on your functions.

    Called once per ``uqeval`` invocation, before the command line is parsed (so keep
    the imports of your commands inside them: ``uqeval --help`` pays for what this
    hook imports); the return value is ignored. A hook that raises is recorded as a
    problem and whatever it added is removed; a command whose name is taken (by a
    built-in or an earlier plugin) is not added, and the problem names who holds it.
    """
