"""What an importer is: a named function that turns files on disk into a cube store.

Importers are contributed through the hook ``uqeval_importers`` (:mod:`uqeval.hookspecs`),
uqeval's own (``nnunet``, ``files``, ``values``) like any plugin's. ``uqeval import
FORMAT`` runs one: the function's parameters are the command's arguments and options,
read by typer from their annotations (``Annotated[Path, typer.Option("--out")]``), and
the same function is the Python API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote.

    Attributes
    ----------
    store : Path
        The cube (or maps) store written.
    n_images : int
        Images (volumes) in the store, those of an earlier, interrupted run included.
    resumed : int
        Images that an earlier, interrupted run had written and this one kept.
    notes : tuple of str
        What the importer assumed or left out (``uqeval import`` prints them).
    """

    store: Path
    n_images: int
    resumed: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Importer:
    """An importer: ``uqeval import NAME ...`` and its Python function.

    Attributes
    ----------
    name : str
        The format's name, the word after ``uqeval import``.
    function : callable
        ``function(**options) -> ImportSummary``. Its parameters are the command's
        arguments and options: annotate them for typer (``Annotated[list[Path],
        typer.Argument()]``, ``Annotated[Path, typer.Option("--out")]``). Bad input
        raises :class:`uqeval.UQEvalError` (the command prints it, exit 2).
    description : str
        One line for ``uqeval plugins`` and ``uqeval import --help`` (default: the
        first line of the function's docstring).
    source : str
        Who offers it (``uqeval`` or ``plugin 'name' (distribution version)``), set by the
        plugin manager.
    """

    name: str
    function: Callable[..., ImportSummary]
    description: str = ""
    source: str = field(default="", compare=False)

    def __call__(self, **options: Any) -> ImportSummary:
        """Run the import with ``options`` (the function's keyword arguments)."""
        return self.function(**options)


def first_line(function: Callable[..., Any]) -> str:
    """The first line of ``function``'s docstring ("" without one)."""
    lines = (getattr(function, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else ""
