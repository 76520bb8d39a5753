"""``uqeval study``: the study's grid of AU × EU methods, trained, predicted, scored and compared.

A study is a graph of steps, each one complete ``uqeval`` command:

    train (one run per AU method, EU family and seed)
      → predict (one cube store per AU × EU method and seed)
        → score (one report folder per store)
          → compare (every report folder: Table 2's ranks and Figure 7)

Runs are shared where methods share them: ``none``, ``swag`` and ``swag_diag`` are one
SWAG run (collecting SWAG's moments does not change training), predicted three ways.
That run finishes whatever its epochs; a grid whose EU methods need more epochs than it
trains (``swag`` and ``swag_diag``: 2, for their moments) is refused before any step runs.

Layout of ``OUT/``::

    runs/<au>+<family>/seed-<s>/     training runs (family: swag, dropout or ensemble)
    stores/<au>+<eu>/seed-<s>.zarr   cube stores
    scores/<au>+<eu>/seed-<s>/       uqeval score reports
    comparison/                      uqeval compare's report
    logs/<step>.log                  each step's output
    done/<step>                      a step's mark of success, so a rerun skips it

The steps run here, one or several at a time (:func:`run_locally`), go to a
``dask.distributed`` cluster as tasks with their dependencies (:func:`run_on_cluster`),
or are written as a manifest of commands for a job array (:func:`write_manifest`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uqeval import UQEvalError

#: The study's AU and EU methods (its 19 combinations are all pairs but softmax + none).
AU_METHODS = ("softmax", "ssn", "prob_unet", "diffusion")
EU_METHODS = ("none", "dropout", "swag_diag", "swag", "ensemble")
#: The training run each EU method is predicted from.
FAMILY = {"none": "swag", "swag": "swag", "swag_diag": "swag", "dropout": "dropout", "ensemble": "ensemble"}
#: Seed ``s`` of a study trains its runs from model seed ``s · SEED_STRIDE`` (so the
#: ensembles of different study seeds share no member).
SEED_STRIDE = 100
#: The phases, in dependency order.
PHASES = ("train", "predict", "score", "compare")
#: The methods' default EU members and AU samples, and network passes per AU sample
#: (a DDIM sample of ``diffusion`` takes 10): only to estimate what a step costs.
_DEFAULT_MEMBERS = {"none": 1, "dropout": 10, "swag_diag": 10, "swag": 10, "ensemble": 5}
_DEFAULT_SAMPLES = {"softmax": 1, "ssn": 10, "prob_unet": 10, "diffusion": 10, "tta": 8}
_PASSES_PER_SAMPLE = {"diffusion": 10}
#: Network passes per image that cost about as much as training one network (the CPU
#: profile trains on 96 images for 30 epochs and predicts 176 images).
_PASSES_PER_TRAINING = 50


def study_grid(au: Sequence[str] = AU_METHODS, eu: Sequence[str] = EU_METHODS) -> list[tuple[str, str]]:
    """The (AU, EU) pairs of a study: every pair but softmax + none (a deterministic
    network with one member cannot be decomposed)."""
    return [(a, e) for a in au for e in eu if not (a == "softmax" and e == "none")]


@dataclass(frozen=True)
class Step:
    """One command of a study.

    Attributes
    ----------
    name : str
        Unique, also the name of its log and done mark (``train-ssn+swag-seed-0``).
    phase : str
        ``train``, ``predict``, ``score`` or ``compare``.
    command : tuple of str
        The arguments after ``uqeval``.
    needs : tuple of str
        Names of the steps that must finish first.
    gpu : bool
        Whether it runs its network on a CUDA device (a cluster gives it a GPU resource).
    cost : float
        A rough estimate of its run time, in trainings of one network; it only decides
        which of the steps that are ready starts first.
    """

    name: str
    phase: str
    command: tuple[str, ...]
    needs: tuple[str, ...] = ()
    gpu: bool = False
    cost: float = 1.0

    def shell(self, executable: str = "uqeval") -> str:
        """The command as one shell line."""
        return shlex.join([executable, *self.command])


@dataclass(frozen=True)
class StudyPlan:
    """What ``uqeval study`` will run: the steps, in dependency order, for a folder."""

    out: Path
    steps: tuple[Step, ...]
    combinations: tuple[tuple[str, str], ...]
    seeds: int

    def phase(self, name: str) -> list[Step]:
        return [step for step in self.steps if step.phase == name]

    def done_path(self, step: Step) -> Path:
        return self.out / "done" / step.name

    def log_path(self, step: Step) -> Path:
        return self.out / "logs" / f"{step.name}.log"

    def is_done(self, step: Step) -> bool:
        return self.done_path(step).exists()


@dataclass(frozen=True)
class StudyOptions:
    """The options every run of a study shares (the flags of ``uqeval train``)."""

    data: str = "synthetic"
    data_options: tuple[str, ...] = ()
    au_options: tuple[str, ...] = ()
    size: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    profile: str | None = None
    device: str = "auto"
    samples: int | None = None
    members: int | None = None
    extra_score: tuple[str, ...] = field(default=())


def plan_study(
    out: str | Path,
    *,
    au: Sequence[str] = AU_METHODS,
    eu: Sequence[str] = EU_METHODS,
    seeds: int = 1,
    options: StudyOptions = StudyOptions(),
) -> StudyPlan:
    """The steps of a study of ``au`` × ``eu`` over ``seeds`` seeds into ``out``.

    Raises
    ------
    UQEvalError
        An unknown method name (``parameter`` ``au`` or ``eu``), no combination left,
        fewer than one seed, or fewer than one epoch or than an EU method of the grid needs
        (``parameter`` ``epochs``; see :func:`check_epochs`).
    """
    from uqeval import plugin_manager

    au_known = (*AU_METHODS, *sorted(set(plugin_manager().au_methods()) - set(AU_METHODS)))
    for parameter, names, known in (("au", au, au_known), ("eu", eu, EU_METHODS)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UQEvalError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}", parameter=parameter)
    if seeds < 1:
        raise UQEvalError(f"a study needs at least 1 seed, not {seeds}", parameter="seeds")
    au_options = _au_options(options.au_options, au)
    combinations = study_grid(au, eu)
    if not combinations:
        raise UQEvalError("no combination left: softmax + none cannot be decomposed", parameter="eu")
    epochs = training_epochs(options)
    if epochs < 1:
        raise UQEvalError(f"a training run needs at least 1 epoch, not {epochs}", parameter="epochs")
    check_epochs(combinations, epochs)
    out = Path(out).resolve()
    gpu = options.device.startswith("cuda")
    shared = _shared_flags(options)
    steps: list[Step] = []
    trains: dict[tuple[str, str, int], Step] = {}
    for seed in range(seeds):
        for au_name, eu_name in combinations:
            family = FAMILY[eu_name]
            key = (au_name, family, seed)
            if key not in trains:
                run = out / "runs" / f"{au_name}+{family}" / f"seed-{seed}"
                command = ("train", "--au", au_name, "--eu", family, "--out", str(run), "--quiet")
                command += ("--seed", str(seed * SEED_STRIDE), *shared)
                networks = 1
                if family == "ensemble":
                    networks = options.members or _DEFAULT_MEMBERS["ensemble"]
                    if options.members is not None:
                        command += ("--members", str(options.members))
                for option in au_options.get(au_name, ()):
                    command += ("--au-option", option)
                trains[key] = Step(
                    f"train-{au_name}+{family}-seed-{seed}", "train", command, gpu=gpu, cost=float(networks)
                )
    steps.extend(trains.values())
    scores: list[Step] = []
    predicts: list[Step] = []
    for seed in range(seeds):
        for au_name, eu_name in combinations:
            family = FAMILY[eu_name]
            run = out / "runs" / f"{au_name}+{family}" / f"seed-{seed}"
            store = out / "stores" / f"{au_name}+{eu_name}" / f"seed-{seed}.zarr"
            report = out / "scores" / f"{au_name}+{eu_name}" / f"seed-{seed}"
            command = ("predict", str(run), "--out", str(store), "--eu", eu_name, "--quiet", "--device", options.device)
            if options.samples is not None:
                command += ("--samples", str(options.samples))
            if options.members is not None and eu_name != "none":
                command += ("--members", str(options.members))
            members = _DEFAULT_MEMBERS[eu_name] if options.members is None or eu_name == "none" else options.members
            samples = options.samples or _DEFAULT_SAMPLES.get(au_name, 10)
            passes = members * samples * _PASSES_PER_SAMPLE.get(au_name, 1)
            predict = Step(
                f"predict-{au_name}+{eu_name}-seed-{seed}",
                "predict",
                command,
                needs=(trains[(au_name, family, seed)].name,),
                gpu=gpu,
                cost=passes / _PASSES_PER_TRAINING,
            )
            score = Step(
                f"score-{au_name}+{eu_name}-seed-{seed}",
                "score",
                ("score", str(store), "--out", str(report), *options.extra_score),
                needs=(predict.name,),
                cost=0.05,
            )
            predicts.append(predict)
            scores.append(score)
    steps.extend(predicts)
    steps.extend(scores)
    reports = [step.command[step.command.index("--out") + 1] for step in scores]
    steps.append(
        Step(
            "compare",
            "compare",
            ("compare", *reports, "--out", str(out / "comparison")),
            needs=tuple(step.name for step in scores),
            cost=0.05,
        )
    )
    return StudyPlan(out, tuple(steps), tuple(combinations), seeds)


def training_epochs(options: StudyOptions) -> int:
    """The epochs every run of the study trains: ``--epochs``, else the profile's, else ``uqeval train``'s default."""
    from uqeval_torch.run import PROFILES, RunSettings

    if options.epochs is not None:
        return options.epochs
    if options.profile in PROFILES:
        return int(PROFILES[options.profile]["epochs"])
    return int(RunSettings.__dataclass_fields__["epochs"].default)


def check_epochs(combinations: Sequence[tuple[str, str]], epochs: int) -> None:
    """Refuse a grid with an EU method that cannot be predicted from runs of ``epochs`` epochs.

    An EU method says how many epochs it needs with a ``min_epochs`` attribute (``swag``
    and ``swag_diag``: 2, one snapshot of the weights per epoch); one without needs 1.
    The shared SWAG run itself finishes with any number, so a grid of ``none`` alone is
    never refused.

    Raises
    ------
    UQEvalError
        Naming the combinations, the minimum and the two ways out (``parameter`` ``epochs``).
    """
    from uqeval import plugin_manager

    manager = plugin_manager()
    needs = {
        eu: int(getattr(manager.eu_method(eu), "min_epochs", 1)) for eu in dict.fromkeys(e for _, e in combinations)
    }
    short = [(au, eu) for au, eu in combinations if needs[eu] > epochs]
    if not short:
        return
    minimum = max(needs[eu] for _, eu in short)
    methods = list(dict.fromkeys(eu for _, eu in short))
    named = " and ".join(methods)
    subject = f"EU methods {named} need" if len(methods) > 1 else f"EU method {named} needs"
    their = "their" if len(methods) > 1 else "its"
    trained = "1 epoch is" if epochs == 1 else f"{epochs} epochs are"
    raise UQEvalError(
        f"{trained} too few for {', '.join(f'{au}+{eu}' for au, eu in short)}: {subject} runs "
        f"of at least {minimum} epochs to collect {their} moments; pass --epochs {minimum} or more, "
        f"or leave {named} out of --eu",
        parameter="epochs",
    )


def _au_options(values: Sequence[str], au: Sequence[str]) -> dict[str, list[str]]:
    """``["prob_unet.beta=2.5e-3"]`` → ``{"prob_unet": ["beta=2.5e-3"]}``, for methods of the grid."""
    found: dict[str, list[str]] = {}
    for value in values:
        method, dot, option = value.partition(".")
        if not dot or "=" not in option or not method.strip():
            expected = "expected METHOD.KEY=VALUE (e.g. prob_unet.beta=2.5e-3)"
            raise UQEvalError(f"{value!r}: {expected}", parameter="au-option")
        if method.strip() not in au:
            raise UQEvalError(
                f"{value!r}: {method.strip()!r} is not an AU method of this study ({', '.join(au)})",
                parameter="au-option",
            )
        found.setdefault(method.strip(), []).append(option.strip())
    return found


def _shared_flags(options: StudyOptions) -> tuple[str, ...]:
    flags: list[str] = ["--data", options.data, "--device", options.device]
    if options.size is not None:
        flags += ["--size", options.size]
    if options.profile is not None:
        flags += ["--profile", options.profile]
    if options.epochs is not None:
        flags += ["--epochs", str(options.epochs)]
    if options.batch_size is not None:
        flags += ["--batch-size", str(options.batch_size)]
    for option in options.data_options:
        flags += ["--data-option", option]
    return tuple(flags)


# ---------------------------------------------------------------------------- running


def write_manifest(plan: StudyPlan, path: str | Path, *, executable: str = "uqeval") -> dict[str, tuple[int, int]]:
    """Write one complete command per line, in dependency order (every ``train``, then
    every ``predict``, ``score`` and the ``compare``), for a job array.

    Returns the 1-based line range of each phase: run each phase as its own array, after
    the one before has finished (or use :func:`run_on_cluster`).
    """
    from uqeval import write_bytes

    lines, ranges = [], {}
    for phase in PHASES:
        steps = plan.phase(phase)
        if steps:
            ranges[phase] = (len(lines) + 1, len(lines) + len(steps))
            lines.extend(step.shell(executable) for step in steps)
    write_bytes(Path(path), ("\n".join(lines) + "\n").encode())
    return ranges


@dataclass
class StepOutcome:
    """How a step ended: ``done`` (now or before), ``failed`` (see its log) or ``skipped``
    (a step it needs failed)."""

    step: Step
    status: str
    seconds: float = 0.0


class _Children:
    """The step subprocesses running now, so that a study that is stopped (Ctrl-C,
    SIGTERM) stops them too instead of waiting for them to finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopping = False

    def add(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)
            stopping = self._stopping
        if stopping:
            process.terminate()

    def discard(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def terminate(self) -> None:
        """SIGTERM to every running step (each cleans up as the command line does), now and
        for any that starts from here on."""
        with self._lock:
            self._stopping = True
            running = list(self._running)
        for process in running:
            process.terminate()


def run_step(
    plan: StudyPlan,
    step: Step,
    *,
    executable: Sequence[str] | None = None,
    threads: int | None = None,
    children: _Children | None = None,
) -> StepOutcome:
    """Run one step as a subprocess, its output in its log; mark it done on success.

    ``threads`` sets the step's ``OMP_NUM_THREADS`` unless the environment sets it;
    ``children`` tracks the subprocess while it runs.
    """
    if plan.is_done(step):
        return StepOutcome(step, "done")
    executable = list(executable or [sys.executable, "-m", "uqeval"])
    log = plan.log_path(step)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "a") as handle:
        handle.write(f"$ {step.shell()}\n")
        handle.flush()
        process = subprocess.Popen(
            [*executable, *step.command], stdout=handle, stderr=subprocess.STDOUT, env=_step_environment(threads)
        )
        if children is not None:
            children.add(process)
        try:
            returncode = process.wait()
        finally:
            if children is not None:
                children.discard(process)
    seconds = time.monotonic() - started
    if returncode != 0:
        return StepOutcome(step, "failed", seconds)
    done = plan.done_path(step)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(f"{seconds:.1f} s\n")
    return StepOutcome(step, "done", seconds)


