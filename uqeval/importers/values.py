"""``uqeval import values``: an experiment folder of the ValUES study's code, as a maps store.

The study's evaluation reads, per test split (a folder such as ``id`` or ``ood``; or the
experiment folder itself when it has no splits):

- ``pred_seg/<image>_<sample><ending>``: one discrete segmentation per sample (and
  ``<image>_mean``, the mean prediction's);
- ``gt_seg/<image>_<rater, two digits><ending>``: one label map per rater;
- ``aleatoric_uncertainty/<image><ending>``, ``epistemic_uncertainty/<image><ending>``
  and ``pred_entropy/<image><ending>`` (or ``predictive_uncertainty/``): the
  uncertainty maps the study computed, AU, EU and TU.

Only maps and discrete samples exist, so the import writes a maps store: the maps as
they are, and ``mean``, the share of the samples that predict each class, from which the
scorer takes ``pred``. The split ``id`` is the in-distribution domain; ``val`` and
``calibration`` are ID images with role ``calibration``; ``ood`` is named by
``--ood-domain`` (``ood`` itself is a reserved name); any other split is a domain of its
own name. Image ids are ``<split>/<image>``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from uqeval.errors import UQEvalError
from uqeval.importers.arrays import ENDINGS, NIFTI_ENDINGS, as_labels, ending, file_shape, nifti_spacing, read_array
from uqeval.importers.contract import ImportSummary
from uqeval.importers.options import Overwrite
from uqeval.importers.writing import DEFAULT_THREADS, Case, Layout, write_cases
from uqeval.names import CALIBRATION, ID_DOMAIN, TEST

#: The study's folders of uncertainty maps → the store's maps; the first folder found counts.
MAP_FOLDERS = {
    "au": ("aleatoric_uncertainty",),
    "eu": ("epistemic_uncertainty",),
    "tu": ("pred_entropy", "predictive_uncertainty"),
}
SAMPLES, RATERS = "pred_seg", "gt_seg"
#: Splits of ID images fitted on.
CALIBRATION_SPLITS = ("val", "calibration")


def import_values(
    folder: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A ValUES experiment folder: split folders (id, ood, …) or one split."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The maps store to write.", show_default=False)],
    classes: Annotated[int, typer.Option(help="Classes of the segmentation (the study's n_classes).")] = 2,
    ood_domain: Annotated[str, typer.Option(help="The domain of the images of the split 'ood'.")] = "shift",
    class_names: Annotated[
        str | None, typer.Option("--class-names", help="Names of the classes, comma-separated.", show_default=False)
    ] = None,
    overwrite: Overwrite = False,
    threads: Annotated[int, typer.Option(help="Threads decoding an image's files at once.")] = DEFAULT_THREADS,
) -> ImportSummary:
    """A ValUES study experiment folder (pred_seg, gt_seg and uncertainty maps per split), as a maps store."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UQEvalError(f"{folder}: no such folder")
    splits = _splits(folder)
    measures = None
    work: list[Case] = []
    raters = None
    shape = None
    first_file = None
    for split, path in splits:
        found = {name: _map_folder(path, name) for name in MAP_FOLDERS}
        present = tuple(name for name in MAP_FOLDERS if found[name] is not None)
        if not present:
            wanted = ", ".join(folder for folders in MAP_FOLDERS.values() for folder in folders)
            raise UQEvalError(f"{path}: holds none of the uncertainty map folders ({wanted})")
        if measures is None:
            measures = present
        elif present != measures:
            raise UQEvalError(
                f"{path}: holds the maps {', '.join(present)} but split {splits[0][0]!r} holds {', '.join(measures)}"
            )
        domain, role = _domain(split, ood_domain)
        for image, samples in _images(path / SAMPLES).items():
            maps_files = {name: _file(found[name], image, name) for name in measures}
            label_files = _labels_of(path / RATERS, image)
            if raters is None:
                raters = len(label_files)
            elif len(label_files) != raters:
                raise UQEvalError(f"{path / RATERS}: image {image!r} has {len(label_files)} rater(s), others {raters}")
            for file in [*maps_files.values(), *samples, *label_files]:
                file_size = file_shape(file)
                if shape is None:
                    shape, first_file = file_size, file
                elif file_size != shape:
                    raise UQEvalError(f"{file}: holds an array of shape {file_size} but {first_file} holds {shape}")
            work.append(
                Case(
                    case_id=f"{split}/{image}" if split else image,
                    domain=domain,
                    role=role,
                    maps={
                        "mean": functools.partial(_mean, samples, classes),
                        **{name: functools.partial(_map, file) for name, file in maps_files.items()},
                    },
                    labels=tuple(functools.partial(_rater, file) for file in label_files),
                    sources={
                        "samples": [str(file) for file in samples],
                        "maps": {name: str(file) for name, file in maps_files.items()},
                        "labels": [str(file) for file in label_files],
                    },
                )
            )
    if len(shape) not in (2, 3):
        raise UQEvalError(f"{first_file}: an array of shape {shape}; expected (y, x) or (z, y, x)")
    names = [name.strip() for name in class_names.split(",")] if isinstance(class_names, str) else class_names
    if names is not None and len(names) != classes:
        raise UQEvalError(f"--class-names: {len(names)} names for {classes} classes")
    spacing = None
    if ending(first_file) in NIFTI_ENDINGS:
        spacing = [round(value, 6) for value in nifti_spacing(first_file)[-len(shape) :]]
    layout = Layout(
        n_classes=classes,
        eu=1,
        au=1,
        spatial=shape,
        raters=raters or 0,
        class_names=names,
        spacing=spacing,
        measures=measures,
    )
    notes = [
        "ValUES folders hold the maps and discrete samples only: the store is a maps store, its `mean` the share "
        "of the samples that predict each class"
    ]
    return write_cases(Path(out), "values", layout, work, overwrite=overwrite, threads=threads, notes=notes)


