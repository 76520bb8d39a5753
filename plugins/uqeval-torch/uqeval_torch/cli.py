"""``uqeval train``, ``uqeval predict`` and ``uqeval study``, added to uqeval's command line by the plugin.

Torch is imported only when one of these commands runs, so ``uqeval score`` and the
other core commands start as fast with the plugin installed as without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from uqeval import UQEvalError, printable, progress_bar

err_console = Console(stderr=True)


def _say(line: str) -> None:
    """Print ``line`` on stderr as text: the paths and names in it are the user's, never Rich
    markup, and their control characters are shown escaped."""
    err_console.print(printable(line), markup=False, highlight=False)


def parse_options(values: list[str] | None, flag: str = "--data-option") -> dict[str, str]:
    """``["size=32", "raters=3"]`` → ``{"size": "32", "raters": "3"}``."""
    options: dict[str, str] = {}
    for value in values or []:
        key, sign, setting = value.partition("=")
        if not sign or not key.strip():
            raise UQEvalError(f"{flag} {value!r}: expected KEY=VALUE")
        options[key.strip()] = setting.strip()
    return options


@contextlib.contextmanager
def progress_display(quiet: bool) -> Iterator[Progress | None]:
    """A rich progress display on stderr (none when ``quiet``)."""
    if quiet:
        yield None
        return
    with progress_bar(err_console, unit="", transient=False) as progress:
        yield progress


@contextlib.contextmanager
def _flags() -> Iterator[None]:
    """Name the flag of a library error about one of the command's arguments (``parameter``)."""
    try:
        yield
    except UQEvalError as error:
        if not error.parameter:
            raise
        raise UQEvalError(f"--{error.parameter.replace('_', '-')}: {error}") from None


def _flagged(flag: str, function, value):
    """``function(value)``, with an error's message prefixed by the command-line flag."""
    try:
        return function(value)
    except UQEvalError as error:
        raise UQEvalError(f"{flag}: {error}") from None


DataOption = Annotated[
    list[str] | None,
    typer.Option(
        "--data-option", metavar="KEY=VALUE", help="A dataset option KEY=VALUE (e.g. size=32); repeat for several."
    ),
]
AUOption = Annotated[
    list[str] | None,
    typer.Option(
        "--au-option",
        metavar="KEY=VALUE",
        help="An AU method option KEY=VALUE (e.g. beta=2.5e-3 for prob_unet); repeat for several; "
        "`uqeval plugins` lists them.",
    ),
]


def _passive_openmp() -> None:
    """Let idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the environment
    says otherwise, before torch is imported.

    torch's and numba's OpenMP runtimes both spin their idle threads by default; a
    command that alternates the two (a network's forward pass, then the writer's value
    checks) has each wait on cores the other spins on. Measured on the 2-core machine:
    six SSN prediction batches took 10.9 s after uqeval's kernels had run, 0.6–0.8 s
    with passive waiting (benchmarks/gpu_check.py, docs/models.md).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def train_command(
    au: Annotated[str, typer.Option("--au", help="AU method: softmax, ssn, prob_unet, diffusion, tta, or a plugin's.")],
    eu: Annotated[
        str, typer.Option("--eu", help="EU method: none, dropout, swag_diag, swag, ensemble, or a plugin's.")
    ],
    data: Annotated[str, typer.Option("--data", help="Dataset, e.g. synthetic.")],
    out: Annotated[Path, typer.Option("--out", help="The run folder; rerun the same command to resume.")],
    size: Annotated[
        str | None, typer.Option("--size", help="Network size: tiny (CPU) or full (the study's; default).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs per member (default 100).")] = None,
    members: Annotated[
        int | None, typer.Option("--members", help="Members to train (default: the EU method's, e.g. 5).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first member.")] = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default 32).")] = None,
    data_option: DataOption = None,
    au_option: AUOption = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, …")] = "auto",
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="cpu: settings that train to a usable model on a CPU in minutes (tiny network, lr 3e-3, "
            "30 epochs of batches of 16, 48² synthetic images with fewer faint shapes); explicit flags win.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a reference model (AU method × EU method) on a dataset; resumes an interrupted run."""
    _passive_openmp()
    from uqeval import plugin_manager
    from uqeval_torch.run import PROFILES, RunSettings
    from uqeval_torch.train import train

    manager = plugin_manager()
    if members is None:
        members = int(_flagged("--eu", manager.eu_method, eu).default_members)
    chosen: dict[str, Any] = {}
    if profile is not None:
        if profile not in PROFILES:
            raise UQEvalError(f"--profile: unknown profile {profile!r}; choose {', '.join(PROFILES)}")
        chosen = PROFILES[profile]
        size = size or chosen["size"]
        epochs = chosen["epochs"] if epochs is None else epochs
        batch_size = chosen["batch_size"] if batch_size is None else batch_size
        if data == "synthetic":
            defaults = [f"{key}={value}" for key, value in chosen["synthetic_options"].items()]
            data_option = [*defaults, *(data_option or [])]  # later options win
    if size is None and epochs is None and _on_cpu(device):
        err_console.print(
            "note: training the full-size network for 100 epochs, settings meant for a GPU, on the CPU takes "
            "hours; pass --profile cpu for a model that learns in minutes, or choose --size and --epochs "
            "(and set OMP_NUM_THREADS to the cores to use)",
            highlight=False,
        )
    size = size or "full"
    epochs = 100 if epochs is None else epochs
    batch_size = 32 if batch_size is None else batch_size
    options: dict[str, Any] = parse_options(data_option)
    if options:  # typed as the dataset takes them ("32" → 32), so API and CLI runs resume alike
        dataset = _flagged("--data-option", lambda name: manager.dataset(name, options), data)
        options = {key: dataset.options()[key] for key in options}
    au_options: dict[str, Any] = parse_options(au_option, "--au-option")
    if au_options:  # typed as the method takes them, for the same reason
        from uqeval_torch.run import configured_au

        method = _flagged("--au-option", lambda name: configured_au(manager.au_method(name), au_options), au)
        au_options = {key: method.options()[key] for key in au_options}
    with _flags():
        settings = RunSettings(
            au=au,
            eu=eu,
            data=data,
            data_options=options,
            au_options=au_options,
            size=size,
            epochs=epochs,
            members=members,
            seed=seed,
            batch_size=batch_size,
            **({"learning_rate": chosen["learning_rate"]} if chosen else {}),
        )
    with progress_display(quiet) as progress, _flags():
        trained = train(settings, out, device=device, progress=progress)
    for note in (getattr(trained, "note", ""), _dataset_note(settings)):
        if note:
            _say(f"note: {note}")
    _say(f"trained {settings.au}+{settings.eu} ({members} member(s)) → {out}")