def _step_environment(threads: int | None = None) -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    # Idle OpenMP threads sleep rather than spin: torch's and numba's runtimes share the cores.
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        environment.setdefault("OMP_NUM_THREADS", str(threads))
    return environment


def run_locally(
    plan: StudyPlan,
    *,
    workers: int = 1,
    on_update: Callable[[StepOutcome | None, Step | None], None] | None = None,
    executable: Sequence[str] | None = None,
) -> list[StepOutcome]:
    """Run every step here, ``workers`` at a time, each as soon as the steps it needs are
    done; a failed step skips only what needs it.

    Of the steps that are ready, the one with the longest estimated path to the end
    (its :attr:`Step.cost` plus the costliest chain of steps that need it) starts first,
    so the long predictions of diffusion models do not wait for every cheap step and
    then run alone at the end.

    With several workers each step gets ``OMP_NUM_THREADS`` = CPUs ÷ ``workers`` (at least
    1) unless the environment sets it. ``on_update(None, step)`` is called when a step
    starts and ``on_update(outcome, None)`` when it ends (from this thread).
    """
    if workers < 1:
        raise UQEvalError(f"workers must be at least 1, not {workers}", parameter="workers")
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    outcomes: dict[str, StepOutcome] = {}
    remaining = critical_path(plan)
    waiting = sorted(plan.steps, key=lambda step: -remaining[step.name])
    running: dict[Future[StepOutcome], Step] = {}

    def finish(outcome: StepOutcome) -> None:
        outcomes[outcome.step.name] = outcome
        if on_update is not None:
            on_update(outcome, None)

    children = _Children()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while waiting or running:
                before = len(waiting)
                for step in list(waiting):
                    if len(running) >= workers:
                        break
                    if any(name not in outcomes for name in step.needs):
                        continue
                    waiting.remove(step)
                    if any(outcomes[name].status != "done" for name in step.needs):
                        finish(StepOutcome(step, "skipped"))
                        continue
                    if on_update is not None:
                        on_update(None, step)
                    options = {"executable": executable, "threads": threads, "children": children}
                    running[pool.submit(run_step, plan, step, **options)] = step
                if not running:
                    if len(waiting) == before:  # pragma: no cover - plan_study never builds such a graph
                        raise UQEvalError(f"steps need steps that are not in the plan: {[s.name for s in waiting]}")
                    continue  # skips resolved more steps; look again
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    finish(future.result())
        except BaseException:
            for future in running:
                future.cancel()
            children.terminate()
            raise
    return [outcomes[step.name] for step in plan.steps]


