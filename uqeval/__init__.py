"""uqeval: how good is a segmentation model's uncertainty, and are its aleatoric and
epistemic parts really separate?

The public API lives here; everything else may change.
"""

from uqeval.aggregate import aggregate
from uqeval.conventions import Conventions
from uqeval.cube import CubeWriter, check_cube_values, open_cube, validate_cube
from uqeval.decompose import decompose
from uqeval.errors import UQEvalError
from uqeval.hookspecs import hookimpl
from uqeval.results import Scores
from uqeval.scoring import score
from uqeval.synth import SCENARIOS, make_synthetic_cube
from uqeval.tasks import TASKS, Evaluation, evaluate

__version__ = "0.1.0"

__all__ = [
    "SCENARIOS",
    "TASKS",
    "Conventions",
    "CubeWriter",
    "Evaluation",
    "Scores",
    "UQEvalError",
    "__version__",
    "aggregate",
    "check_cube_values",
    "decompose",
    "evaluate",
    "hookimpl",
    "make_synthetic_cube",
    "open_cube",
    "score",
    "validate_cube",
]
