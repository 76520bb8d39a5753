"""Tests of :mod:`uqeval.report.compare_plots`: the readability of the comparison figures.

Labels beside their points, inside their panel and clear of one another; identical
models drawn side by side under one label; a legend that names what is drawn; a title
that promises error bars only when there are several seeds; collapsed bars labelled.
"""

from __future__ import annotations

import itertools
import json
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_text_on_canvas
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

from uqeval import save_comparison
from uqeval.comparison import compare
from uqeval.ownership import REPORT_MARK
from uqeval.report.compare_plots import (
    DELTA_POSITIVE_GID,
    DELTA_ZERO_GID,
    MAX_NAMED_GROUPS,
    collapse_figure,
    entanglement_figure,
    group_labels,
)

CORRECT = {"oodd": "eu", "amb": "au", "cal": "tu"}
WRONG = {"oodd": "au", "amb": "eu", "cal": "au"}
PANELS = [("oodd", "ood"), ("amb", "id"), ("amb", "ood"), ("cal", "id"), ("cal", "ood")]


def _run(folder: Path, group: str, seed: int | None, values: dict, collapse: dict | None = None) -> Path:
    """A run folder whose ``scores.json`` has ``(u_correct, u_wrong)`` per ``(task, split)``."""
    entanglement = [
        {
            "task": task,
            "split": split,
            "correct": CORRECT[task],
            "wrong": WRONG[task],
            "u_correct": u_correct,
            "u_wrong": u_wrong,
            "delta": None if u_correct is None else 0.1,
        }
        for (task, split), (u_correct, u_wrong) in values.items()
    ]
    collapse = collapse if collapse is not None else {"id": 0.1, "ood": 0.2}
    document = {
        "schema": "uqeval.scores/1",
        "store": "/data/model.zarr",
        "model": {"au_method": "ssn", "eu_method": "ensemble", "model": group, "dataset": "d", "seed": seed},
        "conventions": {"aggregation": "border"},
        "n_images": {"id": 10, "blur": 10},
        "results": [],
        "entanglement": entanglement,
        "collapse": [
            {"split": split, "mean_au": 0.1, "mean_eu": 0.1 * ratio, "eu_over_au": ratio}
            for split, ratio in collapse.items()
        ],
        "notes": [],
    }
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text(json.dumps(document))
    return folder


def _values(rng: np.random.Generator) -> dict:
    values = {}
    for task, split in PANELS:
        scale = 0.05 if task == "cal" else 0.6
        values[(task, split)] = (float(scale * rng.uniform(0.2, 1)), float(scale * rng.uniform(0.2, 1)))
    return values


@pytest.fixture
def with_copy(tmp_path):
    """Three models, the second an identical copy of the first, one seed each."""
    rng = np.random.default_rng(0)
    first, other = _values(rng), _values(rng)
    folders = [
        _run(tmp_path / "a", "A", 0, first),
        _run(tmp_path / "a2", "A2", 0, first),
        _run(tmp_path / "b", "B", 0, other),
    ]
    return compare(folders)


def _labels(ax) -> list[Annotation]:
    return [text for text in ax.texts if isinstance(text, Annotation)]


def _panels(figure: Figure):
    return [ax for ax in figure.axes if ax.get_title()]


# ---------------------------------------------------------------- entanglement_figure


def test_identical_models_are_drawn_side_by_side_under_one_label(with_copy):
    figure = entanglement_figure(with_copy)
    figure.canvas.draw()
    for ax, (task, split) in zip(_panels(figure), PANELS, strict=True):
        texts = sorted(label.get_text() for label in _labels(ax))
        assert texts == sorted(
            ["A, A2" if with_copy.groups.index("A") < with_copy.groups.index("A2") else "A2, A", "B"]
        )
        merged = next(label for label in _labels(ax) if "," in label.get_text())
        point = with_copy.point("A", task, split)
        assert merged.xy == pytest.approx((point["u_wrong"], point["u_correct"]))
        # both markers are drawn, a marker's width apart on the screen
        markers = [
            line
            for line in ax.get_lines()
            if line.get_marker() not in ("None", "", None) and line.get_gid() != DELTA_ZERO_GID
        ]
        at_a = [line for line in markers if line.get_xdata()[0] == pytest.approx(point["u_wrong"])]
        assert len(at_a) == 2
        screen = [line.get_transform().transform((line.get_xdata()[0], line.get_ydata()[0])) for line in at_a]
        assert abs(screen[0][0] - screen[1][0]) > 3 and screen[0][1] == pytest.approx(screen[1][1])
        assert {to_rgba(line.get_color()) for line in at_a}.__len__() == 2


