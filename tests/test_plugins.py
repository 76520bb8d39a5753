"""The plugin system: hooks, the plugin manager, broken and clashing plugins, the CLI hook.

Plugins that come from entry points are tiny distributions written by hand into a
temporary folder: a module plus ``NAME-VERSION.dist-info`` with ``METADATA`` and
``entry_points.txt``. They are found through ``importlib.metadata`` exactly as an
installed package is: in a subprocess with the folder on ``PYTHONPATH`` (what a user
runs) or in this process with the folder on ``sys.path`` (cheaper, for the details).
Plugins that only test a hook are registered directly on a
``PluginManager(load_entry_points=False)``, or in code with ``PluginManager.register``.

Every test is hermetic: a plugin installed in the environment (uqeval-torch, or any
other entry point of the group ``uqeval``) changes no outcome. ``UQEVAL_LOAD_PLUGINS``
is empty unless a test names the entry points it loads (its own hand-made ones), and
the subprocesses load only the entry points of the folder they are given.
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

import helpers
import numpy as np
import pluggy
import pytest
import typer
from helpers import cli_env
from typer.testing import CliRunner

import uqeval
import uqeval.plugins
from uqeval import UQEvalError, aggregation, builtin_plugin, contracts, hookspecs
from uqeval.aggregation import AggregationParameters, Aggregator, per_image, total
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


def entry_point_names(*sites: Path) -> list[str]:
    """The names of the ``uqeval`` entry points of the hand-made distributions in ``sites``."""
    names = []
    for site in sites:
        for path in sorted(site.glob("*.dist-info/entry_points.txt")):
            lines = path.read_text().splitlines()
            names += [line.split("=")[0].strip() for line in lines if "=" in line]
    return names


def run_cli(*args: str, paths: tuple[Path, ...] = (), columns: int = 200) -> subprocess.CompletedProcess:
    """The real entry point, loading only the entry points found in ``paths`` (so an installed
    plugin such as uqeval-torch neither adds rows, commands or warnings nor takes a name)."""
    return helpers.run_cli(*args, paths=paths, columns=columns, plugins=",".join(entry_point_names(*paths)))


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
    """No entry point loaded unless a test names it; the process's manager and the modules written here
    forgotten after."""
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")
    uqeval.plugins.reset_plugin_manager()
    yield
    uqeval.plugins.reset_plugin_manager()
    for name in [name for name in sys.modules if name.startswith(PREFIX)]:
        del sys.modules[name]


@pytest.fixture
def on_path(monkeypatch) -> Callable[[Path], None]:
    """Put a folder of hand-made distributions on ``sys.path`` for this test and load its entry points
    (those of every folder put there, and no installed plugin's)."""
    sites: list[Path] = []

    def prepend(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))
        sites.append(site)
        monkeypatch.setenv(LOAD_PLUGINS_ENV, ",".join(entry_point_names(*sites)))

    return prepend


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:
    return synthetic_store("disentangled", n_images=16, size=12, eu=2, au=2, raters=2)


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


@pytest.mark.cli
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


@pytest.mark.cli
def test_broken_plugin_warning_is_one_line_on_a_narrow_terminal(mixed_site):
    result = run_cli("--version", paths=(mixed_site,), columns=80)
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "'broken'" in line]
    assert len(lines) == 1 and "frobnicate" in lines[0] and "uqeval plugins" in lines[0], result.stderr


@pytest.mark.cli
def test_hook_that_raises_is_reported_at_its_stage(mixed_report):
    rows, _ = mixed_report
    row = rows["raiser"]
    assert (row["distribution"], row["version"]) == ("uqt-raiser", "0.2.0")
    assert row["aggregators"] == []
    assert row["problems"] == ["uqeval_aggregators: RuntimeError: raiser cannot count"]


@pytest.mark.cli
def test_misspelt_hook_is_a_registration_problem(mixed_report):
    rows, _ = mixed_report
    row = rows["misspelt"]
    assert (row["distribution"], row["version"]) == ("uqt-misspelt", "0.3.0")
    assert len(row["problems"]) == 1
    assert row["problems"][0].startswith("registration: ")
    assert "uqeval_aggregator" in row["problems"][0]
    # Not registered: its correctly spelt hook does not count either.
    assert not any("misspelt_data" in other["datasets"] for other in rows.values())


