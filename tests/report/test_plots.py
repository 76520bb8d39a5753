"""Tests of :mod:`uqeval.report.plots` and :mod:`uqeval.report.style`: the figures' content,
their legibility (no text off the canvas, legends that match what is drawn) and the writers."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from helpers import assert_text_on_canvas
from matplotlib.colors import to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from uqeval.metrics.ambiguity import rater_disagreement
from uqeval.metrics.calibration import reliability
from uqeval.metrics.oodd import auroc, roc_curve
from uqeval.report.plots import (
    FIGURE_FORMATS,
    MEASURE_COLOURS,
    MEASURE_LABELS,
    MEASURES,
    MapExample,
    map_examples,
    maps_figure,
    reliability_figure,
    roc_figure,
    save_figure,
    save_figure_files,
)
from uqeval.report.style import (
    CATEGORY_COLOURS,
    MEASURE_HATCHES,
    MEASURE_LINESTYLES,
    MEASURE_MARKERS,
    category_styles,
    measure_style,
    split_styles,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- helpers


def _small_figure() -> Figure:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    return figure


def _roc_inputs(domains: list[str], measures=MEASURES, seed: int = 0):
    rng = np.random.default_rng(seed)
    positive = np.r_[np.zeros(40), np.ones(40)]
    curves: dict[str, dict] = {}
    aurocs: dict[str, dict] = {}
    for domain in domains:
        curves[domain], aurocs[domain] = {}, {}
        for shift, measure in enumerate(measures):
            scores = np.r_[rng.normal(0, 1, 40), rng.normal(shift, 1, 40)]
            curve = roc_curve(scores, positive)
            curves[domain][measure] = (curve.fpr, curve.tpr)
            aurocs[domain][measure] = auroc(scores, positive)
    return curves, aurocs


def _reliability(counts, seed: int = 0):
    """A Reliability whose bins hold ``counts`` pixels, accuracy a little below confidence."""
    counts = np.asarray(counts, dtype=float)
    centres = (np.arange(counts.size) + 0.5) / counts.size
    bins = np.c_[counts, centres * counts, 0.9 * centres * counts]
    return reliability(bins)


def _example(
    image_id: str,
    domain: str = "id",
    *,
    shape=(8, 10),
    scale: float = 1.0,
    classes: int = 3,
    labels: np.ndarray | None = None,
    input: np.ndarray | None = None,
) -> MapExample:
    rng = np.random.default_rng(int(image_id))
    mean = rng.dirichlet(np.ones(classes), size=shape).transpose(2, 0, 1).astype(np.float32)
    au = (scale * rng.uniform(0, 0.6, shape)).astype(np.float32)
    eu = (scale * rng.uniform(0, 0.1, shape)).astype(np.float32)
    return MapExample(image_id, domain, mean, au, eu, au + eu, labels=labels, input=input)


def _visible_axes(figure: Figure):
    return [ax for ax in figure.axes if ax.get_visible()]


def _axes_by_title(figure: Figure) -> dict[str, object]:
    return {ax.get_title(): ax for ax in figure.axes if ax.get_title()}


def _legend_texts(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()]


def _greyscale(colour: str) -> float:
    red, green, blue = to_rgb(colour)
    return 0.299 * red + 0.587 * green + 0.114 * blue


# ---------------------------------------------------------------- save_figure


def test_save_figure_writes_a_valid_png(tmp_path):
    target = tmp_path / "plot.png"
    returned = save_figure(_small_figure(), target)
    assert returned == target
    assert target.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(target)
    height, width = pixels.shape[:2]
    assert 200 <= height <= 1000 and 200 <= width <= 1000  # 2 in at 200 dpi, cropped tight
    assert pixels.shape[2] in (3, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left


def test_save_figure_accepts_a_string_and_replaces_an_existing_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    save_figure(_small_figure(), str(target))
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_save_figure_gives_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        target = save_figure(_small_figure(), tmp_path / "plot.png")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not tempfile's 0o600


def test_save_figure_into_a_missing_folder_raises_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        save_figure(_small_figure(), tmp_path / "missing" / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_failing_midway_removes_the_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    figure = _small_figure()

    def broken_savefig(handle, **_):
        handle.write(PNG_MAGIC + b"partial")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer failed"):
        save_figure(figure, target)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert target.read_bytes() == b"old"


def test_save_figure_writes_vector_formats_by_suffix_and_rejects_others(tmp_path):
    svg = save_figure(_small_figure(), tmp_path / "plot.svg")
    root = ElementTree.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert b"<dc:date>" not in svg.read_bytes()  # no creation date
    pdf = save_figure(_small_figure(), tmp_path / "plot.PDF")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="cannot save a figure as jpg"):
        save_figure(_small_figure(), tmp_path / "plot.jpg")
    with pytest.raises(ValueError, match="without a suffix"):
        save_figure(_small_figure(), tmp_path / "plot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.PDF", "plot.svg"]


def test_save_figure_files_writes_png_and_svg_beside_it_with_the_same_bytes_each_time(tmp_path):
    curves, aurocs = _roc_inputs(["blur"])
    written = save_figure_files(roc_figure(curves, aurocs, aggregation="border"), tmp_path / "roc.png")
    assert FIGURE_FORMATS == ("png", "svg")
    assert written == [tmp_path / "roc.png", tmp_path / "roc.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "roc.svg"]
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
    first = (tmp_path / "roc.svg").read_bytes()
    root = ElementTree.fromstring(first)
    assert not root.findall(".//{http://www.w3.org/2000/svg}text")  # text drawn as paths: no font needed
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    save_figure_files(roc_figure(curves, aurocs, aggregation="border"), tmp_path / "roc.png")
    assert (tmp_path / "roc.svg").read_bytes() == first


# ---------------------------------------------------------------- style


def test_each_measure_differs_from_the_others_in_colour_line_marker_and_hatch():
    for table in (MEASURE_COLOURS, MEASURE_LINESTYLES, MEASURE_MARKERS, MEASURE_HATCHES, MEASURE_LABELS):
        assert set(table) == set(MEASURES)
        assert len(set(table.values())) == len(MEASURES)
    style = measure_style("tu")
    assert (style.colour, style.linestyle, style.marker) == (MEASURE_COLOURS["tu"], "-.", "^")
    with pytest.raises(ValueError, match="unknown measure 'xu'"):
        measure_style("xu")


def test_category_colours_leave_out_the_measure_colours_and_stay_visible_on_white():
    assert not set(CATEGORY_COLOURS) & set(MEASURE_COLOURS.values())
    assert len(set(CATEGORY_COLOURS)) == len(CATEGORY_COLOURS)
    assert all(_greyscale(colour) < 0.8 for colour in CATEGORY_COLOURS)  # no yellow that vanishes on paper


def test_category_styles_stay_distinct_for_many_models():
    names = [f"model-{i}" for i in range(70)]
    styles = category_styles(names)
    assert list(styles) == names
    assert len({(style.colour, style.marker) for style in styles.values()}) == 70


def test_split_styles_fix_id_and_pooled_ood_and_give_domains_other_colours():
    styles = split_styles(["id", "blur", "noise", "ood"])
    assert to_rgba(styles["id"].colour) == to_rgba("black") and styles["id"].linestyle == "-"
    assert styles["ood"].colour == "#CC79A7"
    assert styles["blur"].colour not in {styles["id"].colour, styles["ood"].colour, styles["noise"].colour}
    assert styles["noise"].colour not in {styles["id"].colour, styles["ood"].colour}
    alone = split_styles(["blur"])
    assert alone["blur"] == styles["blur"]  # a domain's style does not depend on id being there
    assert len({style.hatch for style in styles.values()}) == 4  # bars apart in greyscale too


# ---------------------------------------------------------------- roc_figure


def test_roc_figure_has_a_panel_per_domain_with_curves_diagonal_and_auroc_legend():
    curves, aurocs = _roc_inputs(["blur", "noise"])
    aurocs["noise"]["eu"] = 0.9134
    figure = roc_figure(curves, aurocs, aggregation="border")

    axes = _visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["blur", "noise"]
    assert "image score: border" in figure.get_suptitle()
    for ax in axes:
        assert len(ax.get_lines()) == 4  # chance diagonal and three measures
        diagonal = ax.get_lines()[0]
        assert np.array_equal(diagonal.get_xdata(), [0, 1]) and np.array_equal(diagonal.get_ydata(), [0, 1])
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        assert ax.get_box_aspect() == 1
        assert ax.get_xlabel() == "false positive rate (ID)"
        # the legend names exactly the lines drawn
        assert _legend_texts(ax.get_legend()) == [line.get_label() for line in ax.get_lines()]
    assert axes[0].get_ylabel() == "true positive rate (OOD)" and axes[1].get_ylabel() == ""
    legend = _legend_texts(axes[1].get_legend())
    assert "EU  AUROC 0.913" in legend
    assert f"AU  AUROC {aurocs['noise']['au']:.3f}" in legend
    # the plotted points are the curve's operating points
    eu_line = axes[0].get_lines()[2]
    assert np.array_equal(eu_line.get_xdata(), curves["blur"]["eu"][0])
    assert np.array_equal(eu_line.get_ydata(), curves["blur"]["eu"][1])


def test_roc_figure_wraps_to_a_grid_after_four_domains():
    domains = ["a", "b", "c", "d", "e"]
    curves, aurocs = _roc_inputs(domains)
    figure = roc_figure(curves, aurocs, aggregation="mean")
    axes = _visible_axes(figure)
    assert [ax.get_title() for ax in axes] == domains
    grid = axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (2, 4)
    assert axes[4].get_subplotspec().rowspan.start == 1
    assert axes[4].get_ylabel() == "true positive rate (OOD)"  # first of its row
    assert_text_on_canvas(figure)


def test_roc_figure_draws_each_measure_in_its_colour_and_line_style_and_accepts_roc_curve_objects():
    rng = np.random.default_rng(1)
    positive = np.r_[np.zeros(20), np.ones(20)]
    scores = rng.normal(size=40) + positive
    curves = {"blur": {"tu": roc_curve(scores, positive), "au": roc_curve(-scores, positive)}}
    aurocs = {"blur": {"tu": auroc(scores, positive), "au": math.nan}}
    (ax,) = _visible_axes(roc_figure(curves, aurocs, aggregation="border"))
    _chance, au_line, tu_line = ax.get_lines()
    assert to_rgba(au_line.get_color()) == to_rgba(MEASURE_COLOURS["au"])
    assert to_rgba(tu_line.get_color()) == to_rgba(MEASURE_COLOURS["tu"])
    assert au_line.get_linestyle() == "-" and tu_line.get_linestyle() == "-."
    assert au_line.get_label() == "AU  AUROC n/a"
    assert np.array_equal(tu_line.get_xdata(), curves["blur"]["tu"].fpr)


def test_roc_figure_rejects_empty_input_and_unknown_measures():
    with pytest.raises(ValueError, match="no OOD domain"):
        roc_figure({}, {}, aggregation="border")
    curves, aurocs = _roc_inputs(["blur"], measures=("au", "xu"))
    with pytest.raises(ValueError, match="unknown measure"):
        roc_figure(curves, aurocs, aggregation="border")


# ---------------------------------------------------------------- reliability_figure


def _reliability_panels(figure: Figure):
    """Top-row reliability axes (titled with the measure) and the histogram axes under each."""
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_title()}
    histograms = [ax for ax in figure.axes if not ax.get_title()]
    return panels, histograms


def test_reliability_figure_has_a_column_per_measure_in_order_and_a_line_per_split():
    counts = [0, 0, 5, 10, 20, 0, 40, 80, 30, 15]  # three empty bins
    data = {
        (split, measure): _reliability(counts)
        for split in ("blur", "id", "noise", "ood")  # "id" is drawn first although given second
        for measure in ("tu", "au")  # drawn in measure order, EU absent
    }
    figure = reliability_figure(data)
    panels, histograms = _reliability_panels(figure)
    assert list(panels) == [MEASURE_LABELS["au"], MEASURE_LABELS["tu"]]
    assert len(histograms) == 2
    assert figure.get_suptitle().startswith("Calibration")
    expected = _reliability(counts)
    non_empty = np.asarray(counts) > 0
    for ax, measure in zip(panels.values(), ("au", "tu"), strict=True):
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        assert to_rgba(ax.title.get_color()) == to_rgba(MEASURE_COLOURS[measure])
        diagonal, *lines = ax.get_lines()
        assert np.array_equal(diagonal.get_ydata(), [0, 1])
        assert [line.get_label() for line in lines] == ["id", "blur", "noise", "ood (all OOD domains)"]
        for line in lines:
            assert np.allclose(line.get_xdata(), expected.confidence[non_empty])
            assert np.allclose(line.get_ydata(), expected.accuracy[non_empty])
        assert len({line.get_marker() for line in lines}) == 4  # splits apart in greyscale
    assert panels[MEASURE_LABELS["au"]].get_ylabel() == "accuracy (rater agreement)"
    assert histograms[0].get_xlabel() == "confidence (Platt-scaled)"
    # one legend for the figure, naming the diagonal and each split drawn, nothing else
    (legend,) = figure.legends
    first = panels[MEASURE_LABELS["au"]]
    assert _legend_texts(legend) == [line.get_label() for line in first.get_lines()]
    assert all(ax.get_legend() is None for ax in figure.axes)
    assert_text_on_canvas(figure)


def test_reliability_figure_with_one_ood_domain_draws_it_once_under_its_name():
    data = {(split, measure): _reliability([1, 2, 3]) for split in ("id", "blur", "ood") for measure in MEASURES}
    figure = reliability_figure(data)
    panels, histograms = _reliability_panels(figure)
    (legend,) = figure.legends
    assert _legend_texts(legend) == ["perfect calibration", "id", "blur"]
    for ax in panels.values():
        assert [line.get_label() for line in ax.get_lines()[1:]] == ["id", "blur"]
    for ax in histograms:
        assert len(ax.patches) == 2  # one step line per split drawn


def test_reliability_figure_histogram_shows_each_splits_pixel_fraction_on_a_log_scale():
    counts = np.array([0, 10, 30, 60], dtype=float)
    figure = reliability_figure({("id", "eu"): _reliability(counts), ("noise", "eu"): _reliability([5, 5, 0, 0])})
    (_panel,), (histogram,) = _reliability_panels(figure)[0].values(), _reliability_panels(figure)[1]
    assert histogram.get_yscale() == "log"
    id_steps, noise_steps = histogram.patches
    values, edges, _baseline = id_steps.get_data()
    assert np.allclose(edges, [0, 0.25, 0.5, 0.75, 1])
    assert np.isnan(values[0]) and np.allclose(values[1:], counts[1:] / counts.sum())
    assert np.allclose(noise_steps.get_data()[0][:2], [0.5, 0.5])
    assert id_steps.get_edgecolor() != noise_steps.get_edgecolor()
    low, high = histogram.get_ylim()
    assert low <= 0.1 and high >= 1  # every non-empty bin on the axis


def test_reliability_figure_styles_a_split_the_same_in_every_panel():
    data = {(split, measure): _reliability([1, 2, 3]) for split in ("id", "noise") for measure in MEASURES}
    panels, _ = _reliability_panels(reliability_figure(data))
    assert list(panels) == [MEASURE_LABELS[m] for m in MEASURES]
    styles = [[(to_rgba(line.get_color()), line.get_marker()) for line in ax.get_lines()[1:]] for ax in panels.values()]
    assert styles[0] == styles[1] == styles[2]
    assert styles[0][0] != styles[0][1]
    assert styles[0][0][0] == to_rgba("black")  # id


def test_reliability_figure_rejects_empty_input_and_unknown_measures():
    with pytest.raises(ValueError, match="nothing to plot"):
        reliability_figure({})
    with pytest.raises(ValueError, match="unknown measure"):
        reliability_figure({("id", "entropy"): _reliability([1, 2])})


# ---------------------------------------------------------------- maps_figure


def _map_axes(figure: Figure):
    """The map axes, row by row (colour bars hold no image and no title-less map)."""
    return [ax for ax in figure.axes if ax.get_images() or ax.texts]


def _images(figure: Figure):
    return [image for ax in figure.axes for image in ax.get_images()]


def _colourbars(figure: Figure):
    return [ax for ax in figure.axes if ax not in _map_axes(figure)]


@pytest.mark.parametrize("n_examples", [1, 6])
def test_maps_figure_has_a_row_per_example_and_a_scale_per_measure(n_examples):
    examples = [_example(str(i), "id" if i < 3 else "blur", scale=1 + i, classes=2) for i in range(n_examples)]
    figure = maps_figure(examples)

    images = _images(figure)
    assert len(images) == 4 * n_examples  # prediction, AU, EU, TU: no labels, no input
    for column, measure in enumerate(MEASURES, start=1):  # each measure its own scale, EU not lost on AU's
        largest = max(float(getattr(e, measure).max()) for e in examples)
        assert {images[i].get_clim() for i in range(column, len(images), 4)} == {(0.0, largest)}
    assert all(images[i].get_clim() == (0.0, 1.0) for i in range(0, len(images), 4))
    panel_maxima = [text.get_text() for ax in _map_axes(figure)[4 * (n_examples - 1) + 1 :] for text in ax.texts]
    assert panel_maxima == [f"max {float(getattr(examples[-1], m).max()):.2f}" for m in MEASURES]

    map_axes = _map_axes(figure)
    assert [ax.get_title() for ax in map_axes[:4]] == ["P(foreground)", "AU", "EU", "TU"]
    assert [to_rgba(ax.title.get_color()) for ax in map_axes[1:4]] == [to_rgba(MEASURE_COLOURS[m]) for m in MEASURES]
    assert all(ax.get_title() == "" for ax in map_axes[4:])
    assert [map_axes[4 * i].get_ylabel() for i in range(n_examples)] == [
        f"{e.image_id}\n({e.domain})" for e in examples
    ]
    assert all(len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0 for ax in map_axes)

    colourbars = _colourbars(figure)
    assert [bar.get_xlabel() for bar in colourbars] == ["probability", "AU (nats)", "EU (nats)", "TU (nats)"]
    assert_text_on_canvas(figure)


def test_maps_figure_shows_the_foreground_probability_and_the_maps_themselves():
    example = _example("7", classes=2)
    images = _images(maps_figure([example]))
    assert np.allclose(images[0].get_array(), 1 - example.mean[0])
    for image, measure in zip(images[1:], MEASURES, strict=True):
        assert np.array_equal(image.get_array(), getattr(example, measure))
    with_other_background = _images(maps_figure([example], background=1))
    assert np.allclose(with_other_background[0].get_array(), 1 - example.mean[1])


def test_maps_figure_shows_the_predicted_class_of_three_classes_with_a_class_legend():
    example = _example("5", classes=3)
    figure = maps_figure([example], background=1, class_names=["core", "background", "rim"])
    prediction = _images(figure)[0]
    assert np.array_equal(prediction.get_array(), np.argmax(example.mean, axis=0))
    colours = [prediction.cmap(prediction.norm(c)) for c in range(3)]
    assert len(set(colours)) == 3
    assert colours[1] == to_rgba("0.9")  # the background class in light grey
    assert not {to_rgba(c) for c in colours} & {to_rgba(c) for c in MEASURE_COLOURS.values()}
    (legend,) = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert _legend_texts(legend) == ["core", "background", "rim"]
    assert [to_rgba(handle.get_facecolor()) for handle in legend.legend_handles] == colours
    assert _map_axes(figure)[0].get_title() == "predicted class"
    assert len(_colourbars(figure)) == 3  # only AU, EU and TU; the classes have the legend
    assert_text_on_canvas(figure)
    unnamed = maps_figure([example])
    (legend,) = [ax.get_legend() for ax in unnamed.axes if ax.get_legend() is not None]
    assert _legend_texts(legend) == ["class 0", "class 1", "class 2"]


def test_maps_figure_shows_input_and_rater_disagreement_when_given():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(4, 8, 10)).astype(np.uint8)
    grey = rng.normal(5.0, 2.0, size=(1, 8, 10))
    colour = rng.normal(-3.0, 1.0, size=(3, 8, 10))
    examples = [
        _example("1", classes=2, labels=labels, input=grey),
        _example("2", "blur", classes=2, input=colour),  # no labels
        _example("3", "noise", classes=2, labels=labels),  # no input
    ]
    figure = maps_figure(examples)
    map_axes = _map_axes(figure)
    assert [ax.get_title() for ax in map_axes[:6]] == [
        "input",
        "P(foreground)",
        "raters ≠ majority\n(fraction)",
        "AU",
        "EU",
        "TU",
    ]
    rows = [map_axes[6 * i : 6 * i + 6] for i in range(3)]
    # grey input, min–max normalised
    (shown,) = rows[0][0].get_images()
    assert np.allclose(shown.get_array(), (grey[0] - grey.min()) / (grey.max() - grey.min()))
    assert shown.get_cmap().name == "gray"
    # three channels as RGB, normalised over the image
    (shown,) = rows[1][0].get_images()
    expected = np.moveaxis((colour - colour.min()) / (colour.max() - colour.min()), 0, -1)
    assert shown.get_array().shape == (8, 10, 3) and np.allclose(shown.get_array(), expected)
    # the raters' disagreement, on a 0 … 1 − 1/min(raters, classes) scale
    (shown,) = rows[0][2].get_images()
    assert np.allclose(shown.get_array(), rater_disagreement(labels), equal_nan=True)
    assert shown.get_clim() == (0.0, 0.5)
    # what an example lacks is said, not left blank
    assert not rows[1][2].get_images() and rows[1][2].texts[0].get_text() == "no labels"
    assert not rows[2][0].get_images() and rows[2][0].texts[0].get_text() == "no input"
    assert [bar.get_xlabel() for bar in _colourbars(figure)] == [
        "probability",
        "fraction of raters",
        "AU (nats)",
        "EU (nats)",
        "TU (nats)",
    ]
    assert_text_on_canvas(figure)


def test_maps_figure_with_all_zero_maps_has_a_positive_scale():
    example = _example("3", scale=0.0)
    uncertainty = _images(maps_figure([example]))[1:]
    low, high = uncertainty[0].get_clim()
    assert low == 0 and high > 0
    assert all(image.get_clim() == (low, high) for image in uncertainty)


def test_maps_figure_ignores_nan_for_the_scale():
    example = _example("4")
    example.au[0, 0] = np.nan
    uncertainty = _images(maps_figure([example]))[1:]
    assert [image.get_clim() for image in uncertainty] == [
        (0.0, float(np.nanmax(getattr(example, m)))) for m in MEASURES
    ]


def test_maps_figure_rejects_bad_input():
    with pytest.raises(ValueError, match="examples is empty"):
        maps_figure([])
    with pytest.raises(ValueError, match="background class 3"):
        maps_figure([_example("1")], background=3)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        maps_figure([_example("1")], class_names=["a", "b"])
    with pytest.raises(ValueError, match="2 classes, but image 1 has 3"):
        maps_figure([_example("1"), _example("2", classes=2)])


def test_maps_figure_shows_only_the_measures_a_maps_store_gives():
    from dataclasses import replace

    examples = [replace(_example("1", classes=2), eu=None, tu=None), replace(_example("2", classes=2), tu=None)]
    figure = maps_figure(examples)
    map_axes = _map_axes(figure)
    assert [ax.get_title() for ax in map_axes[:3]] == ["P(foreground)", "AU", "EU"]
    # the first example has no EU: said in its panel, not left blank
    assert not map_axes[2].get_images() and map_axes[2].texts[0].get_text() == "no EU"
    assert np.array_equal(map_axes[5].get_images()[0].get_array(), examples[1].eu)
    largest = {"au": max(float(examples[0].au.max()), float(examples[1].au.max())), "eu": float(examples[1].eu.max())}
    magma = [image for image in _images(figure)[1:] if image.get_cmap().name == "magma"]
    assert [image.get_clim() for image in magma] == [(0.0, largest["au"]), (0.0, largest["au"]), (0.0, largest["eu"])]
    assert_text_on_canvas(figure)
    with pytest.raises(ValueError, match="none of au, eu and tu is given"):
        replace(examples[0], au=None)


def test_map_example_checks_shapes():
    example = _example("2")
    with pytest.raises(ValueError, match="eu must be"):
        MapExample("2", "id", example.mean, example.au, example.eu[:, :-1], example.tu)
    with pytest.raises(ValueError, match="mean must be"):
        MapExample("2", "id", example.mean[0], example.au, example.eu, example.tu)
    with pytest.raises(ValueError, match=r"labels must be \(rater, y, x\)"):
        _example("2", labels=np.zeros((3, 8, 9), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"input must be \(channel, y, x\)"):
        _example("2", input=np.zeros((8, 10)))


def _stored(image_id: str, domain: str, **extra) -> SimpleNamespace:
    example = _example("1", classes=2, shape=(8, 8))
    return SimpleNamespace(
        image_id=image_id, domain=domain, mean=example.mean, au=example.au, eu=example.eu, tu=example.tu, **extra
    )


def test_map_examples_take_labels_and_input_from_the_examples():
    own_labels, own_input = np.ones((2, 8, 8), dtype=np.uint8), np.zeros((1, 8, 8), dtype=np.float32)
    given = [_stored("a", "id", labels=own_labels, input=own_input), _stored("b", "blur", labels=None, input=None)]
    examples = map_examples(given)
    assert [example.image_id for example in examples] == ["a", "b"]
    assert examples[0].labels is own_labels and examples[0].input is own_input
    assert examples[1].labels is None and examples[1].input is None
    assert map_examples([_stored("c", "id")])[0].labels is None  # an object without the attributes


def test_figures_have_no_text_off_the_canvas_with_long_names():
    long = "a-rather-long-out-of-distribution-domain"
    curves, aurocs = _roc_inputs(["blur", long, "noise", "x", "y"])
    reliabilities = {(split, m): _reliability([1, 2, 3, 4]) for split in ("id", long, "noise", "ood") for m in MEASURES}
    examples = [_example(str(i), long, classes=3, labels=np.zeros((2, 8, 10), dtype=np.uint8)) for i in range(4)]
    for figure in (
        roc_figure(curves, aurocs, aggregation="border"),
        reliability_figure(reliabilities),
        maps_figure(examples, class_names=["background", long, "core"]),
    ):
        assert_text_on_canvas(figure)


def test_figures_save_as_png_and_svg(tmp_path):
    curves, aurocs = _roc_inputs(["blur"])
    figures = {
        "roc.png": roc_figure(curves, aurocs, aggregation="border"),
        "reliability.png": reliability_figure({("id", "au"): _reliability([3, 4, 5])}),
        "maps.png": maps_figure([_example("1"), _example("2", "blur")]),
    }
    written = []
    for name, figure in figures.items():
        written += save_figure_files(figure, tmp_path / name)
        assert matplotlib.image.imread(tmp_path / name).ndim == 3
        ElementTree.parse(tmp_path / name.replace(".png", ".svg"))
    expected = sorted([*figures, *(name.replace(".png", ".svg") for name in figures)])
    assert sorted(p.name for p in tmp_path.iterdir()) == expected == sorted(path.name for path in written)


def test_figures_show_hostile_names_as_text_in_valid_svg(tmp_path):
    """Control characters make an SVG invalid XML, ``$…$`` is mathtext (an unknown
    command fails the drawing), and a huge name makes a huge figure: names are drawn
    escaped, with ``$`` as a dollar sign, and cut."""
    names = ["nul\x00esc\x1b[31m", "$\\notacommand$", "rtl\u202eevil", "x" * 5000]
    curves, aurocs = _roc_inputs(names)
    reliabilities = {(split, "au"): _reliability([3, 4, 5]) for split in ("id", *names)}
    rng = np.random.default_rng(0)
    examples = []
    for name in names:
        mean = rng.dirichlet(np.ones(3), size=(8, 10)).transpose(2, 0, 1).astype(np.float32)
        au = rng.uniform(0, 0.6, (8, 10)).astype(np.float32)
        examples.append(MapExample(name, name, mean, au, au / 2, 1.5 * au))
    figures = {
        "roc.png": roc_figure(curves, aurocs, aggregation="$\\bad$"),
        "reliability.png": reliability_figure(reliabilities),
        "maps.png": maps_figure(examples, class_names=names[:3]),
    }
    for name, figure in figures.items():
        save_figure_files(figure, tmp_path / name)
        svg = tmp_path / name.replace(".png", ".svg")
        ElementTree.parse(svg)  # valid XML
        assert figure.get_size_inches()[0] < 20
        texts = [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))]
        assert not any("\x00" in text or "\x1b" in text or "\u202e" in text for text in texts)
        assert any("esc\\x1b[31m" in text for text in texts)
        assert not any("x" * 100 in text for text in texts)


def test_legend_handles_are_line_artists_of_the_measure_style():
    curves, aurocs = _roc_inputs(["blur"])
    (ax,) = _visible_axes(roc_figure(curves, aurocs, aggregation="border"))
    handles = ax.get_legend().legend_handles
    assert all(isinstance(handle, Line2D) for handle in handles)
    assert [handle.get_linestyle() for handle in handles[1:]] == [MEASURE_LINESTYLES[m] for m in MEASURES]


# ---------------------------------------------------------------- import cost


@pytest.mark.parametrize("module", ["uqeval", "uqeval.report", "uqeval.report.style"])
def test_importing_the_package_does_not_import_matplotlib(module):
    code = f"import sys, {module}; assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_roc_figure_keeps_identical_curves_visible_and_titles_the_pooled_split():
    curves, aurocs = _roc_inputs(["blur", "ood"])
    curves["ood"]["tu"] = curves["ood"]["eu"]
    aurocs["ood"]["tu"] = aurocs["ood"]["eu"]
    figure = roc_figure(curves, aurocs, aggregation="border")
    blur, pooled = _visible_axes(figure)
    assert [blur.get_title(), pooled.get_title()] == ["blur", "ood (all OOD domains)"]
    lines = {line.get_label().split()[0]: line for line in pooled.get_lines()[1:]}
    assert lines["EU"].get_linewidth() > lines["TU"].get_linewidth()  # the one on top is narrower
    assert lines["EU"].get_zorder() < lines["TU"].get_zorder()
    assert lines["EU"].get_label().endswith("(same curve as TU)")
    assert lines["TU"].get_label().endswith("(same curve as EU)")
    assert not any("same curve" in line.get_label() for line in blur.get_lines())


def test_reliability_figure_prints_each_panel_s_ace():
    reliabilities = {(split, m): _reliability([3, 4, 5]) for split in ("id", "ood") for m in ("au", "eu")}
    aces = {("id", "au"): 0.0123, ("ood", "au"): float("nan"), ("id", "eu"): 0.2, ("ood", "eu"): 0.3}
    figure = reliability_figure(reliabilities, aces=aces)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [[text.get_text() for text in ax.texts] for ax in panels] == [
        ["ACE\nid 0.012\nood n/a"],
        ["ACE\nid 0.200\nood 0.300"],
    ]
    assert_text_on_canvas(figure)
