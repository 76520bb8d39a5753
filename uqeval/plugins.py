"""The plugin manager: built-in contributions, then the ``uqeval`` entry points.

It is built once per process (:func:`plugin_manager`). The built-ins are registered
as a plugin like any other (:mod:`uqeval.builtin_plugin`), so they take exactly the
path a third party's plugin takes. Then every entry point of the group ``uqeval`` is
loaded. A plugin that fails to import, implements a hook that does not exist, or
raises in a hook is recorded as a :class:`PluginProblem` naming it and its
distribution; it breaks only what needs it, and ``uqeval plugins`` shows it.

The environment variable ``UQEVAL_LOAD_PLUGINS`` limits which entry points load: unset
loads all, an empty value none, ``a,b`` only the entry points named ``a`` and ``b``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any

import pluggy

from uqeval import builtin_plugin, hookspecs
from uqeval.aggregate import Aggregator, per_image
from uqeval.errors import UQEvalError

#: Entry-point group that plugins register under.
ENTRY_POINT_GROUP = "uqeval"
#: Environment variable limiting the entry points loaded (comma-separated names).
LOAD_PLUGINS_ENV = "UQEVAL_LOAD_PLUGINS"
#: Name of the built-in plugin.
BUILTIN = "uqeval"

#: What ``uqeval plugins`` reports per hook.
KINDS = {
    "uqeval_aggregators": "aggregators",
    "uqeval_au_methods": "au_methods",
    "uqeval_eu_methods": "eu_methods",
    "uqeval_datasets": "datasets",
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
        """``plugin 'name' (distribution version)``, as messages name it."""
        return f"plugin {self.name!r} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be loaded or whose hook failed."""

    plugin: str
    distribution: str
    stage: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution}) failed in {self.stage}: {self.error}"


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
        self._aggregators: dict[str, dict[str, Aggregator]] = {}
        self.commands: dict[str, list[str]] = {}
        from uqeval import __version__

        self.register(builtin_plugin, PluginInfo(BUILTIN, "uqeval", __version__, builtin_plugin.__name__))
        if load_entry_points:
            self._load_entry_points()

    # ------------------------------------------------------------------ registration

    def register(self, plugin: object, info: PluginInfo) -> bool:
        """Register ``plugin``; a hook it implements that does not exist is recorded as a problem."""
        try:
            self.pluggy.register(plugin, name=info.name)
            self.pluggy.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            if self.pluggy.is_registered(plugin):
                self.pluggy.unregister(plugin)
            self.problems.append(PluginProblem(info.name, _distribution_label(info), "registration", str(error)))
            return False
        self.info[info.name] = info
        self.forget()
        return True

    def forget(self) -> None:
        """Collect contributions afresh on the next lookup."""
        self._cache.clear()
        self._aggregators.clear()

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
                self.problems.append(
                    PluginProblem(
                        info.name,
                        _distribution_label(info),
                        "registration",
                        f"the plugin name is already taken by {other.label}",
                    )
                )
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:
                self.problems.append(
                    PluginProblem(info.name, _distribution_label(info), "import", f"{type(error).__name__}: {error}")
                )
                continue
            self.register(plugin, info)

    # ------------------------------------------------------------------ contributions

    def contributions(self, hook: str) -> dict[str, tuple[Any, PluginInfo]]:
        """Name → (contribution, plugin) of every plugin implementing ``hook``.

        Raises
        ------
        UQEvalError
            When two plugins offer the same name, naming both.
        """
        if hook in self._cache:
            return self._cache[hook]
        collected: dict[str, tuple[Any, PluginInfo]] = {}
        for implementation in reversed(getattr(self.pluggy.hook, hook).get_hookimpls()):
            info = self.info[implementation.plugin_name]
            try:
                offered = implementation.function()
                if not isinstance(offered, dict):
                    raise TypeError(f"returned {type(offered).__name__}, expected a dict of name → contribution")
            except Exception as error:
                problem = PluginProblem(info.name, _distribution_label(info), hook, f"{type(error).__name__}: {error}")
                if problem not in self.problems:
                    self.problems.append(problem)
                continue
            for name, value in offered.items():
                if name in collected:
                    other = collected[name][1]
                    raise UQEvalError(
                        f"{KINDS.get(hook, hook)} name {name!r} is offered by both {other.label} and {info.label}"
                    )
                collected[name] = (value, info)
        self._cache[hook] = collected
        return collected

    def aggregators(self) -> dict[str, Aggregator]:
        """Every aggregation strategy, built-in and from plugins, in their batched form."""
        if "aggregators" not in self._aggregators:
            self._aggregators["aggregators"] = {
                name: _as_aggregator(name, value, info)
                for name, (value, info) in self.contributions("uqeval_aggregators").items()
            }
        return self._aggregators["aggregators"]

    def au_methods(self) -> dict[str, Any]:
        """AU methods by name."""
        return {name: value for name, (value, _) in self.contributions("uqeval_au_methods").items()}

    def eu_methods(self) -> dict[str, Any]:
        """EU methods by name."""
        return {name: value for name, (value, _) in self.contributions("uqeval_eu_methods").items()}

    def datasets(self) -> dict[str, Any]:
        """Datasets by name."""
        return {name: value for name, (value, _) in self.contributions("uqeval_datasets").items()}

    def add_commands(self, app: Any) -> None:
        """Let every plugin add its commands to the typer ``app``; a failing plugin is recorded and skipped."""
        for implementation in reversed(self.pluggy.hook.uqeval_cli.get_hookimpls()):
            info = self.info[implementation.plugin_name]
            before = len(app.registered_commands)
            try:
                implementation.function(app=app)
                added = app.registered_commands[before:]
                self.commands[info.name] = [
                    command.name or command.callback.__name__.replace("_", "-") for command in added
                ]
            except Exception as error:
                del app.registered_commands[before:]
                self.problems.append(
                    PluginProblem(
                        info.name, _distribution_label(info), "uqeval_cli", f"{type(error).__name__}: {error}"
                    )
                )

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
                "problems": [],
            }
            for name, info in self.info.items()
        }
        for hook, kind in KINDS.items():
            try:
                contributions = self.contributions(hook)
            except UQEvalError as error:
                for row in rows.values():
                    if repr(row["name"]) in str(error):
                        row["problems"].append(str(error))
                continue
            for name, (_, info) in contributions.items():
                rows[info.name][kind].append(name)
        for problem in self.problems:
            row = rows.get(problem.plugin)
            if row is None:
                row = rows[problem.plugin] = {
                    "name": problem.plugin,
                    "distribution": problem.distribution,
                    "version": "",
                    "module": "",
                    **{kind: [] for kind in KINDS.values()},
                    "commands": [],
                    "problems": [],
                }
            row["problems"].append(f"{problem.stage}: {problem.error}")
        return list(rows.values())


