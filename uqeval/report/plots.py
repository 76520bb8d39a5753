"""Matplotlib figures for ``uqeval score``: ROC curves, reliability diagrams, AU/EU/TU maps.

Every function builds its own :class:`matplotlib.figure.Figure` on an Agg canvas and
never touches ``pyplot``, so no global state is involved and figures can be drawn from
several threads. :func:`save_figure` writes one atomically as a PNG.

The three measures keep one colour and one label in every figure of this module
(:data:`MEASURE_COLOURS`, :data:`MEASURE_LABELS`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from uqeval.report.files import write_bytes

#: The three uncertainty measures, in report order.
MEASURES = ("au", "eu", "tu")

#: One colour per measure (Okabe–Ito, readable with colour-vision deficiencies).
MEASURE_COLOURS = {"au": "#0072B2", "eu": "#D55E00", "tu": "#009E73"}

#: Legend label per measure.
MEASURE_LABELS = {"au": "AU (aleatoric)", "eu": "EU (epistemic)", "tu": "TU (total)"}

#: Resolution of saved PNGs.
DPI = 120

_PANEL_INCHES = 3.4
_MAX_COLUMNS = 4
_CHANCE_STYLE = {"color": "0.6", "linestyle": "--", "linewidth": 1.0}
_SPLIT_COLOURS = ("0.15", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#999999", "#882255", "#117733")


class ReliabilityLike(Protocol):
    """Per-bin reliability data, as :class:`uqeval.metrics.calibration.Reliability`."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


