"""The plugin system: hooks, the plugin manager, broken and clashing plugins, the CLI hook.

Plugins that come from entry points are tiny distributions written by hand into a
temporary folder: a module plus ``NAME-VERSION.dist-info`` with ``METADATA`` and
``entry_points.txt``. They are found through ``importlib.metadata`` exactly as an
installed package is: in a subprocess with the folder on ``PYTHONPATH`` (what a user
runs) or in this process with the folder on ``sys.path`` (cheaper, for the details).
Plugins that only test a hook are registered directly on a
``PluginManager(load_entry_points=False)``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pluggy
import pytest
import typer
from plugin_cli import cli_env, run_cli
from typer.testing import CliRunner

import uqeval
import uqeval.plugins
from uqeval import UQEvalError, hookspecs
from uqeval.aggregation import (
    AGGREGATORS,
    AggregationParameters,
    Aggregator,
    get_aggregator,
    mean,
    per_image,
    register_aggregator,
    total,
)
from uqeval.contracts import AUMethod, DatasetSource, EUMethod, Sample
from uqeval.plugins import BUILTIN, LOAD_PLUGINS_ENV, PluginInfo, PluginManager, PluginProblem

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = ["mean", "sum", "patch_max", "threshold", "area", "border"]
BUILTIN_LABEL = f"plugin 'uqeval' (uqeval {uqeval.__version__})"
#: Prefix of every module written here, so that they can be forgotten after a test.
PREFIX = "uqtest_"


# --------------------------------------------------------------------------- hand-made distributions


def write_distribution(
    site: Path, distribution: str, version: str, source: str, entry_points: dict[str, str] | None = None
) -> str:
    """Write the module ``uqtest_<distribution>`` and its ``dist-info`` into ``site``; return the module name.

    ``entry_points`` maps entry-point names (group ``uqeval``) to their values; the
    default is one entry point named like the distribution, pointing at the module.
    """
    module = PREFIX + distribution.replace("-", "_")
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    entry_points = entry_points if entry_points is not None else {distribution.replace("-", "_"): module}
    (info / "entry_points.txt").write_text(
        "[uqeval]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    )
    return module


def plugin_rows(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def module(name: str, **hooks: Callable) -> types.ModuleType:
    """A plugin module whose functions ``hooks`` are marked ``@uqeval.hookimpl``."""
    plugin = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(plugin, hook, uqeval.hookimpl(function))
    return plugin


def info(name: str, distribution: str | None = None, version: str = "1.0") -> PluginInfo:
    return PluginInfo(name, distribution or f"dist-{name}", version, name)


def manager_with(*plugins: tuple[object, PluginInfo]) -> PluginManager:
    manager = PluginManager(load_entry_points=False)
    for plugin, plugin_info in plugins:
        assert manager.register(plugin, plugin_info), manager.problems
    return manager


def rows_by_name(manager: PluginManager) -> dict[str, dict]:
    return {row["name"]: row for row in manager.report()}


def assert_names_both(message: str, *labels: str) -> None:
    for label in labels:
        assert label in message, (label, message)


def constant(value: float) -> Callable[[np.ndarray, np.ndarray], float]:
    def score(u: np.ndarray, pred: np.ndarray) -> float:
        """A constant score."""
        return value

    return score


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch) -> Iterator[None]:
    """No UQEVAL_LOAD_PLUGINS from outside; the process's manager and the modules written here forgotten after."""
    monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)
    uqeval.plugins.reset_plugin_manager()
    yield
    uqeval.plugins.reset_plugin_manager()
    for name in [name for name in sys.modules if name.startswith(PREFIX)]:
        del sys.modules[name]


@pytest.fixture
def on_path(monkeypatch) -> Callable[[Path], None]:
    """Put a folder of hand-made distributions on ``sys.path`` for this test."""

    def prepend(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))

    return prepend


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return uqeval.make_synthetic_cube(
        tmp_path_factory.mktemp("plugins-store") / "model.zarr", n_images=16, size=12, eu=2, au=2, raters=2
    )


# --------------------------------------------------------------------------- the plugins used below

BROKEN_IMPORT = """
    raise ImportError("uqtest_broken needs the package frobnicate, which is not installed")
"""
RAISING_AGGREGATORS = """
    import uqeval

    @uqeval.hookimpl
    def uqeval_aggregators():
        raise RuntimeError("raiser cannot count")
"""
MISSPELT = """
    import uqeval

    @uqeval.hookimpl
    def uqeval_aggregator():  # no s: not a hook
        return {"misspelt_score": lambda u, pred: 0.0}

    @uqeval.hookimpl
    def uqeval_datasets():
        return {"misspelt_data": object()}
"""
LIST_RETURNING = """
    import uqeval

    @uqeval.hookimpl
    def uqeval_aggregators():
        return ["lister_score"]
"""
HELLO = """
    import uqeval

    @uqeval.hookimpl
    def uqeval_cli(app):
        @app.command()
        def hello(name: str = "world"):
            '''Say hello.'''
            print(f"hello {name}")
"""
CLI_RAISES = """
    import uqeval

    @uqeval.hookimpl
    def uqeval_cli(app):
        @app.command()
        def half():
            print("half")

        raise RuntimeError("clibreak is half done")
"""


def aggregator_plugin(name: str, value: float = 1.0) -> str:
    return f"""
    import uqeval

    def score(u, pred):
        '''A constant {value}.'''
        return {value}

    @uqeval.hookimpl
    def uqeval_aggregators():
        return {{"{name}": score}}
    """


