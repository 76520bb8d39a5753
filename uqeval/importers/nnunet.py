"""``uqeval import nnunet``: nnU-Net v2 prediction folders, one per ensemble member.

``nnUNetv2_predict ... -f i --save_probabilities`` writes, per case, ``<case>.npz``
(key ``probabilities``, shape ``(class, *spatial)``), ``<case>.pkl`` (properties) and the
segmentation ``<case><file_ending>``, and copies ``dataset.json`` and ``plans.json``
beside them. nnU-Net averages logits over folds and never writes one member's
probabilities, so each fold (or seed) predicted into its own folder is one member.

Axis order: the ``.npz`` arrays follow the image reader named by ``plans.json``
(``image_reader_writer``). The default, ``SimpleITKIO``, and ``NibabelIO`` both give
``(z, y, x)``, the reverse of nibabel's ``(x, y, z)``; NIfTI labels are read with
nibabel and reversed to match (``NibabelIOWithReorient`` reorients them to RAS first).
A 2D prediction, ``(class, 1, y, x)``, becomes a 2D image. Spacing comes from the NIfTI
headers of the segmentations (or labels). ``.pkl`` files are never opened.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from uqeval.errors import UQEvalError
from uqeval.importers.arrays import (
    IMAGE_ENDINGS,
    NIFTI_ENDINGS,
    as_labels,
    ending,
    file_shape,
    nifti_spacing,
    npz_member_header,
    read_image,
    read_nifti,
    read_npz,
)
from uqeval.importers.cases import check_listed, read_cases
from uqeval.importers.contract import ImportSummary
from uqeval.importers.options import CasesFile, CaseThreads, CubeOut, Overwrite
from uqeval.importers.writing import DEFAULT_THREADS, Case, Layout, write_cases

#: The ``.npz`` key of nnU-Net's probabilities.
KEY = "probabilities"
#: nnU-Net's image readers whose arrays are nibabel's reversed, ``(z, y, x)``; the value:
#: whether NIfTI labels are reoriented to RAS first.
NIFTI_READERS = {"SimpleITKIO": False, "NibabelIO": False, "NibabelIOWithReorient": True}
#: Readers of 2D and TIFF images, whose arrays are the images' own ``(y, x)`` or ``(z, y, x)``.
IMAGE_READERS = ("NaturalImage2DIO", "Tiff3DIO")
DEFAULT_READER = "SimpleITKIO"
#: Label file endings looked for, in this order, when dataset.json names none.
LABEL_ENDINGS = (*NIFTI_ENDINGS, *IMAGE_ENDINGS)
#: How far from 1 a sum over classes may be (float16 probabilities round).
SUM_TOLERANCE = 1e-2


def import_nnunet(
    members: Annotated[
        list[Path],
        typer.Argument(
            help="nnU-Net prediction folders (written with --save_probabilities), one per ensemble member: "
            "a fold or a seed each.",
            metavar="MEMBER_DIR...",
            show_default=False,
        ),
    ],
    out: CubeOut,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            "--labels",
            metavar="DIR",
            help="A folder of <case>.nii.gz (or .nii, .png, .tif) label files; repeat once per rater.",
            show_default=False,
        ),
    ] = None,
    cases: CasesFile = None,
    class_names: Annotated[
        str | None,
        typer.Option(
            "--class-names", help="Names of the classes, comma-separated (default: dataset.json's).", show_default=False
        ),
    ] = None,
    overwrite: Overwrite = False,
    threads: CaseThreads = DEFAULT_THREADS,
) -> ImportSummary:
    """nnU-Net v2 prediction folders (one per fold or seed) as an ensemble: eu = folders, au = 1."""
    members = [Path(member) for member in members]
    label_dirs = [Path(folder) for folder in labels or []]
    if not members:
        raise UQEvalError("nnunet: give at least one prediction folder")
    for folder in [*members, *label_dirs]:
        if not folder.is_dir():
            raise UQEvalError(f"{folder}: no such folder")
    notes: list[str] = []
    reader, reader_note = _reader(members)
    if reader_note:
        notes.append(reader_note)
    dataset = _dataset_json(members)
    names = _class_names(class_names, dataset)
    ignore = _ignore_label(dataset)
    case_ids = _case_ids(members)
    listed = read_cases(cases)
    check_listed(listed, case_ids, cases, f"the prediction folder {members[0]}")
    shape = _shapes(members, case_ids)
    n_classes, spatial = shape[0], tuple(shape[1:])
    if len(spatial) == 3 and spatial[0] == 1:
        spatial = spatial[1:]  # a 2D prediction: (class, 1, y, x)
    if len(spatial) not in (2, 3):
        raise UQEvalError(
            f"{members[0]}: probabilities of shape {shape}; expected (class, z, y, x) or (class, 1, y, x)"
        )
    if names is not None and len(names) != n_classes:
        raise UQEvalError(f"nnunet: {len(names)} class names ({', '.join(names)}) for {n_classes} classes")
    reorient = NIFTI_READERS.get(reader, False)
    label_files = {case: [_label_file(folder, case, dataset) for folder in label_dirs] for case in case_ids}
    if not reorient:
        for path in (path for files in label_files.values() for path in files):
            _check_label_shape(path, file_shape(path), spatial)
    spacing, spacing_note = _spacing(members, label_files, case_ids, dataset, reorient, len(spatial))
    if spacing_note:
        notes.append(spacing_note)
    layout = Layout(
        n_classes=n_classes,
        eu=len(members),
        au=1,
        spatial=spatial,
        raters=len(label_dirs),
        class_names=names,
        spacing=spacing,
        attrs={"eu_method": "ensemble", "au_method": "softmax", "model": "nnU-Net", "image_reader_writer": reader},
    )
    work = []
    for case in case_ids:
        info = listed.get(case)
        npz_files = [member / f"{case}.npz" for member in members]
        work.append(
            Case(
                case_id=case,
                domain=info.domain if info else "id",
                role=info.role if info else "test",
                members=tuple(functools.partial(_member, path, case, spatial) for path in npz_files),
                labels=tuple(functools.partial(_labels, path, spatial, reorient, ignore) for path in label_files[case]),
                sources={"members": [str(path) for path in npz_files], "labels": [str(p) for p in label_files[case]]},
            )
        )
    return write_cases(Path(out), "nnunet", layout, work, overwrite=overwrite, threads=threads, notes=notes)


def _reader(members: list[Path]) -> tuple[str, str]:
    """The image reader named by the members' ``plans.json``, and a note when none names one."""
    found: dict[str, Path] = {}
    for member in members:
        plans = member / "plans.json"
        if plans.is_file():
            value = _json(plans).get("image_reader_writer")
            if value is not None:
                found.setdefault(str(value), member)
    if len(found) > 1:
        (first, a), (second, b) = list(found.items())[:2]
        raise UQEvalError(f"nnunet: plans.json of {a} names the reader {first!r} but that of {b} names {second!r}")
    if not found:
        return DEFAULT_READER, (
            "no plans.json beside the predictions names the image reader: assumed nnU-Net's default, "
            "SimpleITKIO, whose arrays are (z, y, x); NIfTI labels were transposed from nibabel's (x, y, z) to match"
        )
    reader = next(iter(found))
    if reader not in NIFTI_READERS and reader not in IMAGE_READERS:
        known = ", ".join([*NIFTI_READERS, *IMAGE_READERS])
        raise UQEvalError(
            f"nnunet: plans.json names the image reader {reader!r}, whose axis order uqeval does not know "
            f"(it knows {known})"
        )
    return reader, ""


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UQEvalError(f"{path}: cannot be read as JSON ({type(error).__name__}: {error})") from None
    if not isinstance(value, dict):
        raise UQEvalError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def _dataset_json(members: list[Path]) -> dict[str, Any]:
    """The first member's ``dataset.json`` ({} without); region-based training is refused."""
    path = next((member / "dataset.json" for member in members if (member / "dataset.json").is_file()), None)
    if path is None:
        return {}
    dataset = _json(path)
    labels = dataset.get("labels") or {}
    regions = [name for name, value in labels.items() if isinstance(value, list | tuple) and len(value) > 1]
    if "regions_class_order" in dataset or regions:
        what = f" (regions {', '.join(map(repr, regions))})" if regions else ""
        raise UQEvalError(
            f"{path}: the model was trained region-based{what}: its outputs are sigmoid probabilities of "
            "overlapping regions, not one softmax distribution over classes, so AU and EU cannot be decomposed "
            "from them"
        )
    return dataset


