"""What a scoring run will do, decided before a pixel is read.

:func:`prepare` is the boundary of the pipeline: it checks the caller's tasks,
conventions and aggregations and resolves the aggregation names through the plugin
manager, once. :func:`plan` then looks at a source's domains, roles and labels and
decides which tasks can run, which images parameters are fitted on, and what to note.
Everything after these two steps works with resolved objects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uqeval.aggregation import Aggregator
from uqeval.conventions import Conventions
from uqeval.conventions import preset as conventions_preset
from uqeval.errors import UQEvalError
from uqeval.names import CALIBRATION, ID_DOMAIN, ROLES, TEST
from uqeval.notes import Note, literal
from uqeval.plugins import plugin_manager
from uqeval.scoring.fitting import Fitted
from uqeval.tasks import Task

#: Tasks that cannot run without ID images: OODD tells OOD test images from ID ones,
#: and CAL's Platt scaling is fitted on ID images.
NEEDS_ID = ("oodd", "cal")
#: The note of a task skipped for want of rater labels.
_NO_LABELS = "{task}: skipped, the store has no rater labels"


@dataclass(frozen=True)
class Request:
    """A caller's scoring request, checked and resolved.

    Attributes
    ----------
    tasks : tuple of str
        Requested tasks (every task found when none was named), in the order they
        were registered: the built-ins first.
    aggregations : tuple of Aggregator
        Every aggregation scored, each once; the first is Δ's (:attr:`primary`).
    conventions : Conventions
        Their ``aggregation`` is :attr:`primary`, so that ``scores.json`` records it.
    segmentation : bool
        Score segmentation quality (Dice, GED, Hungarian IoU) where the source allows.
    definitions : dict
        Each requested task's :class:`~uqeval.tasks.Task`, resolved through the plugins.
    """

    tasks: tuple[str, ...]
    aggregations: tuple[Aggregator, ...]
    conventions: Conventions
    segmentation: bool = False
    definitions: dict[str, Task] = field(default_factory=dict)

    @property
    def aggregation_names(self) -> tuple[str, ...]:
        return tuple(aggregator.name for aggregator in self.aggregations)

    @property
    def primary(self) -> str:
        """The aggregation Δ, the ROC curves and the ranks of ``uqeval compare`` use."""
        return self.aggregations[0].name


def prepare(
    *,
    tasks: Sequence[str] | None = None,
    aggregations: Sequence[str] | None = None,
    conventions: Conventions | None = None,
    preset: str | None = None,
    segmentation: bool = False,
) -> Request:
    """Check and resolve a scoring request (the arguments of :func:`uqeval.score`).

    The one place where a preset and the aggregations are resolved: ``aggregations``,
    when given, are scored in that order and the first is Δ's; without them the
    conventions' (or the preset's) aggregation is the only one. Either way the
    request's conventions name Δ's aggregation.

    Raises
    ------
    UQEvalError
        With ``parameter`` set to the argument at fault: an unknown task, preset or
        aggregation, conventions and a preset both given, or no task at all.
    """
    if conventions is not None and preset is not None:
        raise UQEvalError("pass conventions or preset, not both", parameter="preset")
    if preset is not None:
        try:
            conventions = conventions_preset(preset)
        except UQEvalError as error:
            raise UQEvalError(str(error), parameter="preset") from None
    conventions = conventions or Conventions()
    manager = plugin_manager()
    known = manager.tasks()
    if tasks is None:
        tasks = tuple(known)
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = tuple(dict.fromkeys(tasks))
    if not tasks:
        raise UQEvalError(f"no task given; choose from {', '.join(known)}", parameter="tasks")
    unknown = [name for name in tasks if name not in known]
    if unknown:
        for name in unknown:  # a name two plugins offer: the error names both
            manager.lookup("uqeval_tasks", name)
        raise UQEvalError(
            f"unknown task(s) {', '.join(map(str, unknown))}; choose from {', '.join(known)}{manager.problems_note()}",
            parameter="tasks",
        )
    if isinstance(aggregations, str):
        aggregations = [aggregations]
    names = tuple(dict.fromkeys(aggregations or [conventions.aggregation]))
    conventions = conventions.replace(aggregation=names[0])
    resolved = []
    for name in names:
        try:
            resolved.append(manager.aggregator(name))
        except UQEvalError as error:
            raise UQEvalError(str(error), parameter="aggregations") from None
    tasks = tuple(name for name in known if name in tasks)  # rows in the order of the registry, built-ins first
    definitions = {name: known[name] for name in tasks}
    return Request(tasks, tuple(resolved), conventions, bool(segmentation), definitions)


@dataclass(frozen=True)
class Plan:
    """What scoring will do with a source's images.

    Attributes
    ----------
    tasks : tuple of str
        Tasks that will be scored (CAL is dropped when nothing can be fitted, OODD and
        CAL when no image is in-distribution).
    fitting : (image,) bool
        Images the fitted parameters are fitted on.
    images_from : str
        ``calibration``, or ``test`` when the source has no ID calibration images.
    needs_threshold : bool
        A fitted aggregation (``threshold``) is scored.
    run_cal : bool
        Platt scaling and CAL are computed.
    rescale_eu : bool
    segmentation : bool
        Segmentation quality is scored.
    notes : tuple of Note
        What is skipped or fallen back on. A source without a single ID image gets one
        note, first, of kind ``no-id``, that starts with ``warning:``.
    """

    tasks: tuple[str, ...]
    fitting: np.ndarray
    images_from: str
    needs_threshold: bool
    run_cal: bool
    rescale_eu: bool
    segmentation: bool
    notes: tuple[Note, ...]

    def fit_notes(self, fitted: Fitted) -> list[Note]:
        """Notes on Platt fits that are degenerate or impossible."""
        if self.run_cal and not fitted.platt:
            text = (
                f"{{task}}: skipped, no {self.images_from} pixel of the ID domain has a rater label "
                "to fit Platt scaling on"
            )
            return [Note("skipped", text, task="cal")]
        return [
            Note(
                "platt-degenerate",
                "{task}: Platt scaling of {MEASURE}: " + literal(platt.note),
                task="cal",
                measure=measure,
            )
            for measure, platt in fitted.platt.items()
            if platt.note
        ]


def plan(
    request: Request,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    has_labels: bool,
    segmentation_possible: bool = True,
    n_raters: int | None = None,
    has_mean: bool = True,
) -> Plan:
    """Decide which tasks run, which images are fitted on, and what to note.

    Parameters
    ----------
    request : Request
    domains, roles : (image,) str
    has_labels : bool
        Whether rater labels exist.
    segmentation_possible : bool
        Whether the source has the probabilities segmentation quality needs.
    n_raters : int, optional
        Raters per image: AMB is skipped, with one note, when there is one.
    has_mean : bool
        Whether the source gives the mean prediction: ``pq`` is skipped, with one note,
        when it does not.

    Raises
    ------
    UQEvalError
        An unknown role, no image of role ``test`` (nothing to score), or a fitted
        aggregation or EU rescaling with no ID image to fit on.
        (Domains are checked when the source is made: :func:`uqeval.cube.contract.check_domains`.)
    """
    bad_roles = sorted(set(roles) - set(ROLES))
    if bad_roles:
        raise UQEvalError(f"unknown role(s) {bad_roles}; expected 'calibration' or 'test'")
    notes: list[Note] = []
    is_id = domains == ID_DOMAIN
    is_test = roles == TEST
    if not is_test.any():
        # Roles are `calibration` or `test` (checked above): every image is fitted on, none scored.
        what = f"all {len(roles)} images have role {CALIBRATION!r}" if len(roles) else "there are no images"
        raise UQEvalError(f"nothing to score: {what}; the images to score need role {TEST!r}")
    needs_threshold = any(aggregator.fitted for aggregator in request.aggregations)
    rescale_eu = request.conventions.rescale_eu
    tasks = request.tasks
    has_id = bool(is_id.any())
    if not has_id:
        if needs_threshold or rescale_eu:
            raise UQEvalError(
                f"no ID images to fit the threshold τ or the EU scale on: no image has domain {ID_DOMAIN!r}"
            )
        # One warning says everything the missing ID domain causes; the notes below it
        # that would repeat it (fallbacks to ID images, tasks skipped for want of them)
        # are not made.
        notes.append(_no_id_warning(domains, tasks))
        tasks = tuple(name for name in tasks if name not in NEEDS_ID)
    ood_calibration = int((~is_id & ~is_test).sum())
    if ood_calibration:
        text = "{count} OOD image(s) have role calibration; they are neither fitted on nor scored"
        notes.append(Note("ood-calibration", text, count=ood_calibration))
    fitting = is_id & ~is_test
    images_from = "calibration"
    if not fitting.any():
        fitting = is_id & is_test
        images_from = "test"
        if has_id:
            text = "no calibration images: Platt scaling, τ and the EU scale are fitted on the ID test images"
            notes.append(Note("fitted-on-test", text))
    definitions = request.definitions
    for name in tasks:
        if definitions[name].needs_labels and not has_labels:
            notes.append(Note("skipped", _NO_LABELS, task=name))
        if definitions[name].needs_samples and not segmentation_possible:
            text = "{task}: skipped, it needs the samples and the store holds uncertainty maps only"
            notes.append(Note("skipped", text, task=name))
    tasks = tuple(
        name
        for name in tasks
        if (has_labels or not definitions[name].needs_labels)
        and (segmentation_possible or not definitions[name].needs_samples)
    )
    if "amb" in tasks and has_labels and n_raters == 1:
        # One rater has no disagreement to model: every image's rater variance is constant.
        notes.append(Note("skipped", "{task}: skipped: ambiguity needs ≥ 2 raters; this store has 1", task="amb"))
        tasks = tuple(name for name in tasks if name != "amb")
    if "pq" in tasks and has_labels and not has_mean:
        text = "{task}: skipped, the maps have no mean prediction (`mean`) to score"
        notes.append(Note("skipped", text, task="pq"))
        tasks = tuple(name for name in tasks if name != "pq")
    run_cal = "cal" in tasks and has_labels
    segmentation = request.segmentation and segmentation_possible and has_labels
    if request.segmentation and segmentation_possible and not has_labels:
        notes.append(Note("skipped", _NO_LABELS, task="segmentation"))
    return Plan(
        tasks=tuple(name for name in tasks if name != "cal" or run_cal),
        fitting=fitting,
        images_from=images_from,
        needs_threshold=needs_threshold,
        run_cal=run_cal,
        rescale_eu=rescale_eu,
        segmentation=segmentation,
        notes=tuple(notes),
    )


def _no_id_warning(domains: np.ndarray, tasks: Sequence[str]) -> Note:
    """The note for a source in which no image has the domain ``id``."""
    present = sorted(set(domains.tolist()))
    names = ", ".join(repr(name) for name in present[:6])
    if len(present) > 6:
        names += f" and {len(present) - 6} more"
    skipped = [name for name in tasks if name in NEEDS_ID]
    consequence = ""
    if skipped:
        verb = "is skipped (it needs" if len(skipped) == 1 else "are skipped (they need"
        consequence = f"{' and '.join(skipped)} {verb} ID images) and "
    text = (
        f"warning: no image has the domain {ID_DOMAIN!r} (in-distribution), so every image is scored as OOD: "
        f"{consequence}nothing is fitted. The domains are {names}; if one of them is the in-distribution data, "
        f"name it {ID_DOMAIN!r}"
    )
    return Note("no-id", literal(text))