@pytest.fixture(scope="module")
def mixed_site(tmp_path_factory) -> Path:
    """One environment with a plugin broken in every way that must not break uqeval, and a working CLI plugin."""
    site = tmp_path_factory.mktemp("mixed")
    write_distribution(site, "uqt-broken", "0.1.0", BROKEN_IMPORT, {"broken": PREFIX + "uqt_broken"})
    write_distribution(site, "uqt-raiser", "0.2.0", RAISING_AGGREGATORS, {"raiser": PREFIX + "uqt_raiser"})
    write_distribution(site, "uqt-misspelt", "0.3.0", MISSPELT, {"misspelt": PREFIX + "uqt_misspelt"})
    write_distribution(site, "uqt-lister", "0.4.0", LIST_RETURNING, {"lister": PREFIX + "uqt_lister"})
    write_distribution(site, "uqt-hello", "1.0.0", HELLO, {"hello": PREFIX + "uqt_hello"})
    write_distribution(site, "uqt-clibreak", "1.1.0", CLI_RAISES, {"clibreak": PREFIX + "uqt_clibreak"})
    return site


@pytest.fixture(scope="module")
def mixed_report(mixed_site) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    result = run_cli("plugins", "--json", paths=(mixed_site,))
    return plugin_rows(result), result


# --------------------------------------------------------------------------- broken plugins, end to end


def test_broken_import_is_reported_with_plugin_and_distribution(mixed_report):
    rows, result = mixed_report
    row = rows["broken"]
    assert (row["distribution"], row["version"]) == ("uqt-broken", "0.1.0")
    assert row["aggregators"] == row["commands"] == []
    assert len(row["problems"]) == 1
    assert row["problems"][0].startswith("import: ImportError: ")
    assert "frobnicate" in row["problems"][0]
    warnings = [line for line in result.stderr.splitlines() if "'broken'" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: plugin 'broken' (uqt-broken 0.1.0) failed in import: ImportError")
    assert warnings[0].endswith("; see `uqeval plugins`")
    # The other plugins still load and count.
    assert rows["uqeval"]["aggregators"] == BUILTINS
    assert rows["hello"]["commands"] == ["hello"]


def test_broken_plugin_warning_is_one_line_on_a_narrow_terminal(mixed_site):
    result = run_cli("--version", paths=(mixed_site,), columns=80)
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "'broken'" in line]
    assert len(lines) == 1 and "frobnicate" in lines[0] and "uqeval plugins" in lines[0], result.stderr


def test_hook_that_raises_is_reported_at_its_stage(mixed_report):
    rows, _ = mixed_report
    row = rows["raiser"]
    assert (row["distribution"], row["version"]) == ("uqt-raiser", "0.2.0")
    assert row["aggregators"] == []
    assert row["problems"] == ["uqeval_aggregators: RuntimeError: raiser cannot count"]


def test_misspelt_hook_is_a_registration_problem(mixed_report):
    rows, _ = mixed_report
    row = rows["misspelt"]
    assert (row["distribution"], row["version"]) == ("uqt-misspelt", "0.3.0")
    assert len(row["problems"]) == 1
    assert row["problems"][0].startswith("registration: ")
    assert "uqeval_aggregator" in row["problems"][0]
    # Not registered: its correctly spelt hook does not count either.
    assert not any("misspelt_data" in other["datasets"] for other in rows.values())


def test_hook_returning_a_list_is_reported(mixed_report):
    rows, _ = mixed_report
    assert rows["lister"]["problems"] == [
        "uqeval_aggregators: TypeError: returned list, expected a dict of name → contribution"
    ]
    assert not any("lister_score" in row["aggregators"] for row in rows.values())


def test_cli_hook_that_raises_is_reported_and_its_commands_removed(mixed_report):
    rows, result = mixed_report
    row = rows["clibreak"]
    assert row["commands"] == []
    assert row["problems"] == ["uqeval_cli: RuntimeError: clibreak is half done"]
    assert "warning: plugin 'clibreak' (uqt-clibreak 1.1.0) failed in uqeval_cli" in result.stderr


def test_score_still_works_beside_broken_plugins(mixed_site, store, tmp_path):
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--tasks", "oodd", "--no-plots", "--json", "--out", str(out),
                     paths=(mixed_site,))  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["conventions"]["aggregation"] == "border"
    assert {row["aggregation"] for row in scores["results"]} == {"border"}
    assert (out / "scores.json").is_file()
    warned = {line.split("'")[1] for line in result.stderr.splitlines() if line.startswith("warning: plugin")}
    assert {"broken", "misspelt", "clibreak"} <= warned


def test_version_still_works_beside_broken_plugins(mixed_site):
    result = run_cli("--version", paths=(mixed_site,))
    assert result.returncode == 0
    assert result.stdout.strip() == f"uqeval {uqeval.__version__}"
    assert "'broken' (uqt-broken 0.1.0)" in result.stderr


def test_unknown_aggregation_names_the_failing_plugin(mixed_site, store, tmp_path):
    result = run_cli("score", str(store), "--aggregation", "nope", "--out", str(tmp_path / "r"), paths=(mixed_site,))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert error[0].startswith("error: --aggregation: unknown aggregation 'nope'; choose one of area, border, mean")
    assert (
        "plugin 'raiser' (uqt-raiser 0.2.0) failed in uqeval_aggregators: RuntimeError: raiser cannot count"
        in (error[0])
    )
    assert "plugin 'broken' (uqt-broken 0.1.0) failed in import" in error[0]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the CLI hook, end to end


def test_cli_hook_adds_a_command(mixed_site):
    result = run_cli("hello", "--name", "x", paths=(mixed_site,))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello x\n"


