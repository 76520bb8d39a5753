"""The downstream tasks as data, and :func:`evaluate`, which scores them.

Each :class:`Task` says which measure theory calls correct for it, which are wrong,
its metric and whether lower is better; the entanglement Δ of a task compares the
correct measure with the best wrong one. :func:`evaluate` turns decomposed maps (plus
``domain``, ``role`` and the raters' labels) into the tidy rows of DESIGN §5.

Only ``test`` images are scored; parameters are fitted on ``calibration`` images of the
ID domain (or, when there are none, on the ID test images, which the notes say).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from uqeval.aggregate import get_aggregator
from uqeval.conventions import Conventions
from uqeval.cube import IGNORE_LABEL
from uqeval.errors import UQEvalError
from uqeval.metrics.ambiguity import NO_PIXELS, mean_ncc, rater_statistics
from uqeval.metrics.calibration import Reliability, ace, ece, per_image_ace, per_image_ece, reliability
from uqeval.metrics.entanglement import collapse_ratio, entanglement_delta
from uqeval.metrics.oodd import auroc, fpr_at_tpr
from uqeval.statistics import MEASURES, Fitted, ImageStatistics, fit, image_statistics

#: Split of all OOD images together (OOD domains must not use this name).
POOLED_OOD = "ood"
#: The ``aggregation`` of rows whose metric is computed on maps, not image scores.
NO_AGGREGATION = "none"


@dataclass(frozen=True)
class Task:
    """A downstream task of the uncertainty measures.

    Attributes
    ----------
    name : str
        Key in rows (``oodd``, ``amb``, ``cal``).
    title : str
    metric : str
        Metric that ranks the measures (``auroc``, ``ncc``, ``ace``).
    correct : str
        The measure theory says should do best.
    wrong : tuple of str
        The others; ``U_w`` is the best of them.
    lower_is_better : bool
    needs_labels, needs_ood : bool
        What data the task cannot do without.
    """

    name: str
    title: str
    metric: str
    correct: str
    wrong: tuple[str, ...]
    lower_is_better: bool
    needs_labels: bool
    needs_ood: bool


TASKS: dict[str, Task] = {
    "oodd": Task("oodd", "OOD detection", "auroc", "eu", ("au",), False, needs_labels=False, needs_ood=True),
    "amb": Task("amb", "ambiguity modelling", "ncc", "au", ("eu",), False, needs_labels=True, needs_ood=False),
    "cal": Task("cal", "calibration", "ace", "tu", ("au", "eu"), True, needs_labels=True, needs_ood=False),
}


@dataclass
class Evaluation:
    """Scores of one model's uncertainty on one store.

    Attributes
    ----------
    results : list of dict
        Tidy rows ``task, split, measure, aggregation, metric, value``.
    entanglement : list of dict
        ``task, split, correct, wrong, u_correct, u_wrong, delta`` per task and split.
    collapse : list of dict
        ``split, mean_au, mean_eu, eu_over_au``.
    notes : list of str
        Everything skipped, fallen back on or undefined, in words.
    n_images : dict
        Scored (test) images per domain.
    fitted : Fitted
    reliability : dict
        ``(split, measure)`` → :class:`~uqeval.metrics.calibration.Reliability`.
    images : ImageStatistics
        Per-image results of every image (calibration images included).
    conventions : Conventions
    """

    results: list[dict]
    entanglement: list[dict]
    collapse: list[dict]
    notes: list[str]
    n_images: dict[str, int]
    fitted: Fitted
    reliability: dict[tuple[str, str], Reliability]
    images: ImageStatistics
    conventions: Conventions
    rows_by_key: dict[tuple[str, str, str, str, str], float] = field(default_factory=dict, repr=False)

    def value(self, task: str, split: str, measure: str, metric: str, aggregation: str | None = None) -> float:
        """One result; ``aggregation`` defaults to the conventions' for OODD and ``none`` otherwise."""
        if aggregation is None:
            aggregation = self.conventions.aggregation if task == "oodd" else NO_AGGREGATION
        try:
            return self.rows_by_key[(task, split, measure, aggregation, metric)]
        except KeyError:
            raise KeyError(f"no result for {task}/{split}/{measure}/{aggregation}/{metric}") from None

    def delta(self, task: str, split: str) -> float:
        """Δ of a task on a split (KeyError when the task was not scored there)."""
        for row in self.entanglement:
            if row["task"] == task and row["split"] == split:
                return row["delta"]
        raise KeyError(f"no entanglement row for {task}/{split}")


