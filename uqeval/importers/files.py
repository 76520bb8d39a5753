"""``uqeval import files``: per-case (per-member, per-sample) arrays found by a file pattern.

``--probs`` is a path pattern with the placeholders ``{case}``, ``{member}``,
``{sample}`` and optionally ``{class}``, e.g. ``preds/{case}/m{member}_s{sample}.npy``;
``--labels`` one with ``{case}`` and ``{rater}``. Every file the pattern matches is
one sample of one member of one case: ``(class, *spatial)``, or ``(*spatial)`` for one
class with ``{class}``. Without ``{member}`` the store has ``eu = 1``, without
``{sample}`` ``au = 1``. Members, samples, classes and raters are sorted, numerically
when they are numbers.

Files: ``.npy``, ``.npz`` (one array), ``.nii``/``.nii.gz`` (in SimpleITK's ``(z, y,
x)`` order, a fourth NIfTI dim, the classes, first), ``.png``/``.tif``/``.tiff``
(``(y, x)``; a multi-page TIFF ``(z, y, x)``; channels, when several, are classes).
Integer images are scaled to [0, 1] by their dtype's maximum (255 for 8 bits); label
files hold class indices as they are.
"""

from __future__ import annotations

import functools
import glob
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from uqeval.errors import UQEvalError
from uqeval.importers.arrays import (
    IMAGE_ENDINGS,
    NIFTI_ENDINGS,
    as_labels,
    as_probabilities,
    ending,
    file_shape,
    nifti_spacing,
    read_array,
)
from uqeval.importers.cases import check_listed, read_cases
from uqeval.importers.contract import ImportSummary
from uqeval.importers.options import CasesFile, CaseThreads, CubeOut, Overwrite
from uqeval.importers.writing import DEFAULT_THREADS, Case, Layout, write_cases

#: Placeholders of ``--probs``: required, then optional.
PROBS_REQUIRED = ("case",)
PROBS_OPTIONAL = ("member", "sample", "class")
#: Placeholders of ``--labels``.
LABELS_PLACEHOLDERS = ("case", "rater")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@functools.total_ordering
class _Key:
    """A placeholder's value, sorted as a number when it is one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.number = int(text) if text.isdigit() else None

    def _order(self) -> tuple:
        return (0, self.number, self.text) if self.number is not None else (1, 0, self.text)

    def __lt__(self, other: _Key) -> bool:
        return self._order() < other._order()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)


def _sorted(values: set[str]) -> list[str]:
    return [key.text for key in sorted(_Key(value) for value in values)]


class Pattern:
    """A path pattern with ``{name}`` placeholders: which files match, and what each holds."""

    def __init__(self, text: str, option: str, allowed: Sequence[str], required: Sequence[str]) -> None:
        self.text, self.option = text, option
        self.names = _PLACEHOLDER.findall(text)
        unknown = sorted(set(self.names) - set(allowed))
        if unknown:
            raise UQEvalError(
                f"{option} {text!r}: unknown placeholder {{{unknown[0]}}}; use {', '.join(f'{{{n}}}' for n in allowed)}"
            )
        missing = [name for name in required if name not in self.names]
        if missing:
            raise UQEvalError(f"{option} {text!r}: has no {{{missing[0]}}} placeholder")
        regex, seen, position = [], set(), 0
        for match in _PLACEHOLDER.finditer(text):
            regex.append(re.escape(text[position : match.start()]))
            name = match.group(1)
            regex.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
            seen.add(name)
            position = match.end()
        regex.append(re.escape(text[position:]))
        self.regex = re.compile("".join(regex))
        self.glob = _PLACEHOLDER.sub("*", glob.escape(text).replace("[{]", "{").replace("[}]", "}"))

    def matches(self) -> dict[tuple[str, ...], Path]:
        """Placeholder values (in the order of :attr:`fields`) → the file, for every file that matches."""
        found = {}
        for name in sorted(glob.glob(self.glob)):
            match = self.regex.fullmatch(name)
            if match and Path(name).is_file():
                found[tuple(match.group(field) for field in self.fields)] = Path(name)
        return found

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.names))

    def path(self, **values: str) -> str:
        """The file name the pattern gives ``values``."""
        return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), self.text)


def import_files(
    probs: Annotated[
        str,
        typer.Option(
            "--probs",
            metavar="PATTERN",
            help="Pattern of the probability files, with {case}, {member}, {sample} and optionally {class}, "
            "e.g. [cyan]preds/{case}/m{member}_s{sample}.npy[/].",
            show_default=False,
        ),
    ],
    out: CubeOut,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            metavar="PATTERN",
            help="Pattern of the label files, with {case} and {rater}, e.g. [cyan]labels/{case}_r{rater}.png[/].",
            show_default=False,
        ),
    ] = None,
    cases: CasesFile = None,
    class_names: Annotated[
        str | None, typer.Option("--class-names", help="Names of the classes, comma-separated.", show_default=False)
    ] = None,
    overwrite: Overwrite = False,
    threads: CaseThreads = DEFAULT_THREADS,
) -> ImportSummary:
    """Per-case, per-member, per-sample arrays (.npy, .npz, NIfTI, PNG, TIFF) found by a file pattern."""
    pattern = Pattern(probs, "--probs", (*PROBS_REQUIRED, *PROBS_OPTIONAL), PROBS_REQUIRED)
    found = pattern.matches()
    if not found:
        raise UQEvalError(f"--probs {probs!r}: no file matches")
    fields = pattern.fields
    values = {field: _sorted({key[fields.index(field)] for key in found}) for field in fields}
    case_ids = values["case"]
    members, samples = values.get("member", [""]), values.get("sample", [""])
    classes = values.get("class")
    per_case = {case: {} for case in case_ids}
    for key, path in found.items():
        per_case[key[fields.index("case")]][key] = path
    files: dict[str, list[list[list[Path]]]] = {}
    for case in case_ids:
        files[case] = [
            [_sample_files(pattern, per_case[case], case, member, sample, classes) for sample in samples]
            for member in members
        ]
    first = files[case_ids[0]][0][0][0]
    first_shape = file_shape(first)
    for case in case_ids:
        for path in itertools.chain.from_iterable(itertools.chain.from_iterable(files[case])):
            shape = file_shape(path)
            if shape != first_shape:
                raise UQEvalError(
                    f"case {case!r}: {path} holds an array of shape {shape} but {first} holds {first_shape}; "
                    "every file must hold the same shape"
                )
    n_classes, spatial, channels_last = _layout(first, first_shape, classes)
    listed = read_cases(cases)
    check_listed(listed, case_ids, cases, f"--probs {probs!r}")
    names = [name.strip() for name in class_names.split(",")] if isinstance(class_names, str) else class_names
    if names is not None and len(names) != n_classes:
        raise UQEvalError(f"--class-names: {len(names)} names for {n_classes} classes")
    label_files = _label_files(labels, case_ids, spatial) if labels else {case: [] for case in case_ids}
    layout = Layout(
        n_classes=n_classes,
        eu=len(members),
        au=len(samples),
        spatial=spatial,
        raters=len(next(iter(label_files.values()))),
        class_names=names,
        spacing=_spacing(first, next(iter(label_files.values())), len(spatial)),
    )
    work = []
    for case in case_ids:
        info = listed.get(case)
        work.append(
            Case(
                case_id=case,
                domain=info.domain if info else "id",
                role=info.role if info else "test",
                members=tuple(
                    functools.partial(_member, member_files, classes is not None, channels_last, spatial)
                    for member_files in files[case]
                ),
                labels=tuple(functools.partial(_labels, path, spatial) for path in label_files[case]),
                sources={
                    "probs": [[[str(path) for path in sample] for sample in member] for member in files[case]],
                    "labels": [str(path) for path in label_files[case]],
                },
            )
        )
    return write_cases(Path(out), "files", layout, work, overwrite=overwrite, threads=threads)


def _sample_files(
    pattern: Pattern, found: dict, case: str, member: str, sample: str, classes: list[str] | None
) -> list[Path]:
    """The file(s) of one sample of one member of ``case``: one, or one per class; a missing one is named."""
    fields = pattern.fields
    files = []
    for class_value in classes if classes is not None else [None]:
        given = {"case": case, "member": member, "sample": sample, "class": class_value}
        key = tuple(given[field] for field in fields)
        if key not in found:
            what = ", ".join(f"{field} {given[field]}" for field in fields if field != "case")
            raise UQEvalError(f"case {case!r}: no file for {what} ({pattern.path(**given)})")
        files.append(found[key])
    return files


def _layout(path: Path, shape: tuple[int, ...], classes: list[str] | None) -> tuple[int, tuple[int, ...], bool]:
    """Classes, the spatial shape, and whether the classes are an image's channels (last)."""
    image = ending(path) in IMAGE_ENDINGS
    if classes is not None:
        if len(shape) not in (2, 3):
            raise UQEvalError(f"{path}: one class's map of shape {shape}; expected (y, x) or (z, y, x)")
        return len(classes), shape, False
    if image and len(shape) == 3 and shape[-1] <= 4:
        return shape[-1], shape[:2], True
    if len(shape) not in (3, 4):
        raise UQEvalError(
            f"{path}: an array of shape {shape}; expected (class, y, x) or (class, z, y, x), "
            "or one class per file with {class} in --probs"
        )
    return shape[0], shape[1:], False


