"""Tests of :mod:`uqeval.report.plots`: the figures' content and the atomic PNG writer."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from uqeval.metrics.calibration import reliability
from uqeval.metrics.oodd import auroc, roc_curve
from uqeval.report.plots import (
    MEASURE_COLOURS,
    MEASURE_LABELS,
    MEASURES,
    MapExample,
    maps_figure,
    reliability_figure,
    roc_figure,
    save_figure,
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


def _example(image_id: str, domain: str = "id", *, shape=(8, 10), scale: float = 1.0, classes: int = 3) -> MapExample:
    rng = np.random.default_rng(int(image_id))
    mean = rng.dirichlet(np.ones(classes), size=shape).transpose(2, 0, 1).astype(np.float32)
    au = (scale * rng.uniform(0, 0.6, shape)).astype(np.float32)
    eu = (scale * rng.uniform(0, 0.1, shape)).astype(np.float32)
    return MapExample(image_id, domain, mean, au, eu, au + eu)


def _visible_axes(figure: Figure):
    return [ax for ax in figure.axes if ax.get_visible()]


def _axes_by_title(figure: Figure) -> dict[str, object]:
    return {ax.get_title(): ax for ax in figure.axes if ax.get_title()}


# ---------------------------------------------------------------- save_figure


def test_save_figure_writes_a_valid_png(tmp_path):
    target = tmp_path / "plot.png"
    returned = save_figure(_small_figure(), target)
    assert returned == target
    assert target.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(target)
    height, width = pixels.shape[:2]
    assert 100 <= height <= 1000 and 100 <= width <= 1000  # 2 in at 120 dpi, cropped tight
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
        assert ax.get_ylabel() == "true positive rate (OOD)"
    legend = [text.get_text() for text in axes[1].get_legend().get_texts()]
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


def test_roc_figure_uses_the_measure_colours_in_measure_order_and_accepts_roc_curve_objects():
    rng = np.random.default_rng(1)
    positive = np.r_[np.zeros(20), np.ones(20)]
    scores = rng.normal(size=40) + positive
    curves = {"blur": {"tu": roc_curve(scores, positive), "au": roc_curve(-scores, positive)}}
    aurocs = {"blur": {"tu": auroc(scores, positive), "au": math.nan}}
    (ax,) = _visible_axes(roc_figure(curves, aurocs, aggregation="border"))
    _chance, au_line, tu_line = ax.get_lines()
    assert to_rgba(au_line.get_color()) == to_rgba(MEASURE_COLOURS["au"])
    assert to_rgba(tu_line.get_color()) == to_rgba(MEASURE_COLOURS["tu"])
    assert au_line.get_label() == "AU  AUROC n/a"
    assert np.array_equal(tu_line.get_xdata(), curves["blur"]["tu"].fpr)


def test_roc_figure_rejects_empty_input_and_unknown_measures():
    with pytest.raises(ValueError, match="no OOD domain"):
        roc_figure({}, {}, aggregation="border")
    curves, aurocs = _roc_inputs(["blur"], measures=("au", "xu"))
    with pytest.raises(ValueError, match="unknown measure"):
        roc_figure(curves, aurocs, aggregation="border")


# ---------------------------------------------------------------- reliability_figure


def test_reliability_figure_has_a_panel_per_measure_in_order_and_a_line_per_split():
    counts = [0, 0, 5, 10, 20, 0, 40, 80, 30, 15]  # three empty bins
    data = {
        (split, measure): _reliability(counts)
        for split in ("blur", "id", "ood")  # "id" is drawn first although given second
        for measure in ("tu", "au")  # drawn in measure order, EU absent
    }
    figure = reliability_figure(data)
    panels = _axes_by_title(figure)
    assert list(panels) == ["AU", "TU"]
    for title, ax in panels.items():
        assert ax.get_xlabel() == "confidence (Platt-scaled)"
        assert ax.get_ylabel() == "accuracy (rater agreement)"
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        assert to_rgba(ax.title.get_color()) == to_rgba(MEASURE_COLOURS[title.lower()])
        diagonal, *lines = ax.get_lines()
        assert np.array_equal(diagonal.get_ydata(), [0, 1])
        assert [line.get_label() for line in lines] == ["id", "blur", "ood"]
        expected = _reliability(counts)
        non_empty = np.asarray(counts) > 0
        for line in lines:
            assert line.get_marker() == "o"
            assert np.allclose(line.get_xdata(), expected.confidence[non_empty])
            assert np.allclose(line.get_ydata(), expected.accuracy[non_empty])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["perfect calibration", "id", "blur", "ood"]


def test_reliability_figure_histogram_shows_each_splits_pixel_fraction():
    counts = np.array([0, 10, 30, 60], dtype=float)
    figure = reliability_figure({("id", "eu"): _reliability(counts)})
    panel = _axes_by_title(figure)["EU"]
    twins = [ax for ax in figure.axes if ax is not panel]
    assert len(twins) == 1  # the histogram axis, sharing x with the panel
    heights = [patch.get_height() for patch in twins[0].patches]
    assert np.allclose(heights, counts / counts.sum())
    assert twins[0].get_ylim()[1] >= max(heights)


def test_reliability_figure_colours_a_split_the_same_in_every_panel():
    data = {(split, measure): _reliability([1, 2, 3]) for split in ("id", "noise") for measure in MEASURES}
    panels = _axes_by_title(reliability_figure(data))
    assert list(panels) == ["AU", "EU", "TU"]
    colours = [[to_rgba(line.get_color()) for line in ax.get_lines()[1:]] for ax in panels.values()]
    assert colours[0] == colours[1] == colours[2]
    assert colours[0][0] != colours[0][1]


def test_reliability_figure_rejects_empty_input_and_unknown_measures():
    with pytest.raises(ValueError, match="nothing to plot"):
        reliability_figure({})
    with pytest.raises(ValueError, match="unknown measure"):
        reliability_figure({("id", "entropy"): _reliability([1, 2])})


# ---------------------------------------------------------------- maps_figure


def _images(figure: Figure):
    """AxesImages of the map panels, row by row (colourbar axes hold none)."""
    return [image for ax in figure.axes for image in ax.get_images()]


@pytest.mark.parametrize("n_examples", [1, 6])
def test_maps_figure_has_a_row_per_example_with_shared_uncertainty_scale(n_examples):
    examples = [_example(str(i), "id" if i < 3 else "blur", scale=1 + i) for i in range(n_examples)]
    figure = maps_figure(examples)

    images = _images(figure)
    assert len(images) == 4 * n_examples
    uncertainty = [image for i, image in enumerate(images) if i % 4]
    largest = max(float(getattr(e, m).max()) for e in examples for m in MEASURES)
    assert {image.get_clim() for image in uncertainty} == {(0.0, largest)}
    assert all(images[i].get_clim() == (0.0, 1.0) for i in range(0, len(images), 4))

    map_axes = [ax for ax in figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in map_axes[:4]] == ["mean prediction", "AU", "EU", "TU"]
    assert all(ax.get_title() == "" for ax in map_axes[4:])
    assert [map_axes[4 * i].get_ylabel() for i in range(n_examples)] == [
        f"image {e.image_id} ({e.domain})" for e in examples
    ]
    assert all(len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0 for ax in map_axes)

    colourbars = [ax for ax in figure.axes if not ax.get_images()]
    assert len(colourbars) == 1
    assert colourbars[0].get_ylabel() == "nats"


def test_maps_figure_shows_the_foreground_probability_and_the_maps_themselves():
    example = _example("7", classes=2)
    images = _images(maps_figure([example]))
    assert np.allclose(images[0].get_array(), 1 - example.mean[0])
    for image, measure in zip(images[1:], MEASURES, strict=True):
        assert np.array_equal(image.get_array(), getattr(example, measure))
    with_other_background = _images(maps_figure([example], background=1))
    assert np.allclose(with_other_background[0].get_array(), 1 - example.mean[1])


def test_maps_figure_with_all_zero_maps_has_a_positive_scale():
    example = _example("3", scale=0.0)
    uncertainty = _images(maps_figure([example]))[1:]
    low, high = uncertainty[0].get_clim()
    assert low == 0 and high > 0
    assert all(image.get_clim() == (low, high) for image in uncertainty)


def test_maps_figure_ignores_nan_for_the_scale():
    example = _example("4")
    example.au[0, 0] = np.nan
    largest = max(float(np.nanmax(getattr(example, m))) for m in MEASURES)
    uncertainty = _images(maps_figure([example]))[1:]
    assert all(image.get_clim() == (0.0, largest) for image in uncertainty)


def test_maps_figure_rejects_empty_examples_and_a_bad_background():
    with pytest.raises(ValueError, match="examples is empty"):
        maps_figure([])
    with pytest.raises(ValueError, match="background class 3"):
        maps_figure([_example("1")], background=3)


def test_map_example_checks_shapes():
    example = _example("2")
    with pytest.raises(ValueError, match="eu must be"):
        MapExample("2", "id", example.mean, example.au, example.eu[:, :-1], example.tu)
    with pytest.raises(ValueError, match="mean must be"):
        MapExample("2", "id", example.mean[0], example.au, example.eu, example.tu)


def test_figures_save_as_png(tmp_path):
    curves, aurocs = _roc_inputs(["blur"])
    figures = {
        "roc.png": roc_figure(curves, aurocs, aggregation="border"),
        "reliability.png": reliability_figure({("id", "au"): _reliability([3, 4, 5])}),
        "maps.png": maps_figure([_example("1"), _example("2", "blur")]),
    }
    for name, figure in figures.items():
        save_figure(figure, tmp_path / name)
        assert matplotlib.image.imread(tmp_path / name).ndim == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figures)


def test_measure_labels_cover_every_measure():
    assert set(MEASURE_LABELS) == set(MEASURE_COLOURS) == set(MEASURES)


# ---------------------------------------------------------------- import cost


@pytest.mark.parametrize("module", ["uqeval", "uqeval.report"])
def test_importing_the_package_does_not_import_matplotlib(module):
    code = f"import sys, {module}; assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