def test_cli_help_lists_the_plugin_command_and_not_the_failed_one(mixed_site):
    result = run_cli("--help", paths=(mixed_site,))
    assert result.returncode == 0, result.stderr
    commands = [line.strip("│ ").split()[0] for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert {"score", "plugins", "hello"} <= set(commands)
    assert "half" not in commands


def test_cli_hook_that_raises_does_not_break_score_help(mixed_site):
    result = run_cli("score", "--help", paths=(mixed_site,))
    assert result.returncode == 0, result.stderr
    assert "--aggregation" in result.stdout
    assert "clibreak" in result.stderr


@pytest.fixture(scope="module")
def clash_site(tmp_path_factory) -> Path:
    """Two plugins adding ``hello`` and one adding ``score``, the name of a built-in command."""
    site = tmp_path_factory.mktemp("clash")
    write_distribution(site, "uqt-hello-one", "1.0", HELLO, {"hello_one": PREFIX + "uqt_hello_one"})
    write_distribution(site, "uqt-hello-two", "2.0", HELLO.replace("hello {name}", "HELLO {name}"),
                       {"hello_two": PREFIX + "uqt_hello_two"})  # fmt: skip
    hijack = """
        import uqeval

        @uqeval.hookimpl
        def uqeval_cli(app):
            @app.command()
            def score(name: str = "x"):
                print("hijacked")

            @app.command()
            def sidekick():
                print("sidekick")
    """
    write_distribution(site, "uqt-hijack", "0.1.0", hijack, {"hijack": PREFIX + "uqt_hijack"})
    return site


@pytest.fixture(scope="module")
def clash_report(clash_site) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    result = run_cli("plugins", "--json", paths=(clash_site,))
    return plugin_rows(result), result


def test_plugin_command_cannot_replace_a_builtin_command(clash_site, clash_report):
    rows, report = clash_report
    assert rows["hijack"]["commands"] == ["sidekick"]  # only the clashing command is left out
    (problem,) = rows["hijack"]["problems"]
    assert problem.startswith("uqeval_cli: command 'score' is taken by ") and "built-in" in problem, problem
    assert "warning: plugin 'hijack' (uqt-hijack 0.1.0) failed in uqeval_cli: command 'score'" in report.stderr
    result = run_cli("score", "--help", paths=(clash_site,))
    assert result.returncode == 0, result.stderr
    assert "--aggregation" in result.stdout
    assert "hijacked" not in result.stdout


def test_duplicate_plugin_command_keeps_one_and_reports_the_other(clash_site, clash_report):
    rows, _ = clash_report
    one, two = rows["hello_one"], rows["hello_two"]
    assert sorted([one["commands"], two["commands"]]) == [[], ["hello"]]
    winner, loser = (one, two) if one["commands"] else (two, one)
    assert winner["problems"] == []
    (problem,) = loser["problems"]
    assert problem.startswith("uqeval_cli: command 'hello' is taken by "), problem
    assert f"plugin {winner['name']!r} ({winner['distribution']} {winner['version']})" in problem
    result = run_cli("hello", "--name", "x", paths=(clash_site,))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("hello x\n" if winner["name"] == "hello_one" else "HELLO x\n")


def test_duplicate_plugin_command_warning_names_both_plugins(clash_report):
    _, result = clash_report
    labels = ("plugin 'hello_one' (uqt-hello-one 1.0)", "plugin 'hello_two' (uqt-hello-two 2.0)")
    lines = [line for line in result.stderr.splitlines() if "command 'hello'" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: plugin 'hello_")
    assert "failed in uqeval_cli: command 'hello' is taken by plugin 'hello_" in lines[0]
    assert_names_both(lines[0], *labels)


def test_plugin_command_group_cannot_replace_a_builtin_command(tmp_path):
    grouper = """
        import typer
        import uqeval

        group = typer.Typer()

        @group.command()
        def run():
            print("group hijack")

        @group.command()
        def other():
            print("other")

        @uqeval.hookimpl
        def uqeval_cli(app):
            app.add_typer(group, name="score")
    """
    write_distribution(tmp_path, "uqt-grouper", "0.1.0", grouper, {"grouper": PREFIX + "uqt_grouper"})
    result = run_cli("score", "--help", paths=(tmp_path,))
    assert result.returncode == 0, result.stderr
    assert "--aggregation" in result.stdout
    assert "warning: plugin 'grouper' (uqt-grouper 0.1.0) failed in uqeval_cli: command 'score' is taken by" in (
        result.stderr
    )


# --------------------------------------------------------------------------- duplicates


@pytest.fixture(scope="module")
def duplicate_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("duplicates")
    write_distribution(site, "uqt-dup-a", "1.0", aggregator_plugin("top_decile", 1.0), {"dup_a": PREFIX + "uqt_dup_a"})
    write_distribution(site, "uqt-dup-b", "2.0", aggregator_plugin("top_decile", 2.0), {"dup_b": PREFIX + "uqt_dup_b"})
    write_distribution(site, "uqt-solo", "3.0", aggregator_plugin("solo", 3.0), {"solo": PREFIX + "uqt_solo"})
    return site


def test_duplicate_aggregator_from_two_distributions_names_both(duplicate_site, on_path):
    on_path(duplicate_site)
    manager = uqeval.plugins.plugin_manager()  # the process's manager, which get_aggregator uses
    assert {"dup_a", "dup_b", "solo"} <= set(manager.info)
    labels = ("plugin 'dup_a' (uqt-dup-a 1.0)", "plugin 'dup_b' (uqt-dup-b 2.0)")
    # Using the clashing name is an error naming both plugins ...
    with pytest.raises(UQEvalError) as caught:
        get_aggregator("top_decile")
    assert "aggregation name 'top_decile' is offered by both" in str(caught.value)
    assert_names_both(str(caught.value), *labels)
    with pytest.raises(UQEvalError) as caught:
        manager.lookup("uqeval_aggregators", "top_decile")
    assert_names_both(str(caught.value), *labels)
    # ... while every other name keeps working.
    assert "top_decile" not in manager.aggregators()
    assert get_aggregator("border") is AGGREGATORS["border"]
    assert get_aggregator("solo").source == "plugin 'solo' (uqt-solo 3.0)"
    _, plugin_info = manager.lookup("uqeval_aggregators", "solo")
    assert plugin_info.distribution == "uqt-solo"
    assert manager.lookup("uqeval_aggregators", "nope") is None
    rows = rows_by_name(manager)
    for name in ("dup_a", "dup_b"):
        assert rows[name]["aggregators"] == []
        (problem,) = rows[name]["problems"]
        assert problem.startswith("uqeval_aggregators: aggregation name 'top_decile' is offered by both")
        assert_names_both(problem, *labels)
    assert rows["solo"] == rows["solo"] | {"aggregators": ["solo"], "problems": []}
    assert rows["uqeval"]["aggregators"] == BUILTINS


def test_duplicate_aggregator_end_to_end(duplicate_site, store, tmp_path):
    result = run_cli("score", str(store), "--aggregation", "top_decile", "--out", str(tmp_path / "r"),
                     paths=(duplicate_site,))  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: --aggregation: aggregation name 'top_decile' is offered by both" in result.stderr
    assert_names_both(result.stderr, "plugin 'dup_a' (uqt-dup-a 1.0)", "plugin 'dup_b' (uqt-dup-b 2.0)")
    assert not (tmp_path / "r").exists()
    # The default aggregation and another plugin's still work beside the clash.
    result = run_cli("score", str(store), "--aggregation", "border,solo", "--tasks", "oodd", "--no-plots",
                     "--json", "--out", str(tmp_path / "ok"), paths=(duplicate_site,))  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert {row["aggregation"] for row in scores["results"]} == {"border", "solo"}
    solo = [row["value"] for row in scores["results"] if row["aggregation"] == "solo" and row["metric"] == "auroc"]
    assert solo and set(solo) == {0.5}  # the plugin's constant score: every image ties


def test_plugin_offering_a_builtin_name_is_left_out_and_the_builtin_kept():
    manager = manager_with((module("shadow", uqeval_aggregators=lambda: {"border": constant(0.0)}), info("shadow")))
    assert sorted(manager.aggregators()) == sorted(BUILTINS)
    assert manager.aggregators()["border"].source == BUILTIN
    assert manager.lookup("uqeval_aggregators", "border")[1].name == BUILTIN
    [problem] = manager.problems
    assert (problem.plugin, problem.stage) == ("shadow", "uqeval_aggregators")
    assert problem.error == "aggregation name 'border' is a built-in one; not added"


def test_three_plugins_offering_one_name_are_all_named():
    manager = manager_with(
        *((module(name, uqeval_aggregators=lambda: {"x": constant(1.0)}), info(name)) for name in ("p", "q", "r"))
    )
    with pytest.raises(UQEvalError) as caught:
        manager.lookup("uqeval_aggregators", "x")
    assert str(caught.value) == (
        "aggregation name 'x' is offered by plugin 'p' (dist-p 1.0), plugin 'q' (dist-q 1.0) and "
        "plugin 'r' (dist-r 1.0); uninstall all but one of them"
    )


@pytest.mark.parametrize(
    ("hook", "kind", "value", "facade"),
    [
        ("uqeval_au_methods", "AU method", lambda: FakeAU(), "au_methods"),
        ("uqeval_eu_methods", "EU method", lambda: FakeEU(), "eu_methods"),
        ("uqeval_datasets", "dataset", lambda: FakeDataset(), "datasets"),
    ],
)
def test_duplicate_method_or_dataset_names_both(hook, kind, value, facade):
    contribution = value()
    offered = {contribution.name: contribution}
    manager = manager_with(
        (module("one", **{hook: lambda: offered}), info("one")),
        (module("two", **{hook: lambda: offered}), info("two")),
        (module("aggregates", uqeval_aggregators=lambda: {"fine": constant(1.0)}), info("aggregates")),
    )
    assert getattr(manager, facade)() == {}
    with pytest.raises(UQEvalError) as caught:
        manager.lookup(hook, contribution.name)
    assert f"{kind} name {contribution.name!r} is offered by both" in str(caught.value)
    assert_names_both(str(caught.value), "plugin 'one' (dist-one 1.0)", "plugin 'two' (dist-two 1.0)")
    assert "fine" in manager.aggregators()  # other hooks unaffected


def test_report_with_a_duplicate_still_lists_the_other_contributions():
    manager = manager_with(
        (module("a", uqeval_aggregators=lambda: {"top_decile": constant(1.0)}), info("dup_a")),
        (module("b", uqeval_aggregators=lambda: {"top_decile": constant(2.0)}), info("dup_b")),
        (module("c", uqeval_aggregators=lambda: {"other": constant(3.0)}), info("top_decile")),
    )
    rows = rows_by_name(manager)
    assert rows["dup_a"]["problems"] and rows["dup_b"]["problems"]
    assert rows["top_decile"]["problems"] == []
    assert rows["uqeval"]["aggregators"] == BUILTINS
    assert rows["top_decile"]["aggregators"] == ["other"]


def test_same_entry_point_name_in_two_distributions(tmp_path, on_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_distribution(first, "uqt-twin-one", "1.0", aggregator_plugin("twin_one"), {"twin": PREFIX + "uqt_twin_one"})
    write_distribution(second, "uqt-twin-two", "2.0", aggregator_plugin("twin_two"), {"twin": PREFIX + "uqt_twin_two"})
    on_path(second)
    on_path(first)  # first on sys.path: found first
    manager = PluginManager()
    assert manager.info["twin"].distribution == "uqt-twin-one"
    assert manager.problems == [
        PluginProblem(
            "twin",
            "uqt-twin-two",
            "2.0",
            "registration",
            "the plugin name is already taken by plugin 'twin' (uqt-twin-one 1.0)",
        )
    ]
    assert "twin_one" in manager.aggregators()
    assert "twin_two" not in manager.aggregators()
    assert PREFIX + "uqt_twin_two" not in sys.modules  # the second is not even imported


def test_entry_point_named_like_the_builtin_plugin_is_refused(tmp_path, on_path):
    write_distribution(tmp_path, "uqt-usurper", "1.0", aggregator_plugin("usurped"), {BUILTIN: PREFIX + "uqt_usurper"})
    on_path(tmp_path)
    manager = PluginManager()
    assert manager.info[BUILTIN].distribution == "uqeval"
    assert [(problem.distribution, problem.version, problem.stage) for problem in manager.problems] == [
        ("uqt-usurper", "1.0", "registration")
    ]
    assert BUILTIN_LABEL in manager.problems[0].error
    assert "usurped" not in manager.aggregators()


def test_two_entry_points_to_one_module_keep_the_first(tmp_path, on_path):
    module_name = write_distribution(tmp_path, "uqt-twice", "1.0", aggregator_plugin("twice_score"), {})
    (tmp_path / "uqt_twice-1.0.dist-info" / "entry_points.txt").write_text(
        f"[uqeval]\ntwice_a = {module_name}\ntwice_b = {module_name}\n"
    )
    on_path(tmp_path)
    manager = PluginManager()
    assert len([name for name in manager.info if name.startswith("twice")]) == 1
    (problem,) = manager.problems
    assert (problem.distribution, problem.stage) == ("uqt-twice", "registration")
    assert problem.error == "the module is already registered as plugin 'twice_a' (uqt-twice 1.0)"
    assert get_aggregator("twice_score").source.startswith("plugin 'twice_")


def test_second_registration_of_one_module_or_name_keeps_the_first():
    plugin = module("shared", uqeval_aggregators=lambda: {"shared_score": constant(1.0)})
    manager = manager_with((plugin, info("first")))
    assert not manager.register(plugin, info("second"))
    other = module("other", uqeval_aggregators=lambda: {"other_score": constant(2.0)})
    assert not manager.register(other, info("first"))
    assert [(problem.plugin, problem.stage) for problem in manager.problems] == [
        ("second", "registration"),
        ("first", "registration"),
    ]
    assert manager.info["first"].module == "first"
    assert "shared_score" in manager.aggregators()
    assert "other_score" not in manager.aggregators()
    assert set(manager.info) == {BUILTIN, "first"}


# --------------------------------------------------------------------------- broken plugins, in process


def test_load_plugins_env_limits_the_entry_points(tmp_path, on_path, monkeypatch):
    write_distribution(tmp_path, "uqt-alpha", "1.0", aggregator_plugin("alpha_score"), {"alpha": PREFIX + "uqt_alpha"})
    write_distribution(tmp_path, "uqt-beta", "1.0", aggregator_plugin("beta_score"), {"beta": PREFIX + "uqt_beta"})
    installed = {entry.name for entry in importlib.metadata.entry_points(group="uqeval")}  # e.g. uqeval-torch
    on_path(tmp_path)
    cases = {None: {"alpha", "beta"}, "": set(), "alpha": {"alpha"}, " beta , alpha ": {"alpha", "beta"}, ",": set()}
    for value, expected in cases.items():
        if value is None:  # unset: every installed plugin, those of this test and any others
            expected = expected | installed
        if value is None:
            monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)
        else:
            monkeypatch.setenv(LOAD_PLUGINS_ENV, value)
        manager = PluginManager()
        assert set(manager.info) - {BUILTIN} == expected, value
        scores = {name.removesuffix("_score") for name in manager.aggregators() if name.endswith("_score")}
        assert scores == expected & {"alpha", "beta"}, value


def test_broken_import_in_process(mixed_site, on_path, monkeypatch):
    on_path(mixed_site)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "broken")
    manager = PluginManager()
    assert set(manager.info) == {BUILTIN}
    (problem,) = manager.problems
    assert problem == PluginProblem(
        "broken",
        "uqt-broken",
        "0.1.0",
        "import",
        "ImportError: uqtest_broken needs the package frobnicate, which is not installed",
    )
    assert str(problem) == (
        "plugin 'broken' (uqt-broken 0.1.0) failed in import: "
        "ImportError: uqtest_broken needs the package frobnicate, which is not installed"
    )
    assert list(manager.aggregators()) == BUILTINS


def test_raising_hook_in_process_keeps_the_builtins(mixed_site, on_path, monkeypatch):
    on_path(mixed_site)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "raiser")
    manager = PluginManager()
    assert "raiser" in manager.info  # it loads; only its hook fails
    assert sorted(manager.aggregators()) == sorted(BUILTINS)
    assert [(problem.plugin, problem.stage) for problem in manager.problems] == [("raiser", "uqeval_aggregators")]
    manager.forget()
    manager.aggregators()
    assert len(manager.problems) == 1  # recorded once, however often it is asked
    assert manager.problems_note() == (
        " (plugin 'raiser' (uqt-raiser 0.2.0) failed in uqeval_aggregators: RuntimeError: raiser cannot count)"
    )
    u = np.ones((1, 4, 4), dtype=np.float32)
    pred = np.zeros((1, 4, 4), dtype=np.uint8)
    assert manager.aggregators()["mean"](u, pred, AggregationParameters()).tolist() == [1.0]


