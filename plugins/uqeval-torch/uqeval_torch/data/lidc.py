"""The ``lidc`` dataset: LIDC-IDRI lung-nodule CT crops, each outlined by 4 radiologists.

Reads the preprocessed crops that the Probabilistic U-Net line of work shares (and that
the study used) from the folder given as option ``root``:

``data_lidc.pickle``
    A dict: slice key → ``{"image": (128, 128) float, "masks": [4 × (128, 128) binary],
    "series_uid": str}``.
``LIDC-IDRI_MetaData.csv``
    The collection's metadata digest: columns ``Subject ID`` (the patient,
    ``LIDC-IDRI-0001``) and ``Series ID`` (the CT series' UID), among others; older
    digests name them ``Patient Id`` and ``Series UID``, which are read too.

Nothing is read until :meth:`LIDCDataset.samples` is first called; the pickle is then
loaded once per dataset instance and kept.

Preprocessing, in order (as the study's code did)
-------------------------------------------------
1. Patient of a slice: the ``Subject ID`` of its ``series_uid`` in the CSV (the first
   row that names the series).
2. Split by patient: the patients' ids, sorted, shuffled by Python's
   ``random.Random(7)``; the first ``max(1, round(0.2·n))`` are ``test``. The others,
   sorted, are permuted by ``numpy.random.default_rng(7)`` and cut into 4 folds with
   ``numpy.array_split``; fold 0 is ``calibration`` (the study's validation fold) and
   folds 1–3 are ``train``. About 60 / 20 / 20 % of the patients, no patient in two roles.
3. ``size=64``: the image mean-pooled over 2×2 pixels, each mask max-pooled (a pixel is
   nodule if any of its four was). ``size=128`` keeps the native crops.
4. OOD domains (``test`` images only): :func:`uqeval_torch.data.shifts.shift_image` on
   the (pooled) image, one draw per image from ``SeedSequence(seed, spawn_key=(k,
   domain))``, ``k`` the image's position in the test role and ``domain`` its index in
   :attr:`LIDCDataset.domains`. The study shifted the stored images offline and
   normalised them when loading, so the shift comes before step 5 here too.
5. Per-image z-score: ``(x - mean) / std`` (``std`` taken as 1 below 1e-6, so a constant
   image becomes zeros), then the grey image is replicated to 3 channels.

Labels are the 4 masks as (4, y, x) uint8: 0 background, 1 nodule. Image ids are
``{patient}/{slice key}`` (``-{domain}`` appended in OOD domains), in the order of
patient and then of the pickle, which is the order the study listed its files in.

Security
--------
A pickle can run code while it loads. This one is read by an unpickler that resolves
only the globals that plain NumPy arrays need (``_reconstruct``, ``ndarray``, ``dtype``,
``scalar`` and ``_frombuffer`` from ``numpy.core`` or ``numpy._core``, and
``_codecs.encode`` for Latin-1 text, which pickles of protocol 2 use for bytes) and
refuses any other global, without importing or calling it.
"""

from __future__ import annotations

import csv
import importlib
import numbers
import os
import pickle
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from uqeval import UQEvalError
from uqeval.contracts import Sample
from uqeval_torch.data.shifts import SHIFTS, shift_image
from uqeval_torch.options import Options, refuse_bad_request

#: The roles, in the order of the study's folds: train, its validation fold, its test set.
ROLES = ("train", "calibration", "test")
#: ``id`` and the OOD shifts, in the order of their index in a shift's spawn key.
DOMAINS = ("id", *SHIFTS)
#: The file names inside ``root``.
PICKLE_NAME = "data_lidc.pickle"
METADATA_NAME = "LIDC-IDRI_MetaData.csv"
#: Accepted names of the CSV's patient and series columns, preferred first.
PATIENT_COLUMNS = ("Subject ID", "Patient Id", "Patient ID")
SERIES_COLUMNS = ("Series ID", "Series UID")
#: Side of the crops in the pickle, and the sides the dataset offers.
NATIVE_SIZE = 128
SIZES = (128, 64)
#: Raters (masks) per slice.
RATERS = 4
#: The study's split: seed, fraction of patients in ``test``, folds of the rest, fold used.
SPLIT_SEED = 7
TEST_FRACTION = 0.2
N_FOLDS = 4
FOLD = 0
#: A per-image standard deviation below this is taken as 1 by the z-score.
STD_FLOOR = 1e-6


