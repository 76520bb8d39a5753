r"""Compare scored runs: ranks as in the study's Table 2, Δ pooled over seeds, and Fig. 7.

``uqeval score --out DIR`` writes ``DIR/scores.json``; :func:`load_run` reads one and
:func:`compare` ranks several. A run's *group* is its model identity (``model.model``,
else ``"<au_method>+<eu_method>"``, else its folder's name); its *seed* puts it in a
seed group, the runs that are ranked against each other.

Ranking rules (the study's Table 2)
-----------------------------------
1. Within each seed group (runs sharing ``model.seed``; runs without a seed form one
   group of their own), rank the models per task and split, twice:

   * **performance** by ``u_correct``, the correct measure's metric (EU AUROC for
     OODD, AU NCC for AMB, TU ACE for CAL); rank 1 is the best, so the *lowest* ACE
     and the *highest* AUROC and NCC;
   * **entanglement** by Δ; rank 1 is the highest Δ (least entangled).

   The splits ranked are the pooled ones (:data:`RANK_SPLITS`): OODD ``ood`` (the mean
   over OOD domains); AMB and CAL ``id`` and ``ood``. Single OOD domains are not
   ranked. Values within the metric's tie tolerance
   (:data:`uqeval.precision.RANK_TOLERANCE`: 1e-4 for NCC, 1e-3 for AUROC and ACE)
   are tied, and Δ values within how far that tolerance moves each run's Δ
   (:func:`uqeval.precision.delta_tolerance`); ties chain (sorted, a new tie group
   starts only at a gap wider than the tolerance) and get the average of the ranks
   they span, so a rank never turns on storage rounding. An undefined value (``null``
   in ``scores.json``, NaN here; a Δ is undefined, for one, when a measure it compares
   is 0 at every pixel) ranks after every defined one; several undefined values tie
   among themselves.
   Only runs that have a row for a task and split take part in its ranking: a run
   without OOD images, say, is not ranked on OODD (nor counted last).
2. A model's rank for a task is the mean of its ranks over that task's splits (the
   ones it has); its overall rank is the mean of its task ranks over the tasks it has.
3. Over seed groups, each rank is reported as mean ± the half-width of a two-sided
   95 % Student-t interval for the mean, ``t.ppf(0.975, n - 1) · s / √n`` with the
   sample standard deviation ``s`` (``ddof=1``) over the ``n`` seeds; with one seed the
   half-width is NaN (``null`` in files, no ``±`` in tables).

Pooled points (the Fig. 7 scatter) are the mean ± the same interval over a group's
runs of ``u_correct``, ``u_wrong`` and Δ per task and split, and of the collapse ratio
``eu_over_au`` per split; undefined values are left out of these means (``n`` counts
the runs that have the row).

4. Rank stability, when the runs were scored with ``--bootstrap`` (each folder holds
   ``bootstrap.npz``): per seed group, for each resample ``b`` the runs are ranked as in
   1–2 on their values in resample ``b`` (as fd-shifts ranks methods per bootstrap
   resample). Each run's overall ranks over the resamples give its mean rank, a 95 %
   percentile interval and the share of resamples in which it ranks first
   (:attr:`Comparison.bootstrap_ranks`). Runs scored with the same seed on stores of
   the same (domain, role) strata draw the same images in resample ``b``: their
   resamples are paired.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.jsonable import json_ready
from uqeval.names import ALL_TEST, ID_DOMAIN, POOLED_OOD
from uqeval.precision import RANK_TOLERANCE, delta_tolerance
from uqeval.report.bootstrap_file import read_bootstrap
from uqeval.report.scores_file import SCORES_FILE, SavedScores, read_scores
from uqeval.scoring.bootstrap import Bootstrap
from uqeval.tasks import TASKS
from uqeval.text import KEPT_NAME_CHARACTERS, shortened

#: ``schema`` of the ``comparison.json`` that :func:`uqeval.save_comparison` writes.
COMPARISON_SCHEMA = "uqeval.comparison/1"
#: The splits ranked per task (the study's Table 2: OODD on the mean over OOD domains,
#: AMB and CAL on ID and on all OOD images pooled).
RANK_SPLITS: dict[str, tuple[str, ...]] = {
    "oodd": (POOLED_OOD,),
    "amb": (ID_DOMAIN, POOLED_OOD),
    "cal": (ID_DOMAIN, POOLED_OOD),
}
#: Coverage of the Student-t intervals over seeds.
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------- runs


@dataclass(frozen=True, eq=False)
class Run:
    """One scored run, as :func:`compare` ranks it.

    Attributes
    ----------
    folder : Path
        The run folder (the one holding ``scores.json``).
    label : str
        Display name, ``"<group> (seed <seed>)"`` or just the group without a seed.
    group : str
        Model identity: ``model.model`` when set, else ``"<au_method>+<eu_method>"``
        when both are set, else the folder's name; control characters escaped and cut
        to :data:`~uqeval.text.KEPT_NAME_CHARACTERS` (:func:`uqeval.text.shortened`).
        Runs of one group are pooled.
    seed : int or None
        ``model.seed``; runs of one seed are ranked against each other.
    scores : SavedScores
        The run's ``scores.json``, checked.
    bootstrap : Bootstrap or None
        The run's resamples (``bootstrap.npz``), when it was scored with a bootstrap.
    """

    folder: Path
    label: str
    group: str
    seed: int | None
    scores: SavedScores = field(repr=False)
    bootstrap: Bootstrap | None = field(default=None, repr=False)

    @classmethod
    def from_scores(cls, scores: SavedScores, folder: str | os.PathLike[str]) -> Run:
        """A run from a checked ``scores.json`` and its folder (whose name is the group
        when the document names no model)."""
        folder = Path(folder)
        group = _group(scores.model, folder)
        seed = _seed(scores.model.get("seed"), scores.source)
        label = group if seed is None else f"{group} (seed {seed})"
        resampled = read_bootstrap(folder) if "bootstrap" in scores.data else None
        return cls(folder, label, group, seed, scores, resampled)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], folder: str | os.PathLike[str], *, source: str | None = None) -> Run:
        """A run from the parsed contents of a ``scores.json`` (errors name ``source``,
        by default ``folder/scores.json``)."""
        where = source if source is not None else str(Path(folder) / SCORES_FILE)
        return cls.from_scores(SavedScores.from_dict(data, where), folder)

    @property
    def entanglement(self) -> tuple[dict[str, Any], ...]:
        """Rows ``task, split, correct, wrong, u_correct, u_wrong, delta``."""
        return self.scores.entanglement

    @property
    def collapse(self) -> tuple[dict[str, Any], ...]:
        """Rows ``split, mean_au, mean_eu, eu_over_au``."""
        return self.scores.collapse

    @property
    def data(self) -> dict[str, Any]:
        """The whole ``scores.json`` as read."""
        return self.scores.data

    @property
    def dataset(self) -> str | None:
        """``model.dataset``, if the run names one (bounded as :attr:`group` is)."""
        value = self.scores.model.get("dataset")
        return shortened(value, KEPT_NAME_CHARACTERS) if value is not None else None

    @property
    def aggregation(self) -> str | None:
        """``conventions.aggregation`` (the OODD image score), if the run names one (bounded as :attr:`group` is)."""
        conventions = self.data.get("conventions") or {}
        value = conventions.get("aggregation") if isinstance(conventions, Mapping) else None
        return shortened(value, KEPT_NAME_CHARACTERS) if value is not None else None


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read one run: a folder written by ``uqeval score`` or its ``scores.json``
    (see :func:`uqeval.read_scores` for the errors)."""
    scores = read_scores(path)
    return Run.from_scores(scores, scores.folder)