@dataclass(frozen=True)
class MapExample:
    """One image's mean prediction and uncertainty maps, for :func:`maps_figure`.

    Attributes
    ----------
    image_id, domain : str
        Shown in the row label, ``image <id> (<domain>)``.
    mean : (class, y, x) float32
        Mean prediction.
    au, eu, tu : (y, x) float32
        Uncertainty maps in nats.
    """

    image_id: str
    domain: str
    mean: np.ndarray
    au: np.ndarray
    eu: np.ndarray
    tu: np.ndarray

    def __post_init__(self) -> None:
        if np.ndim(self.mean) != 3:
            raise ValueError(f"image {self.image_id}: mean must be (class, y, x), got shape {np.shape(self.mean)}")
        for name in MEASURES:
            if np.shape(getattr(self, name)) != np.shape(self.mean)[1:]:
                raise ValueError(
                    f"image {self.image_id}: {name} must be (y, x) = {np.shape(self.mean)[1:]}, "
                    f"got shape {np.shape(getattr(self, name))}"
                )


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically.

    The image goes to a hidden temporary file in the same folder, which then replaces
    ``path`` in one step: readers see the old file or the new one, never a partial one.
    The temporary file is removed if anything fails.

    Parameters
    ----------
    figure : Figure
        The figure to save; it is left open.
    path : str or PathLike
        Destination; its folder must exist.

    Returns
    -------
    Path
        ``path``.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return write_bytes(path, buffer.getvalue())


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
        :class:`uqeval.metrics.oodd.RocCurve`). OOD images are the positives.
    aurocs : mapping
        Domain → measure → AUROC, for the legend; a missing, ``None`` or NaN value shows as ``n/a``.
    aggregation : str
        Name of the image-score aggregation, shown in the title.

    Returns
    -------
    Figure
        Panels in a row, wrapping to a grid after four.
    """
    if not curves:
        raise ValueError("roc_figure: no OOD domain to plot")
    domains = list(curves)
    n_columns = min(len(domains), _MAX_COLUMNS)
    n_rows = math.ceil(len(domains) / n_columns)
    figure = _new_figure(_PANEL_INCHES * n_columns, _PANEL_INCHES * n_rows + 0.4)
    axes = figure.subplots(n_rows, n_columns, squeeze=False)
    for ax in axes.flat[len(domains) :]:
        ax.remove()
    for ax, domain in zip(axes.flat, domains, strict=False):
        _check_measures(curves[domain], f"ROC curves of {domain!r}")
        ax.plot([0, 1], [0, 1], **_CHANCE_STYLE, label="chance")
        for measure in _present(curves[domain]):
            fpr, tpr = _fpr_tpr(curves[domain][measure])
            value = aurocs.get(domain, {}).get(measure)
            shown = "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
            ax.plot(
                fpr,
                tpr,
                color=MEASURE_COLOURS[measure],
                linewidth=1.6,
                clip_on=False,  # a perfect detector runs along the frame: draw it whole, above the frame
                zorder=3,
                label=f"{measure.upper()}  AUROC {shown}",
            )
        _unit_square(ax)
        ax.set_xlabel("false positive rate (ID)")
        ax.set_ylabel("true positive rate (OOD)")
        ax.set_title(domain)
        ax.legend(loc="lower right", fontsize="small")
    figure.suptitle(f"OOD detection, image score: {aggregation}")
    return figure


def reliability_figure(reliabilities: Mapping[tuple[str, str], ReliabilityLike]) -> Figure:
    """Reliability diagrams, one panel per measure and one line per split.

    Parameters
    ----------
    reliabilities : mapping
        ``(split, measure)`` → per-bin data with ``lower``, ``upper``, ``count``,
        ``confidence`` and ``accuracy`` (see :func:`uqeval.metrics.calibration.reliability`).
        Splits keep their order of appearance, with ``"id"`` first.

    Returns
    -------
    Figure
        Accuracy against mean confidence in each non-empty bin, the diagonal of perfect
        calibration, and light bars of each split's pixel fraction per bin (right axis).
    """
    if not reliabilities:
        raise ValueError("reliability_figure: nothing to plot")
    _check_measures({measure: None for _, measure in reliabilities}, "reliability diagrams")
    splits = sorted(dict.fromkeys(split for split, _ in reliabilities), key=lambda split: split != "id")
    colours = {split: _SPLIT_COLOURS[i % len(_SPLIT_COLOURS)] for i, split in enumerate(splits)}
    measures = [m for m in MEASURES if any(measure == m for _, measure in reliabilities)]
    figure = _new_figure(_PANEL_INCHES * 1.15 * len(measures), _PANEL_INCHES + 0.3)
    for ax, measure in zip(figure.subplots(1, len(measures), squeeze=False).flat, measures, strict=True):
        bars = ax.twinx()
        ax.set_zorder(bars.get_zorder() + 1)  # lines above the bars
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], **_CHANCE_STYLE, label="perfect calibration")
        largest = 0.0
        for split in splits:
            data = reliabilities.get((split, measure))
            if data is None:
                continue
            count = np.asarray(data.count, dtype=float)
            fraction = count / count.sum() if count.sum() > 0 else np.zeros_like(count)
            largest = max(largest, float(fraction.max(initial=0.0)))
            bars.bar(
                data.lower, fraction, width=data.upper - data.lower, align="edge", color=colours[split], alpha=0.15
            )
            shown = (count > 0) & np.isfinite(data.confidence) & np.isfinite(data.accuracy)
            ax.plot(
                data.confidence[shown],
                data.accuracy[shown],
                color=colours[split],
                marker="o",
                markersize=3.5,
                linewidth=1.4,
                label=split,
            )
        bars.set_ylim(0, 4 * largest if largest > 0 else 1)  # bars use the lower quarter
        bars.set_yticks([tick for tick in MaxNLocator(nbins=2).tick_values(0, largest) if tick <= largest + 1e-12])
        bars.set_ylabel("pixel fraction (bars)", color="0.45")
        bars.tick_params(axis="y", colors="0.45", labelsize="small")
        bars.set_box_aspect(1)
        _unit_square(ax)
        ax.set_xlabel("confidence (Platt-scaled)")
        ax.set_ylabel("accuracy (rater agreement)")
        ax.set_title(measure.upper(), color=MEASURE_COLOURS[measure])
        ax.legend(loc="upper left", fontsize="small")
    return figure


def maps_figure(examples: Sequence[MapExample], *, background: int = 0) -> Figure:
    """Mean prediction and AU, EU, TU maps, one row per image.

    Parameters
    ----------
    examples : sequence of MapExample
        The images to show, at least one.
    background : int
        Class index of the background; the first column shows ``1 - mean[background]``.

    Returns
    -------
    Figure
        Four columns; AU, EU and TU share one colour scale (0 to the largest value shown)
        and one colourbar in nats, so the maps compare directly.
    """
    if not examples:
        raise ValueError("maps_figure: no example image to show (examples is empty)")
    for example in examples:
        if not -example.mean.shape[0] <= background < example.mean.shape[0]:
            raise ValueError(
                f"image {example.image_id}: background class {background} is out of range for "
                f"{example.mean.shape[0]} classes"
            )
    largest = max((_finite_max(getattr(example, m)) for example in examples for m in MEASURES), default=0.0)
    norm = Normalize(vmin=0.0, vmax=max(largest, 1e-6))
    figure = _new_figure(2.4 * 4 + 0.8, 2.4 * len(examples) + 0.3)
    axes = figure.subplots(len(examples), 4, squeeze=False)
    image = None
    for row, example in zip(axes, examples, strict=True):
        foreground = 1.0 - np.asarray(example.mean[background], dtype=np.float32)
        row[0].imshow(foreground, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for ax, measure in zip(row[1:], MEASURES, strict=True):
            image = ax.imshow(getattr(example, measure), cmap="magma", norm=norm, interpolation="nearest")
        row[0].set_ylabel(f"image {example.image_id} ({example.domain})")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("mean prediction", "AU", "EU", "TU"), strict=True):
        ax.set_title(title)
    n_rows = len(examples)
    figure.colorbar(image, ax=axes[:, 1:].ravel().tolist(), label="nats", shrink=0.9, aspect=20 + 5 * (n_rows - 1))
    return figure


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


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
