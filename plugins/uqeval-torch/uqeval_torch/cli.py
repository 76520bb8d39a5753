"""``uqeval train`` and ``uqeval predict``, added to uqeval's command line by the plugin.

Torch is imported only when one of these commands runs, so ``uqeval score`` and the
other core commands start as fast with the plugin installed as without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from uqeval.errors import UQEvalError
from uqeval.report.progress import progress_bar

err_console = Console(stderr=True)


def parse_options(values: list[str] | None) -> dict[str, str]:
    """``["size=32", "raters=3"]`` → ``{"size": "32", "raters": "3"}``."""
    options: dict[str, str] = {}
    for value in values or []:
        key, sign, setting = value.partition("=")
        if not sign or not key.strip():
            raise UQEvalError(f"--data-option {value!r}: expected KEY=VALUE")
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
    typer.Option("--data-option", help="A dataset option KEY=VALUE (e.g. size=32); repeat for several."),
]


def train_command(
    au: Annotated[str, typer.Option("--au", help="AU method: softmax, ssn, prob_unet, diffusion, or a plugin's.")],
    eu: Annotated[str, typer.Option("--eu", help="EU method: none, ensemble, or a plugin's.")],
    data: Annotated[str, typer.Option("--data", help="Dataset, e.g. synthetic.")],
    out: Annotated[Path, typer.Option("--out", help="The run folder; rerun the same command to resume.")],
    size: Annotated[str, typer.Option("--size", help="Network size: tiny (CPU) or full (the study's).")] = "full",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per member.")] = 100,
    members: Annotated[
        int | None, typer.Option("--members", help="Members to train (default: the EU method's, e.g. 5).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first member.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 32,
    data_option: DataOption = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, …")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a reference model (AU method × EU method) on a dataset; resumes an interrupted run."""
    from uqeval.plugins import plugin_manager
    from uqeval_torch.run import RunSettings
    from uqeval_torch.train import train

    manager = plugin_manager()
    if members is None:
        members = int(_flagged("--eu", manager.eu_method, eu).default_members)
    options: dict[str, Any] = parse_options(data_option)
    if options:  # typed as the dataset takes them ("32" → 32), so API and CLI runs resume alike
        dataset = _flagged("--data-option", lambda name: manager.dataset(name, options), data)
        options = {key: dataset.options()[key] for key in options}
    with _flags():
        settings = RunSettings(
            au=au,
            eu=eu,
            data=data,
            data_options=options,
            size=size,
            epochs=epochs,
            members=members,
            seed=seed,
            batch_size=batch_size,
        )
    with progress_display(quiet) as progress, _flags():
        train(settings, out, device=device, progress=progress)
    err_console.print(f"trained {settings.au}+{settings.eu} ({members} member(s)) → {out}", highlight=False)


def predict_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by `uqeval train`.")],
    out: Annotated[Path, typer.Option("--out", help="The cube store to write (zarr); resumes if unfinished.")],
    data: Annotated[str | None, typer.Option("--data", help="Dataset (default: the one the run trained on).")] = None,
    data_option: DataOption = None,
    members: Annotated[int | None, typer.Option("--members", help="EU members (default: all trained).")] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="AU samples per member (default: the method's, 10).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, …")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished store at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Write a trained run's sample cube (calibration, test and OOD images) for `uqeval score`."""
    from uqeval_torch.predict import predict

    options: dict[str, Any] = parse_options(data_option)
    with progress_display(quiet) as progress, _flags():
        summary = predict(
            run,
            out,
            data=data,
            data_options=options,
            members=members,
            samples=samples,
            batch_size=batch_size,
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
    err_console.print(
        f"wrote {summary.n_images} images × {summary.eu} members × {summary.au} samples → {summary.store}; "
        f"score it with `uqeval score {summary.store}`",
        highlight=False,
    )


def add_commands(app: typer.Typer) -> None:
    """Register ``train`` and ``predict`` on uqeval's typer app."""
    app.command("train")(train_command)
    app.command("predict")(predict_command)
