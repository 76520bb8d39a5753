"""The ``uqeval`` command line.

Each command imports what it needs when it runs, so ``uqeval --help`` and the start of
every command import none of numba, xarray, zarr, dask, scipy or matplotlib. Library
errors name arguments (``UQEvalError.parameter``); the commands name them as flags.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import signal
import sys
from collections.abc import Callable, Iterator
from inspect import cleandoc  # `inspect` is a command here
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from uqeval import __version__
from uqeval.conventions import PRESETS
from uqeval.errors import UQEvalError
from uqeval.names import UNITS
from uqeval.text import labelled, markup_text, printable, shortened

if TYPE_CHECKING:
    import click
    from rich.progress import Progress
    from rich.table import Table

    from uqeval.report.figure_workers import FigureWorkers

#: The synthetic scenarios (:data:`uqeval.SCENARIOS`), named here so that ``--help``
#: does not import the writer; a test keeps the two equal.
SCENARIO_NAMES = ("disentangled", "entangled", "collapsed", "no-eu")
#: The commands that the reference plugin, uqeval-torch, adds; asked for one of them, an
#: install without the plugin says where it comes from, not only "No such command".
TORCH_PLUGIN_COMMANDS = ("train", "predict", "study")
#: How to install uqeval-torch while it is not on a package index.
TORCH_PLUGIN_INSTALL = (
    'pip install "uqeval-torch @ git+https://github.com/uqeval/uqeval#subdirectory=plugins/uqeval-torch", '
    "or pip install ./plugins/uqeval-torch in a clone of the repository"
)
#: Library parameters → the flags that set them, for error messages.
FLAGS = {
    "tasks": "--tasks",
    "aggregations": "--aggregation",
    "preset": "--preset",
    "convention": "--convention",
    "unit": "--unit",
    "scheduler": "--scheduler",
}

Preset = enum.Enum("Preset", {name: name for name in PRESETS}, type=str)
Unit = enum.Enum("Unit", {name: name for name in UNITS}, type=str)


def _plain_metavars(parameters: list[click.Parameter]) -> list[click.Parameter]:
    """Show help as people read it: no type after a flag (typer writes ``<bool>``), and an
    argument named in capitals (``STORE``), as in the usage line."""
    for parameter in parameters:
        if isinstance(parameter, TyperOption) and parameter.is_flag and parameter.metavar is None:
            parameter.metavar = ""
        elif isinstance(parameter, TyperArgument) and parameter.metavar is None:
            parameter.metavar = parameter.name.upper() + ("..." if parameter.nargs != 1 else "")
    return parameters


def _usage(command: click.Command, ctx: click.Context) -> list[str]:
    """The usage line's pieces, an argument as ``STORE`` (required) or ``[OUT]``, not ``{store}``."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for parameter in command.get_params(ctx):
        if isinstance(parameter, TyperArgument):
            name = parameter.metavar or parameter.name.upper()
            pieces.append(name if parameter.required else f"[{name}]")
        else:
            pieces.extend(parameter.get_usage_pieces(ctx))
    return pieces


def _reflowed(text: str | None) -> str | None:
    """Help text with the docstring's line breaks inside a paragraph removed, so the
    terminal, not the source file, decides where lines break (typer keeps them after the
    first paragraph)."""
    if not text:
        return text
    paragraphs = cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)


class _PlainHelp:
    """Help with no metavar on flags and paragraphs wrapped at the terminal's width;
    mixed into a click command class ahead of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflowed(self.help)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _plain_metavars(super().get_params(ctx))


class _Command(_PlainHelp, TyperCommand):
    """A command with :class:`_PlainHelp` and ``STORE`` in the usage."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return _usage(self, ctx)