def _splits(folder: Path) -> list[tuple[str, Path]]:
    """``(split, folder)`` of every split folder (one ``("", folder)`` for a folder without splits)."""
    if (folder / SAMPLES).is_dir():
        return [("", folder)]
    splits = sorted((path.name, path) for path in folder.iterdir() if (path / SAMPLES).is_dir())
    if not splits:
        raise UQEvalError(f"{folder}: holds no {SAMPLES}/ folder, nor split folders (id, ood, …) that hold one")
    return splits


def _domain(split: str, ood_domain: str) -> tuple[str, str]:
    if split in ("", ID_DOMAIN):
        return ID_DOMAIN, TEST
    if split in CALIBRATION_SPLITS:
        return ID_DOMAIN, CALIBRATION
    return (ood_domain if split == "ood" else split), TEST


def _map_folder(split: Path, measure: str) -> Path | None:
    return next((split / name for name in MAP_FOLDERS[measure] if (split / name).is_dir()), None)


def _split_name(name: str) -> tuple[str, str] | None:
    """``(image, suffix)`` of ``<image>_<suffix><ending>``, or None for another file."""
    end = ending(Path(name))
    if end not in ENDINGS or "_" not in name[: -len(end)]:
        return None
    image, suffix = name[: -len(end)].rsplit("_", 1)
    return image, suffix


def _images(folder: Path) -> dict[str, list[Path]]:
    """Image → its sample segmentations (``<image>_<sample>``, the ``_mean`` one left out), sorted."""
    images: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        parts = _split_name(path.name)
        if parts is not None and parts[1] != "mean":
            images.setdefault(parts[0], []).append(path)
    if not images:
        raise UQEvalError(f"{folder}: holds no <image>_<sample> segmentation files")
    return images


def _file(folder: Path, image: str, measure: str) -> Path:
    for end in ENDINGS:
        path = folder / f"{image}{end}"
        if path.is_file():
            return path
    raise UQEvalError(
        f"{folder}: lacks the {measure.upper()} map of image {image!r} ({image}.nii.gz or another ending)"
    )


def _labels_of(folder: Path, image: str) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [path for path in sorted(folder.iterdir()) if (_split_name(path.name) or ("",))[0] == image]
    if not files:
        raise UQEvalError(f"{folder}: lacks the label maps of image {image!r} ({image}_00 …)")
    return files


def _segmentation(path: Path, classes: int) -> np.ndarray:
    labels = as_labels(read_array(path), path)
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise UQEvalError(
            f"{path}: holds the class {int(labels[bad][0])}; with --classes {classes} they are 0..{classes - 1}"
        )
    return labels


def _mean(samples: list[Path], classes: int) -> np.ndarray:
    """``(class, *spatial)``: the share of the samples that predict each class."""
    total = None
    for path in samples:
        one_hot = np.eye(classes, dtype=np.float32)[_segmentation(path, classes)]
        total = one_hot if total is None else total + one_hot
    return np.moveaxis(total / np.float32(len(samples)), -1, 0)


def _map(path: Path) -> np.ndarray:
    array = read_array(path)
    if array.dtype.kind not in "fiu":
        raise UQEvalError(f"{path}: holds {array.dtype} values; expected an uncertainty map (numbers)")
    return array.astype(np.float32)


def _rater(path: Path) -> np.ndarray:
    return as_labels(read_array(path), path)