def _numpy_modules() -> tuple[Any, Any]:
    """NumPy's ``multiarray`` and ``numeric`` modules (``numpy._core`` from NumPy 2, ``numpy.core`` before)."""
    try:
        return importlib.import_module("numpy._core.multiarray"), importlib.import_module("numpy._core.numeric")
    except ImportError:  # pragma: no cover - NumPy < 1.26
        return importlib.import_module("numpy.core.multiarray"), importlib.import_module("numpy.core.numeric")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as pickles of protocol ≤ 2 call it for bytes: Latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__} and encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickle of plain NumPy arrays may name, resolved here and not by import."""
    multiarray, numeric = _numpy_modules()
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RefusedGlobal(Exception):
    """A global outside the allowed ones, raised from inside the unpickler."""


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and NumPy arrays, and nothing else."""

    allowed: ClassVar[dict[tuple[str, str], Any] | None] = None

    def find_class(self, module: str, name: str) -> Any:
        if _ArrayUnpickler.allowed is None:
            _ArrayUnpickler.allowed = _allowed_globals()
        try:
            return _ArrayUnpickler.allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path: Path) -> Any:
    """The object in the pickle at ``path``, read with the restricted unpickler.

    Raises
    ------
    UQEvalError
        Naming the file and the refused global, when the pickle names anything but what
        plain NumPy arrays need; or naming the file, when it is not a readable pickle.
    """
    try:
        with path.open("rb") as handle:
            return _ArrayUnpickler(handle).load()
    except _RefusedGlobal as refused:
        raise UQEvalError(
            f"{path}: refused to load the global {refused} (a pickle can run code; only plain NumPy arrays, "
            "dicts, lists, strings and numbers are read)"
        ) from None
    except OSError as error:
        raise UQEvalError(f"{path}: cannot be read ({error.strerror or error})") from None
    except Exception as error:  # whatever a corrupt pickle makes the unpickler raise is bad input
        raise UQEvalError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None


