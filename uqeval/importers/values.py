"""``uqeval import values``: an experiment folder of the ValUES study's code, as a cube or a maps store.

The study's code writes, per test split (a folder such as ``id`` or ``ood``; or the
experiment folder itself when it has no splits):

- ``pred_seg/<image>_<sample><ending>``: one discrete segmentation per sample, numbered
  from ``01`` (and ``<image>_mean``, the mean prediction's);
- ``pred_prob/<image>_<sample>_<class><ending>``: each sample's probability of each
  class, both numbered from ``01`` (and ``<image>_mean_<class>``, their mean), when the
  model's test run saved them;
- ``gt_seg/<image>_<rater, two digits><ending>``: one label map per rater;
- ``aleatoric_uncertainty/<image><ending>``, ``epistemic_uncertainty/<image><ending>``
  and ``pred_entropy/<image><ending>`` (or ``predictive_uncertainty/``): the
  uncertainty maps the study computed, AU, EU and TU.

With ``pred_prob/`` in every split, the import writes a cube: each image's samples as
``au`` (``eu = 1``: the samples are decomposed as members, as the study decomposes its
predictions), which the scorer decomposes itself; the study's maps are then not read.
Without it (or with one sample per image: nothing to decompose), it writes a maps store:
the maps as they are, and ``mean``, the share of the samples that predict each class,
from which the scorer takes ``pred``. The split ``id`` is the in-distribution domain;
``val`` and ``calibration`` are ID images with role ``calibration``; ``ood`` is named by
``--ood-domain`` (``ood`` itself is a reserved name); any other split is a domain of its
own name. Image ids are ``<split>/<image>``.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from uqeval.errors import UQEvalError
from uqeval.importers.arrays import (
    ENDINGS,
    NIFTI_ENDINGS,
    as_labels,
    as_probabilities,
    ending,
    file_shape,
    nifti_spacing,
    read_array,
)
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
SAMPLES, RATERS, PROBS = "pred_seg", "gt_seg", "pred_prob"
#: How far from 1 a sample's probabilities may sum over the classes (float16 files round).
SUM_TOLERANCE = 1e-2
#: Splits of ID images fitted on.
CALIBRATION_SPLITS = ("val", "calibration")


def import_values(
    folder: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A ValUES experiment folder: split folders (id, ood, …) or one split."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The store to write.", show_default=False)],
    classes: Annotated[
        int | None,
        typer.Option(help="Classes of the segmentation (the study's n_classes); default: pred_prob/'s, else 2."),
    ] = None,
    ood_domain: Annotated[str, typer.Option(help="The domain of the images of the split 'ood'.")] = "shift",
    class_names: Annotated[
        str | None, typer.Option("--class-names", help="Names of the classes, comma-separated.", show_default=False)
    ] = None,
    overwrite: Overwrite = False,
    threads: Annotated[int, typer.Option(help="Threads decoding an image's files at once.")] = DEFAULT_THREADS,
) -> ImportSummary:
    """A ValUES study experiment folder: a cube store from its pred_prob/ folders, else a maps store of its maps."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UQEvalError(f"{folder}: no such folder")
    splits = _splits(folder)
    images = {split: _images(path / SAMPLES) for split, path in splits}
    kind, notes = _store_kind(splits, images)
    if kind == "cube":
        probabilities = {split: _probability_files(path / PROBS) for split, path in splits}
        n_classes = _classes_of(probabilities, images, splits, classes)
        work, n_samples = _cube_cases(splits, images, probabilities, n_classes, ood_domain, threads)
    else:
        n_classes = 2 if classes is None else classes
        work, measures = _maps_cases(splits, images, n_classes, ood_domain)
    shape, first_file = _common_shape(work)
    if len(shape) not in (2, 3):
        raise UQEvalError(f"{first_file}: an array of shape {shape}; expected (y, x) or (z, y, x)")
    names = [name.strip() for name in class_names.split(",")] if isinstance(class_names, str) else class_names
    if names is not None and len(names) != n_classes:
        raise UQEvalError(f"--class-names: {len(names)} names for {n_classes} classes")
    spacing = None
    if ending(first_file) in NIFTI_ENDINGS:
        spacing = [round(value, 6) for value in nifti_spacing(first_file)[-len(shape) :]]
    sizes = {"eu": 1, "au": n_samples} if kind == "cube" else {"eu": 1, "au": 1, "measures": measures}
    layout = Layout(
        n_classes=n_classes,
        spatial=shape,
        raters=len(work[0].labels),
        class_names=names,
        spacing=spacing,
        **sizes,
    )
    return write_cases(Path(out), "values", layout, work, overwrite=overwrite, threads=threads, notes=notes)


