"""Matplotlib figures for ``uqeval score``: ROC curves, reliability diagrams, AU/EU/TU maps.

Every function builds its own :class:`matplotlib.figure.Figure` on an Agg canvas and
never touches ``pyplot``, so no global state is involved and figures can be drawn from
several threads. :func:`save_figure` writes one atomically; :func:`save_figure_files`
writes it as a PNG and as an SVG (vector, for print) side by side.

Every figure of the report shares one style (:mod:`uqeval.report.style`): a measure keeps
its colour, line style and marker everywhere, a split its colour and marker.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from uqeval.metrics.ambiguity import rater_disagreement
from uqeval.names import ID_DOMAIN, POOLED_OOD
from uqeval.report.files import write_bytes
from uqeval.report.style import (
    CATEGORY_COLOURS,
    CHANCE_STYLE,
    DPI,
    FIGURE_FORMATS,
    MEASURE_COLOURS,
    MEASURE_LABELS,
    MEASURES,
    figure_legend,
    measure_style,
    new_figure,
    split_styles,
)
from uqeval.text import figure_text, shortened

__all__ = [
    "DPI",
    "FIGURE_FORMATS",
    "MEASURES",
    "MEASURE_COLOURS",
    "MEASURE_LABELS",
    "MapExample",
    "example_maps_figure",
    "figure_bytes",
    "lay_out",
    "map_examples",
    "maps_figure",
    "reliability_figure",
    "roc_figure",
    "save_figure",
    "save_figure_files",
]


_PANEL_INCHES = 2.4
_MAX_COLUMNS = 4
_MAP_INCHES = 1.25
#: Characters of a row label's line that fit beside a map, upright in "small" type.
_ROW_LABEL_CHARACTERS = 16
#: Colour of the background class in a map of predicted classes.
_BACKGROUND_CLASS_COLOUR = "0.9"


class ReliabilityLike(Protocol):
    """Per-bin reliability data, as :class:`uqeval.metrics.calibration.Reliability`."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


@dataclass(frozen=True)
class MapExample:
    """One image's maps, for :func:`maps_figure`.

    Attributes
    ----------
    image_id, domain : str
        Shown in the row label, ``<id> (<domain>)``.
    mean : (class, y, x) float32
        Mean prediction.
    au, eu, tu : (y, x) float32 or None
        Uncertainty maps in nats; None for a measure the source does not give (a
        maps store may give some of them), at least one given.
    labels : (rater, y, x) int, optional
        The raters' label maps (class indices, :data:`uqeval.names.IGNORE_LABEL` where
        a rater did not label), for the rater-disagreement panel.
    input : (channel, y, x) float, optional
        The input image, for the input panel.
    """

    image_id: str
    domain: str
    mean: np.ndarray
    au: np.ndarray | None
    eu: np.ndarray | None
    tu: np.ndarray | None
    labels: np.ndarray | None = None
    input: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.mean) != 3:
            raise ValueError(f"image {self.image_id}: mean must be (class, y, x), got shape {np.shape(self.mean)}")
        size = np.shape(self.mean)[1:]
        if all(getattr(self, name) is None for name in MEASURES):
            raise ValueError(f"image {self.image_id}: none of au, eu and tu is given")
        for name in MEASURES:
            if getattr(self, name) is not None and np.shape(getattr(self, name)) != size:
                raise ValueError(
                    f"image {self.image_id}: {name} must be (y, x) = {size}, got shape {np.shape(getattr(self, name))}"
                )
        for name, dims in (("labels", "rater"), ("input", "channel")):
            value = getattr(self, name)
            if value is not None and (np.ndim(value) != 3 or np.shape(value)[1:] != size or np.shape(value)[0] == 0):
                raise ValueError(
                    f"image {self.image_id}: {name} must be ({dims}, y, x) with (y, x) = {size}, "
                    f"got shape {np.shape(value)}"
                )


# --------------------------------------------------------------------------- saving


