"""Shared test configuration: hypothesis profiles, the ``slow`` marker, and a store factory.

Hypothesis runs derandomised by default so that CI is reproducible; set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and more of them).

``pytest -m "not slow"`` is the quick loop: it leaves out everything that imports torch
(the uqeval-torch tests, its doctests, docs/models.md and the PyTorch example) and the
tests marked ``@pytest.mark.slow`` one by one. ``-m "not slow and not cli"`` also leaves
out the tests that run the command line in a subprocess (``@pytest.mark.cli``, enforced by
:func:`helpers.run_cli`); ``make quick`` runs that on every core (pytest-xdist). CI runs
everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment. The
# CLI's rich consoles, made when uqeval.cli is first imported, would keep that width
# instead of following the width each test gives its run, so `make quick` would see
# wrapped captions that `make test` does not.
for name in ("COLUMNS", "LINES"):
    os.environ.pop(name, None)

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
#: Paths (relative to the repository) whose tests import torch: all slow.
TORCH_PATHS = (
    "tests/plugins/",
    "plugins/uqeval-torch/",
    "docs/models.md",
    "docs/your-model.md",
    "docs/datasets.md",
    "tests/test_examples.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
        if relative.startswith(TORCH_PATHS):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test is set up, so that fixtures that run the CLI count too.
    import helpers

    helpers.current_test_markers.clear()
    helpers.current_test_markers.update(marker.name for marker in item.iter_markers())


#: ``synthetic_store(scenario, **options) -> Path``: see :func:`synthetic_store`.
StoreFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> StoreFactory:
    """A factory of synthetic cube stores, each written once per test session.

    ``synthetic_store("disentangled", n_images=48, size=32, seed=1)`` returns the path of
    a store made by :func:`uqeval.make_synthetic_cube` with those arguments (defaults:
    48 images of 32×32 pixels, seed 0). The same arguments give the same path, so tests
    share stores; a test must not modify one (copy it first).
    """
    import uqeval

    made: dict[tuple, Path] = {}
    folder = tmp_path_factory.mktemp("stores")

    def factory(scenario: str = "disentangled", **options) -> Path:
        options = {"n_images": 48, "size": 32, "seed": 0, **options}
        key = (scenario, *sorted(options.items()))
        if key not in made:
            name = "-".join([scenario, *(f"{name}{value}" for name, value in sorted(options.items()))])
            path = folder / f"{name}.zarr"
            uqeval.make_synthetic_cube(path, scenario, **options)
            made[key] = path
        return made[key]

    return factory