def _store_kind(splits: list[tuple[str, Path]], images: dict[str, dict[str, list[Path]]]) -> tuple[str, list[str]]:
    """``cube`` when every split has ``pred_prob/`` and the images two or more samples,
    else ``maps``; with the note that says which, and what of the folder is not imported."""
    with_probabilities = [split for split, path in splits if (path / PROBS).is_dir()]
    maps_note = (
        "the store is a maps store: the study's uncertainty maps as they are, and `mean` the share of the "
        "samples that predict each class"
    )
    if not with_probabilities:
        return "maps", [f"ValUES folders without {PROBS}/ hold the maps and discrete samples only: {maps_note}"]
    if len(with_probabilities) < len(splits):
        lacking = [_shown(split) for split, _ in splits if split not in with_probabilities]
        text = (
            f"{PROBS}/ is in split(s) {', '.join(map(_shown, with_probabilities))} but not in "
            f"{', '.join(lacking)}, and a store is one kind: {maps_note}"
        )
        return "maps", [text]
    first_split = splits[0][0]
    n_samples = len(next(iter(images[first_split].values())))
    if n_samples < 2:
        text = (
            f"{PROBS}/ holds one prediction per image (a deterministic model), which has no AU and EU to "
            f"decompose: {maps_note}"
        )
        return "maps", [text]
    present = sorted(
        {name for _, path in splits for folders in MAP_FOLDERS.values() for name in folders if (path / name).is_dir()}
    )
    text = (
        f"{PROBS}/ holds each sample's probabilities: the store is a cube (eu 1 × au {n_samples}; as in the study, "
        "the samples are decomposed as members), which uqeval decomposes itself"
    )
    if present:
        text += f"; the study's maps ({', '.join(f'{name}/' for name in present)}) are not imported"
    return "cube", [text]


def _shown(split: str) -> str:
    return repr(split) if split else "the folder itself"


def _maps_cases(
    splits: list[tuple[str, Path]], images: dict[str, dict[str, list[Path]]], classes: int, ood_domain: str
) -> tuple[list[Case], tuple[str, ...]]:
    """The cases of a maps store: each image's maps, the share of its samples per class,
    its raters' labels; and the maps every split holds."""
    measures = None
    work = []
    for split, path in splits:
        found = {name: _map_folder(path, name) for name in MAP_FOLDERS}
        present = tuple(name for name in MAP_FOLDERS if found[name] is not None)
        if not present:
            wanted = ", ".join(folder for folders in MAP_FOLDERS.values() for folder in folders)
            raise UQEvalError(f"{path}: holds none of the uncertainty map folders ({wanted}), nor {PROBS}/")
        if measures is None:
            measures = present
        elif present != measures:
            raise UQEvalError(
                f"{path}: holds the maps {', '.join(present)} but split {splits[0][0]!r} holds {', '.join(measures)}"
            )
        domain, role = _domain(split, ood_domain)
        for image, samples in images[split].items():
            maps_files = {name: _file(found[name], image, name) for name in measures}
            label_files = _labels_of(path / RATERS, image)
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
    return work, measures


def _cube_cases(
    splits: list[tuple[str, Path]],
    images: dict[str, dict[str, list[Path]]],
    probabilities: dict[str, dict[tuple[str, str], dict[int, Path]]],
    classes: int,
    ood_domain: str,
    threads: int,
) -> tuple[list[Case], int]:
    """The cases of a cube store: each image's samples ``(au, class, *spatial)`` from
    ``pred_prob/`` (one member), its raters' labels; and the number of samples."""
    n_samples = None
    work = []
    for split, path in splits:
        domain, role = _domain(split, ood_domain)
        for image, samples in images[split].items():
            names = [_split_name(file.name)[1] for file in samples]
            case_id = f"{split}/{image}" if split else image
            if n_samples is None:
                n_samples, first = len(names), case_id
            elif len(names) != n_samples:
                raise UQEvalError(
                    f"{path / SAMPLES}: image {image!r} has {len(names)} sample(s) but {first!r} has {n_samples}; "
                    "a cube holds as many samples for every image"
                )
            files = [_sample_files(path / PROBS, probabilities[split], image, name, classes) for name in names]
            label_files = _labels_of(path / RATERS, image)
            work.append(
                Case(
                    case_id=case_id,
                    domain=domain,
                    role=role,
                    members=(functools.partial(_samples, files, case_id, threads),),
                    labels=tuple(functools.partial(_rater, file) for file in label_files),
                    sources={
                        "probs": [[str(file) for file in sample] for sample in files],
                        "labels": [str(file) for file in label_files],
                    },
                )
            )
    return work, n_samples


