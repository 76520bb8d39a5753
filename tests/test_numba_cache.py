"""numba caches uqeval's kernels in a per-user cache folder, never in the source tree,
and leaves the user's ``NUMBA_CACHE_DIR`` and other packages' functions alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import uqeval

SOURCES = Path(uqeval.__file__).resolve().parent

#: Prints where each kind of function caches; with ``compile``, first compiles (or loads) one kernel.
PROBE = """
import sys, numpy as np, numba
from uqeval import _kernels
from uqeval.checks import value_stats
from uqeval.metrics import _kernels as metric_kernels
if sys.argv[1:] == ["compile"]:
    value_stats(np.full((1, 1, 2, 2, 2), 0.5, dtype=np.float32))
@numba.njit(cache=True)
def theirs(x):
    return x + 1
print(_kernels.value_stats_kernel._cache._cache_path)
print(metric_kernels.calibration_kernel._cache._cache_path)
print(theirs._cache._cache_path)
"""


def cache_paths(tmp_path: Path, *arguments: str, **env: str) -> list[str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("NUMBA_CACHE")}
    result = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**environment, **env},
    )
    return result.stdout.split()


@pytest.mark.slow  # compiles a parallel kernel into an empty cache (about a minute on 2 cores)
def test_kernels_are_cached_in_the_user_cache_folder_not_beside_the_sources(tmp_path):
    before = set(SOURCES.rglob("*.nb[ic]"))
    kernels, metrics, theirs = cache_paths(tmp_path, "compile", XDG_CACHE_HOME=str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "uqeval" / "numba"
    assert Path(kernels).parent == folder and Path(metrics).parent == folder
    assert list(Path(kernels).glob("_kernels.value_stats_kernel-*.nbi"))  # written there
    assert set(SOURCES.rglob("*.nb[ic]")) <= before  # and nothing new among the sources
    assert Path(theirs) == tmp_path / "__pycache__"  # another file's function: numba's own choice


def test_the_cache_folder_without_compiling(tmp_path):
    kernels, metrics, theirs = cache_paths(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "uqeval" / "numba"
    assert Path(kernels).parent == folder and Path(metrics).parent == folder
    assert Path(theirs) == tmp_path / "__pycache__"


def test_numba_cache_dir_of_the_user_wins(tmp_path):
    given = tmp_path / "numba-cache"
    kernels, _, theirs = cache_paths(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"), NUMBA_CACHE_DIR=str(given))
    assert Path(kernels).parent == given
    assert Path(theirs).parent == given


def test_the_locator_is_installed_once_right_after_the_users_directory():
    from uqeval import _kernels, _numba_cache  # noqa: F401  (importing the kernels installs it)

    _numba_cache.install()
    locators = _numba_cache._CacheImpl._locator_classes
    assert locators.count(_numba_cache.UQEvalCacheLocator) == 1
    assert locators.index(_numba_cache.UQEvalCacheLocator) == locators.index(_numba_cache._UserProvidedCacheLocator) + 1


#: Compiles (or loads) one kernel twice in a process that asked to hear of compilation.
ANNOUNCED = """
import numpy as np
from uqeval._numba_cache import announce_compilation
from uqeval.checks import value_stats
announce_compilation(lambda: print("compiling"))
value_stats(np.full((1, 1, 2, 2, 2), 0.5, dtype=np.float32))
value_stats(np.full((1, 1, 2, 2, 2), 0.5, dtype=np.float32))
print("done")
"""


@pytest.mark.slow  # compiles a parallel kernel into an empty cache (about a minute on 2 cores)
def test_the_first_compilation_is_announced_once_and_a_cached_kernel_not_at_all(tmp_path):
    script = tmp_path / "announced.py"
    script.write_text(ANNOUNCED)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("NUMBA_CACHE")}
    environment["XDG_CACHE_HOME"] = str(tmp_path / "cache")

    def run() -> list[str]:
        command = [sys.executable, str(script)]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=300, check=True, env=environment
        ).stdout.split()

    assert run() == ["compiling", "done"]  # an empty cache: compiled, said once
    assert run() == ["done"]  # loaded from the cache: nothing to say


def test_only_uqeval_kernels_are_announced():
    from numba.core import event

    from uqeval._numba_cache import _FirstCompilation

    def started(module: str) -> event.Event:
        function = type("Function", (), {"__module__": module})()
        dispatcher = type("Dispatcher", (), {"py_func": function})()
        return event.Event("numba:compile", event.EventStatus.START, data={"dispatcher": dispatcher})

    heard = []
    listener = _FirstCompilation(lambda: heard.append(1))
    listener.notify(started("their_package.kernels"))
    listener.notify(started("uqevalish"))
    assert heard == []
    listener.notify(started("uqeval._kernels"))
    listener.notify(started("uqeval.metrics._kernels"))
    assert heard == [1]
