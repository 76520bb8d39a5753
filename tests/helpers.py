"""Test helpers: running the real ``uqeval`` entry point in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from uqeval.plugins import LOAD_PLUGINS_ENV


def cli_env(*paths: Path, columns: int = 200, **extra: str) -> dict[str, str]:
    """A user's environment with ``paths`` on ``PYTHONPATH`` and every plugin allowed."""
    env = {key: value for key, value in os.environ.items() if key != LOAD_PLUGINS_ENV}
    outer = [env.pop("PYTHONPATH")] if env.get("PYTHONPATH") else []
    if paths or outer:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *outer])
    env.update({"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns), **extra})
    return env


def run_cli(
    *args: str,
    paths: tuple[Path, ...] = (),
    columns: int = 200,
    plugins: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, as a user runs it.

    ``paths`` go on ``PYTHONPATH``; ``plugins`` (when given) is ``UQEVAL_LOAD_PLUGINS``,
    the entry points allowed to load; ``env`` adds variables.
    """
    extra = dict(env or {})
    if plugins is not None:
        extra[LOAD_PLUGINS_ENV] = plugins
    return subprocess.run(
        [sys.executable, "-m", "uqeval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=cli_env(*paths, columns=columns, **extra),
    )
