"""uqeval: how good is a segmentation model's uncertainty, and are its aleatoric and
epistemic parts really separate?

The public API lives here; everything else may change. Names are imported on first
use, so ``import uqeval`` (and ``uqeval --help``) does not pay for numba, xarray or
zarr until a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from uqeval.errors import UQEvalError
from uqeval.hookspecs import hookimpl

__version__ = "0.1.0"

#: Public name → the module that defines it.
_PUBLIC = {
    "SCENARIOS": "uqeval.synth",
    "TASKS": "uqeval.tasks",
    "Conventions": "uqeval.conventions",
    "CubeWriter": "uqeval.cube",
    "WriteProgress": "uqeval.cube",
    "check_cube_values": "uqeval.cube",
    "open_cube": "uqeval.cube",
    "validate_cube": "uqeval.cube",
    "decompose": "uqeval.decomposition",
    "make_synthetic_cube": "uqeval.synth",
    "Scores": "uqeval.results",
    "read_scores": "uqeval.report.scores_file",
    "score": "uqeval.scoring",
    "evaluate": "uqeval.scoring",
    "compare": "uqeval.comparison",
    "Comparison": "uqeval.comparison",
    "save_report": "uqeval.report.save",
    "save_comparison": "uqeval.report.save",
    "aggregate": "uqeval.plugins",
    "plugin_manager": "uqeval.plugins",
    # The types a plugin author implements or returns.
    "Aggregator": "uqeval.aggregation",
    "AggregationFallback": "uqeval.aggregation",
    "AggregationParameters": "uqeval.aggregation",
    "AUMethod": "uqeval.contracts",
    "EUMethod": "uqeval.contracts",
    "DatasetSource": "uqeval.contracts",
    "Sample": "uqeval.contracts",
    # What a plugin that writes stores and report files needs from the core.
    "SUM_TOLERANCE": "uqeval.checks",
    "IGNORE_LABEL": "uqeval.names",
    "progress_bar": "uqeval.report.progress",
    "write_bytes": "uqeval.report.files",
    "write_json": "uqeval.report.files",
}

if TYPE_CHECKING:
    from uqeval.aggregation import AggregationFallback, AggregationParameters, Aggregator
    from uqeval.checks import SUM_TOLERANCE
    from uqeval.comparison import Comparison, compare
    from uqeval.contracts import AUMethod, DatasetSource, EUMethod, Sample
    from uqeval.conventions import Conventions
    from uqeval.cube import CubeWriter, WriteProgress, check_cube_values, open_cube, validate_cube
    from uqeval.decomposition import decompose
    from uqeval.names import IGNORE_LABEL
    from uqeval.plugins import aggregate, plugin_manager
    from uqeval.report.files import write_bytes, write_json
    from uqeval.report.progress import progress_bar
    from uqeval.report.save import save_comparison, save_report
    from uqeval.report.scores_file import read_scores
    from uqeval.results import Scores
    from uqeval.scoring import evaluate, score
    from uqeval.synth import SCENARIOS, make_synthetic_cube
    from uqeval.tasks import TASKS


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'uqeval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__all__ = [
    "IGNORE_LABEL",
    "SCENARIOS",
    "SUM_TOLERANCE",
    "TASKS",
    "AUMethod",
    "AggregationFallback",
    "AggregationParameters",
    "Aggregator",
    "Comparison",
    "Conventions",
    "CubeWriter",
    "DatasetSource",
    "EUMethod",
    "Sample",
    "Scores",
    "UQEvalError",
    "WriteProgress",
    "__version__",
    "aggregate",
    "check_cube_values",
    "compare",
    "decompose",
    "evaluate",
    "hookimpl",
    "make_synthetic_cube",
    "open_cube",
    "plugin_manager",
    "progress_bar",
    "read_scores",
    "save_comparison",
    "save_report",
    "score",
    "validate_cube",
    "write_bytes",
    "write_json",
]