@pytest.mark.cli
def test_hook_returning_a_list_is_reported(mixed_report):
    rows, _ = mixed_report
    assert rows["lister"]["problems"] == [
        "uqeval_aggregators: TypeError: returned list, expected a dict of name → contribution"
    ]
    assert not any("lister_score" in row["aggregators"] for row in rows.values())


@pytest.mark.cli
def test_cli_hook_that_raises_is_reported_and_its_commands_removed(mixed_report):
    rows, result = mixed_report
    row = rows["clibreak"]
    assert row["commands"] == []
    assert row["problems"] == ["uqeval_cli: RuntimeError: clibreak is half done"]
    assert "warning: plugin 'clibreak' (uqt-clibreak 1.1.0) failed in uqeval_cli" in result.stderr


@pytest.mark.cli
def test_score_still_works_beside_broken_plugins(mixed_site, store, tmp_path):
    out = tmp_path / "report"
    result = run_cli("score", str(store), "--tasks", "oodd", "--no-plots", "--json", "--out", str(out),
                     paths=(mixed_site,))  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["conventions"]["aggregation"] == "border"
    assert {row["aggregation"] for row in scores["results"]} == {"border", "samples"}  # samples: pairwise_dice and cov
    assert (out / "scores.json").is_file()
    warned = {line.split("'")[1] for line in result.stderr.splitlines() if line.startswith("warning: plugin")}
    assert {"broken", "misspelt", "clibreak"} <= warned


@pytest.mark.cli
def test_version_still_works_beside_broken_plugins(mixed_site):
    result = run_cli("--version", paths=(mixed_site,))
    assert result.returncode == 0
    assert result.stdout.strip() == f"uqeval {uqeval.__version__}"
    assert "'broken' (uqt-broken 0.1.0)" in result.stderr


@pytest.mark.cli
def test_unknown_aggregation_names_the_failing_plugin(mixed_site, store, tmp_path):
    result = run_cli("score", str(store), "--aggregation", "nope", "--out", str(tmp_path / "r"), paths=(mixed_site,))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert error[0].startswith(
        "error: --aggregation: unknown aggregation 'nope'; "
        "choose one of area, border, mean, patch_max, sum, threshold ("
    )
    assert (
        "plugin 'raiser' (uqt-raiser 0.2.0) failed in uqeval_aggregators: RuntimeError: raiser cannot count"
        in (error[0])
    )
    assert "plugin 'broken' (uqt-broken 0.1.0) failed in import" in error[0]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the CLI hook, end to end


@pytest.mark.cli
def test_cli_hook_adds_a_command(mixed_site):
    result = run_cli("hello", "--name", "x", paths=(mixed_site,))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello x\n"