def read_series_patients(path: Path) -> dict[str, str]:
    """Series UID → patient (``Subject ID``) from the metadata CSV; the first row of a series wins.

    Raises
    ------
    UQEvalError
        Naming the file, when it cannot be read or lacks a patient or series column.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or ()]
            patient = next((name for name in PATIENT_COLUMNS if name in columns), None)
            series = next((name for name in SERIES_COLUMNS if name in columns), None)
            if patient is None or series is None:
                missing = PATIENT_COLUMNS[0] if patient is None else SERIES_COLUMNS[0]
                raise UQEvalError(
                    f"{path}: no column {missing!r}; the metadata needs {PATIENT_COLUMNS[0]!r} and "
                    f"{SERIES_COLUMNS[0]!r}, found {', '.join(map(repr, columns)) or 'no header'}"
                )
            mapping: dict[str, str] = {}
            for row in reader:
                row = {key.strip(): value.strip() for key, value in row.items() if isinstance(key, str) and value}
                if row.get(series) and row.get(patient):
                    mapping.setdefault(row[series], row[patient])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UQEvalError(f"{path}: cannot be read as CSV ({error})") from None
    return mapping


@dataclass(frozen=True)
class _Slice:
    """One slice of the pickle, checked: its key, patient, image (128, 128) and masks (4, 128, 128)."""

    key: str
    patient: str
    image: np.ndarray
    masks: np.ndarray


def _check_slice(
    key: Any, record: Any, series_patients: Mapping[str, str], pickle_path: Path, csv_path: Path
) -> _Slice:
    """``record`` of the pickle as a :class:`_Slice`, or a UQEvalError naming the file, slice and fault."""
    where = f"{pickle_path}: slice {key!r}"
    if not isinstance(record, Mapping):
        raise UQEvalError(f"{where} is a {type(record).__name__}; expected a dict with image, masks and series_uid")
    missing = [entry for entry in ("image", "masks", "series_uid") if entry not in record]
    if missing:
        raise UQEvalError(f"{where} has no {', '.join(missing)}")
    series = record["series_uid"]
    if not isinstance(series, str):
        raise UQEvalError(f"{where}: series_uid is a {type(series).__name__}; expected a string")
    patient = series_patients.get(series.strip())
    if patient is None:
        raise UQEvalError(f"{where}: series_uid {series.strip()!r} is not in {csv_path}")
    image = record["image"]
    expected = (NATIVE_SIZE, NATIVE_SIZE)
    if not isinstance(image, np.ndarray) or image.shape != expected:
        raise UQEvalError(f"{where}: image has shape {np.shape(image)}; expected {expected}")
    real = np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    if not real or not np.isfinite(image).all():
        raise UQEvalError(f"{where}: image must hold finite numbers, got {image.dtype} values")
    masks = record["masks"]
    if isinstance(masks, (str, bytes, Mapping)) or not isinstance(masks, (Sequence, np.ndarray)):
        raise UQEvalError(f"{where}: masks is a {type(masks).__name__}; expected a list of {RATERS} arrays")
    if len(masks) != RATERS:
        raise UQEvalError(f"{where}: {len(masks)} masks; expected {RATERS}")
    for rater, mask in enumerate(masks):
        if not isinstance(mask, np.ndarray) or mask.shape != expected:
            raise UQEvalError(f"{where}: mask {rater} has shape {np.shape(mask)}; expected {expected}")
        if not np.isin(mask, (0, 1)).all():
            raise UQEvalError(f"{where}: mask {rater} is not binary (values other than 0 and 1)")
    stacked = np.stack([np.asarray(mask, dtype=np.uint8) for mask in masks])
    return _Slice(str(key), patient, np.asarray(image, dtype=np.float32), stacked)


def split_patients(patients: Sequence[str]) -> dict[str, list[str]]:
    """The study's patient split: role → sorted patient ids.

    ``test``: the first ``max(1, round(0.2·n))`` of the sorted ids shuffled by
    ``random.Random(7)``; of the others, sorted and permuted by
    ``numpy.random.default_rng(7)``, fold 0 of 4 (``numpy.array_split``) is
    ``calibration`` and the rest ``train``.

    Raises
    ------
    UQEvalError
        With fewer than ``N_FOLDS + 1`` patients, too few to fill every role.
    """
    ordered = sorted(set(patients))
    if len(ordered) < N_FOLDS + 1:
        raise UQEvalError(f"dataset 'lidc' needs at least {N_FOLDS + 1} patients for its split, got {len(ordered)}")
    shuffled = list(ordered)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    n_test = min(max(1, round(len(ordered) * TEST_FRACTION)), len(ordered) - 1)
    test = set(shuffled[:n_test])
    rest = np.array([patient for patient in ordered if patient not in test])
    order = np.arange(len(rest))
    np.random.default_rng(SPLIT_SEED).shuffle(order)
    folds = np.array_split(order, N_FOLDS)
    train = np.concatenate([fold for index, fold in enumerate(folds) if index != FOLD])
    return {
        "train": sorted(rest[train].tolist()),
        "calibration": sorted(rest[folds[FOLD]].tolist()),
        "test": sorted(test),
    }


def _pool(array: np.ndarray, reduce: str) -> np.ndarray:
    """``array`` (…, y, x) pooled over 2×2 pixels by ``mean`` or ``max``."""
    *leading, y, x = array.shape
    blocks = array.reshape(*leading, y // 2, 2, x // 2, 2)
    return blocks.mean(axis=(-3, -1)) if reduce == "mean" else blocks.max(axis=(-3, -1))


def z_score(image: np.ndarray) -> np.ndarray:
    """``(image - mean) / std`` over all pixels; ``std`` is taken as 1 below :data:`STD_FLOOR`."""
    std = float(image.std())
    return (image - image.mean()) / (std if std >= STD_FLOOR else 1.0)


@dataclass(frozen=True, kw_only=True)
class LIDCDataset(Options):
    """LIDC-IDRI nodule crops with 4 raters, split by patient as the study did, with its OOD shifts.

    Satisfies :class:`uqeval.contracts.DatasetSource`; the module docstring describes
    the files and every preprocessing step.

    Parameters
    ----------
    root : str
        Folder that holds ``data_lidc.pickle`` and ``LIDC-IDRI_MetaData.csv``. Empty by
        default, so that the dataset can be listed; :meth:`samples` needs it.
    size : int
        128 (native crops) or 64 (image mean-pooled, masks max-pooled over 2×2 pixels).

    Examples
    --------
    >>> dataset = LIDCDataset().configure(size="64")
    >>> dataset.options()
    {'root': '', 'size': 64}
    >>> dataset.samples("train")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    uqeval.errors.UQEvalError: option 'root' of dataset 'lidc' is not set: pass --data-option root=DIR, ...
    """

    name: ClassVar[str] = "lidc"
    kind: ClassVar[str] = "dataset"
    description: ClassVar[str] = (
        "LIDC-IDRI lung-nodule CT crops (Probabilistic U-Net pickle) with 4 radiologists' masks, split by patient; "
        "OOD: noise, blur, contrast, JPEG"
    )
    in_channels: ClassVar[int] = 3
    n_classes: ClassVar[int] = 2
    class_names: ClassVar[tuple[str, ...]] = ("background", "nodule")
    domains: ClassVar[tuple[str, ...]] = DOMAINS

    root: str = ""
    size: int = NATIVE_SIZE
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root = self.root
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        if not isinstance(root, str):
            raise UQEvalError(f"option 'root' of dataset 'lidc' must be a folder path, got {root!r}")
        object.__setattr__(self, "root", root)
        size = self.size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or int(size) not in SIZES:
            raise UQEvalError(f"option 'size' of dataset 'lidc' must be 128 or 64, got {size!r}")
        object.__setattr__(self, "size", int(size))

    def samples(self, role: str, domain: str = "id", *, seed: int = 0) -> Iterator[Sample]:
        """The images of ``role`` in ``domain``; the pickle is read on the first call.

        Parameters
        ----------
        role : str
            ``train``, ``calibration`` or ``test``.
        domain : str
            ``id`` or an OOD shift (:attr:`domains`); OOD domains have ``test`` images
            only and yield nothing for the other roles.
        seed : int
            Non-negative; picks the shifts' random draws (the split is fixed).

        Returns
        -------
        Iterator of Sample
            Images (3, size, size) float32, z-scored; labels (4, size, size) uint8.

        Raises
        ------
        UQEvalError
            For an unknown role or domain, a bad seed, an unset or missing ``root``, or a
            fault in the files (the message names the file and what is wrong).
        """
        refuse_bad_request("dataset 'lidc'", role, domain, seed, ROLES, DOMAINS)
        slices = self._roles()[role]
        if domain != "id" and role != "test":
            return iter(())
        return self._generate(slices, role, domain, int(seed))

    def _files(self) -> tuple[Path, Path]:
        """The pickle and CSV paths, after checking that ``root`` is set and they exist."""
        if not self.root:
            raise UQEvalError(
                "option 'root' of dataset 'lidc' is not set: pass --data-option root=DIR, "
                f"the folder that holds {PICKLE_NAME} and {METADATA_NAME}"
            )
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UQEvalError(f"option 'root' of dataset 'lidc': {root} is not a folder")
        paths = root / PICKLE_NAME, root / METADATA_NAME
        for path in paths:
            if not path.is_file():
                raise UQEvalError(f"dataset 'lidc': {path} not found (option 'root' is {self.root!r})")
        return paths

    def _roles(self) -> dict[str, list[_Slice]]:
        """Role → its slices in the order of patient and then of the pickle; loaded once per instance."""
        if "roles" not in self._cache:
            pickle_path, csv_path = self._files()
            series_patients = read_series_patients(csv_path)
            payload = load_pickle(pickle_path)
            if not isinstance(payload, Mapping) or not payload:
                raise UQEvalError(
                    f"{pickle_path}: expected a non-empty dict of slice key → record, got {type(payload).__name__}"
                )
            slices = [
                _check_slice(key, record, series_patients, pickle_path, csv_path) for key, record in payload.items()
            ]
            del payload
            patients = split_patients([item.patient for item in slices])
            role_of = {patient: role for role, members in patients.items() for patient in members}
            by_role: dict[str, list[_Slice]] = {role: [] for role in ROLES}
            for item in sorted(slices, key=lambda item: item.patient):  # stable: pickle order within a patient
                by_role[role_of[item.patient]].append(item)
            self._cache["roles"] = by_role
        return self._cache["roles"]

    def _generate(self, slices: list[_Slice], role: str, domain: str, seed: int) -> Iterator[Sample]:
        domain_index = DOMAINS.index(domain)
        for index, item in enumerate(slices):
            image, masks = item.image, item.masks
            if self.size != NATIVE_SIZE:
                image, masks = _pool(image, "mean").astype(np.float32), _pool(masks, "max")
            image_id = f"{item.patient}/{item.key}"
            if domain != "id":
                rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, domain_index)))
                image = shift_image(image[None], domain, rng)[0]
                image_id = f"{image_id}-{domain}"
            grey = z_score(image.astype(np.float64)).astype(np.float32)
            yield Sample(image_id, np.repeat(grey[None], self.in_channels, axis=0), masks.copy(), domain, role)