def _class_names(given: str | list[str] | None, dataset: dict[str, Any]) -> list[str] | None:
    if given is not None:
        names = [name.strip() for name in given.split(",")] if isinstance(given, str) else list(given)
        if not all(names):
            raise UQEvalError(f"--class-names: {given!r} has an empty name")
        return names
    labels = {name: value for name, value in (dataset.get("labels") or {}).items() if name != "ignore"}
    if not labels or not all(isinstance(value, int) for value in labels.values()):
        return None
    by_value = sorted(labels, key=labels.__getitem__)
    if [labels[name] for name in by_value] != list(range(len(by_value))):
        return None
    return by_value


def _ignore_label(dataset: dict[str, Any]) -> int | None:
    value = (dataset.get("labels") or {}).get("ignore")
    return value if isinstance(value, int) else None


def _case_ids(members: list[Path]) -> list[str]:
    """The cases every member folder holds, sorted; a case some folder lacks is an error naming both."""
    per_member = {member: {path.name[: -len(".npz")] for path in member.glob("*.npz")} for member in members}
    reference = per_member[members[0]]
    if not reference:
        raise UQEvalError(
            f"{members[0]}: holds no <case>.npz; predict with nnUNetv2_predict --save_probabilities to write them"
        )
    for member in members[1:]:
        missing = sorted(reference - per_member[member])
        extra = sorted(per_member[member] - reference)
        if missing:
            raise UQEvalError(f"{member}: lacks case {missing[0]!r} ({missing[0]}.npz), which {members[0]} holds")
        if extra:
            raise UQEvalError(f"{members[0]}: lacks case {extra[0]!r} ({extra[0]}.npz), which {member} holds")
    return sorted(reference)