class _Group(_PlainHelp, TyperGroup):
    """The ``uqeval`` group, with the help of :class:`_Command`."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*_usage(self, ctx), self.subcommand_metavar]

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """The command ``args`` name; asked for one of :data:`TORCH_PLUGIN_COMMANDS` that no
        plugin added, the usage error says that it comes with uqeval-torch and how to install it."""
        name = args[0] if args else None
        if ctx.parent is None and name in TORCH_PLUGIN_COMMANDS and self.get_command(ctx, name) is None:
            ctx.fail(
                f"No such command {name!r}. `uqeval {name}` comes with the PyTorch plugin uqeval-torch "
                f"(`uqeval plugins` lists the installed ones); install it with {TORCH_PLUGIN_INSTALL}."
            )
        return super().resolve_command(ctx, args)


class _App(typer.Typer):
    """uqeval's typer application: commands, plugins' included, and sub-apps get the
    help of :class:`_Command` and :class:`_Group` unless they choose a class."""

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or _Command, **options)

    def add_typer(self, typer_instance: typer.Typer, *, cls: type[TyperGroup] | None = None, **options: Any) -> None:
        _adopt(typer_instance)
        super().add_typer(typer_instance, cls=cls or _Group, **options)


def _adopt(sub_app: typer.Typer) -> None:
    """Give the commands and groups of a sub-app that kept typer's classes this help's classes."""
    for command in sub_app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = _Command
    for group in sub_app.registered_groups:
        if group.typer_instance is not None:
            _adopt(group.typer_instance)


app = _App(
    cls=_Group,
    name="uqeval",
    help="How good is a segmentation model's uncertainty, and are its aleatoric and epistemic parts really separate?",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"uqeval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """How good is a segmentation model's uncertainty, and are its aleatoric and epistemic parts really separate?"""


def _announce_compiling() -> None:
    """Say so on stderr when the first of uqeval's kernels compiles (the first run after an
    install spends tens of seconds on it, with nothing else on screen)."""
    from uqeval._numba_cache import announce_compilation, cache_folder

    def announce() -> None:
        where = markup_text(cache_folder(), None)
        err_console.print(f"compiling kernels, first run only (they are then kept in [cyan]{where}[/])")

    announce_compilation(announce)


def _progress() -> Progress:
    from uqeval.report.progress import progress_bar

    return progress_bar(err_console)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="The cube store to write (a folder, e.g. [cyan]cube.zarr[/]).")],
    scenario: Annotated[
        str, typer.Option(help=f"What the simulated model gets right: {', '.join(SCENARIO_NAMES)}.")
    ] = "disentangled",
    images: Annotated[int, typer.Option(help="Images in all (half ID, the rest OOD 'blur' and 'noise').")] = 96,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same store.")] = 0,
    size: Annotated[int, typer.Option(help="Height and width in pixels.")] = 64,
    shape: Annotated[
        str | None,
        typer.Option(metavar="Z,Y,X", help="Write volumes of Z×Y×X voxels instead of 2D images, e.g. 8,24,32."),
    ] = None,
    classes: Annotated[int, typer.Option(help="2 (background, object) or 3 (… and a core).")] = 2,
    eu: Annotated[int, typer.Option(help="Members per image (ignored for no-eu).")] = 5,
    au: Annotated[int, typer.Option(help="Samples per member.")] = 8,
    raters: Annotated[int, typer.Option(help="Annotators per image.")] = 4,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
) -> None:
    """Write a synthetic cube store whose aleatoric and epistemic truth is known."""
    if out.exists() and not overwrite:
        raise UQEvalError(f"{out}: already exists; pass --overwrite to replace it")
    volume = {} if shape is None else {"shape": _volume_shape(shape)}
    _write_synthetic(
        out,
        scenario,
        n_images=images,
        seed=seed,
        size=size,
        n_classes=classes,
        eu=eu,
        au=au,
        raters=raters,
        overwrite=overwrite,
        **volume,
    )
    what = f"{images} volumes of {'×'.join(map(str, volume['shape']))} voxels" if volume else f"{images} images"
    err_console.print(f"wrote {markup_text(out, None)} ({what}, scenario {markup_text(scenario)}, seed {seed})")