@dataclass(frozen=True)
class Plan:
    """What an evaluation will do with a store's images, decided before reading a pixel.

    Attributes
    ----------
    tasks : tuple of str
        Tasks that will be scored (CAL is dropped when nothing can be fitted).
    aggregations : tuple of str
        Aggregations scored, the conventions' one first.
    fitting : (image,) bool
        Images the fitted parameters are fitted on.
    images_from : str
        ``calibration``, or ``test`` when the store has no ID calibration images.
    needs_threshold : bool
        A fitted aggregation (``threshold``) is scored.
    run_cal : bool
        Platt scaling and CAL are computed.
    rescale_eu : bool
    notes : tuple of str
        What is skipped or fallen back on, in words.
    """

    tasks: tuple[str, ...]
    aggregations: tuple[str, ...]
    fitting: np.ndarray
    images_from: str
    needs_threshold: bool
    run_cal: bool
    rescale_eu: bool
    notes: tuple[str, ...]

    @property
    def needs_fit(self) -> bool:
        """Whether any parameter is fitted on the calibration images."""
        return bool(self.fitting.any()) and (self.needs_threshold or self.run_cal or self.rescale_eu)

    def fit_notes(self, fitted: Fitted) -> list[str]:
        """Notes on Platt fits that are degenerate or impossible."""
        if self.run_cal and not fitted.platt:
            return [
                f"cal: skipped, no {self.images_from} pixel of the ID domain has a rater label to fit Platt scaling on"
            ]
        return [
            f"cal: Platt scaling of {measure.upper()}: {platt.note}"
            for measure, platt in fitted.platt.items()
            if platt.note
        ]


def plan(
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    has_labels: bool,
    tasks: Sequence[str],
    aggregations: Sequence[str],
    conventions: Conventions,
) -> Plan:
    """Decide which tasks run, which images are fitted on, and what to note.

    Parameters
    ----------
    domains, roles : (image,) str
    has_labels : bool
        Whether rater labels exist.
    tasks : sequence of str
        Requested tasks.
    aggregations : sequence of str
        Registered aggregation names (already checked).

    Raises
    ------
    UQEvalError
        An unknown role, an OOD domain named ``ood``, or a fitted aggregation or EU
        rescaling with no ID image to fit on.
    """
    bad_roles = sorted(set(roles) - {"calibration", "test"})
    if bad_roles:
        raise UQEvalError(f"unknown role(s) {bad_roles}; expected 'calibration' or 'test'")
    notes: list[str] = []
    is_id = domains == "id"
    is_test = roles == "test"
    if POOLED_OOD in set(domains[~is_id]):
        raise UQEvalError(f"an OOD domain is named {POOLED_OOD!r}, the name of the pooled OOD split")
    ood_calibration = int((~is_id & ~is_test).sum())
    if ood_calibration:
        notes.append(f"{ood_calibration} OOD image(s) have role calibration; they are neither fitted on nor scored")
    fitting = is_id & ~is_test
    images_from = "calibration"
    if not fitting.any():
        fitting = is_id & is_test
        images_from = "test"
        notes.append("no calibration images: Platt scaling, τ and the EU scale are fitted on the ID test images")
    for name in tasks:
        if TASKS[name].needs_labels and not has_labels:
            notes.append(f"{name}: skipped, the store has no rater labels")
    run_cal = "cal" in tasks and has_labels
    if run_cal and not fitting.any():
        notes.append("cal: skipped, there are no ID images to fit Platt scaling on")
        run_cal = False
    needs_threshold = any(get_aggregator(name).fitted for name in aggregations)
    if (needs_threshold or conventions.rescale_eu) and not fitting.any():
        raise UQEvalError("no ID images to fit the threshold τ or the EU scale on")
    return Plan(
        tasks=tuple(name for name in tasks if name != "cal" or run_cal),
        aggregations=tuple(aggregations),
        fitting=fitting,
        images_from=images_from,
        needs_threshold=needs_threshold,
        run_cal=run_cal,
        rescale_eu=conventions.rescale_eu,
        notes=tuple(notes),
    )