def _shapes(members: list[Path], case_ids: list[str]) -> tuple[int, ...]:
    """The one shape of every case's probabilities, from the ``.npz`` headers."""
    first: tuple[str, tuple[int, ...]] | None = None
    for case in case_ids:
        case_shape = None
        for member in members:
            path = member / f"{case}.npz"
            shape, dtype = npz_member_header(path, KEY)
            if dtype.kind != "f":
                raise UQEvalError(f"{path}: `{KEY}` holds {dtype} values; expected probabilities (floats)")
            if case_shape is None:
                case_shape = (member, shape)
            elif shape != case_shape[1]:
                raise UQEvalError(
                    f"case {case!r}: member {member} has probabilities of shape {shape} but member "
                    f"{case_shape[0]} has {case_shape[1]}; every member must predict the same grid"
                )
        if first is None:
            first = (case, case_shape[1])
        elif case_shape[1] != first[1]:
            raise UQEvalError(
                f"case {case!r}: probabilities of shape {case_shape[1]} but case {first[0]!r} has {first[1]}; "
                "a store holds images of one size (crop or resample the cases to one grid)"
            )
    return first[1]


def _label_file(folder: Path, case: str, dataset: dict[str, Any]) -> Path:
    endings = [dataset["file_ending"]] if isinstance(dataset.get("file_ending"), str) else []
    for end in [*endings, *LABEL_ENDINGS]:
        path = folder / f"{case}{end}"
        if path.is_file():
            return path
    raise UQEvalError(f"--labels {folder}: lacks case {case!r} (no {case}{' or '.join(endings or LABEL_ENDINGS)})")


def _segmentation(member: Path, case: str, dataset: dict[str, Any]) -> Path | None:
    endings = [dataset["file_ending"]] if isinstance(dataset.get("file_ending"), str) else []
    for end in [*endings, *NIFTI_ENDINGS]:
        path = member / f"{case}{end}"
        if path.is_file() and ending(path) in NIFTI_ENDINGS:
            return path
    return None


def _spacing(
    members: list[Path],
    label_files: dict[str, list[Path]],
    case_ids: list[str],
    dataset: dict[str, Any],
    reorient: bool,
    n_dims: int,
) -> tuple[list[float] | None, str]:
    """The store's spacing from the NIfTI headers of the first member's segmentations (or
    the first rater's labels), when every case has one and they agree; else None and a note."""
    spacings = {}
    for case in case_ids:
        path = _segmentation(members[0], case, dataset)
        if path is None:
            path = next((file for file in label_files[case] if ending(file) in NIFTI_ENDINGS), None)
        if path is None:
            return None, "" if case == case_ids[0] else f"case {case!r} has no NIfTI file; the store has no spacing"
        spacings[case] = [round(value, 6) for value in nifti_spacing(path, reorient=reorient)[-n_dims:]]
    distinct = {tuple(np.round(value, 6)) for value in spacings.values()}
    if len(distinct) > 1:
        return None, (
            f"the cases have {len(distinct)} different voxel spacings; the store has no spacing "
            "(the import record keeps each case's files)"
        )
    return next(iter(spacings.values())), ""


def _member(path: Path, case: str, spatial: tuple[int, ...]) -> np.ndarray:
    """One member's probabilities of ``case``, ``(au=1, class, *spatial)`` float32; sigmoid outputs refused."""
    probabilities = read_npz(path, KEY)
    probabilities = probabilities.reshape(probabilities.shape[0], *spatial).astype(np.float32, copy=False)
    sums = probabilities.sum(axis=0, dtype=np.float64)
    low, high = float(sums.min()), float(sums.max())
    if not (abs(low - 1) <= SUM_TOLERANCE and abs(high - 1) <= SUM_TOLERANCE):
        raise UQEvalError(
            f"{path}: the probabilities of case {case!r} sum to {low:.3g}..{high:.3g} over the classes, not 1: "
            "sigmoid (region-based) outputs are refused, since overlapping regions are not one distribution "
            "over classes and AU and EU cannot be decomposed from them"
        )
    return probabilities[None]


def _check_label_shape(path: Path, shape: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    if len(shape) == len(spatial) + 1 and shape[0] == 1:
        shape = shape[1:]  # a 2D label volume of one slice
    if shape != spatial:
        raise UQEvalError(
            f"{path}: labels of shape {shape} (in the probabilities' axis order) but the probabilities are {spatial}"
        )


def _labels(path: Path, spatial: tuple[int, ...], reorient: bool, ignore: int | None) -> np.ndarray:
    """A rater's label map of one case in the probabilities' axis order, ignore label → 255."""
    array = read_nifti(path, reorient=reorient) if ending(path) in NIFTI_ENDINGS else read_image(path)
    array = as_labels(array, path)
    _check_label_shape(path, array.shape, spatial)
    array = array.reshape(spatial)
    if ignore is not None:
        array = np.where(array == ignore, 255, array)
    return array.astype(np.uint8) if array.max(initial=0) <= 255 and array.min(initial=0) >= 0 else array
