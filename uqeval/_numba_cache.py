"""Where numba caches uqeval's compiled kernels: a per-user cache folder, not the source tree.

numba writes the cache of a ``cache=True`` function into ``__pycache__`` beside its
source when that folder is writable, so an editable install (or a checkout on
``PYTHONPATH``) collects ``.nbi``/``.nbc`` files among the sources. :func:`install`
adds a cache locator, for uqeval's own files only, that numba consults after the
user's ``NUMBA_CACHE_DIR`` and before ``__pycache__``; it points at
``<user cache>/uqeval/numba`` (``$XDG_CACHE_HOME/uqeval/numba``, by default
``~/.cache/uqeval/numba``, on Linux). Other packages' numba functions, ``NUMBA_CACHE_DIR``
and ``NUMBA_CACHE_LOCATOR_CLASSES`` are left as they are.

A kernel module calls :func:`install` before its first ``@numba.njit(cache=True)``:
numba picks a function's locator when the function is decorated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from numba.core import caching, event
from numba.misc.appdirs import AppDirs

#: The package folder whose files' kernels are cached in :func:`cache_folder`.
PACKAGE = Path(__file__).resolve().parent


def cache_folder() -> Path:
    """``<user cache>/uqeval/numba``: the platform's per-user cache folder (XDG on Linux)."""
    return Path(AppDirs(appname="uqeval", appauthor=False).user_cache_dir) / "numba"


# numba 0.61 made these names public; earlier ones have them with a leading underscore.
_CacheImpl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
_UserWideCacheLocator = getattr(caching, "UserWideCacheLocator", None) or caching._UserWideCacheLocator
_UserProvidedCacheLocator = getattr(caching, "UserProvidedCacheLocator", None) or caching._UserProvidedCacheLocator


class UQEvalCacheLocator(_UserWideCacheLocator):
    """numba's per-user cache locator, for the files of uqeval only, in :func:`cache_folder`."""

    def __init__(self, py_func, py_file) -> None:
        super().__init__(py_func, py_file)
        self._cache_path = os.path.join(cache_folder(), self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if not Path(py_file).resolve().is_relative_to(PACKAGE):
            return None
        return super().from_function(py_func, py_file)


def install() -> None:
    """Put :class:`UQEvalCacheLocator` right after numba's ``NUMBA_CACHE_DIR`` locator (once)."""
    locators = _CacheImpl._locator_classes
    if UQEvalCacheLocator not in locators:
        user_given = _UserProvidedCacheLocator
        locators.insert(locators.index(user_given) + 1 if user_given in locators else 0, UQEvalCacheLocator)


class _FirstCompilation(event.Listener):
    """A numba ``numba:compile`` listener that calls ``announce`` once, when the first of
    uqeval's kernels is compiled rather than loaded from the cache."""

    def __init__(self, announce: Callable[[], None]) -> None:
        self.announce = announce
        self.done = False

    def on_start(self, started: event.Event) -> None:
        if self.done:
            return
        dispatcher = started.data.get("dispatcher") if isinstance(started.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module == "uqeval" or module.startswith("uqeval."):
            self.done = True
            self.announce()

    def on_end(self, ended: event.Event) -> None:
        pass


def announce_compilation(announce: Callable[[], None]) -> None:
    """Call ``announce()`` once in this process, when one of uqeval's kernels starts to be
    compiled: the first run after an install (or after numba or uqeval changed) compiles
    them, which takes tens of seconds; later runs load them from :func:`cache_folder`
    and never call it."""
    event.register("numba:compile", _FirstCompilation(announce))