def _distribution_label(info: PluginInfo) -> str:
    return f"{info.distribution} {info.version}".strip()


def _as_aggregator(name: str, value: Any, info: PluginInfo) -> Aggregator:
    source = BUILTIN if info.name == BUILTIN else info.label
    if isinstance(value, Aggregator):
        return value if value.source == source else _replace(value, name=name, source=source)
    if not callable(value):
        raise UQEvalError(
            f"aggregation {name!r} from {info.label} is a {type(value).__name__}; expected f(u, pred) -> float "
            "or a uqeval.aggregate.Aggregator"
        )
    description = (getattr(value, "__doc__", None) or "").strip().splitlines()
    return Aggregator(name, per_image(value), description[0] if description else "", fitted=False, source=source)


def _replace(aggregator: Aggregator, **changes: Any) -> Aggregator:
    import dataclasses

    return dataclasses.replace(aggregator, **changes)


@functools.cache
def plugin_manager() -> PluginManager:
    """The process's plugin manager, built on first use."""
    return PluginManager()


def reset_plugin_manager() -> None:
    """Forget the process's plugin manager (tests; after installing a plugin in a running process)."""
    plugin_manager.cache_clear()


def forget_contributions() -> None:
    """Make the next lookup collect contributions afresh (after an in-code registration)."""
    if plugin_manager.cache_info().currsize:
        plugin_manager().forget()