def _volume_shape(text: str) -> tuple[int, int, int]:
    """``--shape Z,Y,X`` as three integers."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise UQEvalError(f"--shape: {text!r} is not Z,Y,X (three positive integers, e.g. 8,24,32)")
    z, y, x = (int(part) for part in parts)
    return z, y, x


def _write_synthetic(store: Path, scenario: str, *, n_images: int, **options) -> None:
    """:func:`uqeval.make_synthetic_cube` behind a progress bar."""
    from uqeval.synth import make_synthetic_cube

    with _progress() as progress:
        task = progress.add_task(f"synth {scenario}", total=n_images)
        make_synthetic_cube(
            store,
            scenario,
            n_images=n_images,
            progress=lambda done: progress.update(task, completed=done),
            **options,
        )


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(help="A cube store.")],
    check_values: Annotated[
        bool, typer.Option(help="Also check every probability and label (reads the store once more).")
    ] = False,
) -> None:
    """Validate a cube store and print its mean AU, EU and TU per domain."""
    _announce_compiling()
    console.print(_summary_table(store, check_values=check_values))


def _summary_table(store: Path, *, check_values: bool = False) -> Table:
    from rich.table import Table
    from rich.text import Text

    from uqeval.cube import SPACING_ATTR, open_cube, store_spatial_dims
    from uqeval.cube.contract import is_maps_store
    from uqeval.domain_means import domain_means
    from uqeval.report.tables import format_value

    dataset = open_cube(store, check_values=check_values)
    maps_store = is_maps_store(dataset)
    sizes = dataset["mean" if maps_store else "probs"].sizes
    spatial = store_spatial_dims(dataset)
    with _progress() as progress:
        task = progress.add_task(f"decompose {store.name}", total=sizes["image"])
        try:
            rows = domain_means(dataset, progress=lambda done: progress.update(task, completed=done))
        except UQEvalError as error:
            raise UQEvalError(f"{store}: {error}") from None
    attrs = dataset.attrs
    model = markup_text(attrs.get("model") or "model")
    grid = "×".join(str(sizes[dim]) for dim in spatial)
    if len(spatial) == 3:
        grid = f"volumes of {grid} voxels (z×y×x)"
        if SPACING_ATTR in attrs:
            grid += f", spacing {'×'.join(f'{value:g}' for value in attrs[SPACING_ATTR])} mm"
    else:
        grid = f"{grid} px"
        if SPACING_ATTR in attrs:
            grid += f" ({'×'.join(f'{value:g}' for value in attrs[SPACING_ATTR])} mm)"
    if maps_store:
        given = ", ".join(name.upper() for name in ("au", "eu", "tu") if name in dataset)
        what = f"maps store ({given} as given)"
    else:
        what = f"eu {sizes['eu']} × au {sizes['au']}"
    title = f"{markup_text(store.name)}: {model} — {what}, {sizes['class']} classes, {grid}"
    table = Table(title=title, title_justify="left")
    table.add_column("domain")
    table.add_column("volumes" if len(spatial) == 3 else "images", justify="right")
    for name in ("mean AU", "mean EU", "mean TU", "EU / AU"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            Text(shortened(row.domain)),
            str(row.n_images),
            *(format_value(value, digits=4) for value in (row.au, row.eu, row.tu)),
            format_value(row.eu_over_au, digits=3),
        )
    return table


def _comma_separated(parameter: typer.CallbackParam, values: list[str] | None) -> list[str] | None:
    """A repeatable option's values with comma-separated ones split: ``-t a,b -t c`` → a, b, c."""
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise UQEvalError(f"{parameter.opts[0]}: give at least one name")
    return names


@contextlib.contextmanager
def _flags() -> Iterator[None]:
    """Name the flag of a library error that is about one of the command's arguments."""
    try:
        yield
    except UQEvalError as error:
        flag = FLAGS.get(error.parameter or "")
        if flag is None:
            raise
        raise UQEvalError(f"{flag}: {error}") from None


@contextlib.contextmanager
def _report_folder(folder: Path, kind: str) -> Iterator[Path]:
    """Before the work starts, refuse a ``folder`` that uqeval may not replace and make
    sure the folder that holds it can be written (the report is written beside it and
    renamed into place); if the work fails, remove the parent folders made here."""
    from uqeval.report.folder import check_report_folder

    missing = check_report_folder(folder, kind)
    try:
        yield folder
    except BaseException:
        for parent in missing:  # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


@contextlib.contextmanager
def _figure_workers(plots: bool) -> Iterator[FigureWorkers | None]:
    """With ``plots``, and idle CPUs to run them on, processes that import matplotlib
    while the scoring runs and then draw the figures side by side
    (:class:`~uqeval.report.figure_workers.FigureWorkers`); else None: the figures are
    drawn in this process, the same."""
    from uqeval.report.figure_workers import FigureWorkers, useful_workers

    count = useful_workers() if plots else 0
    if count == 0:
        yield None
        return
    with FigureWorkers(count) as workers:
        yield workers


def _default_out(store: Path) -> Path:
    return store.parent / f"{store.name.removesuffix('.zarr')}-scores"