def critical_path(plan: StudyPlan) -> dict[str, float]:
    """Each step's estimated cost to the end of the study: its own plus that of the
    costliest chain of steps that need it (in :attr:`Step.cost` units)."""
    needed_by: dict[str, list[str]] = {step.name: [] for step in plan.steps}
    for step in plan.steps:
        for name in step.needs:
            needed_by[name].append(step.name)
    costs = {step.name: step.cost for step in plan.steps}
    remaining: dict[str, float] = {}
    for step in reversed(plan.steps):  # the steps are in dependency order
        remaining[step.name] = costs[step.name] + max((remaining[name] for name in needed_by[step.name]), default=0.0)
    return remaining


def run_on_cluster(plan: StudyPlan, scheduler: str, *, executable: Sequence[str] | None = None) -> list[StepOutcome]:
    """Submit every step to a ``dask.distributed`` scheduler as a task that depends on the
    tasks of the steps it needs; steps on CUDA ask for the worker resource ``GPU=1``.

    Each task's dask ``priority`` is its estimated path to the end (:func:`critical_path`,
    in thousandths), so of the tasks that are ready the scheduler starts the longest
    chains first, as :func:`run_locally` does.

    A failed step (non-zero exit) makes the steps that need it skip; the others go on.
    """
    try:
        from distributed import Client
    except ImportError:
        raise UQEvalError(
            "--scheduler needs dask.distributed, which is not installed: pip install 'uqeval-torch[cluster]'"
        ) from None
    client = Client(scheduler)
    remaining = critical_path(plan)
    try:
        futures: dict[str, Any] = {}
        for step in plan.steps:
            needed = [futures[name] for name in step.needs]
            futures[step.name] = client.submit(
                _cluster_step,
                plan,
                step,
                needed,
                executable,
                key=f"uqeval-study-{step.name}",
                resources={"GPU": 1} if step.gpu else None,
                priority=round(1000 * remaining[step.name]),
                pure=False,
            )
        return client.gather([futures[step.name] for step in plan.steps])
    finally:
        client.close()


def _cluster_step(
    plan: StudyPlan, step: Step, needed: Iterable[StepOutcome], executable: Sequence[str] | None
) -> StepOutcome:
    if any(outcome.status != "done" for outcome in needed):
        return StepOutcome(step, "skipped")
    return run_step(plan, step, executable=executable)
