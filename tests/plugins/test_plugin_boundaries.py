"""The torch plugin as a third party would write it: only the core's public API, one class per name.

Both checks read the plugin's source (no torch needed): a plugin may import from the core
only the names in ``uqeval.__all__`` (from ``uqeval`` itself) or from the plugin-facing
modules ``uqeval.contracts``, ``uqeval.hookspecs`` and ``uqeval.metrics``; and no class
name is defined twice in the plugin, so that a name says which concept it is.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import uqeval

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "uqeval-torch" / "uqeval_torch"
#: The core modules written for plugins, importable in full.
PLUGIN_FACING = ("uqeval.contracts", "uqeval.hookspecs", "uqeval.metrics")


def plugin_files() -> list[Path]:
    files = sorted(PLUGIN.rglob("*.py"))
    assert len(files) > 20  # the package is where we think it is
    return files


def core_imports(file: Path) -> list[tuple[int, str]]:
    """``(line, what)`` for every import of the core in ``file``, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == "uqeval":
                found += [(node.lineno, f"uqeval.{alias.name}") for alias in node.names]
            elif node.module.startswith("uqeval."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "uqeval"]
    return found


def allowed(what: str) -> bool:
    if what.startswith(PLUGIN_FACING):
        return what in PLUGIN_FACING or what.startswith(tuple(f"{module}." for module in PLUGIN_FACING))
    name = what.removeprefix("uqeval.")
    return what == "uqeval" or ("." not in name and name in uqeval.__all__)


def test_the_plugin_imports_only_the_cores_public_api():
    broken = [
        f"{file.relative_to(PLUGIN.parent)}:{line} imports {what}"
        for file in plugin_files()
        for line, what in core_imports(file)
        if not allowed(what)
    ]
    assert not broken, "import these from `uqeval` (add them to uqeval.__all__ if a plugin needs them):\n" + "\n".join(
        broken
    )


def test_the_rule_catches_private_and_internal_modules():
    assert allowed("uqeval.UQEvalError") and allowed("uqeval.contracts") and allowed("uqeval.metrics.ncc")
    assert not allowed("uqeval.errors") and not allowed("uqeval.report.files") and not allowed("uqeval.cube")
    assert not allowed("uqeval._private") and not allowed("uqeval.not_exported")


def test_no_class_name_is_defined_twice_in_the_plugin():
    names = Counter(
        match.group(1)
        for file in plugin_files()
        for match in re.finditer(r"^class (\w+)", file.read_text(encoding="utf-8"), flags=re.MULTILINE)
    )
    assert names, "no class found"
    assert not [name for name, count in names.items() if count > 1], names.most_common(5)
