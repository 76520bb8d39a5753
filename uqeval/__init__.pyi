"""The public API of uqeval, listed once: type checkers read the names here, and
``uqeval/__init__.py`` imports each from its module on first use (``lazy_loader``).
``X as X`` marks a name as re-exported."""

from .aggregation import (
    AggregationFallback as AggregationFallback,
)
from .aggregation import (
    AggregationParameters as AggregationParameters,
)
from .aggregation import (
    Aggregator as Aggregator,
)
from .aggregation import (
    SlabForm as SlabForm,
)
from .checks import SUM_TOLERANCE as SUM_TOLERANCE
from .comparison import Comparison as Comparison
from .comparison import compare as compare
from .contracts import AUMethod as AUMethod
from .contracts import DatasetSource as DatasetSource
from .contracts import EUMethod as EUMethod
from .contracts import Sample as Sample
from .conventions import Conventions as Conventions
from .cube import (
    CubeWriter as CubeWriter,
)
from .cube import (
    VolumeWriter as VolumeWriter,
)
from .cube import (
    WriteProgress as WriteProgress,
)
from .cube import (
    check_cube_values as check_cube_values,
)
from .cube import (
    open_cube as open_cube,
)
from .cube import (
    validate_cube as validate_cube,
)
from .decomposition import decompose as decompose
from .errors import UQEvalError as UQEvalError
from .hookspecs import hookimpl as hookimpl
from .importers.contract import Importer as Importer
from .importers.contract import ImportSummary as ImportSummary
from .importers.files import import_files as import_files
from .importers.nnunet import import_nnunet as import_nnunet
from .importers.values import import_values as import_values
from .names import IGNORE_LABEL as IGNORE_LABEL
from .ownership import check_replaceable as check_replaceable
from .plugins import aggregate as aggregate
from .plugins import plugin_manager as plugin_manager
from .report.files import write_bytes as write_bytes
from .report.files import write_json as write_json
from .report.progress import progress_bar as progress_bar
from .report.save import save_comparison as save_comparison
from .report.save import save_report as save_report
from .report.scores_file import read_scores as read_scores
from .results import Scores as Scores
from .scoring import evaluate as evaluate
from .scoring import score as score
from .synth import SCENARIOS as SCENARIOS
from .synth import make_synthetic_cube as make_synthetic_cube
from .task_tables import TaskTables as TaskTables
from .tasks import TASKS as TASKS
from .tasks import Task as Task
from .tasks import TaskInputs as TaskInputs
from .text import printable as printable

__version__: str