#: Margin around a figure's drawn content in a saved file, in inches.
_PAD_INCHES = 0.03


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``path`` atomically, in the format its suffix names.

    ``.png`` is written at :data:`~uqeval.report.style.DPI` dots per inch; ``.svg`` and
    ``.pdf`` are vector files (SVG text is drawn as paths, so it looks the same without
    the fonts). The file goes to a hidden temporary file in the same folder, which then
    replaces ``path`` in one step: readers see the old file or the new one, never a
    partial one. The temporary file is removed if anything fails.

    The figure is laid out (:func:`lay_out`) on its first save and keeps that layout:
    saving it again, in any format, only renders it.

    Parameters
    ----------
    figure : Figure
        The figure to save; it is left open.
    path : str or PathLike
        Destination ending in ``.png``, ``.svg`` or ``.pdf``; its folder must exist.

    Returns
    -------
    Path
        ``path``.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise ValueError(f"{path}: cannot save a figure as {suffix or 'a file without a suffix'}; use png, svg or pdf")
    return write_bytes(path, figure_bytes(figure, suffix))


def figure_bytes(figure: Figure, suffix: str) -> bytes:
    """The file of ``figure`` in the format ``suffix`` (``"png"``, ``"svg"`` or ``"pdf"``), as bytes.

    The same figure gives the same bytes: no creation date, fixed SVG element ids.
    """
    bounds = lay_out(figure)
    buffer = io.BytesIO()
    metadata = {"Date": None} if suffix == "svg" else {"CreationDate": None} if suffix == "pdf" else None
    with rc_context({"svg.hashsalt": "uqeval"}):
        figure.savefig(buffer, format=suffix, dpi=DPI, bbox_inches=bounds, metadata=metadata)
    return buffer.getvalue()


def lay_out(figure: Figure) -> Bbox:
    """Run the figure's layout engine once, then fix the layout; returns the area to save.

    ``savefig(bbox_inches="tight")`` with constrained layout lays the figure out again
    on every save, before rendering it: two thirds of a save's time. Here the layout
    runs once, on the figure's Agg canvas; the axes then keep their places (the layout
    engine is switched off) and every format is cut to the same area: the drawn content
    (:meth:`~matplotlib.figure.Figure.get_tightbbox`) and a margin of
    :data:`_PAD_INCHES`, in inches.
    """
    bounds = getattr(figure, _BOUNDS, None)
    if bounds is None:
        if not hasattr(figure.canvas, "get_renderer"):  # a figure made without a canvas of its own
            FigureCanvasAgg(figure)
        figure.draw_without_rendering()
        bounds = figure.get_tightbbox(figure.canvas.get_renderer()).padded(_PAD_INCHES)
        figure.set_layout_engine("none")
        setattr(figure, _BOUNDS, bounds)
    return bounds


#: The attribute under which :func:`lay_out` keeps a laid-out figure's area to save.
_BOUNDS = "_uqeval_saved_bounds"


def save_figure_files(
    figure: Figure, path: str | os.PathLike[str], formats: Sequence[str] = FIGURE_FORMATS
) -> list[Path]:
    """Write ``figure`` in each of ``formats`` (by default :data:`FIGURE_FORMATS`): ``roc.png`` and ``roc.svg``.

    The figure is laid out once (:func:`lay_out`) and rendered once per format.

    Parameters
    ----------
    figure : Figure
    path : str or PathLike
        The PNG's path; the other formats take its name with their suffix.
    formats : sequence of str
        Suffixes to write, in this order.

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``.
    """
    path = Path(path)
    return [save_figure(figure, path.with_suffix(f".{suffix}")) for suffix in formats]


# --------------------------------------------------------------------------- ROC