def test_misspelt_hook_in_process(mixed_site, on_path, monkeypatch):
    on_path(mixed_site)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "misspelt")
    manager = PluginManager()
    assert "misspelt" not in manager.info
    assert manager.pluggy.get_plugin("misspelt") is None
    (problem,) = manager.problems
    assert (problem.plugin, problem.distribution, problem.version, problem.stage) == (
        "misspelt",
        "uqt-misspelt",
        "0.3.0",
        "registration",
    )
    assert "unknown hook 'uqeval_aggregator'" in problem.error
    assert manager.datasets() == {}


def test_hook_with_an_argument_the_spec_lacks_is_a_registration_problem():
    def uqeval_aggregators(config):
        return {}

    manager = PluginManager(load_entry_points=False)
    assert not manager.register(module("extra_arg", uqeval_aggregators=uqeval_aggregators), info("extra_arg"))
    assert "extra_arg" not in manager.info
    assert [(problem.plugin, problem.stage) for problem in manager.problems] == [("extra_arg", "registration")]
    assert "config" in manager.problems[0].error


@pytest.mark.parametrize("returned", [["x"], None, "x", ("x", 1)])
def test_hook_not_returning_a_dict_is_a_problem(returned):
    manager = manager_with((module("odd", uqeval_eu_methods=lambda: returned), info("odd")))
    assert manager.eu_methods() == {}
    (problem,) = manager.problems
    assert problem.stage == "uqeval_eu_methods"
    assert problem.error == f"TypeError: returned {type(returned).__name__}, expected a dict of name → contribution"
    assert rows_by_name(manager)["odd"]["problems"] == [f"uqeval_eu_methods: {problem.error}"]