def _as_arrays(maps: xr.Dataset | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("au", "eu", "tu", "pred"):
        if name not in maps:
            raise UQEvalError(f"evaluate: maps lack {name!r}; pass the output of uqeval.decompose")
        arrays[name] = np.asarray(maps[name])
    shape = arrays["au"].shape
    if len(shape) != 3 or any(array.shape != shape for array in arrays.values()):
        raise UQEvalError(
            "evaluate: au, eu, tu and pred must all be (image, y, x); got "
            + ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
        )
    if "mean" in maps:
        arrays["n_classes"] = np.asarray(maps["mean"]).shape[1]
    return arrays


def _strings(values: Sequence[str] | np.ndarray | None, n_images: int, default: str, name: str) -> np.ndarray:
    if values is None:
        return np.full(n_images, default, dtype=object)
    array = np.asarray(values).astype(str).astype(object)
    if array.shape != (n_images,):
        raise UQEvalError(f"evaluate: `{name}` has shape {array.shape}; expected ({n_images},), one per image")
    return array


def evaluate(
    maps: xr.Dataset | Mapping[str, np.ndarray],
    domain: Sequence[str] | np.ndarray,
    role: Sequence[str] | np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    tasks: Sequence[str] = ("oodd", "amb", "cal"),
    aggregations: Sequence[str] | None = None,
    conventions: Conventions | None = None,
    background: int = 0,
    n_classes: int | None = None,
    cubes: np.ndarray | None = None,
) -> Evaluation:
    """Score the downstream tasks on decomposed maps held in memory.

    Parameters
    ----------
    maps : xarray.Dataset or mapping
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x), e.g. ``uqeval.decompose(cubes)``.
    domain : (image,) str
        ``id`` or the name of an OOD shift.
    role : (image,) str, optional
        ``calibration`` or ``test`` (default all ``test``).
    labels : (image, rater, y, x) int, optional
        Rater label maps (255 = ignore); without them AMB and CAL are skipped.
    tasks : sequence of str
        Any of ``oodd``, ``amb``, ``cal``.
    aggregations : sequence of str, optional
        Aggregations scored for OODD; default the conventions' one, which Δ uses.
    conventions : Conventions, optional
        Default :class:`~uqeval.conventions.Conventions`.
    background : int
        Background class index.
    n_classes : int, optional
        Classes of ``labels``; read from ``maps["mean"]`` when absent.
    cubes : (image, eu, au, class, y, x), optional
        Probabilities; given with ``labels``, segmentation quality (Dice, GED,
        Hungarian IoU) is scored as well.

    Returns
    -------
    Evaluation
    """
    conventions = conventions or Conventions()
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise UQEvalError(f"evaluate: unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    aggregations = list(dict.fromkeys([conventions.aggregation, *(aggregations or ())]))
    for name in aggregations:
        get_aggregator(name)
    arrays = _as_arrays(maps)
    n_images = arrays["au"].shape[0]
    domains = _strings(domain, n_images, "id", "domain")
    roles = _strings(role, n_images, "test", "role")
    raters = None
    has_labels = labels is not None
    if has_labels:
        labels = np.asarray(labels)
        if labels.ndim != 4 or labels.shape[0] != n_images or labels.shape[2:] != arrays["au"].shape[1:]:
            raise UQEvalError(
                f"evaluate: labels have shape {labels.shape}; expected (image, rater, y, x) = "
                f"({n_images}, rater, {', '.join(map(str, arrays['au'].shape[1:]))})"
            )
        n_classes = n_classes or arrays.get("n_classes")
        if n_classes is None:
            raise UQEvalError("evaluate: pass n_classes (or maps with `mean`) to read the labels")
        raters = rater_statistics(labels, arrays["pred"], int(n_classes))
    if cubes is not None:
        cubes = np.asarray(cubes)
        if cubes.ndim != 6 or cubes.shape[0] != n_images or cubes.shape[4:] != arrays["au"].shape[1:]:
            raise UQEvalError(
                f"evaluate: cubes have shape {cubes.shape}; expected (image, eu, au, class, y, x) with "
                f"image = {n_images} and (y, x) = {arrays['au'].shape[1:]}"
            )

    try:
        evaluation_plan = plan(
            domains, roles, has_labels=has_labels, tasks=tasks, aggregations=aggregations, conventions=conventions
        )
    except UQEvalError as error:
        raise UQEvalError(f"evaluate: {error}") from None
    notes = list(evaluation_plan.notes)
    if cubes is not None and not has_labels:
        notes.append("segmentation: skipped, the store has no rater labels")

    fitted = Fitted()
    fitting = evaluation_plan.fitting
    if evaluation_plan.needs_fit:
        subset = {name: arrays[name][fitting] for name in (*MEASURES, "pred")}
        fitted = fit(
            subset,
            raters.select(fitting) if evaluation_plan.run_cal else None,
            conventions=conventions,
            background=background,
            thresholds=evaluation_plan.needs_threshold,
            platt=evaluation_plan.run_cal,
            images_from=evaluation_plan.images_from,
        )
        notes.extend(evaluation_plan.fit_notes(fitted))

    statistics = image_statistics(
        arrays,
        fitted=fitted,
        conventions=conventions,
        aggregations=aggregations,
        raters=raters,
        background=background,
        cubes=cubes,
        labels=labels if cubes is not None else None,
    )
    return summarise(
        statistics,
        domains,
        roles,
        fitted=fitted,
        tasks=evaluation_plan.tasks,
        aggregations=aggregations,
        conventions=conventions,
        notes=notes,
    )


def _splits(domains: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Image masks of the splits ``id``, each OOD domain, and ``ood`` (all OOD pooled)."""
    splits = {}
    if (scored & (domains == "id")).any():
        splits["id"] = scored & (domains == "id")
    for name in sorted(set(domains[scored]) - {"id"}):
        splits[name] = scored & (domains == name)
    if (scored & (domains != "id")).any():
        splits[POOLED_OOD] = scored & (domains != "id")
    return splits


def summarise(
    statistics: ImageStatistics,
    domains: np.ndarray,
    roles: np.ndarray,
    *,
    fitted: Fitted,
    tasks: Sequence[str],
    aggregations: Sequence[str],
    conventions: Conventions,
    notes: list[str] | None = None,
) -> Evaluation:
    """Tidy rows, Δ and collapse from per-image statistics (the last step of :func:`evaluate`)."""
    notes = list(notes or [])
    scored = roles == "test"
    splits = _splits(domains, scored)
    ood_names = [name for name in splits if name not in ("id", POOLED_OOD)]
    rows: list[dict] = []
    entanglement: list[dict] = []
    reliabilities: dict[tuple[str, str], Reliability] = {}

    def add(task: str, split: str, measure: str, aggregation: str, metric: str, value: float) -> None:
        rows.append(
            {
                "task": task,
                "split": split,
                "measure": measure,
                "aggregation": aggregation,
                "metric": metric,
                "value": float(value),
            }
        )

    def add_delta(task: Task, split: str, values: Mapping[str, float]) -> None:
        wrong = (
            min(task.wrong, key=lambda m: values[m])
            if task.lower_is_better
            else max(task.wrong, key=lambda m: values[m])
        )
        delta = entanglement_delta(values[task.correct], values[wrong], lower_is_better=task.lower_is_better)
        if np.isnan(delta):
            notes.append(
                f"{task.name}: Δ on {split} is undefined ({task.metric} of {task.correct} and {wrong}: "
                f"{values[task.correct]:.4g}, {values[wrong]:.4g})"
            )
        entanglement.append(
            {
                "task": task.name,
                "split": split,
                "correct": task.correct,
                "wrong": wrong,
                "u_correct": float(values[task.correct]),
                "u_wrong": float(values[wrong]),
                "delta": delta,
            }
        )

    if "oodd" in tasks:
        if "id" not in splits or not ood_names:
            missing = "ID" if "id" not in splits else "OOD"
            notes.append(f"oodd: skipped, there are no {missing} test images")
        else:
            for aggregation in aggregations:
                by_measure = statistics.scores[aggregation]
                per_domain: dict[str, dict[str, float]] = {}
                false_positives: dict[str, list[float]] = {measure: [] for measure in MEASURES}
                for name in ood_names:
                    chosen = splits["id"] | splits[name]
                    positive = splits[name][chosen]
                    per_domain[name] = {}
                    for measure in MEASURES:
                        values = by_measure[measure][chosen]
                        per_domain[name][measure] = auroc(values, positive)
                        false_positives[measure].append(fpr_at_tpr(values, positive))
                        add("oodd", name, measure, aggregation, "auroc", per_domain[name][measure])
                        add("oodd", name, measure, aggregation, "fpr95", false_positives[measure][-1])
                means = {measure: float(np.mean([per_domain[n][measure] for n in ood_names])) for measure in MEASURES}
                for measure in MEASURES:
                    add("oodd", POOLED_OOD, measure, aggregation, "auroc", means[measure])
                    add("oodd", POOLED_OOD, measure, aggregation, "fpr95", float(np.mean(false_positives[measure])))
                if aggregation == conventions.aggregation:
                    for name in [*ood_names, POOLED_OOD]:
                        add_delta(TASKS["oodd"], name, per_domain.get(name, means))

    if statistics.ncc is not None:
        unlabelled = int((scored & (statistics.ncc["au"].state == NO_PIXELS)).sum())
        if unlabelled:
            notes.append(
                f"{unlabelled} test image(s) have no rater label at any pixel (all {IGNORE_LABEL}); "
                "they are left out of AMB and CAL"
            )

    if "amb" in tasks and statistics.ncc is not None:
        for split, chosen in splits.items():
            values = {}
            for measure in MEASURES:
                correlation = statistics.ncc[measure]
                subset = type(correlation)(correlation.correlation[chosen], correlation.state[chosen])
                values[measure], n_constant = mean_ncc(subset, constant=conventions.ncc_constant)
                add("amb", split, measure, NO_AGGREGATION, "ncc", values[measure])
                add("amb", split, measure, NO_AGGREGATION, "ncc_constant", n_constant)
                if n_constant:
                    action = "left out" if conventions.ncc_constant == "skip" else "scored 0"
                    notes.append(
                        f"amb: {n_constant} {split} image(s) have a constant rater-variance or "
                        f"{measure.upper()} map and were {action}"
                    )
            add_delta(TASKS["amb"], split, values)

    if "cal" in tasks and statistics.calibration is not None:
        for split, chosen in splits.items():
            values = {}
            for measure in MEASURES:
                table = statistics.calibration[measure]
                pooled = table.pooled(chosen)
                if conventions.ace_scope == "pooled":
                    values[measure], error = ace(pooled), ece(pooled)
                else:
                    values[measure], error = per_image_ace(table, chosen), per_image_ece(table, chosen)
                add("cal", split, measure, NO_AGGREGATION, "ace", values[measure])
                add("cal", split, measure, NO_AGGREGATION, "ece", error)
                reliabilities[(split, measure)] = reliability(pooled)
            add_delta(TASKS["cal"], split, values)

    if statistics.segmentation is not None:
        for split, chosen in splits.items():
            for metric in ("dice", "ged", "hungarian_iou"):
                add(
                    "segmentation",
                    split,
                    NO_AGGREGATION,
                    NO_AGGREGATION,
                    metric,
                    float(getattr(statistics.segmentation, metric)[chosen].mean()),
                )

    collapse = []
    for split, chosen in splits.items():
        mean_au = float(statistics.means["au"][chosen].mean())
        mean_eu = float(statistics.means["eu"][chosen].mean())
        collapse.append(
            {
                "split": split,
                "mean_au": mean_au,
                "mean_eu": mean_eu,
                "eu_over_au": collapse_ratio(mean_eu, mean_au),
            }
        )
    if fitted.eu_scale != 1.0:
        notes.append(f"EU rescaled by r = {fitted.eu_scale:.4g} (mean AU / mean EU on {fitted.images_from} images)")

    n_images = {name: int(chosen.sum()) for name, chosen in splits.items() if name != POOLED_OOD}
    keyed = {(r["task"], r["split"], r["measure"], r["aggregation"], r["metric"]): r["value"] for r in rows}
    return Evaluation(
        rows, entanglement, collapse, notes, n_images, fitted, reliabilities, statistics, conventions, keyed
    )
