"""The plugin manager: built-in contributions, then the ``uqeval`` entry points.

It is built once per process (:func:`plugin_manager`). The built-ins are registered
as a plugin like any other (:mod:`uqeval.builtin_plugin`), so they take exactly the
path a third party's plugin takes. Then every entry point of the group ``uqeval`` is
loaded. A plugin that fails to import, implements a hook that does not exist, or
raises in a hook is recorded as a :class:`PluginProblem` naming it and its
distribution; it breaks only what needs it, and ``uqeval plugins`` shows it.

The environment variable ``UQEVAL_LOAD_PLUGINS`` limits which entry points load: unset
loads all, an empty value none, ``a,b`` only the entry points named ``a`` and ``b``.

The core and the plugins resolve names only here, through the typed getters
(:meth:`PluginManager.aggregator`, :meth:`~PluginManager.au_method`,
:meth:`~PluginManager.eu_method`, :meth:`~PluginManager.dataset`), and only at the
boundary: the scorer resolves its aggregations once, before it reads a pixel.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pluggy

from uqeval import builtin_plugin, hookspecs
from uqeval.aggregation import AggregationParameters, Aggregator, per_image
from uqeval.contracts import AUMethod, DatasetSource, EUMethod
from uqeval.errors import UQEvalError
from uqeval.importers.contract import Importer, first_line
from uqeval.names import NO_AGGREGATION, SAMPLE_AGGREGATION
from uqeval.tasks import Task

#: Entry-point group that plugins register under.
ENTRY_POINT_GROUP = "uqeval"
#: Environment variable limiting the entry points loaded (comma-separated names).
LOAD_PLUGINS_ENV = "UQEVAL_LOAD_PLUGINS"
#: Name of the built-in plugin.
BUILTIN = "uqeval"

#: Aggregation names that the result rows use for something else, and what.
RESERVED_AGGREGATIONS = {
    NO_AGGREGATION: "it marks the rows of per-pixel metrics, which aggregate nothing",
    SAMPLE_AGGREGATION: "it marks the rows of the image scores of the samples (pairwise Dice, CoV)",
}

#: One contribution of each hook, as messages name it.
KINDS_SINGULAR = {
    "uqeval_aggregators": "aggregation",
    "uqeval_au_methods": "AU method",
    "uqeval_eu_methods": "EU method",
    "uqeval_datasets": "dataset",
    "uqeval_importers": "importer",
    "uqeval_tasks": "task",
}
#: What ``uqeval plugins`` reports per hook.
KINDS = {
    "uqeval_aggregators": "aggregators",
    "uqeval_au_methods": "au_methods",
    "uqeval_eu_methods": "eu_methods",
    "uqeval_datasets": "datasets",
    "uqeval_importers": "importers",
    "uqeval_tasks": "tasks",
}


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin and where it comes from."""

    name: str
    distribution: str
    version: str
    module: str

    @property
    def label(self) -> str:
        """``plugin 'name' (distribution version)``, as messages name it (``(in code)`` without a version)."""
        where = f"{self.distribution} {self.version}".strip()
        return f"plugin {self.name!r} ({where})"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be loaded or whose hook failed."""

    plugin: str
    distribution: str
    version: str
    stage: str
    error: str

    def __str__(self) -> str:
        where = f"{self.distribution} {self.version}".strip()
        return f"plugin {self.plugin!r} ({where}) failed in {self.stage}: {self.error}"


class PluginManager:
    """A typed facade over the pluggy manager: one method per hook.

    Contributions are collected per plugin, so one plugin's failure is recorded and
    the others still count; a name offered twice is an error naming both plugins.
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pluggy = pluggy.PluginManager("uqeval")
        self.pluggy.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.problems: list[PluginProblem] = []
        self._cache: dict[str, dict[str, tuple[Any, PluginInfo]]] = {}
        self.clashes: dict[str, dict[str, list[PluginInfo]]] = {}
        self._resolved: dict[str, dict[str, Any]] = {}  # hook → name → its batched form
        self.commands: dict[str, list[str]] = {}
        from uqeval import __version__

        self.register(builtin_plugin, PluginInfo(BUILTIN, "uqeval", __version__, builtin_plugin.__name__))
        if load_entry_points:
            self._load_entry_points()

    # ------------------------------------------------------------------ registration

    def register(self, plugin: object, info: PluginInfo | None = None) -> bool:
        """Register ``plugin``: the one way in, for entry points and for code alike.

        ``plugin`` is any object whose attributes are hook functions (a module, a class
        instance). ``info`` names it; by default a plugin registered in code is named
        after its module (or class) with distribution ``in code``. A hook it implements
        that does not exist is recorded as a problem; registering the same object or
        name again is recorded as a problem and leaves the first registration in place.

        Returns
        -------
        bool
            Whether it was registered (see :attr:`problems` when not).
        """
        if info is None:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            info = PluginInfo(name, "in code", "", getattr(plugin, "__module__", None) or name)
        if info.name in self.info:
            self._problem(info, "registration", f"the plugin name is already taken by {self.info[info.name].label}")
            return False
        if self.pluggy.is_registered(plugin):
            holder = self.info.get(self.pluggy.get_name(plugin) or "")
            self._problem(
                info,
                "registration",
                f"the module is already registered as {holder.label if holder else 'another plugin'}",
            )
            return False
        try:
            self.pluggy.register(plugin, name=info.name)
            self.pluggy.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            if self.pluggy.is_registered(plugin):
                self.pluggy.unregister(plugin)
            self._problem(info, "registration", str(error))
            return False
        self.info[info.name] = info
        self.forget()
        return True

    def forget(self) -> None:
        """Collect contributions afresh on the next lookup."""
        self._cache.clear()
        self._resolved.clear()

    def _load_entry_points(self) -> None:
        wanted = os.environ.get(LOAD_PLUGINS_ENV)
        names = None if wanted is None else {name.strip() for name in wanted.split(",") if name.strip()}
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if names is not None and entry_point.name not in names:
                continue
            distribution = entry_point.dist
            info = PluginInfo(
                entry_point.name,
                distribution.name if distribution is not None else "?",
                distribution.version if distribution is not None else "?",
                entry_point.value,
            )
            if entry_point.name in self.info:
                other = self.info[entry_point.name]
                self._problem(info, "registration", f"the plugin name is already taken by {other.label}")
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:
                self._problem(info, "import", f"{type(error).__name__}: {error}")
                continue
            self.register(plugin, info)

    # ------------------------------------------------------------------ contributions

    def contributions(self, hook: str) -> dict[str, tuple[Any, PluginInfo]]:
        """Name → (contribution, plugin) of every plugin implementing ``hook``.

        A plugin whose hook raises, or returns something other than a dict, is recorded
        as a problem and left out. A name that two plugins offer is left out too and
        recorded in :attr:`clashes`; :meth:`lookup` of that name raises, naming both.
        """
        if hook in self._cache:
            return self._cache[hook]
        collected: dict[str, tuple[Any, PluginInfo]] = {}
        clashes: dict[str, list[PluginInfo]] = {}
        for implementation in getattr(self.pluggy.hook, hook).get_hookimpls():  # in registration order
            info = self.info[implementation.plugin_name]
            try:
                offered = implementation.function()
                if not isinstance(offered, dict):
                    raise TypeError(f"returned {type(offered).__name__}, expected a dict of name → contribution")
            except Exception as error:
                self._problem(info, hook, f"{type(error).__name__}: {error}")
                continue
            for name, value in offered.items():
                problem = _check_contribution(hook, name, value)
                if problem:
                    self._problem(info, hook, problem)
                elif name in clashes:
                    clashes[name].append(info)
                elif name in collected and collected[name][1].name == BUILTIN:
                    # A built-in name is never shadowed: the plugin's contribution is left out.
                    self._problem(info, hook, f"{KINDS_SINGULAR[hook]} name {name!r} is a built-in one; not added")
                elif name in collected:
                    clashes[name] = [collected.pop(name)[1], info]
                else:
                    collected[name] = (value, info)
        for name, infos in clashes.items():
            message = self.clash_message(hook, name, infos)
            for info in infos:
                self._problem(info, hook, message)
        self.clashes[hook] = clashes
        self._cache[hook] = collected
        return collected

    @staticmethod
    def clash_message(hook: str, name: str, infos: list[PluginInfo]) -> str:
        """The error of a name offered by several plugins."""
        labels = [info.label for info in infos]
        plugins = (
            f"both {labels[0]} and {labels[1]}" if len(labels) == 2 else ", ".join(labels[:-1]) + f" and {labels[-1]}"
        )
        return f"{KINDS_SINGULAR[hook]} name {name!r} is offered by {plugins}; uninstall all but one of them"

    def lookup(self, hook: str, name: str) -> tuple[Any, PluginInfo] | None:
        """The contribution ``name`` to ``hook``, or None; a clashing name raises, naming the plugins."""
        contributions = self.contributions(hook)
        if name in self.clashes.get(hook, {}):
            raise UQEvalError(self.clash_message(hook, name, self.clashes[hook][name]))
        return contributions.get(name)

    def _problem(self, info: PluginInfo, stage: str, error: str) -> None:
        problem = PluginProblem(info.name, info.distribution, info.version, stage, error)
        if problem not in self.problems:
            self.problems.append(problem)

    def aggregators(self) -> dict[str, Aggregator]:
        """Every aggregation strategy, built-in and from plugins, in their batched form."""
        if "aggregators" not in self._resolved:
            self._resolved["aggregators"] = {
                name: _as_aggregator(name, value, info)
                for name, (value, info) in self.contributions("uqeval_aggregators").items()
            }
        return self._resolved["aggregators"]

    def au_methods(self) -> dict[str, AUMethod]:
        """AU methods by name (each checked against :class:`~uqeval.contracts.AUMethod`)."""
        return {name: value for name, (value, _) in self.contributions("uqeval_au_methods").items()}

    def eu_methods(self) -> dict[str, EUMethod]:
        """EU methods by name (each checked against :class:`~uqeval.contracts.EUMethod`)."""
        return {name: value for name, (value, _) in self.contributions("uqeval_eu_methods").items()}

    def datasets(self) -> dict[str, DatasetSource]:
        """Datasets by name (each checked against :class:`~uqeval.contracts.DatasetSource`)."""
        return {name: value for name, (value, _) in self.contributions("uqeval_datasets").items()}

    def importers(self) -> dict[str, Importer]:
        """Importers by format name, built-in and from plugins, each with its ``source``."""
        if "importers" not in self._resolved:
            self._resolved["importers"] = {
                name: _as_importer(name, value, info)
                for name, (value, info) in self.contributions("uqeval_importers").items()
            }
        return self._resolved["importers"]

    def tasks(self) -> dict[str, Task]:
        """Every task, built-in and from plugins, by name (built-ins first)."""
        return {name: value for name, (value, _) in self.contributions("uqeval_tasks").items()}

    def task(self, name: str) -> Task:
        """The task ``name``, built-in or from a plugin (errors as :meth:`aggregator`)."""
        return self._get("uqeval_tasks", name)

    def importer(self, name: str) -> Importer:
        """The importer of format ``name`` (errors as :meth:`aggregator`)."""
        self._get("uqeval_importers", name)
        return self.importers()[name]

    def aggregator(self, name: str) -> Aggregator:
        """The aggregation strategy ``name``, built-in or from a plugin.

        Raises
        ------
        UQEvalError
            For an unknown name (listing the known ones and any plugin that failed to
            load) or a name two plugins offer (naming both).
        """
        self._get("uqeval_aggregators", name)
        return self.aggregators()[name]

    def au_method(self, name: str) -> AUMethod:
        """The AU method ``name`` of any plugin (errors as :meth:`aggregator`)."""
        return self._get("uqeval_au_methods", name)

    def eu_method(self, name: str) -> EUMethod:
        """The EU method ``name`` of any plugin (errors as :meth:`aggregator`)."""
        return self._get("uqeval_eu_methods", name)

    def dataset(self, name: str, options: dict[str, Any] | None = None) -> DatasetSource:
        """The dataset ``name`` of any plugin, configured with ``options`` when given.

        ``options`` go to :meth:`~uqeval.contracts.DatasetSource.configure`, which
        refuses a name the dataset does not know. Other errors as :meth:`aggregator`.
        """
        dataset = self._get("uqeval_datasets", name)
        return dataset.configure(**options) if options else dataset

    def _get(self, hook: str, name: str) -> Any:
        found = self.lookup(hook, name)
        if found is None:
            known = ", ".join(sorted(self.contributions(hook))) or "none"
            raise UQEvalError(f"unknown {KINDS_SINGULAR[hook]} {name!r}; choose one of {known}{self.problems_note()}")
        return found[0]

    def add_commands(self, app: Any) -> None:
        """Let every plugin add its commands (or command groups) to the typer ``app``.

        A plugin whose hook raises is recorded and its additions removed; a command
        whose name is taken (by a built-in or an earlier plugin) is not added, and the
        problem names who holds it.
        """
        owners = dict.fromkeys(_command_names(app), "a built-in command")
        for implementation in self.pluggy.hook.uqeval_cli.get_hookimpls():  # in registration order
            info = self.info[implementation.plugin_name]
            commands, groups = len(app.registered_commands), len(app.registered_groups)
            try:
                implementation.function(app=app)
            except Exception as error:
                del app.registered_commands[commands:], app.registered_groups[groups:]
                self._problem(info, "uqeval_cli", f"{type(error).__name__}: {error}")
                continue
            added = []
            for registry, start in ((app.registered_commands, commands), (app.registered_groups, groups)):
                for entry in list(registry[start:]):
                    name = _command_name(entry)
                    if name in owners:
                        registry.remove(entry)
                        self._problem(info, "uqeval_cli", f"command {name!r} is taken by {owners[name]}; not added")
                    else:
                        owners[name] = info.label
                        added.append(name)
            self.commands[info.name] = added

    def problems_note(self) -> str:
        """The problems in one sentence, for error messages (empty when there are none)."""
        if not self.problems:
            return ""
        return " (" + "; ".join(str(problem) for problem in self.problems) + ")"

    def report(self) -> list[dict[str, Any]]:
        """One row per plugin: name, distribution, version, module, and what it contributes.

        A hook that fails is reported in the plugin's ``problems``; a duplicate name in
        ``error`` of the row of every plugin involved.
        """
        rows = {
            name: {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                **{kind: [] for kind in KINDS.values()},
                "commands": list(self.commands.get(name, [])),
                "options": {},
                "problems": [],
            }
            for name, info in self.info.items()
        }
        for hook, kind in KINDS.items():
            for name, (value, info) in self.contributions(hook).items():
                rows[info.name][kind].append(name)
                options = _options(value)
                if options:
                    rows[info.name]["options"][name] = options
        for problem in self.problems:
            row = rows.get(problem.plugin)
            if row is None:
                row = rows[problem.plugin] = {
                    "name": problem.plugin,
                    "distribution": problem.distribution,
                    "version": problem.version,
                    "module": "",
                    **{kind: [] for kind in KINDS.values()},
                    "commands": [],
                    "options": {},
                    "problems": [],
                }
            row["problems"].append(f"{problem.stage}: {problem.error}")
        return list(rows.values())


