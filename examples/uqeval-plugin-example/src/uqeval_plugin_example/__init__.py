"""An example uqeval plugin: an aggregation strategy, ``top_decile``, an importer, ``npy_cubes``,
and a task, ``qubiq``.

The image score is the mean uncertainty of the most uncertain tenth of the image's
pixels: a middle way between ``mean`` (dominated by the many certain pixels) and
``patch_max`` (one window). Install the package and ``uqeval score --aggregation
top_decile`` uses it; ``uqeval plugins`` lists it.

The importer reads a folder of ``<case>.npy`` files, each one case's whole sample cube
``(eu, au, class, y, x)``: ``uqeval import npy_cubes FOLDER --out STORE``.

The task scores the mean prediction as the QUBIQ challenge scores soft segmentations:
the foreground probability and the raters' soft label (the fraction of raters who call
a pixel foreground) are each thresholded at 0.1, 0.2, …, 0.9, and the Dice of the two
masks is averaged over the thresholds (two empty masks: Dice 1). It shows what a task
needs: per-image sums from each batch (``statistics``) and rows from every image's sums
(``rows``). ``uqeval score --tasks qubiq`` scores it; ``uqeval plugins`` lists it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

import uqeval

#: Share of the pixels, the most uncertain ones, that the score averages.
SHARE = 0.1
#: QUBIQ's thresholds of the soft prediction and the soft label.
THRESHOLDS = np.round(np.arange(1, 10) / 10, 1)


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


def qubiq_sums(inputs: uqeval.TaskInputs) -> dict[str, np.ndarray]:
    """Per image and threshold, the Dice sums |P ∩ L|, |P| and |L| of the thresholded
    soft prediction P and soft label L, over the pixels every rater labelled.

    Sums over pixels, so that a volume read slab by slab adds up to the whole.
    """
    labels = inputs.labels  # (image, rater, [z,] y, x); -1 where ignored
    probability = 1.0 - inputs.mean[:, inputs.background]  # (image, [z,] y, x)
    valid = (labels >= 0).all(axis=1)
    soft_label = (labels != inputs.background).mean(axis=1, dtype=np.float64)  # read where valid only
    axes = tuple(range(1, probability.ndim))
    sums = np.zeros((len(probability), len(THRESHOLDS), 3))
    for column, threshold in enumerate(THRESHOLDS):
        predicted = (probability > threshold) & valid
        labelled = (soft_label > threshold) & valid
        sums[:, column, 0] = (predicted & labelled).sum(axis=axes)
        sums[:, column, 1] = predicted.sum(axis=axes)
        sums[:, column, 2] = labelled.sum(axis=axes)
    return {"dice_sums": sums}


def qubiq_rows(tables: uqeval.TaskTables) -> None:
    """One row per split: the mean over its images of each image's thresholded soft Dice."""
    sums = tables.statistics.tasks["qubiq"]["dice_sums"]
    intersection, predicted, labelled = sums[..., 0], sums[..., 1], sums[..., 2]
    size = predicted + labelled
    dice = np.where(size > 0, 2 * intersection / np.where(size > 0, size, 1), 1.0)  # both empty: 1
    per_image = dice.mean(axis=1)
    for split, chosen in tables.splits.items():
        tables.add("qubiq", split, "mean", "none", "soft_dice", float(per_image[chosen].mean()))


QUBIQ = uqeval.Task(
    "qubiq",
    "QUBIQ soft segmentation",
    "soft_dice",
    correct=None,
    wrong=(),
    lower_is_better=False,
    needs_labels=True,
    needs_ood=False,
    rows=qubiq_rows,
    statistics=qubiq_sums,
)


@uqeval.hookimpl
def uqeval_aggregators():
    return {"top_decile": top_decile}


@uqeval.hookimpl
def uqeval_importers():
    return {"npy_cubes": import_npy_cubes}


@uqeval.hookimpl
def uqeval_tasks():
    return {"qubiq": QUBIQ}