def roc_figure(
    curves: Mapping[str, Mapping[str, Any]],
    aurocs: Mapping[str, Mapping[str, float]],
    *,
    aggregation: str,
) -> Figure:
    """ROC curves of the image scores, one panel per OOD domain.

    Parameters
    ----------
    curves : mapping
        Domain → measure (``"au"``, ``"eu"``, ``"tu"``) → ``(fpr, tpr)`` arrays (or an
        object with ``fpr`` and ``tpr`` attributes, such as
        :class:`uqeval.metrics.oodd.RocCurve`). OOD images are the positives. The
        pooled split, ``"ood"``, is titled "ood (all OOD domains)".
    aurocs : mapping
        Domain → measure → AUROC, for the legend; a missing, ``None`` or NaN value shows as ``n/a``.
    aggregation : str
        Name of the image-score aggregation, shown in the title.

    Returns
    -------
    Figure
        Panels in a row, wrapping to a grid after four; each measure in its colour and
        line style, with its AUROC in the panel's legend. Measures whose curves are the
        same are drawn each narrower than the one under it, so that all stay visible,
        and the legend names the others of the same curve.
    """
    if not curves:
        raise ValueError("roc_figure: no OOD domain to plot")
    domains = list(curves)
    n_columns = min(len(domains), _MAX_COLUMNS)
    n_rows = math.ceil(len(domains) / n_columns)
    figure = new_figure(_PANEL_INCHES * n_columns + 0.4, (_PANEL_INCHES + 0.8) * n_rows + 0.4)
    axes = figure.subplots(n_rows, n_columns, squeeze=False)
    for ax in axes.flat[len(domains) :]:
        ax.remove()
    for index, (ax, domain) in enumerate(zip(axes.flat, domains, strict=False)):
        _check_measures(curves[domain], f"ROC curves of {shortened(domain)!r}")
        ax.plot([0, 1], [0, 1], **CHANCE_STYLE, label="chance")
        measures = _present(curves[domain])
        points = {measure: _fpr_tpr(curves[domain][measure]) for measure in measures}
        for measure in measures:
            fpr, tpr = points[measure]
            # A curve that another measure's repeats would hide it: each is drawn
            # narrower than the one under it, and the legend says which are the same.
            same = [other for other in measures if other != measure and _same_curve(points[other], points[measure])]
            below = sum(measures.index(other) > measures.index(measure) for other in same)
            value = aurocs.get(domain, {}).get(measure)
            shown = "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
            style = measure_style(measure)
            ax.plot(
                fpr,
                tpr,
                color=style.colour,
                linestyle=style.linestyle,
                linewidth=1.6 + 1.6 * below,
                clip_on=False,  # a perfect detector runs along the frame: draw it whole, above the frame
                zorder=3 + measures.index(measure),
                label=f"{measure.upper()}  AUROC {shown}"
                + (f"  (same curve as {', '.join(other.upper() for other in same)})" if same else ""),
            )
        _unit_square(ax)
        ax.set_xlabel("false positive rate (ID)", fontsize="small")
        ax.set_ylabel("true positive rate (OOD)" if index % n_columns == 0 else "", fontsize="small")
        ax.tick_params(labelsize="small")
        ax.set_title(_split_label(domain) if domain == POOLED_OOD else figure_text(domain), fontsize="medium")
        # Below the panel: curves run into every corner, so a legend inside would hide one.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="x-small", handlelength=2.6, frameon=False)
    pooled = ", and pooled" if POOLED_OOD in curves else ""
    figure.suptitle(f"OOD detection per domain{pooled} (image score: {figure_text(aggregation)})", fontsize="medium")
    return figure


