"""The command-line options the built-in importers share, declared once for typer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: ``--out``: the cube store an importer writes.
CubeOut = Annotated[Path, typer.Option("--out", "-o", help="The cube store to write.", show_default=False)]
#: ``--cases``: the domain and role of each case.
CasesFile = Annotated[
    Path | None,
    typer.Option(
        "--cases",
        metavar="FILE",
        help="CSV with columns case,domain,role; unlisted cases are id/test.",
        show_default=False,
    ),
]
#: ``--overwrite``: replace a complete store.
Overwrite = Annotated[bool, typer.Option(help="Replace a complete store at --out.")]
#: ``--threads``: files of a case decoded at once.
CaseThreads = Annotated[int, typer.Option(help="Threads decoding a case's files at once.")]
