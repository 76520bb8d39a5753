"""An example uqeval plugin: an aggregation strategy, ``top_decile``, and an importer, ``npy_cubes``.

The image score is the mean uncertainty of the most uncertain tenth of the image's
pixels: a middle way between ``mean`` (dominated by the many certain pixels) and
``patch_max`` (one window). Install the package and ``uqeval score --aggregation
top_decile`` uses it; ``uqeval plugins`` lists it.

The importer reads a folder of ``<case>.npy`` files, each one case's whole sample cube
``(eu, au, class, y, x)``: ``uqeval import npy_cubes FOLDER --out STORE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

import uqeval

#: Share of the pixels, the most uncertain ones, that the score averages.
SHARE = 0.1


def top_decile(u: np.ndarray, pred: np.ndarray) -> float:
    """Mean of U over the most uncertain 10 % of the pixels."""
    values = np.sort(u, axis=None)
    count = max(1, int(np.ceil(SHARE * values.size)))
    return float(values[-count:].mean(dtype=np.float64))


def import_npy_cubes(
    folder: Annotated[Path, typer.Argument(help="A folder of <case>.npy files, each (eu, au, class, y, x).")],
    out: Annotated[Path, typer.Option("--out", help="The cube store to write.")],
) -> uqeval.ImportSummary:
    """A folder of <case>.npy sample cubes (eu, au, class, y, x), one file per case."""
    files = sorted(Path(folder).glob("*.npy"))
    if not files:
        raise uqeval.UQEvalError(f"{folder}: holds no <case>.npy file")
    shape = np.load(files[0], mmap_mode="r").shape  # the header only
    if len(shape) != 5:
        raise uqeval.UQEvalError(f"{files[0]}: shape {shape}; expected (eu, au, class, y, x)")
    eu, au, n_classes, height, width = shape
    with uqeval.CubeWriter(out, n_classes=n_classes, eu=eu, au=au, height=height, width=width) as writer:
        for file in files:  # one case in memory at a time
            writer.append(np.load(file), image_ids=file.stem)
    return uqeval.ImportSummary(Path(out), len(files))


@uqeval.hookimpl
def uqeval_aggregators():
    return {"top_decile": top_decile}


@uqeval.hookimpl
def uqeval_importers():
    return {"npy_cubes": import_npy_cubes}