def test_labels_stay_inside_their_panel_clear_of_one_another(tmp_path):
    rng = np.random.default_rng(4)
    centre = _values(rng)
    folders = []
    for index in range(12):  # twelve models crowded around one place: numbered labels
        values = {key: (c + 0.03 * rng.normal(), w + 0.03 * rng.normal()) for key, (c, w) in centre.items()}
        folders.append(_run(tmp_path / f"m{index}", f"model-{index:02d}", 0, values))
    figure = entanglement_figure(compare(folders))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for ax in _panels(figure):
        frame = ax.get_window_extent(renderer)
        # the text alone: an annotation's own extent takes in its leader line
        boxes = [Text.get_window_extent(label, renderer) for label in _labels(ax)]
        named = [name for label in _labels(ax) for name in label.get_text().split(", ")]
        assert sorted(named, key=int) == [str(index + 1) for index in range(12)]  # every model, once
        for box in boxes:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        assert not any(first.overlaps(second) for first, second in itertools.combinations(boxes, 2))
    assert_text_on_canvas(figure)


def test_the_legend_names_every_model_in_its_colour_and_marker(with_copy):
    figure = entanglement_figure(with_copy)
    (legend,) = figure.legends
    texts = [text.get_text() for text in legend.get_texts()]
    assert texts == [*with_copy.groups, "Δ = 0 (U_correct = U_wrong)", "Δ > 0: correct measure ahead"]
    handles = dict(zip(texts, legend.legend_handles, strict=True))
    ax = _panels(figure)[0]
    point = with_copy.point("B", "oodd", "ood")
    (b_marker,) = [line for line in ax.get_lines() if line.get_xdata()[0] == pytest.approx(point["u_wrong"])]
    assert handles["B"].get_marker() == b_marker.get_marker()
    assert to_rgba(handles["B"].get_color()) == to_rgba(b_marker.get_color())
    assert handles["A"].get_marker() != handles["B"].get_marker()  # apart in greyscale too
    assert all(ax.get_legend() is None for ax in figure.axes)


def test_many_or_long_names_are_numbered_with_the_names_in_the_legend(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"group-{index}" for index in range(MAX_NAMED_GROUPS + 1)]
    comparison = compare([_run(tmp_path / name, name, 0, _values(rng)) for name in names])
    figure = entanglement_figure(comparison)
    numbers = {str(index + 1) for index in range(len(names))}
    for ax in _panels(figure):
        assert {label.get_text() for label in _labels(ax)} == numbers
    (legend,) = figure.legends
    texts = [text.get_text() for text in legend.get_texts()]
    assert texts[: len(names)] == [f"{index + 1}  {group}" for index, group in enumerate(comparison.groups)]
    assert group_labels(["short", "x" * 15]) == {"short": "1", "x" * 15: "2"}
    assert group_labels(["short", "x" * 14]) == {"short": "short", "x" * 14: "x" * 14}


def test_the_title_promises_error_bars_only_with_several_seeds(tmp_path):
    rng = np.random.default_rng(2)
    single = compare([_run(tmp_path / g, g, 0, _values(rng)) for g in "AB"])
    assert "interval" not in entanglement_figure(single).get_suptitle()
    several = compare([_run(tmp_path / f"{g}{s}", g, s, _values(rng)) for g in "CD" for s in range(2)])
    title = entanglement_figure(several).get_suptitle()
    assert "mean over seeds ± 95 % t-interval" in title and "for models" not in title
    mixed = compare(
        [*(tmp_path / f"{g}{s}" for g in "CD" for s in range(2)), _run(tmp_path / "E", "E", 0, _values(rng))]
    )
    assert "for models with several" in entanglement_figure(mixed).get_suptitle()