def _common_shape(work: list[Case]) -> tuple[tuple[int, ...], Path]:
    """The one array shape of every file the cases read (from the headers), and the first file;
    the cases' rater counts agree."""
    shape = first_file = None
    raters, first_case = len(work[0].labels), work[0].case_id
    for case in work:
        if len(case.labels) != raters:
            raise UQEvalError(f"image {case.case_id!r} has {len(case.labels)} rater(s) but {first_case!r} {raters}")
        sources = case.sources
        files = [
            *(path for sample in sources.get("probs", []) for path in sample),
            *sources.get("maps", {}).values(),
            *sources.get("samples", []),
            *sources["labels"],
        ]
        for file in map(Path, files):
            file_size = file_shape(file)
            if shape is None:
                shape, first_file = file_size, file
            elif file_size != shape:
                raise UQEvalError(f"{file}: holds an array of shape {file_size} but {first_file} holds {shape}")
    return shape, first_file


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


def _probability_files(folder: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """``(image, sample)`` → class index (from 0) → file, of ``<image>_<sample>_<class>``
    files; the ``_mean_<class>`` files and others are left out."""
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        parts = _split_name(path.name)
        if parts is None or not parts[1].isdigit() or "_" not in parts[0]:
            continue
        image, sample = parts[0].rsplit("_", 1)
        if sample != "mean":
            found.setdefault((image, sample), {})[int(parts[1]) - 1] = path
    return found


def _classes_of(
    probabilities: dict[str, dict[tuple[str, str], dict[int, Path]]],
    images: dict[str, dict[str, list[Path]]],
    splits: list[tuple[str, Path]],
    classes: int | None,
) -> int:
    """The classes of the first image's first sample in ``pred_prob/`` (``01`` … ``C``),
    which ``--classes``, when given, must equal."""
    split, path = splits[0]
    image, samples = next(iter(images[split].items()))
    sample = _split_name(samples[0].name)[1]
    found = probabilities[split].get((image, sample), {})
    n_found = len(found)
    if sorted(found) != list(range(n_found)) or n_found < 2:
        listed = ", ".join(file.name for file in found.values()) or "none"
        raise UQEvalError(
            f"{path / PROBS}: the class files of image {image!r}, sample {sample} are {listed}; expected "
            f"{image}_{sample}_01 … {image}_{sample}_<C> for the C ≥ 2 classes"
        )
    if classes is not None and classes != n_found:
        raise UQEvalError(
            f"--classes {classes}, but {path / PROBS} holds {n_found} class files per sample", parameter="classes"
        )
    return n_found


def _sample_files(
    folder: Path, found: dict[tuple[str, str], dict[int, Path]], image: str, sample: str, classes: int
) -> list[Path]:
    """The ``classes`` files of one sample of ``image`` in ``pred_prob/``, in class order; a missing one is named."""
    by_class = found.get((image, sample), {})
    for index in range(classes):
        if index not in by_class:
            raise UQEvalError(
                f"{folder}: lacks the probabilities of class {index + 1} of image {image!r}, sample {sample} "
                f"({image}_{sample}_{index + 1:02d}.nii.gz or another ending)"
            )
    extra = sorted(set(by_class) - set(range(classes)))
    if extra:
        raise UQEvalError(
            f"{folder}: {by_class[extra[0]].name} is a class file beyond the {classes} classes of the others"
        )
    return [by_class[index] for index in range(classes)]


def _samples(files: list[list[Path]], case_id: str, threads: int) -> np.ndarray:
    """One image's samples ``(au, class, *spatial)`` as float32 probabilities, one file per
    sample and class, decoded in ``threads`` threads.

    Raises
    ------
    UQEvalError
        When a sample's probabilities do not sum to 1 over the classes.
    """
    n_classes = len(files[0])
    samples = None
    with ThreadPoolExecutor(max_workers=threads) as pool:
        flat = [path for sample in files for path in sample]
        for index, array in enumerate(pool.map(lambda path: as_probabilities(read_array(path), path), flat)):
            if samples is None:
                samples = np.empty((len(files), n_classes, *array.shape), dtype=np.float32)
            samples[divmod(index, n_classes)] = array
    for sample, paths in zip(samples, files, strict=True):
        sums = sample.sum(axis=0, dtype=np.float64)
        low, high = float(sums.min()), float(sums.max())
        if not (abs(low - 1) <= SUM_TOLERANCE and abs(high - 1) <= SUM_TOLERANCE):
            raise UQEvalError(
                f"{paths[0].parent}: the probabilities of image {case_id!r} in {paths[0].name} … {paths[-1].name} "
                f"sum to {low:.3g}..{high:.3g} over the classes, not 1"
            )
    return samples


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