def test_non_callable_aggregator_is_a_clear_error_naming_plugin_and_name():
    plugin = module("bad", uqeval_aggregators=lambda: {"bad_score": 3, "good_score": constant(1.0)})
    manager = uqeval.plugins.plugin_manager()
    assert manager.register(plugin, info("bad", "dist-bad", "2.0"))
    with pytest.raises(UQEvalError) as caught:
        get_aggregator("bad_score")
    message = str(caught.value)
    assert message.startswith("unknown aggregation 'bad_score'; choose one of")
    assert "plugin 'bad' (dist-bad 2.0) failed in uqeval_aggregators: aggregation 'bad_score' is of type int" in message
    assert "f(u, pred) -> float or an Aggregator" in message
    # Only that name is left out: the built-ins and the plugin's other aggregation work.
    assert get_aggregator("border") is AGGREGATORS["border"]
    assert get_aggregator("good_score").source == "plugin 'bad' (dist-bad 2.0)"
    rows = rows_by_name(manager)
    assert rows["bad"]["aggregators"] == ["good_score"]
    assert rows["bad"]["problems"] == [
        "uqeval_aggregators: aggregation 'bad_score' is of type int; expected f(u, pred) -> float or an Aggregator"
    ]


@pytest.mark.parametrize(
    ("hook", "offered", "expected"),
    [
        ("uqeval_au_methods", {"x": lambda: AUWithoutSample()}, "AU method 'x' does not meet uqeval.contracts.AUMethod"),
        ("uqeval_eu_methods", {"x": lambda: EUWithoutName()}, "EU method 'x' does not meet uqeval.contracts.EUMethod"),
        ("uqeval_datasets", {"x": lambda: DatasetWithoutSamples()}, "dataset 'x' does not meet"),
        ("uqeval_datasets", {"x": lambda: "a string"}, "dataset 'x' does not meet uqeval.contracts.DatasetSource"),
        ("uqeval_au_methods", {"other": lambda: FakeAU()}, "AU method is offered as 'other' but its name is 'fake_au'"),
        ("uqeval_aggregators", {"": lambda: constant(1.0)}, "a contribution is named ''; names are non-empty strings"),
        ("uqeval_aggregators", {3: lambda: constant(1.0)}, "a contribution is named 3"),
    ],
)
def test_contribution_breaking_its_contract_is_left_out(hook, offered, expected):
    values = {name: make() for name, make in offered.items()}
    good = {"uqeval_au_methods": FakeAU, "uqeval_eu_methods": FakeEU, "uqeval_datasets": FakeDataset}
    good_value = good[hook]() if hook in good else constant(2.0)
    good_name = getattr(good_value, "name", "kept")
    manager = manager_with(
        (module("strict", **{hook: lambda: values}), info("strict")),
        (module("fine", **{hook: lambda: {good_name: good_value}}), info("fine")),
    )
    contributions = manager.contributions(hook)
    assert set(values).isdisjoint(contributions)
    assert contributions[good_name] == (good_value, info("fine"))
    (problem,) = manager.problems
    assert (problem.plugin, problem.stage) == ("strict", hook)
    assert expected in problem.error, problem.error