def _options(contribution: Any) -> dict[str, Any]:
    """A contribution's ``options()`` (datasets, configurable AU methods) as JSON values; {} without."""
    options = getattr(contribution, "options", None)
    if not callable(options):
        return {}
    try:
        found = options()
    except Exception:  # a plugin's bug must not break the listing
        return {}
    if not isinstance(found, dict):
        return {}
    scalars = bool | int | float | str
    return {str(key): value if isinstance(value, scalars) else repr(value) for key, value in found.items()}


def _check_contribution(hook: str, name: Any, value: Any) -> str:
    """Why a contribution breaks its hook's contract ("" when it does not)."""
    if not isinstance(name, str) or not name:
        return f"a contribution is named {name!r}; names are non-empty strings"
    if hook == "uqeval_aggregators":
        if name in RESERVED_AGGREGATIONS:
            return f"aggregation name {name!r} is reserved: {RESERVED_AGGREGATIONS[name]}; not added"
        if not (isinstance(value, Aggregator) or callable(value)):
            return (
                f"aggregation {name!r} is of type {type(value).__name__}; expected f(u, pred) -> float or an Aggregator"
            )
        return ""
    if hook == "uqeval_tasks":
        return _check_task(name, value)
    if hook == "uqeval_importers":
        if not (isinstance(value, Importer) or callable(value)):
            return f"importer {name!r} is of type {type(value).__name__}; expected a function or an Importer"
        return ""
    contract = {"uqeval_au_methods": AUMethod, "uqeval_eu_methods": EUMethod, "uqeval_datasets": DatasetSource}.get(
        hook
    )
    if contract is None:
        return ""
    if not isinstance(value, contract):
        missing = [
            member
            for member in (*contract.__annotations__, *(m for m in vars(contract) if not m.startswith("_")))
            if not hasattr(value, member)
        ]
        return f"{KINDS_SINGULAR[hook]} {name!r} does not meet uqeval.{contract.__name__} (missing {missing})"
    if getattr(value, "name", name) != name:
        return f"{KINDS_SINGULAR[hook]} is offered as {name!r} but its name is {value.name!r}"
    return ""


