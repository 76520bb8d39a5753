"""Test helpers: the real ``uqeval`` entry point in a subprocess, and synthetic stores written image by image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uqeval import CubeWriter
from uqeval.cube import softmax_array
from uqeval.plugins import LOAD_PLUGINS_ENV
from uqeval.synth import image_plan, synthesize_image

#: The markers of the test being set up or run (kept by ``tests/conftest.py``).
current_test_markers: set[str] = set()


def cli_env(*paths: Path, columns: int = 200, **extra: str) -> dict[str, str]:
    """A user's environment with ``paths`` on ``PYTHONPATH`` and every plugin allowed."""
    env = {key: value for key, value in os.environ.items() if key != LOAD_PLUGINS_ENV}
    outer = [env.pop("PYTHONPATH")] if env.get("PYTHONPATH") else []
    if paths or outer:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *outer])
    env.update({"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns), **extra})
    return env


def run_cli(
    *args: str,
    paths: tuple[Path, ...] = (),
    columns: int = 200,
    plugins: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, as a user runs it.

    ``paths`` go on ``PYTHONPATH``; ``plugins`` (when given) is ``UQEVAL_LOAD_PLUGINS``,
    the entry points allowed to load; ``env`` adds variables; ``cwd`` is the working folder.
    """
    if "cli" not in current_test_markers:
        raise AssertionError(
            "run_cli starts the command line in a subprocess (about 1.5 s): mark the test @pytest.mark.cli "
            "so that the quick loop (-m 'not slow and not cli') can leave it out"
        )
    extra = dict(env or {})
    if plugins is not None:
        extra[LOAD_PLUGINS_ENV] = plugins
    return subprocess.run(
        [sys.executable, "-m", "uqeval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=cli_env(*paths, columns=columns, **extra),
        cwd=cwd,
    )


def write_synthetic_store(
    path: Path,
    *,
    layout: list[tuple[str, str]] | None = None,
    n_images: int = 24,
    scenario: str = "disentangled",
    size: int = 32,
    eu: int = 3,
    au: int = 4,
    raters: int = 3,
    chunk_images: int = 4,
    variable: str = "probs",
    dtype: str = "float16",
    from_logits: bool = False,
    unanimous: Callable[[int, str], bool] | None = None,
    image_seed: int = 0,
    **attrs: object,
) -> Path:
    """A small synthetic store written through :class:`CubeWriter`, several images per chunk.

    ``layout`` gives ``(domain, role)`` per image (default :func:`image_plan`). With
    ``variable="logits"`` the store holds ``log(clip(probs))``; ``from_logits`` stores the
    softmax of those same logits as ``probs`` (so the two stores hold the same cubes).
    ``unanimous(index, domain)`` picks images whose raters all copy the first one (no
    rater variance: NCC is undefined there). ``image_seed`` seeds the images; ``attrs`` (the model's identity, e.g.
    ``au_method``) go to the store. Unlike :func:`uqeval.make_synthetic_cube`, which
    fixes the layout, every choice here is the test's.
    """
    layout = layout if layout is not None else image_plan(n_images)
    streams = np.random.SeedSequence(image_seed).spawn(len(layout))
    with CubeWriter(
        path,
        n_classes=2,
        eu=eu,
        au=au,
        height=size,
        width=size,
        raters=raters,
        variable=variable,
        dtype=dtype,
        chunk_images=chunk_images,
        **attrs,
    ) as writer:
        for index, ((domain, role), stream) in enumerate(zip(layout, streams, strict=True)):
            probs, labels = synthesize_image(
                np.random.default_rng(stream), scenario, domain, size=size, eu=eu, au=au, raters=max(raters, 2)
            )
            if unanimous is not None and unanimous(index, domain):
                labels[:] = labels[0]
            values = probs[None]
            if variable == "logits" or from_logits:
                values = np.log(np.clip(values, 1e-6, None)).astype(np.float32)
                if from_logits:
                    values = softmax_array(values)
            writer.append(
                **{variable: values},
                labels=labels[None, :raters] if raters else None,
                domain=domain,
                role=role,
                image_ids=[f"{domain}-{index:03d}"],
            )
    return path


def assert_text_on_canvas(figure) -> None:
    """No text that ``figure`` draws (with the Agg renderer) reaches past the canvas.

    Only texts actually drawn count: an axis keeps tick labels beyond its limits that it
    does not draw.
    """
    from unittest import mock

    from matplotlib.text import Text

    drawn = []
    draw = Text.draw

    def recording(text, renderer):
        drawn.append(text)
        return draw(text, renderer)

    with mock.patch.object(Text, "draw", recording):
        figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox
    checked = 0
    for text in drawn:
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        inside = canvas.x0 - 0.5 <= box.x0 and box.x1 <= canvas.x1 + 0.5
        inside &= canvas.y0 - 0.5 <= box.y0 and box.y1 <= canvas.y1 + 0.5
        assert inside, f"text {text.get_text()!r} at {box.extents} is outside the canvas {canvas.extents}"
        checked += 1
    assert checked > 0


def note_texts(scores) -> list[str]:
    """The notes of a :class:`uqeval.Scores` as the sentences ``scores.json`` keeps."""
    return [str(note) for note in scores.notes]


def reference_sample_scores(cubes: np.ndarray, background: int = 0) -> dict[str, np.ndarray]:
    """``pairwise_dice`` and ``cov`` of each cube (image, eu, au, class, *spatial), written
    from their definitions in docs/metrics.md with ``itertools`` and ``np.argmax``."""
    import itertools

    pairwise_dice, cov = [], []
    for cube in np.asarray(cubes, dtype=np.float64):
        members = cube.mean(axis=1).argmax(axis=1)  # (eu, *spatial): each member's prediction
        dices = []
        for first, second in itertools.combinations(members, 2):
            per_class = []
            for c in range(cube.shape[2]):
                if c == background:
                    continue
                a, b = first == c, second == c
                total = a.sum() + b.sum()
                per_class.append(1.0 if total == 0 else 2.0 * (a & b).sum() / total)
            dices.append(np.mean(per_class))
        pairwise_dice.append(1.0 - np.mean(dices) if dices else np.nan)
        samples = cube.argmax(axis=2).reshape(cube.shape[0] * cube.shape[1], -1)  # every sample's prediction
        sizes = (samples != background).sum(axis=1)
        cov.append(sizes.std() / sizes.mean() if sizes.mean() > 0 else 0.0)
    return {"pairwise_dice": np.array(pairwise_dice), "cov": np.array(cov)}