def test_hook_failures_are_recorded_per_plugin():
    def boom():
        raise KeyError("nope")

    dataset = FakeDataset()
    manager = manager_with(
        (module("good", uqeval_datasets=lambda: {"fake_data": dataset}), info("good")),
        (module("bad", uqeval_datasets=boom), info("bad")),
    )
    assert manager.datasets() == {"fake_data": dataset}
    assert manager.problems == [PluginProblem("bad", "dist-bad", "1.0", "uqeval_datasets", "KeyError: 'nope'")]


def test_plugin_aggregator_returning_a_wrong_shape_names_its_source():
    def batched(u, pred, parameters):
        return np.zeros(len(u) + 1)

    manager = manager_with(
        (module("shape", uqeval_aggregators=lambda: {"wide": Aggregator("wide", batched, "")}), info("shape"))
    )
    u = np.ones((2, 3, 3), dtype=np.float32)
    with pytest.raises(UQEvalError, match=r"'wide' \(plugin 'shape' \(dist-shape 1.0\)\) returned shape \(3,\)"):
        manager.aggregators()["wide"](u, np.zeros(u.shape, dtype=np.uint8), AggregationParameters())


# --------------------------------------------------------------------------- contracts


class FakeAU:
    name = "fake_au"
    description = "a fake AU method"
    deterministic = True
    default_samples = 1

    def build(self, backbone, *, in_channels, n_classes, dropout=0.0):
        return backbone

    def loss(self, model, images, labels, *, epoch):
        return 0.0

    def sample(self, model, images, n):
        return images