def _command_name(entry: Any) -> str:
    """The name typer gives a registered command (``CommandInfo``) or group (``TyperInfo``)."""
    if entry.name:
        return entry.name
    callback = entry.callback if entry.callback is not None else getattr(entry.typer_instance, "info", entry).callback
    return callback.__name__.replace("_", "-") if callback is not None else ""


def _command_names(app: Any) -> set[str]:
    return {_command_name(entry) for entry in (*app.registered_commands, *app.registered_groups)}


def _as_aggregator(name: str, value: Any, info: PluginInfo) -> Aggregator:
    source = BUILTIN if info.name == BUILTIN else info.label
    if isinstance(value, Aggregator):
        return value if value.source == source else dataclasses.replace(value, name=name, source=source)
    description = (getattr(value, "__doc__", None) or "").strip().splitlines()
    return Aggregator(name, per_image(value), description[0] if description else "", fitted=False, source=source)


def _as_importer(name: str, value: Any, info: PluginInfo) -> Importer:
    source = BUILTIN if info.name == BUILTIN else info.label
    if isinstance(value, Importer):
        return dataclasses.replace(
            value, name=name, description=value.description or first_line(value.function), source=source
        )
    return Importer(name, value, first_line(value), source=source)


@functools.cache
def plugin_manager() -> PluginManager:
    """The process's plugin manager, built on first use."""
    return PluginManager()