@app.command()
def score(
    store: Annotated[Path, typer.Argument(help="The cube store to score (e.g. [cyan]predictions.zarr[/]).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the report (default: [cyan]STORE-scores[/] beside the store)."),
    ] = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            help="Tasks to score: oodd, amb, cal, fd or a plugin's (repeat the flag or separate by commas). "
            "Default: every task found ([cyan]uqeval plugins[/] lists them).",
            callback=_comma_separated,
            metavar="NAME",
        ),
    ] = None,
    aggregation: Annotated[
        list[str] | None,
        typer.Option(
            help="Image score for OOD and failure detection (and their Δ): mean, sum, patch_max, threshold, "
            "area, border or a plugin's; more (repeat the flag or separate by commas) are scored beside it and "
            "shown in the same tables. Default: the preset's ([cyan]border[/]).",
            callback=_comma_separated,
            metavar="NAME",
        ),
    ] = None,
    preset: Annotated[
        Preset, typer.Option(help="Conventions: [cyan]default[/] or the study's ([cyan]paper[/]).")
    ] = Preset.default,
    convention: Annotated[
        list[str] | None,
        typer.Option(
            help="Change one convention of the preset, NAME=VALUE (repeat the flag or separate by commas), "
            "e.g. [cyan]ace_scope=per-image[/]; docs/metrics.md lists them.",
            callback=_comma_separated,
            metavar="NAME=VALUE",
        ),
    ] = None,
    unit: Annotated[
        Unit,
        typer.Option(
            help="For volumes: score each [cyan]volume[/] as an image, or each z-[cyan]slice[/] as an image of its "
            "own (same fits and pooled calibration). No effect on 2D images."
        ),
    ] = Unit.volume,
    segmentation: Annotated[
        bool, typer.Option(help="Also score Dice, GED and Hungarian IoU against the raters (slower).")
    ] = False,
    plots: Annotated[bool, typer.Option(help="Write ROC curves, reliability diagrams and example maps.")] = True,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print scores.json to stdout and nothing else (no tables); the report folder is written as usual.",
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Run on a dask.distributed cluster at this address (its workers must see STORE)."),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Give every number a 95 % bootstrap interval over N resamples of the test images "
            "(within each domain; fits fixed), e.g. 1000. Default: none.",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the bootstrap resamples (same seed, same intervals).")] = 0,
) -> None:
    """Score how good a model's uncertainty is and how entangled AU and EU are (the main job).

    Reads the store once, chunk by chunk: decomposes every image into AU / EU / TU maps,
    scores OOD detection (AUROC), ambiguity (NCC), calibration (ACE) and failure
    detection (AURC), and the entanglement Δ of each task. Writes [cyan]scores.json[/],
    [cyan]metrics.csv[/], [cyan]images.csv[/], [cyan]fitted.json[/], plots and
    [cyan]report.html[/] (all of it on one page, for a browser) to [cyan]--out[/] (also with [cyan]--json[/]).
    """
    _announce_compiling()
    from uqeval.conventions import preset as conventions_preset
    from uqeval.conventions import with_settings
    from uqeval.report.files import json_bytes
    from uqeval.report.save import save_report
    from uqeval.report.tables import print_report, score_remarks, score_tables
    from uqeval.scoring import score as score_store

    out = out if out is not None else _default_out(store)
    with _report_folder(out, "scores"), _figure_workers(plots) as figure_workers:
        # The bar starts with the first batch, so that an error in validating the
        # store is the only thing on stderr.
        progress = _progress()
        bars: dict[str, int] = {}

        def report(phase: str, done: int, total: int) -> None:
            if not bars:
                progress.start()
            if phase not in bars:
                label = "scoring" if phase == "score" else "calibrating"
                bars[phase] = progress.add_task(f"{label} {store.name}", total=total)
            progress.update(bars[phase], completed=done)

        try:
            with _flags():
                conventions = with_settings(conventions_preset(preset.value), convention or [])
                scores = score_store(
                    store,
                    tasks=tasks,
                    aggregations=aggregation,
                    conventions=conventions,
                    segmentation=segmentation,
                    scheduler=scheduler,
                    scratch=out.parent,
                    progress=report,
                    unit=unit.value,
                    bootstrap=bootstrap,
                    seed=seed,
                )
        finally:
            if bars:
                progress.stop()
        save_report(scores, out, plots=plots, figure_workers=figure_workers)
    if json_output:
        typer.echo(json_bytes(scores.to_dict()).decode(), nl=False)
        return
    print_report(
        console,
        score_tables(scores),
        score_remarks(scores, preset=preset.value),
        scores.notes,
        f"Report in [cyan]{markup_text(out, None)}[/]; to read it in a browser: "
        f"[cyan]{markup_text(out / 'report.html', None)}[/]",
    )