def _same_curve(one: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two ROC curves pass through the same points (repeated points aside)."""
    return bool(np.array_equal(_corners(*one), _corners(*other)))


def _corners(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    points = np.column_stack([fpr, tpr])
    keep = np.r_[True, np.any(np.diff(points, axis=0) != 0, axis=1)]
    return points[keep]


# --------------------------------------------------------------------------- reliability


def reliability_figure(
    reliabilities: Mapping[tuple[str, str], ReliabilityLike],
    *,
    aces: Mapping[tuple[str, str], float] | None = None,
) -> Figure:
    """Reliability diagrams, one column per measure and one line per split.

    Parameters
    ----------
    reliabilities : mapping
        ``(split, measure)`` → per-bin data with ``lower``, ``upper``, ``count``,
        ``confidence`` and ``accuracy`` (see :func:`uqeval.metrics.calibration.reliability`).
        Splits keep their order of appearance, with ``"id"`` first. When the splits
        hold exactly one OOD domain, the pooled ``"ood"`` split is the same images:
        it is drawn once, under the domain's name.
    aces : mapping, optional
        ``(split, measure)`` → the adaptive calibration error of that diagram, printed
        in its panel (``n/a`` when NaN).

    Returns
    -------
    Figure
        Top row: accuracy (mean rater agreement with the prediction) against the mean
        Platt-scaled confidence ``c = σ(b − a·U)`` of each non-empty bin, with the
        diagonal of perfect calibration. Bottom row: each split's fraction of pixels per
        confidence bin (log scale), as a step line in the split's style. One legend for
        the whole figure.
    """
    if not reliabilities:
        raise ValueError("reliability_figure: nothing to plot")
    _check_measures({measure: None for _, measure in reliabilities}, "reliability diagrams")
    splits = _reliability_splits([split for split, _ in reliabilities])
    styles = split_styles(splits)
    labels = {split: _split_label(split) for split in splits}
    measures = [m for m in MEASURES if any(measure == m for _, measure in reliabilities)]
    figure = new_figure(_PANEL_INCHES * len(measures) + 0.5, _PANEL_INCHES * 1.33 + 1.0)
    grid = figure.subplots(2, len(measures), squeeze=False, sharex="col", gridspec_kw={"height_ratios": (3, 1)})
    smallest = 1.0
    for column, measure in enumerate(measures):
        ax, histogram = grid[0, column], grid[1, column]
        ax.plot([0, 1], [0, 1], **CHANCE_STYLE, label="perfect calibration")
        for split in splits:
            data = reliabilities.get((split, measure))
            if data is None:
                continue
            style = styles[split]
            count = np.asarray(data.count, dtype=float)
            shown = (count > 0) & np.isfinite(data.confidence) & np.isfinite(data.accuracy)
            ax.plot(
                data.confidence[shown],
                data.accuracy[shown],
                color=style.colour,
                marker=style.marker,
                linestyle=style.linestyle,
                markersize=3.5,
                linewidth=1.3,
                label=labels[split],
            )
            fraction = count / count.sum() if count.sum() > 0 else np.zeros_like(count)
            if (fraction > 0).any():
                smallest = min(smallest, float(fraction[fraction > 0].min()))
            edges = np.r_[np.asarray(data.lower, dtype=float), float(np.asarray(data.upper)[-1])]
            histogram.stairs(
                np.where(fraction > 0, fraction, np.nan),  # log axis: empty bins draw nothing
                edges,
                color=style.colour,
                linestyle=style.linestyle,
                linewidth=1.2,
                label=labels[split],
            )
        if aces:
            lines = [
                f"{figure_text(split, 16)} {_three_decimals(aces[(split, measure)])}"
                for split in splits
                if (split, measure) in aces and (split, measure) in reliabilities
            ]
            ax.text(
                0.97,
                0.03,
                "\n".join(["ACE", *lines]),
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize="x-small",
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.8", "alpha": 0.9},
            )
        _unit_square(ax)
        ax.tick_params(labelsize="small", labelbottom=False)
        ax.set_title(MEASURE_LABELS[measure], color=MEASURE_COLOURS[measure], fontsize="medium")
        histogram.set_yscale("log")
        histogram.set_box_aspect(1 / 3)  # as wide as the square above it
        histogram.set_xlabel("confidence (Platt-scaled)", fontsize="small")
        histogram.tick_params(labelsize="x-small")
        if column == 0:
            ax.set_ylabel("accuracy (rater agreement)", fontsize="small")
            histogram.set_ylabel("pixel\nfraction", fontsize="small")
    low = 10 ** math.floor(math.log10(max(smallest, 1e-12)))
    for histogram in grid[1]:
        histogram.set_ylim(low, 1.5)
    handles, texts = grid[0, 0].get_legend_handles_labels()
    for ax in grid[0, 1:]:  # a split absent from the first measure still gets its entry
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in texts:
                handles.append(handle)
                texts.append(text)
    figure_legend(figure, handles, most_columns=5, fontsize="small", handlelength=2.6)
    figure.suptitle("Calibration: rater agreement against the confidence from each measure", fontsize="medium")
    return figure


def _three_decimals(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _reliability_splits(given: Sequence[str]) -> list[str]:
    splits = sorted(dict.fromkeys(given), key=lambda split: split != ID_DOMAIN)
    domains = [split for split in splits if split not in (ID_DOMAIN, POOLED_OOD)]
    if len(domains) == 1 and POOLED_OOD in splits:
        splits.remove(POOLED_OOD)  # one OOD domain: the pooled split is the same images
    return splits


def _split_label(split: str) -> str:
    return f"{POOLED_OOD} (all OOD domains)" if split == POOLED_OOD else figure_text(split)


# --------------------------------------------------------------------------- maps


def maps_figure(
    examples: Sequence[MapExample],
    *,
    background: int = 0,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One row per image: input, prediction, rater disagreement, AU, EU and TU.

    Parameters
    ----------
    examples : sequence of MapExample
        The images to show, at least one.
    background : int
        Class index of the background.
    class_names : sequence of str, optional
        Names of the classes, for the legend of a prediction with more than two classes.

    Returns
    -------
    Figure
        Columns, left to right:

        * ``input`` (when an example has one): grey for one channel, RGB for three
          (otherwise the first channel in grey), each image min–max normalised;
        * the prediction: for two classes the foreground probability
          ``1 − mean[background]`` (grey scale, 0 to 1), for more the predicted class
          ``argmax_c mean[c]`` in one colour per class, with a legend;
        * ``rater disagreement`` (when an example has labels): the fraction of raters
          whose label differs from the majority (:func:`rater_disagreement`), on one
          scale from 0 to its largest possible value;
        * AU, EU and TU, in nats, each on its own colour scale (0 to its largest value
          shown: EU is often far smaller than AU, and would be black on theirs), each
          panel marked with its own largest value; only those some example has (a maps
          store may give some of them).

        Each scale has a labelled colour bar under its column(s).
    """
    if not examples:
        raise ValueError("maps_figure: no example image to show (examples is empty)")
    n_classes = examples[0].mean.shape[0]
    for example in examples:
        if example.mean.shape[0] != n_classes:
            raise ValueError(
                f"image {example.image_id}: {example.mean.shape[0]} classes, but image "
                f"{examples[0].image_id} has {n_classes}"
            )
    if not -n_classes <= background < n_classes:
        raise ValueError(f"background class {background} is out of range for {n_classes} classes")
    background %= n_classes
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"maps_figure: {len(class_names)} class names for {n_classes} classes")
    with_input = any(example.input is not None for example in examples)
    with_labels = any(example.labels is not None for example in examples)
    measures = [m for m in MEASURES if any(getattr(example, m) is not None for example in examples)]
    columns = ["input"] * with_input + ["prediction"] + ["disagreement"] * with_labels + measures
    # One scale per measure: EU is often a tenth of AU or less, and would be black on theirs.
    nats = {
        measure: Normalize(
            vmin=0.0,
            vmax=max(
                max((_finite_max(getattr(e, measure)) for e in examples if getattr(e, measure) is not None), default=0),
                1e-6,
            ),
        )
        for measure in measures
    }
    # At least four columns wide, as with every measure, so that the title fits.
    figure = new_figure(_MAP_INCHES * max(len(columns), 4) + 0.6, _MAP_INCHES * len(examples) + 1.5)
    axes = figure.subplots(len(examples), len(columns), squeeze=False)
    at = {name: index for index, name in enumerate(columns)}
    class_colours = _class_colours(n_classes, background)
    most_disagreement = _most_disagreement(examples, n_classes) if with_labels else 1.0
    images: dict[str, Any] = {}
    for row, example in zip(axes, examples, strict=True):
        if with_input:
            _show_input(row[at["input"]], example.input, example.mean.shape[1:])
        mean = np.asarray(example.mean, dtype=np.float32)
        if n_classes == 2:
            images["prediction"] = row[at["prediction"]].imshow(
                1.0 - mean[background], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
            )
        else:
            images["prediction"] = row[at["prediction"]].imshow(
                np.argmax(mean, axis=0),
                cmap=ListedColormap(class_colours),
                norm=BoundaryNorm(np.arange(n_classes + 1) - 0.5, n_classes),
                interpolation="nearest",
            )
        if with_labels:
            ax = row[at["disagreement"]]
            if example.labels is None:
                _missing(ax, "no labels", example.mean.shape[1:])
            else:
                images["disagreement"] = ax.imshow(
                    rater_disagreement(example.labels),
                    cmap="cividis",
                    vmin=0.0,
                    vmax=most_disagreement,
                    interpolation="nearest",
                )
        for measure in measures:
            if getattr(example, measure) is None:
                _missing(row[at[measure]], f"no {measure.upper()}", example.mean.shape[1:])
                continue
            images[measure] = row[at[measure]].imshow(
                getattr(example, measure), cmap="magma", norm=nats[measure], interpolation="nearest"
            )
            row[at[measure]].text(  # the panel's own largest value: its share of the column's scale
                0.97,
                0.03,
                f"max {_finite_max(getattr(example, measure)):.2f}",
                transform=row[at[measure]].transAxes,
                ha="right",
                va="bottom",
                fontsize="xx-small",
                color="white",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "black", "edgecolor": "none", "alpha": 0.6},
            )
        row[0].set_ylabel(_row_label(example), fontsize="small")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    titles = {
        "input": "input",
        "prediction": "P(foreground)" if n_classes == 2 else "predicted class",
        "disagreement": "raters ≠ majority\n(fraction)",
    }
    for name, ax in zip(columns, axes[0], strict=True):
        if name in MEASURES:
            ax.set_title(name.upper(), color=MEASURE_COLOURS[name], fontsize="medium", fontweight="bold")
        else:
            ax.set_title(titles[name], fontsize="small")
    bar = {"location": "bottom", "shrink": 0.9, "aspect": 12, "pad": 0.02}
    if n_classes == 2:
        colourbar = figure.colorbar(images["prediction"], ax=list(axes[:, at["prediction"]]), **bar)
        colourbar.set_label("probability", fontsize="x-small")
        colourbar.ax.tick_params(labelsize="x-small")
    else:
        names = [figure_text(name) for name in class_names] if class_names is not None else []
        names = names or [f"class {c}" for c in range(n_classes)]
        handles = [Patch(facecolor=class_colours[c], edgecolor="0.3", label=names[c]) for c in range(n_classes)]
        axes[-1, at["prediction"]].legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.04),
            fontsize="x-small",
            frameon=False,
            handlelength=1.0,
        )
    if "disagreement" in images:
        colourbar = figure.colorbar(images["disagreement"], ax=list(axes[:, at["disagreement"]]), **bar)
        colourbar.set_label("fraction of raters", fontsize="x-small")
        colourbar.ax.tick_params(labelsize="x-small")
    for measure in measures:
        if measure in images:
            colourbar = figure.colorbar(images[measure], ax=list(axes[:, at[measure]]), **bar)
            colourbar.set_label(f"{measure.upper()} (nats)", fontsize="x-small")
            colourbar.ax.tick_params(labelsize="x-small")
            colourbar.ax.locator_params(nbins=3)
    figure.suptitle("Example images: prediction, rater disagreement and uncertainty", fontsize="medium")
    return figure