def _member(files: list[list[Path]], per_class: bool, channels_last: bool, spatial: tuple[int, ...]) -> np.ndarray:
    """One member's samples ``(au, class, *spatial)`` as float32 probabilities."""
    samples = []
    for sample in files:
        if per_class:
            array = np.stack([as_probabilities(read_array(path), path) for path in sample])
        else:
            array = as_probabilities(read_array(sample[0]), sample[0])
            if channels_last:
                array = np.moveaxis(array, -1, 0)
        samples.append(array)
    return np.stack(samples)


def _label_files(text: str, case_ids: list[str], spatial: tuple[int, ...]) -> dict[str, list[Path]]:
    pattern = Pattern(text, "--labels", LABELS_PLACEHOLDERS, LABELS_PLACEHOLDERS)
    found = pattern.matches()
    fields = pattern.fields
    raters = _sorted({key[fields.index("rater")] for key in found})
    if not raters:
        raise UQEvalError(f"--labels {text!r}: no file matches")
    files = {}
    for case in case_ids:
        files[case] = []
        for rater in raters:
            given = {"case": case, "rater": rater}
            path = found.get(tuple(given[field] for field in fields))
            if path is None:
                raise UQEvalError(f"case {case!r}: no label file of rater {rater} ({pattern.path(**given)})")
            shape = file_shape(path)
            if shape != spatial:
                raise UQEvalError(f"{path}: labels of shape {shape} but the probabilities are {spatial}")
            files[case].append(path)
    return files


def _labels(path: Path, spatial: tuple[int, ...]) -> np.ndarray:
    array = as_labels(read_array(path), path)
    if array.shape != spatial:
        raise UQEvalError(f"{path}: labels of shape {array.shape} but the probabilities are {spatial}")
    return array


def _spacing(first: Path, labels: list[Path], n_dims: int) -> list[float] | None:
    """The voxel size from the first NIfTI file (probabilities, else labels) of the first case."""
    for path in [first, *labels]:
        if ending(path) in NIFTI_ENDINGS:
            return [round(value, 6) for value in nifti_spacing(path)[-n_dims:]]
    return None