@app.command()
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Report folders of [cyan]uqeval score[/] (each holds a scores.json).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the comparison.")] = Path("comparison"),
) -> None:
    """Rank runs by performance and entanglement (the study's Table 2) and plot U_correct against U_wrong.

    Each task is ranked per split — by the correct measure's metric and by Δ — and the
    ranks are averaged over splits, then tasks. Runs of the same model with different
    seeds are pooled: mean ± a Student-t 95 % interval. Writes [cyan]comparison.json[/],
    [cyan]ranks.csv[/], [cyan]points.csv[/], [cyan]collapse.csv[/] and the scatter plot
    [cyan]entanglement.png[/] (and [cyan]collapse.png[/]), each also as SVG, and [cyan]report.html[/],
    all of it on one page that links to each run's own.
    """
    from uqeval.comparison import compare as compare_runs
    from uqeval.report.save import save_comparison
    from uqeval.report.tables import comparison_tables, print_report

    with _report_folder(out, "comparison"):
        comparison = compare_runs(runs)
        save_comparison(comparison, out)
    print_report(
        console,
        comparison_tables(comparison),
        [],
        comparison.notes,
        f"Comparison in [cyan]{markup_text(out, None)}[/]; to read it in a browser: "
        f"[cyan]{markup_text(out / 'report.html', None)}[/]",
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo stores and reports.")] = Path("demo-output"),
    images: Annotated[int, typer.Option(help="Images per scenario.")] = 96,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write one synthetic store per scenario, score each, and compare them (the embedded default)."""
    _announce_compiling()
    from uqeval.comparison import compare as compare_runs
    from uqeval.report.files import ensure_writable
    from uqeval.report.save import save_comparison, save_report
    from uqeval.report.tables import comparison_tables, delta_summary, entanglement_table, print_tables
    from uqeval.scoring import score as score_store
    from uqeval.synth import SCENARIO_SUMMARIES, SCENARIOS

    ensure_writable(out)
    reports = []
    summaries = []
    with _figure_workers(True) as figure_workers:
        for scenario in SCENARIOS:
            store = out / f"{scenario}.zarr"
            _write_synthetic(store, scenario, n_images=images, seed=seed, overwrite=True)
            report = _default_out(store)
            with _progress() as progress:
                bar = progress.add_task(f"scoring {store.name}", total=images)

                def advance(phase: str, done: int, total: int, bar=bar) -> None:
                    if phase == "score":
                        progress.update(bar, completed=done)

                scores = score_store(store, scratch=out, progress=advance)
            save_report(scores, report, figure_workers=figure_workers)
            reports.append(report)
            summaries.append(
                f"  [bold]{scenario}[/] ({SCENARIO_SUMMARIES[scenario]}): {delta_summary(scores.entanglement)}"
            )
            table = entanglement_table(scores)
            if table is not None:
                table.title = f"{scenario}: {table.title}"
                print_tables(console, [table])
    comparison = compare_runs(reports)
    save_comparison(comparison, out / "comparison")
    print_tables(console, comparison_tables(comparison)[:1])
    comparison_report = out / "comparison" / "report.html"
    folder = markup_text(out, None)
    where = markup_text(comparison_report if comparison_report.exists() else out / "comparison", None)
    console.print(
        "What the four synthetic models show: Δ of each task (1: the measure that should do the task "
        "does it far better than the others; 0: no better than the best of them; below 0: another does better).",
        *summaries,
        "Δ above 1 means the best other measure scored below 0 (an NCC below 0: it moves against the raters' "
        "disagreement). FD's Δ stays near 0 wherever TU and one of its parts rank the images alike: with EU "
        "small, TU is almost AU.",
        f"Reports in [cyan]{folder}[/], one [cyan]*-scores[/] folder per scenario; the comparison: [cyan]{where}[/]",
        sep="\n",
    )


@app.command()
def plugins(
    json_output: Annotated[bool, typer.Option("--json", help="Print the plugins as JSON to stdout.")] = False,
) -> None:
    """List the plugins: their distribution and version and what each contributes."""
    from rich.table import Table
    from rich.text import Text

    from uqeval.plugins import KINDS, plugin_manager

    rows = plugin_manager().report()
    if json_output:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    titles = {"aggregators": "aggregators", "au_methods": "AU methods", "eu_methods": "EU methods"}
    titles |= {"datasets": "datasets", "importers": "importers", "tasks": "tasks", "commands": "commands"}
    table = Table(title="Plugins (entry-point group uqeval)", title_justify="left", show_lines=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("distribution", no_wrap=True)
    table.add_column("contributes")
    for row in rows:
        lines = [
            Text(printable(f"{titles[kind]}: {', '.join(row[kind])}"))
            for kind in (*KINDS.values(), "commands")
            if row[kind]
        ]
        lines += [
            Text(printable(f"options of {name}: " + ", ".join(f"{key}={value}" for key, value in options.items())))
            for name, options in row["options"].items()
        ]
        lines += [labelled("problem:", "red", problem) for problem in row["problems"]]
        distribution = f"{row['distribution']} {row['version']}".strip()
        table.add_row(Text(printable(row["name"])), Text(printable(distribution)), Text("\n").join(lines) or "nothing")
    console.print(table)


class _ImportGroup(_Group):
    """``uqeval import FORMAT``: one command per importer (hook ``uqeval_importers``), each
    built from the importer's function when it is asked for, so that the hook runs only
    when ``uqeval import`` does."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from uqeval.plugins import plugin_manager

        return sorted(plugin_manager().importers())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from typer.main import get_command_from_info
        from typer.models import CommandInfo

        from uqeval.plugins import plugin_manager

        manager = plugin_manager()
        if manager.lookup("uqeval_importers", name) is None:
            return None
        importer = manager.importers()[name]
        info = CommandInfo(name=name, callback=_import_command(importer), cls=_Command, help=importer.description)
        return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode="rich")

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """The importer ``args`` name; an unknown format is a usage error that lists the known ones."""
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            from uqeval.plugins import plugin_manager

            manager = plugin_manager()
            known = ", ".join(self.list_commands(ctx)) or "none"
            ctx.fail(f"unknown format {args[0]!r}; choose one of {known}{manager.problems_note()}")
        return super().resolve_command(ctx, args)