class FakeEU:
    name = "fake_eu"
    description = "a fake EU method"
    default_members = 1

    def train(self, routine, *, n_members, seed):
        return routine(seed=seed)

    def members(self, trained, *, n, seed):
        yield from [trained] * n


class FakeDataset:
    name = "fake_data"
    description = "a fake dataset"
    in_channels = 1
    n_classes = 2
    class_names = ("background", "object")
    domains = ("id",)

    def samples(self, role, domain="id", *, seed=0):
        yield Sample("a", np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint8), domain, role)


class AUWithoutSample:
    name = "x"
    description = "x"
    deterministic = False
    default_samples = 2

    def build(self, backbone, *, in_channels, n_classes, dropout=0.0):
        return backbone

    def loss(self, model, images, labels, *, epoch):
        return 0.0


class EUWithoutName:
    description = "x"
    default_members = 1

    def train(self, routine, *, n_members, seed):
        return None

    def members(self, trained, *, n, seed):
        return iter(())


class DatasetWithoutSamples:
    name = "x"
    description = "x"
    in_channels = 1
    n_classes = 2
    class_names = ("a", "b")
    domains = ("id",)


@pytest.mark.parametrize(
    ("protocol", "good", "bad"),
    [
        (AUMethod, FakeAU, AUWithoutSample),
        (EUMethod, FakeEU, EUWithoutName),
        (DatasetSource, FakeDataset, DatasetWithoutSamples),
    ],
)
def test_contracts_are_runtime_checkable_protocols(protocol, good, bad):
    assert isinstance(good(), protocol)
    assert not isinstance(bad(), protocol)
    assert not isinstance(object(), protocol)
    others = [other for other in (AUMethod, EUMethod, DatasetSource) if other is not protocol]
    assert not any(isinstance(good(), other) for other in others)