def _group(model: Mapping[str, Any], folder: Path) -> str:
    """The run's group, bounded: every row of the comparison repeats it, while the
    whole name stays once in the run's ``scores.json`` (under ``provenance``)."""
    name = model.get("model")
    if name is not None and str(name).strip():
        group = str(name).strip()
    else:
        au, eu = model.get("au_method"), model.get("eu_method")
        if au is not None and eu is not None and str(au).strip() and str(eu).strip():
            group = f"{str(au).strip()}+{str(eu).strip()}"
        else:
            group = folder.resolve().name or str(folder)
    return shortened(group, KEPT_NAME_CHARACTERS)


def _seed(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise UQEvalError(f"{where}: model.seed must be an integer or null, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise UQEvalError(f"{where}: model.seed must be an integer or null, got {value!r}")


# ------------------------------------------------------------------- statistics


def rank_values(
    values: Sequence[float] | np.ndarray,
    *,
    lower_is_better: bool = False,
    tolerance: float | Sequence[float] | np.ndarray = 0.0,
) -> np.ndarray:
    """Ranks, 1 = best, with average ranks for ties and undefined values last.

    Parameters
    ----------
    values : sequence of float
        One score per model; NaN marks an undefined score.
    lower_is_better : bool
        True for errors such as ACE.
    tolerance : float or sequence of float
        Values this close are tied: sorted, a value starts a new tie group only when it
        exceeds the previous one by more than the larger of their two tolerances (one
        per value, or one for all), so ties chain. 0 ties only equal values.

    Returns
    -------
    ndarray of float
        Each tie group of defined values gets the mean of the ranks it spans (with
        ``tolerance=0``, ``scipy.stats.rankdata(..., method="average")``); the ``k`` NaN
        values all get the mean of the last ``k`` ranks.

    Examples
    --------
    >>> rank_values([0.9, 0.7, 0.9, float("nan")]).tolist()
    [1.5, 3.0, 1.5, 4.0]
    >>> rank_values([0.05, 0.02], lower_is_better=True).tolist()
    [2.0, 1.0]
    >>> rank_values([0.71, 0.70996, 0.5], tolerance=1e-4).tolist()
    [1.5, 1.5, 3.0]
    """
    values = np.asarray(values, dtype=float)
    tolerances = np.broadcast_to(np.nan_to_num(np.asarray(tolerance, dtype=float)), values.shape)
    ranks = np.empty(values.shape, dtype=float)
    defined = ~np.isnan(values)
    keys = values[defined] if lower_is_better else -values[defined]
    if keys.size:
        order = np.argsort(keys, kind="stable")
        ordered, ordered_tolerance = keys[order], tolerances[defined][order]
        gaps = np.diff(ordered)
        allowed = np.maximum(ordered_tolerance[1:], ordered_tolerance[:-1])
        group = np.cumsum(np.r_[True, gaps > allowed]) - 1
        positions = np.arange(1, keys.size + 1, dtype=float)
        mean_rank = np.bincount(group, weights=positions) / np.bincount(group)
        defined_ranks = np.empty(keys.size)
        defined_ranks[order] = mean_rank[group]
        ranks[defined] = defined_ranks
    n_defined = int(defined.sum())
    ranks[~defined] = (n_defined + 1 + values.size) / 2
    return ranks


def mean_interval(values: Iterable[float], *, confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean and Student-t interval half-width of the defined values.

    Parameters
    ----------
    values : iterable of float
        NaN values are left out.
    confidence : float
        Coverage of the two-sided interval.

    Returns
    -------
    mean : float
        NaN when no value is defined.
    half_width : float
        ``t.ppf((1 + confidence) / 2, n - 1) · s / √n`` with ``s`` the sample standard
        deviation (``ddof=1``); NaN for ``n < 2``. Equal to half the width of
        ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=s / √n)``.
    n : int
        Number of defined values.

    Examples
    --------
    >>> mean, half, n = mean_interval([1.0, 2.0, 3.0])
    >>> mean, round(half, 4), n
    (2.0, 2.4841, 3)
    >>> mean_interval([5.0])
    (5.0, nan, 1)
    """
    array = np.asarray(list(values), dtype=float)
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(array.mean())
    if n < 2:
        return mean, math.nan, n
    spread = float(array.std(ddof=1))
    from scipy import stats

    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * spread / math.sqrt(n)
    return mean, half, n


# ------------------------------------------------------------------- comparison


@dataclass(frozen=True, eq=False)
class Comparison:
    """Ranks and pooled scores of several runs (see the module docstring for the rules).

    Attributes
    ----------
    runs : tuple of Run
        Sorted by group, then seed (no seed last).
    tasks : tuple of str
        The ranked tasks present in at least one run, in :data:`uqeval.TASKS` order.
    ranks : list of dict
        One row per group, best performance rank first: ``group, n_seeds,
        performance_rank, performance_interval, entanglement_rank,
        entanglement_interval`` and, per task ``t`` in :attr:`tasks`,
        ``performance_rank_<t>, performance_interval_<t>, entanglement_rank_<t>,
        entanglement_interval_<t>``. Ranks are means over seeds, intervals
        Student-t half-widths (NaN with one seed).
    split_ranks : list of dict
        The ranks behind them, one row per seed, task, ranked split and run:
        ``seed, group, task, split, n_ranked, u_correct, delta, performance_rank,
        entanglement_rank``.
    points : list of dict
        One row per group, task and split (every split in the runs, single OOD domains
        included): ``group, task, split, metric, correct, wrong, n, u_correct,
        u_correct_interval, u_wrong, u_wrong_interval, delta, delta_interval``.
    collapse : list of dict
        One row per group and split: ``group, split, n, eu_over_au, eu_over_au_interval``.
    notes : list of str
        Anything a reader of the ranks should know (missing runs, mixed datasets,
        undefined values ranked last, ...).
    bootstrap_ranks : list of dict
        Rank stability (module docstring, 4): one row per seed and run of the seed groups
        whose runs all have bootstrap resamples: ``seed, group, n_resamples`` and, per
        kind ``performance`` and ``entanglement``, ``<kind>_rank_mean``,
        ``<kind>_rank_low``, ``<kind>_rank_high`` (95 % percentile interval) and
        ``<kind>_first`` (share of resamples ranked 1). Empty without resamples.
    """

    runs: tuple[Run, ...]
    tasks: tuple[str, ...]
    ranks: list[dict[str, Any]]
    split_ranks: list[dict[str, Any]]
    points: list[dict[str, Any]]
    collapse: list[dict[str, Any]]
    notes: list[str]
    bootstrap_ranks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """The groups, best performance rank first (the order of :attr:`ranks`)."""
        return [row["group"] for row in self.ranks]

    def rank(self, group: str) -> dict[str, Any]:
        """The :attr:`ranks` row of ``group``."""
        for row in self.ranks:
            if row["group"] == group:
                return row
        raise KeyError(f"no group {group!r}; groups: {self.groups}")

    def point(self, group: str, task: str, split: str) -> dict[str, Any]:
        """The :attr:`points` row of ``group`` on ``task`` and ``split``."""
        for row in self.points:
            if (row["group"], row["task"], row["split"]) == (group, task, split):
                return row
        raise KeyError(f"no point for group {group!r}, task {task!r}, split {split!r}")

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data; NaN becomes ``None``."""
        return json_ready(
            {
                "schema": COMPARISON_SCHEMA,
                "confidence": CONFIDENCE,
                "rank_splits": {task: list(splits) for task, splits in RANK_SPLITS.items()},
                "tasks": list(self.tasks),
                "runs": [
                    {
                        "folder": str(run.folder),
                        "label": run.label,
                        "group": run.group,
                        "seed": run.seed,
                        "dataset": run.dataset,
                    }
                    for run in self.runs
                ],
                "ranks": self.ranks,
                "split_ranks": self.split_ranks,
                "points": self.points,
                "collapse": self.collapse,
                "notes": self.notes,
                **({"bootstrap_ranks": self.bootstrap_ranks} if self.bootstrap_ranks else {}),
            }
        )


def compare(runs: Iterable[str | os.PathLike[str] | Run]) -> Comparison:
    """Rank runs as in the study's Table 2 and pool their scores over seeds.

    Parameters
    ----------
    runs : iterable of path or Run
        Run folders (or their ``scores.json``, or :class:`Run` objects); at least two.
        Their order does not matter.

    Returns
    -------
    Comparison

    Raises
    ------
    UQEvalError
        When fewer than two runs are given, a run cannot be read (see
        :func:`load_run`), or two runs have the same group and seed (the message names
        both folders).

    Notes
    -----
    Ranking, per seed group (runs with the same ``model.seed``; runs without a seed form
    one group):

    1. per task and pooled split (OODD ``ood``; AMB and CAL ``id`` and ``ood``), rank
       the runs that have that row by ``u_correct`` (performance; rank 1 = highest
       AUROC or NCC, lowest ACE) and by Δ (entanglement; rank 1 = highest Δ). Values
       within the tie tolerance get average ranks; undefined (NaN) values rank last,
       tied among themselves;
    2. average a run's ranks over the splits of each task, then over its tasks.

    Each group's ranks are then averaged over seeds and given a 95 % Student-t interval
    half-width ``t.ppf(0.975, n - 1) · s / √n`` (``ddof=1``; NaN with one seed).
    """
    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    if len(loaded) < 2:
        raise UQEvalError(f"compare needs at least 2 runs, got {len(loaded)}")
    seen: dict[tuple[str, int | None], Run] = {}
    for run in loaded:
        key = (run.group, run.seed)
        if key in seen:
            seed = "no seed" if run.seed is None else f"seed {run.seed}"
            raise UQEvalError(
                f"{seen[key].folder} and {run.folder} are both model {run.group!r} with {seed}; "
                "compare each model and seed once (set model.model or model.seed to tell them apart)"
            )
        seen[key] = run
    ordered = tuple(sorted(loaded, key=_run_key))
    notes = _consistency_notes(ordered)
    tasks = tuple(
        task for task in RANK_SPLITS if any(row["task"] == task for run in ordered for row in run.entanglement)
    )
    unranked = sorted({row["task"] for run in ordered for row in run.entanglement} - set(RANK_SPLITS))
    if unranked:
        notes.append(f"task(s) {', '.join(unranked)} are not ranked (no ranking rule); their points are pooled")
    split_ranks, per_seed = _rank_seed_groups(ordered, tasks, notes)
    return Comparison(
        runs=ordered,
        tasks=tasks,
        ranks=_pool_ranks(ordered, tasks, per_seed),
        split_ranks=split_ranks,
        points=_pool_points(ordered),
        collapse=_pool_collapse(ordered),
        notes=notes,
        bootstrap_ranks=_bootstrap_ranks(ordered, tasks, notes),
    )


def _run_key(run: Run) -> tuple[str, bool, int]:
    return (run.group, run.seed is None, run.seed if run.seed is not None else 0)


def _seed_key(seed: int | None) -> tuple[bool, int]:
    return (seed is None, seed if seed is not None else 0)


def split_order(split: str) -> tuple[int, str]:
    """Sort key of splits as tables show them: ``id``, the OOD domains by name, ``ood``, then ``all``."""
    rank = {ID_DOMAIN: 0, POOLED_OOD: 2, ALL_TEST: 3}.get(split, 1)
    return (rank, split)


def _task_key(task: str) -> tuple[int, str]:
    order = list(TASKS)
    return (order.index(task) if task in order else len(order), task)


def _seed_name(seed: int | None) -> str:
    return "no seed" if seed is None else f"seed {seed}"


def _consistency_notes(runs: Sequence[Run]) -> list[str]:
    notes = []
    datasets = sorted({run.dataset for run in runs if run.dataset is not None})
    if len(datasets) > 1:
        notes.append(f"the runs are on different datasets ({', '.join(datasets)}); ranks across them mean little")
    aggregations = sorted({run.aggregation for run in runs if run.aggregation is not None})
    if len(aggregations) > 1:
        notes.append(
            f"the runs use different OODD aggregations ({', '.join(aggregations)}); OODD scores differ in kind"
        )
    seeds = sorted({run.seed for run in runs}, key=_seed_key)
    if None in seeds and len(seeds) > 1:
        notes.append("some runs have no seed; they are ranked together as one seed group of their own")
    groups = sorted({run.group for run in runs})
    for seed in seeds:
        present = {run.group for run in runs if run.seed == seed}
        if len(present) == 1:
            notes.append(f"{_seed_name(seed)} has a single run ({next(iter(present))}); its ranks are all 1")
        absent = [group for group in groups if group not in present]
        if absent and len(seeds) > 1:
            notes.append(f"{_seed_name(seed)} has no run of {', '.join(absent)}; ranks of that seed cover fewer models")
    return notes


def _rank_seed_groups(
    runs: Sequence[Run], tasks: Sequence[str], notes: list[str]
) -> tuple[list[dict[str, Any]], dict[tuple[str, int | None], dict[str, Any]]]:
    """Ranks per seed, task and split, and per run the task and overall averages."""
    split_ranks: list[dict[str, Any]] = []
    # (group, seed) -> kind ("performance"/"entanglement") -> task -> list of split ranks
    collected: dict[tuple[str, int | None], dict[str, dict[str, list[float]]]] = {
        (run.group, run.seed): {"performance": {}, "entanglement": {}} for run in runs
    }
    for seed in sorted({run.seed for run in runs}, key=_seed_key):
        members = [run for run in runs if run.seed == seed]
        for task in tasks:
            lower_is_better = TASKS[task].lower_is_better
            for split in RANK_SPLITS[task]:
                entries = [
                    (run, row)
                    for run in members
                    for row in run.entanglement
                    if row["task"] == task and row["split"] == split
                ]
                if not entries:
                    continue
                u_correct = np.array([row["u_correct"] for _, row in entries])
                delta = np.array([row["delta"] for _, row in entries])
                metric_tolerance = RANK_TOLERANCE[TASKS[task].metric]
                performance = rank_values(u_correct, lower_is_better=lower_is_better, tolerance=metric_tolerance)
                # Δ ties within how far the metric's tolerance moves it, run by run.
                tolerances = [delta_tolerance(row["u_correct"], row["u_wrong"], metric_tolerance) for _, row in entries]
                entanglement = rank_values(delta, tolerance=tolerances)
                for what, values in (("u_correct", u_correct), ("Δ", delta)):
                    undefined = [run.group for (run, _), value in zip(entries, values, strict=True) if np.isnan(value)]
                    if undefined and len(entries) > 1:
                        notes.append(
                            f"{task}/{split}, {_seed_name(seed)}: {what} of {', '.join(undefined)} is undefined "
                            "and ranked last"
                        )
                for (run, row), p_rank, e_rank in zip(entries, performance, entanglement, strict=True):
                    split_ranks.append(
                        {
                            "seed": seed,
                            "group": run.group,
                            "task": task,
                            "split": split,
                            "n_ranked": len(entries),
                            "u_correct": row["u_correct"],
                            "delta": row["delta"],
                            "performance_rank": float(p_rank),
                            "entanglement_rank": float(e_rank),
                        }
                    )
                    mine = collected[(run.group, run.seed)]
                    mine["performance"].setdefault(task, []).append(float(p_rank))
                    mine["entanglement"].setdefault(task, []).append(float(e_rank))
    per_seed: dict[tuple[str, int | None], dict[str, Any]] = {}
    for key, kinds in collected.items():
        summary: dict[str, Any] = {}
        for kind, by_task in kinds.items():
            task_ranks = {task: float(np.mean(ranks)) for task, ranks in by_task.items()}
            summary[kind] = float(np.mean(list(task_ranks.values()))) if task_ranks else math.nan
            summary[f"{kind}_tasks"] = task_ranks
        per_seed[key] = summary
    for run in runs:
        if not collected[(run.group, run.seed)]["performance"]:
            notes.append(f"{run.label} ({run.folder}) has no ranked task and split; it has no rank")
    return split_ranks, per_seed


def _pool_ranks(
    runs: Sequence[Run], tasks: Sequence[str], per_seed: Mapping[tuple[str, int | None], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for group in sorted({run.group for run in runs}):
        mine = [per_seed[(run.group, run.seed)] for run in runs if run.group == group]
        row: dict[str, Any] = {"group": group, "n_seeds": len(mine)}
        for kind in ("performance", "entanglement"):
            row[f"{kind}_rank"], row[f"{kind}_interval"], _ = mean_interval(summary[kind] for summary in mine)
        for task in tasks:
            for kind in ("performance", "entanglement"):
                values = (summary[f"{kind}_tasks"].get(task, math.nan) for summary in mine)
                row[f"{kind}_rank_{task}"], row[f"{kind}_interval_{task}"], _ = mean_interval(values)
        rows.append(row)
    rows.sort(key=lambda row: (_nan_last(row["performance_rank"]), _nan_last(row["entanglement_rank"]), row["group"]))
    return rows


def _pool_points(runs: Sequence[Run]) -> list[dict[str, Any]]:
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run.entanglement:
            by_key.setdefault((run.group, row["task"], row["split"]), []).append(row)
    points = []
    for (group, task, split), rows in sorted(
        by_key.items(), key=lambda item: (item[0][0], _task_key(item[0][1]), split_order(item[0][2]))
    ):
        wrong = sorted({row["wrong"] for row in rows if row["wrong"] is not None})
        correct = sorted({row["correct"] for row in rows if row["correct"] is not None})
        point: dict[str, Any] = {
            "group": group,
            "task": task,
            "split": split,
            "metric": TASKS[task].metric if task in TASKS else None,
            "correct": "/".join(correct) or (TASKS[task].correct if task in TASKS else None),
            "wrong": "/".join(wrong) or None,
            "n": len(rows),
        }
        for key in ("u_correct", "u_wrong", "delta"):
            point[key], point[f"{key}_interval"], _ = mean_interval(row[key] for row in rows)
        points.append(point)
    return points


def _pool_collapse(runs: Sequence[Run]) -> list[dict[str, Any]]:
    by_key: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for row in run.collapse:
            by_key.setdefault((run.group, row["split"]), []).append(row["eu_over_au"])
    rows = []
    for (group, split), values in sorted(by_key.items(), key=lambda item: (item[0][0], split_order(item[0][1]))):
        mean, half, _ = mean_interval(values)
        rows.append({"group": group, "split": split, "n": len(values), "eu_over_au": mean, "eu_over_au_interval": half})
    return rows


def _nan_last(value: float) -> tuple[bool, float]:
    return (math.isnan(value), 0.0 if math.isnan(value) else value)


def _bootstrap_ranks(runs: Sequence[Run], tasks: Sequence[str], notes: list[str]) -> list[dict[str, Any]]:
    """Rank stability per seed group whose runs all have resamples (module docstring, 4)."""
    rows: list[dict[str, Any]] = []
    for seed in sorted({run.seed for run in runs}, key=_seed_key):
        members = [run for run in runs if run.seed == seed]
        resampled = [run for run in members if run.bootstrap is not None]
        if not resampled:
            continue
        if len(resampled) < len(members) or len(members) < 2:
            if len(members) >= 2:
                lacking = ", ".join(run.label for run in members if run.bootstrap is None)
                notes.append(f"{_seed_name(seed)}: {lacking} has no bootstrap resamples; no rank stability")
            continue
        n = min(run.bootstrap.n for run in members)
        if len({(run.bootstrap.n, run.bootstrap.seed) for run in members}) > 1:
            notes.append(
                f"{_seed_name(seed)}: the runs' bootstraps differ in resamples or seed, so their resamples are "
                f"not paired; rank stability over the first {n} resamples of each"
            )
        ranks = {kind: {run.label: [] for run in members} for kind in ("performance", "entanglement")}
        for task in tasks:
            lower_is_better = TASKS[task].lower_is_better
            tolerance = RANK_TOLERANCE[TASKS[task].metric]
            for split in RANK_SPLITS[task]:
                entries = []
                for run in members:
                    keys = run.bootstrap.entanglement_keys
                    if (task, split) in keys:
                        index = keys.index((task, split))
                        entries.append(
                            (
                                run,
                                {
                                    name: run.bootstrap.entanglement[name][index, :n]
                                    for name in ("u_correct", "u_wrong", "delta")
                                },
                            )
                        )
                if not entries:
                    continue
                performance = np.empty((len(entries), n))
                entanglement = np.empty((len(entries), n))
                for resample in range(n):
                    u_correct = np.array([values["u_correct"][resample] for _, values in entries])
                    u_wrong = np.array([values["u_wrong"][resample] for _, values in entries])
                    delta = np.array([values["delta"][resample] for _, values in entries])
                    performance[:, resample] = rank_values(
                        u_correct, lower_is_better=lower_is_better, tolerance=tolerance
                    )
                    tolerances = [
                        delta_tolerance(correct, wrong, tolerance)
                        for correct, wrong in zip(u_correct.tolist(), u_wrong.tolist(), strict=True)
                    ]
                    entanglement[:, resample] = rank_values(delta, tolerance=tolerances)
                for position, (run, _) in enumerate(entries):
                    ranks["performance"][run.label].append((task, performance[position]))
                    ranks["entanglement"][run.label].append((task, entanglement[position]))
        for run in members:
            row: dict[str, Any] = {"seed": seed, "group": run.group, "n_resamples": n}
            for kind, by_run in ranks.items():
                overall = _overall_ranks(by_run[run.label], n)
                defined = overall[~np.isnan(overall)]
                if defined.size:
                    low, high = np.percentile(defined, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
                    row.update(
                        {
                            f"{kind}_rank_mean": float(defined.mean()),
                            f"{kind}_rank_low": float(low),
                            f"{kind}_rank_high": float(high),
                            f"{kind}_first": float(np.mean(defined == 1.0)),
                        }
                    )
                else:
                    row.update({f"{kind}_{name}": math.nan for name in ("rank_mean", "rank_low", "rank_high", "first")})
            rows.append(row)
    return rows


def _overall_ranks(task_ranks: Sequence[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per resample, the mean over tasks of the mean over a task's splits (as the point ranks)."""
    by_task: dict[str, list[np.ndarray]] = {}
    for task, ranks in task_ranks:
        by_task.setdefault(task, []).append(ranks)
    if not by_task:
        return np.full(n, np.nan)
    return np.mean([np.mean(splits, axis=0) for splits in by_task.values()], axis=0)