def reset_plugin_manager() -> None:
    """Forget the process's plugin manager (tests; after installing a plugin in a running process)."""
    plugin_manager.cache_clear()


def aggregate(
    name: str,
    u: np.ndarray,
    pred: np.ndarray,
    parameters: AggregationParameters | None = None,
) -> np.ndarray:
    """Scores of a batch of maps under the aggregation strategy ``name``.

    Parameters
    ----------
    name : str
        A strategy of any plugin: ``mean``, ``sum``, ``patch_max``, ``threshold``,
        ``area``, ``border`` (built in) or a plugin's.
    u : (image, y, x) or (image, z, y, x) float array
        Uncertainty maps, nats per pixel (voxel).
    pred : int array of the shape of ``u``
        Predicted classes.
    parameters : AggregationParameters, optional
        Background class, patch size and (for ``threshold``) ``τ``.

    Returns
    -------
    (image,) float64

    Examples
    --------
    >>> import numpy as np
    >>> u = np.ones((1, 4, 4), dtype=np.float32)
    >>> pred = np.zeros((1, 4, 4), dtype=np.uint8)
    >>> pred[0, 1:3, 1:3] = 1  # a 2×2 object: area 4, border 8
    >>> [round(float(aggregate(name, u, pred)[0]), 3) for name in ("mean", "sum", "area", "border")]
    [1.0, 16.0, 4.0, 2.0]
    """
    return plugin_manager().aggregator(name)(u, pred, parameters or AggregationParameters())


def _check_task(name: str, task: Any) -> str:
    """Why a task contribution breaks the contract of :class:`uqeval.Task` ("" when it does not)."""
    if not isinstance(task, Task):
        return f"task {name!r} is of type {type(task).__name__}; expected a uqeval.Task"
    if task.name != name:
        return f"task {name!r} is named {task.name!r} inside; the two names must agree"
    if task.rows is None or not callable(task.rows):
        return f"task {name!r} has no rows function; it would add nothing"
    if task.statistics is not None and not callable(task.statistics):
        return f"task {name!r}: statistics is of type {type(task.statistics).__name__}; expected a function"
    if task.correct is not None and not task.wrong:
        return f"task {name!r} names a correct measure ({task.correct!r}) but no wrong one; Δ needs both"
    return ""