@pytest.mark.cli
def test_cli_help_lists_the_plugin_command_and_not_the_failed_one(mixed_site):
    result = run_cli("--help", paths=(mixed_site,))
    assert result.returncode == 0, result.stderr
    commands = [line.strip("│ ").split()[0] for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert {"score", "plugins", "hello"} <= set(commands)
    assert "half" not in commands


@pytest.mark.cli
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


@pytest.mark.cli
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


@pytest.mark.cli
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


@pytest.mark.cli
def test_duplicate_plugin_command_warning_names_both_plugins(clash_report):
    _, result = clash_report
    labels = ("plugin 'hello_one' (uqt-hello-one 1.0)", "plugin 'hello_two' (uqt-hello-two 2.0)")
    lines = [line for line in result.stderr.splitlines() if "command 'hello'" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: plugin 'hello_")
    assert "failed in uqeval_cli: command 'hello' is taken by plugin 'hello_" in lines[0]
    assert_names_both(lines[0], *labels)


@pytest.mark.cli
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
    manager = uqeval.plugins.plugin_manager()  # the process's manager, which uqeval.aggregate uses
    assert set(manager.info) == {BUILTIN, "dup_a", "dup_b", "solo"}
    labels = ("plugin 'dup_a' (uqt-dup-a 1.0)", "plugin 'dup_b' (uqt-dup-b 2.0)")
    u = np.full((2, 3, 3), 0.5, dtype=np.float32)
    pred = np.zeros(u.shape, dtype=np.uint8)
    # Using the clashing name is an error naming both plugins ...
    for use in (
        lambda: manager.aggregator("top_decile"),
        lambda: manager.lookup("uqeval_aggregators", "top_decile"),
        lambda: uqeval.aggregate("top_decile", u, pred),
    ):
        with pytest.raises(UQEvalError) as caught:
            use()
        assert str(caught.value).startswith("aggregation name 'top_decile' is offered by both")
        assert_names_both(str(caught.value), *labels)
    # ... while every other name keeps working.
    assert "top_decile" not in manager.aggregators()
    assert manager.aggregator("border") == builtin_plugin.uqeval_aggregators()["border"]
    assert manager.aggregator("solo").source == "plugin 'solo' (uqt-solo 3.0)"
    assert uqeval.aggregate("solo", u, pred).tolist() == [3.0, 3.0]
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


@pytest.mark.cli
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
    assert {row["aggregation"] for row in scores["results"]} == {"border", "solo", "samples"}
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
    assert manager.aggregator("twice_score").source == "plugin 'twice_a' (uqt-twice 1.0)"


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
    installed = {entry.name for entry in importlib.metadata.entry_points(group="uqeval")}  # e.g. uqeval-torch's
    on_path(tmp_path)
    cases = {None: {"alpha", "beta"}, "": set(), "alpha": {"alpha"}, " beta , alpha ": {"alpha", "beta"}, ",": set()}
    for value, expected in cases.items():
        if value is None:  # unset: every installed plugin, those of this test and any others
            expected = expected | installed
            monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)
        else:
            monkeypatch.setenv(LOAD_PLUGINS_ENV, value)
        manager = PluginManager()
        # Loaded means tried: an installed plugin may fail in its own way, which is not this test's business.
        tried = set(manager.info) | {
            problem.plugin for problem in manager.problems if problem.stage in ("import", "registration")
        }
        assert tried - {BUILTIN} == expected, value
        # Their hooks count (an installed plugin offering the same name would clash, not hide them).
        offering = {plugin.name for _, plugin in manager.contributions("uqeval_aggregators").values()}
        offering |= {plugin.name for infos in manager.clashes["uqeval_aggregators"].values() for plugin in infos}
        assert offering & {"alpha", "beta"} == expected & {"alpha", "beta"}, value
        if value is not None:
            assert {"alpha_score", "beta_score"} & set(manager.aggregators()) == {f"{name}_score" for name in expected}


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
    u = np.ones((1, 2, 2), dtype=np.float32)
    pred = np.zeros(u.shape, dtype=np.uint8)
    with pytest.raises(UQEvalError) as caught:
        uqeval.aggregate("bad_score", u, pred)
    assert str(caught.value) == (
        "unknown aggregation 'bad_score'; choose one of area, border, good_score, mean, patch_max, sum, threshold "
        "(plugin 'bad' (dist-bad 2.0) failed in uqeval_aggregators: aggregation 'bad_score' is of type int; "
        "expected f(u, pred) -> float or an Aggregator)"
    )
    # Only that name is left out: the built-ins and the plugin's other aggregation work.
    assert manager.aggregator("border") == builtin_plugin.uqeval_aggregators()["border"]
    assert manager.aggregator("good_score").source == "plugin 'bad' (dist-bad 2.0)"
    assert uqeval.aggregate("good_score", u, pred).tolist() == [1.0]
    rows = rows_by_name(manager)
    assert rows["bad"]["aggregators"] == ["good_score"]
    assert rows["bad"]["problems"] == [
        "uqeval_aggregators: aggregation 'bad_score' is of type int; expected f(u, pred) -> float or an Aggregator"
    ]


@pytest.mark.parametrize(
    ("hook", "offered", "expected"),
    [
        (
            "uqeval_au_methods",
            {"x": lambda: AUWithoutSample()},
            "AU method 'x' does not meet uqeval.AUMethod (missing ['sample'])",
        ),
        (
            "uqeval_eu_methods",
            {"x": lambda: EUWithoutName()},
            "EU method 'x' does not meet uqeval.EUMethod (missing ['name'])",
        ),
        (
            "uqeval_datasets",
            {"x": lambda: DatasetWithoutSamples()},
            "dataset 'x' does not meet uqeval.DatasetSource (missing ['samples'])",
        ),
        # The contract before datasets had options: not enough any more.
        (
            "uqeval_datasets",
            {"x": lambda: DatasetWithoutOptions()},
            "dataset 'x' does not meet uqeval.DatasetSource (missing ['options', 'configure'])",
        ),
        (
            "uqeval_datasets",
            {"x": lambda: "a string"},
            "dataset 'x' does not meet uqeval.DatasetSource (missing ['name', ",
        ),
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
    """A dataset with one option, ``size``: the side of its one image."""

    name = "fake_data"
    description = "a fake dataset"
    in_channels = 1
    n_classes = 2
    class_names = ("background", "object")
    domains = ("id",)

    def __init__(self, size: int = 2) -> None:
        self.size = size

    def samples(self, role, domain="id", *, seed=0):
        shape = (1, self.size, self.size)
        yield Sample("a", np.zeros(shape, np.float32), np.zeros(shape, np.uint8), domain, role)

    def options(self):
        return {"size": self.size}

    def configure(self, **options):
        unknown = sorted(set(options) - {"size"})
        if unknown:
            raise UQEvalError(f"dataset 'fake_data' has no option {', '.join(unknown)}; its options: size")
        return FakeDataset(**{**self.options(), **{name: int(value) for name, value in options.items()}})


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

    def options(self):
        return {}

    def configure(self, **options):
        return self


class DatasetWithoutOptions:
    """A dataset as the contract was before options: no ``options`` and no ``configure``."""

    name = "x"
    description = "x"
    in_channels = 1
    n_classes = 2
    class_names = ("a", "b")
    domains = ("id",)

    def samples(self, role, domain="id", *, seed=0):
        return iter(())


@pytest.mark.parametrize(
    ("protocol", "good", "bad"),
    [
        (AUMethod, FakeAU, AUWithoutSample),
        (EUMethod, FakeEU, EUWithoutName),
        (DatasetSource, FakeDataset, DatasetWithoutSamples),
        (DatasetSource, FakeDataset, DatasetWithoutOptions),
    ],
)
def test_contracts_are_runtime_checkable_protocols(protocol, good, bad):
    assert isinstance(good(), protocol)
    assert not isinstance(bad(), protocol)
    assert not isinstance(object(), protocol)
    others = [other for other in (AUMethod, EUMethod, DatasetSource) if other is not protocol]
    assert not any(isinstance(good(), other) for other in others)


def test_contract_types_are_importable_from_the_package():
    from uqeval import AggregationParameters, Aggregator, AUMethod, DatasetSource, EUMethod, Sample, hookimpl

    assert (AUMethod, EUMethod, DatasetSource, Sample) == (
        contracts.AUMethod,
        contracts.EUMethod,
        contracts.DatasetSource,
        contracts.Sample,
    )
    assert (Aggregator, AggregationParameters) == (aggregation.Aggregator, aggregation.AggregationParameters)
    assert hookimpl is hookspecs.hookimpl
    public = {"AUMethod", "EUMethod", "DatasetSource", "Sample", "Aggregator", "AggregationParameters", "hookimpl"}
    assert public <= set(uqeval.__all__)
    assert public <= set(dir(uqeval))
    with pytest.raises(AttributeError, match="uqeval attribute TrainRoutine"):
        uqeval.TrainRoutine  # noqa: B018  (only what a plugin implements or returns is public)


def test_core_imports_no_deep_learning_framework():
    code = (
        "import sys, uqeval, uqeval.contracts, uqeval.hookspecs, uqeval.plugins\n"
        "uqeval.AUMethod, uqeval.EUMethod, uqeval.DatasetSource, uqeval.Sample, uqeval.Aggregator\n"
        "uqeval.plugins.plugin_manager().aggregators()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'jax'}))"
    )
    env = cli_env(**{LOAD_PLUGINS_ENV: ""})  # the core alone, whatever is installed
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env, timeout=120
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
    # The built-in plugin's hook is where the built-in strategies are listed (aggregation.py only defines them).
    assert manager.aggregators() == builtin_plugin.uqeval_aggregators()
    assert {name: aggregator.source for name, aggregator in manager.aggregators().items()} == dict.fromkeys(
        BUILTINS, BUILTIN
    )
    assert manager.aggregator("sum").function is aggregation.total
    assert manager.aggregator("threshold").fitted
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
    assert manager.aggregator("corner") is aggregators["corner"]
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
    assert manager.au_method("fake_au") is method
    assert manager.contributions("uqeval_au_methods")["fake_au"][1] == info("au")
    assert rows_by_name(manager)["au"]["au_methods"] == ["fake_au"]


def check_uqeval_eu_methods() -> None:
    method = FakeEU()
    manager = manager_with((module("eu", uqeval_eu_methods=lambda: {"fake_eu": method}), info("eu")))
    assert manager.eu_methods() == {"fake_eu": method}
    assert manager.eu_method("fake_eu") is method
    assert rows_by_name(manager)["eu"]["eu_methods"] == ["fake_eu"]
    assert list(method.members(method.train(lambda seed: f"model-{seed}", n_members=1, seed=3), n=2, seed=0)) == [
        "model-3",
        "model-3",
    ]


def check_uqeval_datasets() -> None:
    dataset = FakeDataset()
    manager = manager_with((module("data", uqeval_datasets=lambda: {"fake_data": dataset}), info("data")))
    assert manager.datasets() == {"fake_data": dataset}
    assert manager.dataset("fake_data") is dataset
    assert rows_by_name(manager)["data"]["datasets"] == ["fake_data"]
    assert [sample.role for sample in dataset.samples("test")] == ["test"]
    # Options (as the command line gives them, strings) go through the dataset's configure.
    configured = manager.dataset("fake_data", {"size": "3"})
    assert configured.options() == {"size": 3}
    assert next(iter(configured.samples("test"))).image.shape == (1, 3, 3)
    assert manager.dataset("fake_data").options() == {"size": 2}  # the offered one is unchanged


def check_uqeval_importers() -> None:
    def import_things(out: Path, size: int = 2) -> uqeval.ImportSummary:
        """Things from somewhere."""
        return uqeval.ImportSummary(Path(out), size)

    offered = uqeval.Importer("things", import_things, "the things format")
    manager = manager_with(
        (module("things", uqeval_importers=lambda: {"things": offered, "plain": import_things}), info("things"))
    )
    importers = manager.importers()
    assert sorted(importers) == ["files", "nnunet", "plain", "things", "values"]
    assert importers["nnunet"].source == BUILTIN
    assert importers["things"].description == "the things format"
    assert importers["plain"].description == "Things from somewhere."  # a function: its docstring
    assert importers["things"].source == importers["plain"].source == "plugin 'things' (dist-things 1.0)"
    assert manager.importer("plain")(out="x.zarr", size=3) == uqeval.ImportSummary(Path("x.zarr"), 3)
    assert rows_by_name(manager)["things"]["importers"] == ["things", "plain"]
    assert rows_by_name(manager)[BUILTIN]["importers"] == ["nnunet", "files", "values"]
    with pytest.raises(UQEvalError) as raised:
        manager.importer("nope")
    assert str(raised.value) == "unknown importer 'nope'; choose one of files, nnunet, plain, things, values"
    broken = manager_with((module("broken", uqeval_importers=lambda: {"bad": 3}), info("broken")))
    assert "nnunet" in broken.importers() and "bad" not in broken.importers()
    assert "importer 'bad' is of type int; expected a function or an Importer" in str(broken.problems[0])


def check_uqeval_tasks() -> None:
    def rows(tables) -> None:
        tables.add("count", "id", "mean", "none", "images", float(tables.splits["id"].sum()))

    task = uqeval.Task(
        "count", "image count", "images", None, (), False, needs_labels=False, needs_ood=False, rows=rows
    )
    manager = manager_with((module("counter", uqeval_tasks=lambda: {"count": task}), info("counter")))
    assert list(manager.tasks()) == ["oodd", "amb", "cal", "fd", "pq", "count"]
    assert manager.task("count") is task
    assert manager.task("oodd").rows is not None  # the built-ins come through the same hook
    assert rows_by_name(manager)["counter"]["tasks"] == ["count"]
    assert rows_by_name(manager)[BUILTIN]["tasks"] == ["oodd", "amb", "cal", "fd", "pq"]
    with pytest.raises(UQEvalError) as raised:
        manager.task("nope")
    assert str(raised.value) == "unknown task 'nope'; choose one of amb, cal, count, fd, oodd, pq"
    broken = manager_with(
        (module("broken", uqeval_tasks=lambda: {"bad": 3, "oodd": task, "count": task}), info("broken"))
    )
    assert list(broken.tasks()) == ["oodd", "amb", "cal", "fd", "pq", "count"]
    problems = " ".join(str(problem) for problem in broken.problems)
    assert "task 'bad' is of type int; expected a uqeval.Task" in problems
    assert "task 'oodd' is named 'count' inside" in problems


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
    "uqeval_importers": check_uqeval_importers,
    "uqeval_tasks": check_uqeval_tasks,
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


def in_code_plugin(name: str, **offered: Callable) -> types.ModuleType:
    """A module ``name`` offering aggregations ``offered``, to register without a PluginInfo."""
    return module(name, uqeval_aggregators=lambda: dict(offered))


class Scorer:
    """A plugin object: its hooks are methods."""

    @uqeval.hookimpl
    def uqeval_aggregators(self):
        return {"scorer_sum": Aggregator("scorer_sum", total, "sum of U")}


def test_register_in_code_names_the_plugin_after_its_module():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(in_code_plugin("my_scores", tenfold=lambda u, pred: 10 * float(u.sum())))  # no PluginInfo
    assert manager.problems == []
    assert manager.info["my_scores"] == PluginInfo("my_scores", "in code", "", "my_scores")
    assert manager.info["my_scores"].label == "plugin 'my_scores' (in code)"
    aggregator = manager.aggregator("tenfold")
    assert aggregator.source == "plugin 'my_scores' (in code)"
    u = np.full((2, 3, 3), 0.5, dtype=np.float32)
    u[1] = 1.0
    assert aggregator(u, np.zeros(u.shape, np.uint8), AggregationParameters()).tolist() == [45.0, 90.0]
    rows = rows_by_name(manager)
    assert rows["my_scores"] == rows["my_scores"] | {
        "distribution": "in code",
        "version": "",
        "module": "my_scores",
        "aggregators": ["tenfold"],
        "problems": [],
    }
    assert rows[BUILTIN]["aggregators"] == BUILTINS  # a plugin of its own, not part of the built-ins


def test_register_in_code_names_an_object_after_its_class():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(Scorer())
    assert manager.info["Scorer"] == PluginInfo("Scorer", "in code", "", __name__)
    assert manager.aggregator("scorer_sum").source == "plugin 'Scorer' (in code)"
    # A second object of the class has the same name: refused, the first kept.
    assert not manager.register(Scorer())
    (problem,) = manager.problems
    assert (problem.plugin, problem.distribution, problem.stage) == ("Scorer", "in code", "registration")
    assert problem.error == "the plugin name is already taken by plugin 'Scorer' (in code)"
    assert str(problem) == (
        "plugin 'Scorer' (in code) failed in registration: "
        "the plugin name is already taken by plugin 'Scorer' (in code)"
    )


def test_register_in_code_with_a_misspelt_hook_is_refused():
    plugin = module("sloppy", uqeval_aggregator=lambda: {"x": constant(1.0)})  # no s: not a hook
    manager = PluginManager(load_entry_points=False)
    assert not manager.register(plugin)
    assert "sloppy" not in manager.info
    (problem,) = manager.problems
    assert (problem.plugin, problem.distribution, problem.version, problem.stage) == (
        "sloppy",
        "in code",
        "",
        "registration",
    )
    assert "unknown hook 'uqeval_aggregator'" in problem.error


def test_register_on_the_process_manager_is_found_by_name():
    u = np.full((2, 3, 3), 0.5, dtype=np.float32)
    pred = np.zeros(u.shape, dtype=np.uint8)
    manager = uqeval.plugins.plugin_manager()
    assert uqeval.aggregate("mean", u, pred).tolist() == [0.5, 0.5]  # the manager has collected the aggregations
    assert manager.register(in_code_plugin("late_scores", late=Aggregator("late", total, "sum of U")))
    # Registering forgets what was collected: the next lookup sees the new name.
    assert uqeval.aggregate("late", u, pred).tolist() == [4.5, 4.5]
    assert uqeval.plugins.plugin_manager().aggregator("late").source == "plugin 'late_scores' (in code)"
    assert rows_by_name(manager)["late_scores"]["aggregators"] == ["late"]
    # It exists only in that manager: a fresh one (a new process, a worker) does not know it.
    uqeval.plugins.reset_plugin_manager()
    with pytest.raises(
        UQEvalError, match=r"^unknown aggregation 'late'; choose one of area, border, mean, patch_max, sum, threshold$"
    ):
        uqeval.aggregate("late", u, pred)


def test_register_on_the_process_manager_is_what_score_uses(store):
    assert uqeval.plugins.plugin_manager().register(in_code_plugin("constant_scores", flat=constant(0.25)))
    scores = uqeval.score(store, tasks=["oodd"], aggregations=["border", "flat"])
    flat = {row["value"] for row in scores.results if row["aggregation"] == "flat" and row["metric"] == "auroc"}
    assert flat == {0.5}  # a constant score: every image ties
    assert scores.value("oodd", "ood", "eu", "auroc", "border") != 0.5


def test_score_of_an_unknown_aggregation_names_the_argument(store):
    with pytest.raises(UQEvalError) as caught:
        uqeval.score(store, tasks=["oodd"], aggregations=["nope"])
    assert caught.value.parameter == "aggregations"
    assert str(caught.value) == (
        "unknown aggregation 'nope'; choose one of area, border, mean, patch_max, sum, threshold"
    )


def test_a_private_manager_leaves_the_process_manager_alone():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(in_code_plugin("private_scores", mine=constant(1.0)))
    assert "mine" in manager.aggregators()
    assert "mine" not in uqeval.plugins.plugin_manager().aggregators()
    assert "private_scores" not in uqeval.plugins.plugin_manager().info


def test_register_in_code_cannot_shadow_a_builtin():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(in_code_plugin("shadowing", mean=constant(7.0), own=constant(8.0)))
    assert manager.aggregator("mean") == builtin_plugin.uqeval_aggregators()["mean"]
    assert manager.aggregator("own").source == "plugin 'shadowing' (in code)"  # its other names count
    (problem,) = manager.problems
    assert (problem.plugin, problem.stage) == ("shadowing", "uqeval_aggregators")
    assert problem.error == "aggregation name 'mean' is a built-in one; not added"


def test_aggregation_names_the_rows_use_are_reserved():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(in_code_plugin("reserving", samples=constant(1.0), none=constant(2.0), own=constant(3.0)))
    assert set(manager.aggregators()) == {*builtin_plugin.uqeval_aggregators(), "own"}
    assert sorted(problem.error for problem in manager.problems) == [
        "aggregation name 'none' is reserved: it marks the rows of per-pixel metrics, which aggregate nothing; "
        "not added",
        "aggregation name 'samples' is reserved: it marks the rows of the image scores of the samples "
        "(pairwise Dice, CoV); not added",
    ]


def test_two_registrations_in_code_offering_one_name_clash():
    manager = PluginManager(load_entry_points=False)
    assert manager.register(in_code_plugin("scores_a", spread=constant(1.0)))
    assert manager.register(in_code_plugin("scores_b", spread=constant(2.0)))
    message = (
        "aggregation name 'spread' is offered by both plugin 'scores_a' (in code) and plugin 'scores_b' (in code); "
        "uninstall all but one of them"
    )
    with pytest.raises(UQEvalError) as caught:
        manager.aggregator("spread")
    assert str(caught.value) == message
    assert "spread" not in manager.aggregators()
    assert [(problem.plugin, problem.error) for problem in manager.problems] == [
        ("scores_a", message),
        ("scores_b", message),
    ]


# --------------------------------------------------------------------------- the typed getters

#: getter, hook, the kind in messages, a good contribution
GETTERS = [
    ("aggregator", "uqeval_aggregators", "aggregation", lambda: Aggregator("kept", total, "sum")),
    ("au_method", "uqeval_au_methods", "AU method", FakeAU),
    ("eu_method", "uqeval_eu_methods", "EU method", FakeEU),
    ("dataset", "uqeval_datasets", "dataset", FakeDataset),
]


@pytest.mark.parametrize(("getter", "hook", "kind", "make"), GETTERS)
def test_getter_of_an_unknown_name_lists_the_known_ones_and_the_problems(getter, hook, kind, make):
    def broken():
        raise RuntimeError("cannot offer")

    good = make()
    name = getattr(good, "name", "kept")
    manager = manager_with(
        (module("good", **{hook: lambda: {name: good}}), info("good")),
        (module("bad", **{hook: broken}), info("bad")),
    )
    known = sorted([name, *BUILTINS]) if hook == "uqeval_aggregators" else [name]
    with pytest.raises(UQEvalError) as caught:
        getattr(manager, getter)("nope")
    assert str(caught.value) == (
        f"unknown {kind} 'nope'; choose one of {', '.join(known)} "
        f"(plugin 'bad' (dist-bad 1.0) failed in {hook}: RuntimeError: cannot offer)"
    )
    assert caught.value.parameter is None  # the caller knows which of its arguments it was
    found = getattr(manager, getter)(name)
    assert found is good if hook != "uqeval_aggregators" else found.source == "plugin 'good' (dist-good 1.0)"


@pytest.mark.parametrize(("getter", "hook", "kind", "make"), GETTERS)
def test_getter_of_a_name_two_plugins_offer_names_both(getter, hook, kind, make):
    good = make()
    name = getattr(good, "name", "kept")
    manager = manager_with(
        (module("one", **{hook: lambda: {name: good}}), info("one")),
        (module("two", **{hook: lambda: {name: make()}}), info("two")),
    )
    with pytest.raises(UQEvalError) as caught:
        getattr(manager, getter)(name)
    assert str(caught.value) == (
        f"{kind} name {name!r} is offered by both plugin 'one' (dist-one 1.0) and plugin 'two' (dist-two 1.0); "
        "uninstall all but one of them"
    )


def test_dataset_getter_configures_a_copy_and_refuses_an_unknown_option():
    dataset = FakeDataset()
    manager = manager_with((module("data", uqeval_datasets=lambda: {"fake_data": dataset}), info("data")))
    assert manager.dataset("fake_data", None) is dataset
    assert manager.dataset("fake_data", {}) is dataset  # no options: configure is not even called
    assert manager.dataset("fake_data", {"size": 5}).options() == {"size": 5}
    assert dataset.options() == {"size": 2}
    with pytest.raises(UQEvalError, match=r"^dataset 'fake_data' has no option colour; its options: size$"):
        manager.dataset("fake_data", {"colour": "red"})


def test_aggregate_is_the_process_managers_getter_applied():
    assert uqeval.aggregate is uqeval.plugins.aggregate
    rng = np.random.default_rng(3)
    u = rng.random((3, 5, 6)).astype(np.float32)
    pred = rng.integers(0, 2, u.shape).astype(np.uint8)
    builtins = builtin_plugin.uqeval_aggregators()
    for name in ("mean", "sum", "patch_max", "area", "border"):
        np.testing.assert_array_equal(uqeval.aggregate(name, u, pred), builtins[name](u, pred, AggregationParameters()))
    parameters = AggregationParameters(threshold=0.5, patch_size=2)
    np.testing.assert_array_equal(
        uqeval.aggregate("threshold", u, pred, parameters), builtins["threshold"](u, pred, parameters)
    )
    np.testing.assert_array_equal(
        uqeval.aggregate("patch_max", u, pred, parameters), builtins["patch_max"](u, pred, parameters)
    )
    assert not np.array_equal(
        uqeval.aggregate("patch_max", u, pred, parameters), uqeval.aggregate("patch_max", u, pred)
    )
    with pytest.raises(UQEvalError, match="needs a threshold fitted"):
        uqeval.aggregate("threshold", u, pred)


def test_registration_has_one_path():
    """No registry beside the plugin manager: no global aggregations, no second way to register."""
    for name in ("register_aggregator", "get_aggregator", "forget_contributions", "AGGREGATORS"):
        assert not hasattr(uqeval.plugins, name), name
        assert not hasattr(aggregation, name), name


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