def test_core_imports_no_deep_learning_framework():
    code = (
        "import sys, uqeval, uqeval.methods, uqeval.hookspecs, uqeval.plugins\n"
        "uqeval.plugins.plugin_manager().aggregators()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'jax'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=cli_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_hookimpl_is_the_pluggy_marker_of_uqeval():
    assert uqeval.hookimpl is hookspecs.hookimpl
    assert isinstance(uqeval.hookimpl, pluggy.HookimplMarker)
    assert uqeval.hookimpl.project_name == "uqeval"
    assert hookspecs.hookspec.project_name == "uqeval"
    assert uqeval.plugins.ENTRY_POINT_GROUP == "uqeval"

    @uqeval.hookimpl
    def uqeval_datasets():
        return {}

    assert hasattr(uqeval_datasets, "uqeval_impl")


def test_builtin_plugin_is_registered_like_any_other():
    manager = PluginManager(load_entry_points=False)
    assert manager.info == {BUILTIN: PluginInfo(BUILTIN, "uqeval", uqeval.__version__, "uqeval.builtin_plugin")}
    assert manager.pluggy.get_plugin(BUILTIN) is uqeval.builtin_plugin
    assert list(manager.aggregators()) == BUILTINS
    assert all(aggregator is AGGREGATORS[name] for name, aggregator in manager.aggregators().items())
    assert manager.au_methods() == manager.eu_methods() == manager.datasets() == {}
    assert manager.problems == [] and manager.problems_note() == ""


# --------------------------------------------------------------------------- one test per hook


def check_uqeval_aggregators() -> None:
    def corner(u: np.ndarray, pred: np.ndarray) -> float:
        """The top-left pixel.

        More text that is not the description.
        """
        return float(u[0, 0]) + float(pred[0, 0])

    def doubled(u, pred, parameters):
        return 2 * u.sum(axis=(1, 2), dtype=np.float64)

    plugin_info = info("corners", "uqeval-corners", "0.3")
    offered = {"corner": corner, "doubled": Aggregator("doubled", doubled, "twice the sum")}
    manager = manager_with((module("corners", uqeval_aggregators=lambda: offered), plugin_info))
    aggregators = manager.aggregators()
    assert sorted(aggregators) == sorted(["corner", "doubled", *BUILTINS])
    rng = np.random.default_rng(1)
    u = rng.random((3, 4, 5)).astype(np.float32)
    pred = rng.integers(0, 2, (3, 4, 5)).astype(np.uint8)
    corner_aggregator = aggregators["corner"]
    assert corner_aggregator.name == "corner"
    assert corner_aggregator.description == "The top-left pixel."
    assert corner_aggregator.source == plugin_info.label == "plugin 'corners' (uqeval-corners 0.3)"
    assert not corner_aggregator.fitted
    np.testing.assert_allclose(
        corner_aggregator(u, pred, AggregationParameters()), u[:, 0, 0].astype(np.float64) + pred[:, 0, 0]
    )
    assert aggregators["doubled"].source == plugin_info.label
    assert aggregators["doubled"].description == "twice the sum"
    np.testing.assert_allclose(
        aggregators["doubled"](u, pred, AggregationParameters()), 2 * u.sum(axis=(1, 2)), rtol=1e-6
    )
    assert rows_by_name(manager)["corners"]["aggregators"] == ["corner", "doubled"]


def check_uqeval_au_methods() -> None:
    method = FakeAU()
    manager = manager_with((module("au", uqeval_au_methods=lambda: {"fake_au": method}), info("au")))
    assert manager.au_methods() == {"fake_au": method}
    assert manager.contributions("uqeval_au_methods")["fake_au"][1] == info("au")
    assert rows_by_name(manager)["au"]["au_methods"] == ["fake_au"]


def check_uqeval_eu_methods() -> None:
    method = FakeEU()
    manager = manager_with((module("eu", uqeval_eu_methods=lambda: {"fake_eu": method}), info("eu")))
    assert manager.eu_methods() == {"fake_eu": method}
    assert rows_by_name(manager)["eu"]["eu_methods"] == ["fake_eu"]
    assert list(method.members(method.train(lambda seed: f"model-{seed}", n_members=1, seed=3), n=2, seed=0)) == [
        "model-3",
        "model-3",
    ]


def check_uqeval_datasets() -> None:
    dataset = FakeDataset()
    manager = manager_with((module("data", uqeval_datasets=lambda: {"fake_data": dataset}), info("data")))
    assert manager.datasets() == {"fake_data": dataset}
    assert rows_by_name(manager)["data"]["datasets"] == ["fake_data"]
    assert [sample.role for sample in dataset.samples("test")] == ["test"]


def check_uqeval_cli() -> None:
    app = typer.Typer()

    @app.command()
    def base() -> None:
        print("base")

    def uqeval_cli(app):
        @app.command()
        def hello(name: str = "world") -> None:
            print(f"hello {name}")

        @app.command(name="good-bye")
        def good_bye() -> None:
            print("bye")

        tools = typer.Typer()

        @tools.command()
        def spin() -> None:
            print("spun")

        @tools.command()
        def stop() -> None:
            print("stopped")

        app.add_typer(tools, name="tools")

    manager = manager_with((module("greeter", uqeval_cli=uqeval_cli), info("greeter")))
    manager.add_commands(app)
    assert manager.commands == {"greeter": ["hello", "good-bye", "tools"]}
    assert rows_by_name(manager)["greeter"]["commands"] == ["hello", "good-bye", "tools"]
    result = CliRunner().invoke(app, ["hello", "--name", "x"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello x\n"
    assert CliRunner().invoke(app, ["good-bye"]).stdout == "bye\n"
    assert CliRunner().invoke(app, ["tools", "spin"]).stdout == "spun\n"


#: One check per hook; a hook added to hookspecs without an entry here fails the test below.
HOOK_CHECKS: dict[str, Callable[[], None]] = {
    "uqeval_aggregators": check_uqeval_aggregators,
    "uqeval_au_methods": check_uqeval_au_methods,
    "uqeval_eu_methods": check_uqeval_eu_methods,
    "uqeval_datasets": check_uqeval_datasets,
    "uqeval_cli": check_uqeval_cli,
}
HOOKS = sorted(vars(PluginManager(load_entry_points=False).pluggy.hook))
SPECIFIED = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("uqeval_"))


def test_the_hooks_are_the_specifications():
    assert HOOKS == SPECIFIED
    assert len(HOOKS) >= 5


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert hook in HOOK_CHECKS, f"hook {hook} has no test: add check_{hook} to HOOK_CHECKS in tests/test_plugins.py"
    HOOK_CHECKS[hook]()


@pytest.mark.parametrize("hook", SPECIFIED)
def test_every_hook_is_documented(hook):
    docs = ROOT / "docs" / "plugins.md"
    assert docs.is_file(), "docs/plugins.md is missing"
    assert hook in docs.read_text(encoding="utf-8"), f"{hook} is not documented in docs/plugins.md"


# --------------------------------------------------------------------------- registration in code


@pytest.fixture
def restore_aggregators() -> Iterator[None]:
    before = dict(AGGREGATORS)
    yield
    AGGREGATORS.clear()
    AGGREGATORS.update(before)
    uqeval.plugins.forget_contributions()


def test_register_aggregator_is_found_through_the_plugin_manager(restore_aggregators):
    get_aggregator("mean")  # the process's manager is built and has cached the aggregators
    aggregator = Aggregator("in_code", total, "registered in code")
    register_aggregator(aggregator)
    assert get_aggregator("in_code") is aggregator
    row = rows_by_name(uqeval.plugins.plugin_manager())[BUILTIN]
    assert row["aggregators"] == [*BUILTINS, "in_code"]
    u = np.full((2, 3, 3), 0.5, dtype=np.float32)
    assert uqeval.aggregate("in_code", u, np.zeros(u.shape, np.uint8)).tolist() == [4.5, 4.5]
    register_aggregator(aggregator)  # the same one again is no clash
    with pytest.raises(UQEvalError, match="'in_code' is offered by both uqeval and mine"):
        register_aggregator(Aggregator("in_code", mean, "", source="mine"))


def test_register_aggregator_takes_a_name_before_a_plugin(restore_aggregators):
    # Code registrations join the built-in plugin, whose names a plugin cannot shadow.
    manager = manager_with((module("p", uqeval_aggregators=lambda: {"clash": constant(1.0)}), info("p")))
    assert manager.aggregators()["clash"].source == "plugin 'p' (dist-p 1.0)"
    register_aggregator(Aggregator("clash", mean, ""))
    manager.forget()
    assert manager.aggregators()["clash"].source == BUILTIN
    assert [problem.error for problem in manager.problems] == ["aggregation name 'clash' is a built-in one; not added"]


def test_register_aggregator_in_a_registry_of_ones_own(restore_aggregators):
    registry: dict[str, Aggregator] = {}
    aggregator = Aggregator("mine", mean, "")
    register_aggregator(aggregator, registry)
    assert registry == {"mine": aggregator}
    assert "mine" not in AGGREGATORS
    assert get_aggregator("mine", registry) is aggregator
    with pytest.raises(UQEvalError, match=r"unknown aggregation 'mean'; choose one of mine$"):
        get_aggregator("mean", registry)


def test_per_image_lifts_a_function_of_one_image():
    seen = []

    def peak(u, pred):
        seen.append((u.shape, pred.shape))
        return u.max() - pred.sum()

    batched = per_image(peak)
    u = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    pred = np.zeros(u.shape, dtype=np.uint8)
    pred[1] = 1
    scores = batched(u, pred, AggregationParameters())
    assert scores.dtype == np.float64
    assert scores.tolist() == [11.0, 23.0 - 12.0]
    assert seen == [((3, 4), (3, 4))] * 2