def _dataset_note(settings) -> str:
    """What the run's dataset says about its files (Chaksu: images left out for a missing mask); "" if nothing."""
    from uqeval_torch.run import components

    note = getattr(components(settings).dataset, "note", None)
    return str(note()) if callable(note) else ""


def _on_cpu(device: str) -> bool:
    """Whether ``device`` resolves to the CPU (``auto`` without CUDA)."""
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"


def predict_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by `uqeval train`.")],
    out: Annotated[Path, typer.Option("--out", help="The cube store to write (zarr); resumes if unfinished.")],
    data: Annotated[str | None, typer.Option("--data", help="Dataset (default: the one the run trained on).")] = None,
    data_option: DataOption = None,
    eu: Annotated[
        str | None,
        typer.Option("--eu", help="Predict as another EU method the run serves (a swag run: swag_diag, none)."),
    ] = None,
    members: Annotated[
        int | None,
        typer.Option(
            "--members",
            help="EU members (default: the run's, e.g. every network of an ensemble; for dropout and SWAG the "
            "EU method's own, 10 draws).",
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            help="AU samples per member (default: the AU method's own, e.g. 1 for softmax, 10 for ssn; "
            "a deterministic method always draws 1).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, …")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished store at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Write a trained run's sample cube (calibration, test and OOD images) for `uqeval score`."""
    _passive_openmp()
    from uqeval_torch.predict import predict

    options: dict[str, Any] = parse_options(data_option)
    with progress_display(quiet) as progress, _flags():
        summary = predict(
            run,
            out,
            data=data,
            data_options=options,
            eu=eu,
            members=members,
            samples=samples,
            batch_size=batch_size,
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
    _say(
        f"wrote {summary.n_images} images × {summary.eu} members × {summary.au} samples → {summary.store}; "
        f"score it with `uqeval score {summary.store}`"
    )


def _names(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Repeatable, comma-separated names (``--au ssn,softmax --au diffusion``)."""
    if not values:
        return default
    return tuple(dict.fromkeys(name.strip() for value in values for name in value.split(",") if name.strip()))


def study_command(
    out: Annotated[Path, typer.Argument(help="The study's folder; rerun the same command to resume.")],
    data: Annotated[str, typer.Option("--data", help="Dataset, e.g. synthetic.")] = "synthetic",
    au: Annotated[
        list[str] | None,
        typer.Option(
            "--au",
            metavar="NAME",
            help="AU methods, comma-separated or the flag repeated (default: softmax,ssn,prob_unet,diffusion).",
        ),
    ] = None,
    eu: Annotated[
        list[str] | None,
        typer.Option(
            "--eu",
            metavar="NAME",
            help="EU methods, comma-separated or the flag repeated (default: none,dropout,swag_diag,swag,ensemble).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per combination.")] = 1,
    size: Annotated[
        str | None, typer.Option("--size", help="Network size: tiny (CPU) or full (the study's; default).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs per run (default: train's).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step.")] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", help="AU samples per member (default: each AU method's own, e.g. 1 for softmax, 10 for ssn)."
        ),
    ] = None,
    members: Annotated[
        int | None,
        typer.Option("--members", help="EU members of every method with several (default: each method's)."),
    ] = None,
    data_option: DataOption = None,
    au_option: Annotated[
        list[str] | None,
        typer.Option(
            "--au-option",
            metavar="METHOD.KEY=VALUE",
            help="An AU method's option as METHOD.KEY=VALUE (e.g. prob_unet.beta=2.5e-3), passed to that "
            "method's runs; repeat for several.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, …")] = "auto",
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            metavar="FILE",
            help="Write one uqeval command per step to FILE (for a job array); run nothing.",
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="A dask.distributed scheduler to run the steps on.")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Passed to every `uqeval train` (cpu: converges in minutes; "
            "also 5 EU members and 5 AU samples unless --members/--samples say otherwise).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", help="Steps to run at once on this machine, each with CPUs ÷ workers torch threads."),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress view.")] = False,
) -> None:
    """Run the study's grid (AU × EU methods × seeds): train, predict, score, then compare.

    Runs are shared where methods share them (none, swag and swag_diag are one SWAG run).
    Finished steps are skipped on a rerun; a failed step is reported with its log and
    skips only the steps that need it.
    """
    _passive_openmp()
    from uqeval_torch.run import PROFILES
    from uqeval_torch.study import AU_METHODS, EU_METHODS, StudyOptions, plan_study, write_manifest

    if profile is not None:
        if profile not in PROFILES:
            raise UQEvalError(f"--profile: unknown profile {profile!r}; choose {', '.join(PROFILES)}")
        members = PROFILES[profile]["study"]["members"] if members is None else members
        samples = PROFILES[profile]["study"]["samples"] if samples is None else samples
    options = StudyOptions(
        data=data,
        data_options=tuple(data_option or ()),
        au_options=tuple(au_option or ()),
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        samples=samples,
        members=members,
        profile=profile,
    )
    with _flags():
        plan = plan_study(out, au=_names(au, AU_METHODS), eu=_names(eu, EU_METHODS), seeds=seeds, options=options)
    n_runs = len(plan.phase("train"))
    _say(
        f"study: {len(plan.combinations)} combination(s) × {plan.seeds} seed(s) from {n_runs} training run(s), "
        f"{len(plan.steps)} steps → {plan.out}"
    )
    if manifest is not None:
        ranges = write_manifest(plan, manifest)
        phases = ", ".join(f"{phase} lines {first}–{last}" for phase, (first, last) in ranges.items())
        _say(f"wrote {len(plan.steps)} commands to {manifest} ({phases})")
        return
    if scheduler is not None:
        from uqeval_torch.study import run_on_cluster

        outcomes = run_on_cluster(plan, scheduler)
    else:
        with _flags():
            outcomes = _run_with_progress(plan, quiet, workers)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    skipped = [outcome for outcome in outcomes if outcome.status == "skipped"]
    for outcome in failed:
        _say(f"failed: {outcome.step.name} (log: {plan.log_path(outcome.step)})")
    if failed or skipped:
        raise UQEvalError(f"{len(failed)} step(s) failed and {len(skipped)} were skipped; rerun to retry them")
    _say(f"study finished: comparison in {plan.out / 'comparison'}")


def _run_with_progress(plan, quiet: bool, workers: int = 1):
    """Run the plan here, with a progress bar of steps done / failed / skipped and those running."""
    from uqeval_torch.study import run_locally

    if quiet:
        return run_locally(plan, workers=workers)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    running: list[str] = []
    with progress_bar(err_console, unit="steps", transient=False) as progress:
        task = progress.add_task("study", total=len(plan.steps))

        def update(outcome, started):
            if started is not None:
                running.append(started.name)
            if outcome is not None:
                counts[outcome.status] += 1
                if outcome.step.name in running:
                    running.remove(outcome.step.name)
                if outcome.status == "failed":
                    _say(f"failed: {outcome.step.name} (log: {plan.log_path(outcome.step)})")
                progress.advance(task)
            summary = f"done {counts['done']} · failed {counts['failed']} · skipped {counts['skipped']}"
            now = f" · running {', '.join(running)}" if running else ""
            progress.update(task, description=summary + now)

        return run_locally(plan, workers=workers, on_update=update)


def add_commands(app: typer.Typer) -> None:
    """Register ``train``, ``predict`` and ``study`` on uqeval's typer app."""
    app.command("train")(train_command)
    app.command("predict")(predict_command)
    app.command("study")(study_command)