def _import_command(importer: Any) -> Callable[..., None]:
    """The command of an importer: its function, whose summary is printed."""

    @functools.wraps(importer.function)
    def command(**options: Any) -> None:
        summary = importer.function(**options)
        kept = f", {summary.resumed} kept from the interrupted run" if summary.resumed else ""
        err_console.print(
            f"wrote {markup_text(summary.store, None)} ({summary.n_images} images{kept}; format "
            f"{markup_text(importer.name)}, from {markup_text(importer.source or 'uqeval', None)})",
            highlight=False,
        )
        for note in summary.notes:
            err_console.print(labelled("note:", "cyan", note), highlight=False, soft_wrap=True)

    return command


import_app = _App(
    name="import",
    help="Turn predictions already on disk (nnU-Net folders, plain files, ValUES folders) into a store to score.",
    rich_markup_mode="rich",
    no_args_is_help=True,
)


@import_app.callback()
def _import() -> None:
    """Turn predictions already on disk into a store that [cyan]uqeval score[/] reads (docs/import.md).

    FORMAT is an importer: the built-in [cyan]nnunet[/], [cyan]files[/] and [cyan]values[/], or a
    plugin's ([cyan]uqeval plugins[/] lists them). [cyan]uqeval import FORMAT --help[/] shows its options.
    """


app.add_typer(import_app, name="import", cls=_ImportGroup, subcommand_metavar="FORMAT ARGS...")


#: Exit status after SIGTERM: 128 + the signal's number, as a shell reports a process it ended.
TERMINATED_EXIT = 128 + signal.SIGTERM


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM ends a command as Ctrl-C does: by an exception in the main thread, so that
    every ``with`` block cleans up (the spill, a report being written) on the way out.
    A second SIGTERM during that clean-up is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(TERMINATED_EXIT)


def main() -> None:
    """Entry point: bad input exits 2 with one line on stderr, no traceback; SIGTERM
    cleans up and exits with :data:`TERMINATED_EXIT`."""
    from uqeval.plugins import plugin_manager

    signal.signal(signal.SIGTERM, _terminated)
    manager = plugin_manager()
    manager.add_commands(app)
    for problem in manager.problems:
        err_console.print(
            labelled("warning:", "yellow", problem, "; see `uqeval plugins`"), highlight=False, soft_wrap=True
        )
    try:
        app()
    except UQEvalError as error:
        err_console.print(labelled("error:", "bold red", error), highlight=False, soft_wrap=True)
        sys.exit(2)
