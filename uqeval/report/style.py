"""The one visual style of every report figure: colours, line styles, markers and hatches.

Each uncertainty measure keeps one colour, line style, marker and hatch in every figure
(:data:`MEASURE_COLOURS` …), so a figure stays readable printed in greyscale, where
the three colours are of similar lightness. Splits (``id``, OOD domains, the pooled
``ood``) and compared models draw from :data:`CATEGORY_COLOURS`, which leaves out the
measure colours so that blue always means AU, vermillion EU and green TU.

Colours come from the Okabe–Ito palette (Okabe & Ito 2008): three for the measures,
four for splits and models, then Paul Tol's muted scheme; both stay distinct under the
common colour-vision deficiencies. Yellow is left out: it vanishes on white paper.

Only :func:`new_figure` imports matplotlib, so naming a colour does not load it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uqeval.names import ID_DOMAIN, MEASURES, POOLED_OOD

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend

__all__ = [
    "CATEGORY_COLOURS",
    "CHANCE_STYLE",
    "DPI",
    "FIGURE_FORMATS",
    "MEASURES",
    "MEASURE_COLOURS",
    "MEASURE_HATCHES",
    "MEASURE_LABELS",
    "MEASURE_LINESTYLES",
    "MEASURE_MARKERS",
    "Style",
    "category_styles",
    "figure_legend",
    "measure_style",
    "new_figure",
    "split_styles",
]

#: One colour per measure (Okabe–Ito blue, vermillion, bluish green).
MEASURE_COLOURS = {"au": "#0072B2", "eu": "#D55E00", "tu": "#009E73"}
#: Legend label per measure.
MEASURE_LABELS = {"au": "AU (aleatoric)", "eu": "EU (epistemic)", "tu": "TU (total)"}
#: One line style per measure, so lines stay apart in greyscale.
MEASURE_LINESTYLES = {"au": "-", "eu": "--", "tu": "-."}
#: One marker per measure.
MEASURE_MARKERS = {"au": "o", "eu": "s", "tu": "^"}
#: One hatch per measure, for bars and patches.
MEASURE_HATCHES = {"au": "", "eu": "////", "tu": "...."}

#: Colours of splits and models: Okabe–Ito without its measure colours and yellow, then Tol's muted.
CATEGORY_COLOURS = (
    "#000000",
    "#E69F00",
    "#56B4E9",
    "#CC79A7",
    "#882255",
    "#44AA99",
    "#999933",
    "#332288",
    "#AA4499",
    "#661100",
)
# Seven markers against ten colours: a (colour, marker) pair repeats only after 70 categories.
_CATEGORY_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_CATEGORY_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 2)), (0, (8, 2)))
_CATEGORY_HATCHES = ("", "////", "\\\\\\\\", "xxxx", "....", "----", "++++", "oo", "||||", "**")

#: The colour of the ID split and of the pooled OOD split, in every figure.
_SPLIT_COLOURS = {ID_DOMAIN: "#000000", POOLED_OOD: "#CC79A7"}

#: Style of the reference diagonal (chance, perfect calibration, Δ = 0).
CHANCE_STYLE = {"color": "0.5", "linestyle": "--", "linewidth": 1.0}

#: Resolution of saved PNGs (dots per inch); figures are sized in inches for print.
DPI = 200
#: The formats a report's figures are written in: a PNG to view, an SVG to print or edit.
FIGURE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Style:
    """How one category (a split or a model) is drawn: colour, marker, line style, hatch."""

    colour: str
    marker: str
    linestyle: str | tuple
    hatch: str


def measure_style(measure: str) -> Style:
    """The style of a measure (``"au"``, ``"eu"`` or ``"tu"``).

    >>> measure_style("eu").linestyle
    '--'
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {list(MEASURES)}")
    return Style(
        MEASURE_COLOURS[measure], MEASURE_MARKERS[measure], MEASURE_LINESTYLES[measure], MEASURE_HATCHES[measure]
    )


def category_styles(names: Iterable[str]) -> dict[str, Style]:
    """One distinct style per name, in the order given (colours cycle after ten).

    Colour, marker, line style and hatch all change from one name to the next, so two
    names that share a colour after the cycle still differ in marker.
    """
    return {name: _nth(index) for index, name in enumerate(dict.fromkeys(names))}


def split_styles(splits: Sequence[str]) -> dict[str, Style]:
    """Styles of splits: ``id`` always black and solid, pooled ``ood`` always reddish purple.

    Every other split (an OOD domain) takes the next free category style in the order
    given; the styles of ``id`` and ``ood`` are never reused for a domain.
    """
    styles: dict[str, Style] = {}
    if ID_DOMAIN in splits:
        styles[ID_DOMAIN] = Style(_SPLIT_COLOURS[ID_DOMAIN], "o", "-", "")
    if POOLED_OOD in splits:
        styles[POOLED_OOD] = Style(_SPLIT_COLOURS[POOLED_OOD], "D", "--", "....")
    reserved = set(_SPLIT_COLOURS.values())
    free = (style for style in map(_nth, itertools.count()) if style.colour not in reserved)
    for split in splits:
        if split not in styles:
            styles[split] = next(free)
    return {split: styles[split] for split in splits}


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches on its own Agg canvas, with constrained layout.

    It never touches ``pyplot``, so no global state is involved and figures can be
    drawn from several threads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_legend(figure: Figure, handles: Sequence[Any], *, most_columns: int, **options: Any) -> Legend:
    """A legend under the figure's panels, in as many columns (up to ``most_columns``) as fit its width.

    Constrained layout makes room for the legend below the panels but does not widen the
    figure, so a legend wider than the figure would be cut off: columns are dropped
    until it fits.

    Parameters
    ----------
    figure : Figure
    handles : sequence of Artist
        The legend's entries, each with its label.
    most_columns : int
        The most columns to use.
    **options
        Further keyword arguments of :meth:`matplotlib.figure.Figure.legend`.
    """
    renderer = figure.canvas.get_renderer()
    columns = max(1, min(most_columns, len(handles)))
    while True:
        legend = figure.legend(handles=handles, loc="outside lower center", ncols=columns, **options)
        if columns == 1 or legend.get_window_extent(renderer).width <= figure.bbox.width - 4:
            return legend
        legend.remove()
        columns -= 1


def _nth(index: int) -> Style:
    return Style(
        CATEGORY_COLOURS[index % len(CATEGORY_COLOURS)],
        _CATEGORY_MARKERS[index % len(_CATEGORY_MARKERS)],
        _CATEGORY_LINESTYLES[index % len(_CATEGORY_LINESTYLES)],
        _CATEGORY_HATCHES[index % len(_CATEGORY_HATCHES)],
    )