def test_notes_sit_above_the_panel_and_the_better_half_is_shaded(with_copy):
    figure = entanglement_figure(with_copy)
    renderer = figure.canvas.get_renderer()
    for ax, (task, _split) in zip(_panels(figure), PANELS, strict=True):
        notes = [text for text in ax.texts if not isinstance(text, Annotation)]
        if task == "cal":
            (note,) = notes
            assert note.get_text() == "ACE: lower is better"
            assert note.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1  # off the points
        else:
            assert not notes
        (shade,) = [patch for patch in ax.patches if patch.get_gid() == DELTA_POSITIVE_GID]
        low, high = ax.get_xlim()
        margin = 0.01 * (high - low)
        upper_left, lower_right = (low + margin, high - margin), (high - margin, low + margin)
        inside = shade.get_path().contains_point
        if task == "cal":  # lower is better: Δ > 0 below the line
            assert inside(lower_right) and not inside(upper_left)
        else:
            assert inside(upper_left) and not inside(lower_right)
        (line,) = [line for line in ax.get_lines() if line.get_gid() == DELTA_ZERO_GID]
        assert line.get_linestyle() == "--"


def test_entanglement_figure_with_long_names_keeps_all_text_on_the_canvas(tmp_path):
    rng = np.random.default_rng(3)
    names = ["prob_unet+swag_diag (tiny)", "diffusion+ensemble (tiny)", "softmax+dropout (tiny)"]
    comparison = compare([_run(tmp_path / str(i), name, 0, _values(rng)) for i, name in enumerate(names)])
    assert_text_on_canvas(entanglement_figure(comparison))
    assert_text_on_canvas(collapse_figure(comparison))


# ---------------------------------------------------------------- collapse_figure


def test_collapse_figure_writes_the_value_of_bars_too_short_to_see(tmp_path):
    folders = [
        _run(tmp_path / "a", "A", 0, {}, collapse={"id": 0.5, "blur": 0.6, "ood": 0.55}),
        _run(tmp_path / "c", "Collapsed", 0, {}, collapse={"id": 0.0061, "blur": 0.004, "ood": 0.005}),
    ]
    figure = collapse_figure(compare(folders))
    (ax,) = figure.axes
    written = sorted(text.get_text() for text in ax.texts)
    assert written == ["0.004", "0.005", "0.0061"]  # the collapsed model's, not A's
    # one hatch and colour per split, the same for every model
    bars = ax.containers
    assert [container.get_label() for container in bars] == ["id", "blur", "ood"]
    assert len({container.patches[0].get_hatch() for container in bars}) == 3
    assert len({to_rgba(container.patches[0].get_facecolor()) for container in bars}) == 3
    legend = ax.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["EU = AU", "id", "blur", "ood"]
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the bars, not on them
    assert_text_on_canvas(figure)


# ---------------------------------------------------------------- saving


def test_save_comparison_writes_each_figure_as_png_and_svg(with_copy, tmp_path):
    written = save_comparison(with_copy, tmp_path / "out")
    figures = {"entanglement.png", "entanglement.svg", "collapse.png", "collapse.svg"}
    assert figures <= set(written)
    assert {path.name for path in (tmp_path / "out").iterdir()} == {*written, REPORT_MARK}
    for name in ("entanglement.svg", "collapse.svg"):
        assert ElementTree.parse(written[name]).getroot().tag.endswith("svg")


def test_labels_of_identical_models_leave_the_layout_alone(tmp_path):
    """Two copies of one run put one label on every panel's single point; where that label
    starts, before it is placed, must not shrink the panels (matplotlib warned that
    constrained layout collapsed the axes to zero)."""
    values = _values(np.random.default_rng(1))
    runs = [_run(tmp_path / "a", "=1+1", 0, values), _run(tmp_path / "b", "-cmd|calc", 0, values)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = entanglement_figure(compare(runs))
    assert all(ax.get_window_extent().width > 50 for ax in _panels(figure))
