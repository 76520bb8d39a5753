"""The shape of the package: no import cycles, a light public surface, layers that flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uqeval"
HEAVY = ("numba", "xarray", "zarr", "dask", "scipy", "pandas", "matplotlib", "torch")


def module_imports() -> dict[str, set[str]]:
    """Module → the uqeval modules it imports, lazy imports included, ``TYPE_CHECKING`` ones not."""
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    edges: dict[str, set[str]] = {}
    for name, file in modules.items():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        typing_only = {
            id(node)
            for statement in ast.walk(tree)
            if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.dump(statement.test)
            for block in statement.body
            for node in ast.walk(block)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                targets |= submodules
                if len(submodules) < len(node.names):
                    targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        edges[name] = {target for target in targets if target in modules and target not in (name, "uqeval")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_among_the_modules():
    edges = module_imports()
    assert len(edges) > 30  # the walk found the package
    assert find_cycle(edges) is None


#: The layers of the package, in the order the data flows: a module imports only modules
#: of its own layer or of the layers before it. A name ending in ``.`` stands for a
#: package and everything in it; a module takes the layer of its longest matching name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "vocabulary",
        ("names", "errors", "jsonable", "precision", "tasks", "conventions", "hookspecs", "contracts", "notes"),
    ),
    # How a string from a store or the command line is shown: terminal, figure, CSV.
    ("text", ("text",)),
    (
        "store",
        (
            *("_numba_cache", "_kernels", "checks", "cube", "cube.", "synth", "ownership", "owners"),
            # Importers write stores; their contract (Importer) is read by the plugin manager.
            *("importers", "importers."),
        ),
    ),
    ("decomposition", ("decomposition",)),
    (
        "statistics",
        (
            "aggregation",
            "_aggregation_kernels",
            "metrics",
            "metrics.",
            "image_statistics",
            "volume_statistics",
            "domain_means",
            # What a task reads and writes, and the built-in tasks' rows.
            "task_tables",
            "builtin_tasks",
            "predictive_rows",
        ),
    ),
    ("plugins", ("builtin_plugin", "plugins")),
    ("scoring", ("scoring.",)),
    ("results", ("results", "provenance", "scoring", "scoring.api")),
    # compare() ranks runs read back from their report folders (scores.json).
    ("report", ("report", "report.", "comparison")),
    ("interface", ("cli", "__main__", "")),
]

#: Edges against the order, each with its reason.
ALLOWED = {
    ("uqeval.results", "uqeval.report.summary"): "Scores' repr and notebook HTML, imported when shown",
}

#: Edges that the order allows but the design does not.
FORBIDDEN = [
    ("report.", "cube", "the report draws what the engine fetched; it never opens a store"),
    ("report.", "cube.", "the report draws what the engine fetched; it never opens a store"),
    ("report.", "scoring.store_reader", "the report draws what the engine fetched; it never opens a store"),
    ("aggregation", "plugins", "aggregation strategies are pure; the plugin manager resolves names at the boundary"),
    ("metrics.", "cube", "a metric does not drag in the store"),
    ("metrics.", "cube.", "a metric does not drag in the store"),
]


def _matches(module: str, pattern: str) -> bool:
    name = module.removeprefix("uqeval").removeprefix(".")
    return name.startswith(pattern) if pattern.endswith(".") else name == pattern


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module``'s layer: its longest matching name wins."""
    found = [
        (len(pattern), index)
        for index, (_, patterns) in enumerate(LAYERS)
        for pattern in patterns
        if _matches(module, pattern)
    ]
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return max(found)[1]


def test_layer_of_a_module():
    assert LAYERS[layer_of("uqeval.names")][0] == "vocabulary"
    assert LAYERS[layer_of("uqeval.scoring.engine")][0] == "scoring"
    assert LAYERS[layer_of("uqeval.scoring.api")][0] == "results"  # assembles Scores
    assert LAYERS[layer_of("uqeval")][0] == "interface"
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("uqeval.newcomer")


def test_every_import_flows_from_an_earlier_layer():
    edges = module_imports()
    backwards = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED
    ]
    assert backwards == []


@pytest.mark.parametrize(("importer", "imported", "reason"), FORBIDDEN)
def test_edges_the_design_rules_out(importer, imported, reason):
    edges = module_imports()
    found = [
        f"{module} imports {target}"
        for module, targets in edges.items()
        if _matches(module, importer)
        for target in targets
        if _matches(target, imported)
    ]
    assert found == [], reason


def test_names_imports_nothing_of_uqeval():
    assert module_imports()["uqeval.names"] == set()


def test_the_model_shows_itself_through_a_view_that_knows_no_model():
    """``Scores.__repr__`` hands the model to :mod:`uqeval.report.summary`, its one edge
    into ``report/``; the summary in turn imports nothing of the results, the scoring
    or the rest of the report, so the model's text and HTML live in ``report/`` without
    a cycle."""
    edges = module_imports()
    assert {module for module in edges["uqeval.results"] if module.startswith("uqeval.report")} == {
        "uqeval.report.summary"
    }
    summary = edges["uqeval.report.summary"]
    assert not {module for module in summary if module.startswith(("uqeval.report", "uqeval.scoring"))}
    assert not summary & {"uqeval.results", "uqeval.comparison", "uqeval.cli"}


def test_scoring_does_not_render():
    edges = module_imports()
    scoring = [module for module in edges if module.startswith("uqeval.scoring")]
    assert len(scoring) > 5
    for module in scoring:
        assert not {target for target in edges[module] if target.startswith("uqeval.report")}, module


def imported_after(code: str) -> list[str]:
    """The heavy top-level modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_import_uqeval_is_light():
    assert imported_after("import uqeval") == []


def test_uqeval_help_imports_nothing_heavy():
    code = (
        "import sys\nsys.argv = ['uqeval', '--help']\nfrom uqeval.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code"
    )
    assert imported_after(code) == []


def test_public_names_resolve_lazily():
    code = "import uqeval\nassert callable(uqeval.score) and callable(uqeval.decompose)\nuqeval.Scores"
    assert "xarray" in imported_after(code)  # asking for the scorer loads what it needs
    import uqeval

    for name in uqeval.__all__:
        assert getattr(uqeval, name) is not None
    assert set(uqeval.__all__) - {"__version__"} <= set(dir(uqeval))
    with pytest.raises(AttributeError, match="uqeval attribute nope"):
        _ = uqeval.nope