def example_maps_figure(
    examples: Sequence[Any], *, background: int = 0, class_names: Sequence[str] | None = None
) -> Figure:
    """:func:`maps_figure` of a run's example maps (:func:`map_examples`)."""
    return maps_figure(map_examples(examples), background=background, class_names=class_names)


def map_examples(examples: Sequence[Any]) -> list[MapExample]:
    """The :class:`MapExample` of each of a run's example maps (:class:`uqeval.image_statistics.ExampleMaps`).

    Parameters
    ----------
    examples : sequence
        Objects with ``image_id``, ``domain``, ``mean``, ``au``, ``eu``, ``tu`` and
        optionally ``labels`` (rater, y, x) and ``input`` (channel, y, x): the scoring
        engine fetches both from the source with the maps; without them the figure
        goes without their columns. An example of a volume is one slice, named by its
        ``z`` after the id: the slice with the most EU (the most TU when EU is 0), where
        the model is least sure of what it has learnt.

    Returns
    -------
    list of MapExample
    """
    return [
        MapExample(
            image_id=example.image_id if getattr(example, "z", None) is None else f"{example.image_id} z={example.z}",
            domain=example.domain,
            mean=example.mean,
            au=example.au,
            eu=example.eu,
            tu=example.tu,
            labels=getattr(example, "labels", None),
            input=getattr(example, "input", None),
        )
        for example in examples
    ]


def _row_label(example: MapExample) -> str:
    """``<id>`` over ``(<domain>)``, each wrapped to the height of a row of maps (at most
    three lines of the id and two of the domain, then cut with ``…``)."""
    image_id = shortened(example.image_id, 3 * _ROW_LABEL_CHARACTERS)
    domain = shortened(example.domain, 2 * _ROW_LABEL_CHARACTERS - 2)
    lines = textwrap.wrap(image_id, _ROW_LABEL_CHARACTERS) + textwrap.wrap(f"({domain})", _ROW_LABEL_CHARACTERS)
    return "\n".join(lines).replace("$", r"\$")


def _show_input(ax: Axes, pixels: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if pixels is None:
        _missing(ax, "no input", shape)
        return
    pixels = np.asarray(pixels, dtype=np.float64)
    shown = np.moveaxis(pixels[:3], 0, -1) if pixels.shape[0] == 3 else pixels[0]
    finite = shown[np.isfinite(shown)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = np.clip((shown - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(shown)
    if scaled.ndim == 3:
        ax.imshow(np.nan_to_num(scaled), interpolation="nearest")
    else:
        ax.imshow(scaled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if pixels.shape[0] not in (1, 3):
        ax.text(
            0.03,
            0.97,
            f"channel 0 of {pixels.shape[0]}",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize="xx-small",
            color="white",
        )


def _missing(ax: Axes, text: str, shape: tuple[int, ...]) -> None:
    ax.set_box_aspect(shape[0] / shape[1])  # as tall as the images beside it
    ax.set_facecolor("0.96")
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="x-small", color="0.4")


def _class_colours(n_classes: int, background: int) -> list[str]:
    foreground = iter(colour for colour in CATEGORY_COLOURS if colour != "#000000")
    return [_BACKGROUND_CLASS_COLOUR if c == background else next(foreground) for c in range(n_classes)]


def _most_disagreement(examples: Sequence[MapExample], n_classes: int) -> float:
    raters = max((example.labels.shape[0] for example in examples if example.labels is not None), default=1)
    return max(1.0 - 1.0 / min(raters, n_classes), 1e-6)


# --------------------------------------------------------------------------- helpers


def _present(by_measure: Mapping[str, object]) -> list[str]:
    return [measure for measure in MEASURES if measure in by_measure]


def _check_measures(by_measure: Mapping[str, object], what: str) -> None:
    unknown = sorted(set(by_measure) - set(MEASURES))
    if unknown:
        raise ValueError(f"{what}: unknown measure(s) {unknown}; expected some of {list(MEASURES)}")


def _fpr_tpr(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(curve, "fpr") and hasattr(curve, "tpr"):
        return np.asarray(curve.fpr), np.asarray(curve.tpr)
    fpr, tpr = curve
    return np.asarray(fpr), np.asarray(tpr)


def _unit_square(ax: Axes) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_box_aspect(1)


def _finite_max(values: np.ndarray) -> float:
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0
