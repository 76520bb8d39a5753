"""The ``chaksu`` dataset: optic disc and cup in the Chákṣu fundus photographs, five experts each.

Read from the files as published (figshare article 20123135: ``Train.zip`` and
``Test.zip`` unpacked side by side in the folder of option ``root``) and preprocessed
as the study's code did (JakobLC/DiffUncertainty, ``datasets/chaksu/process_chaksu.py``
and ``gen_splits_chaksu.py``). Every image is processed when it is drawn; nothing is
written to disk. The files are indexed once per instance, on first use.

Layout
------
::

    root/{Train,Test}/1.0_Original_Fundus_Images/{Bosch,Forus,Remidio}/<stem>.<ext>
    root/{Train,Test}/3.0_Doctors_Annotations_Binary_OD_OC/Expert {1..5}/<device>/{Disc,Cup}/<stem>.<ext>

An image is a file with extension ``.jpg``, ``.jpeg``, ``.png``, ``.tif`` or ``.tiff``
in any case (the release has ``.JPG``, ``.jpg`` and ``.png``) anywhere under its device
folder; names starting with ``.`` are ignored. A mask is the file in the expert's
``Disc`` or ``Cup`` folder with the image's stem (exactly) and one of those
extensions, in any case, which need not be the image's; ``.png`` wins if there are
several. Every one of the six device folders must exist; the five expert folders
(with ``Disc`` and ``Cup``) must exist for every device and split that has images.

Preprocessing, per image
------------------------
1. The image as RGB (uint8) and each expert's disc and cup masks (grey level > 0).
2. Each mask keeps its largest 4-connected component only (ties: the first in raster
   order); then disc := disc ∪ cup and cup := cup ∩ disc. Labels: 0 background, 1
   disc (rim), 2 cup; one label map per expert, experts in the order 1…5.
3. The crop is centred on the midpoint ``(c_y, c_x)`` of the bounding box (inclusive
   pixel indices) of the union of the five discs. Its side is
   ``s = round(2 × MEAN_DISC_DIAMETER[device])`` px (451 Bosch, 650 Forus, 896
   Remidio) and its top-left corner ``(round(c_y - s/2), round(c_x - s/2))``,
   rounding halves to even as Python does. Where the crop leaves the image it is
   filled with zeros (background in the labels).
4. Resized to ``size`` × ``size`` with Pillow: bilinear for the image (kept uint8, as
   the study stored it), nearest for the labels.
5. The image divided by 255 and z-scored over all its pixels and channels (the
   study's ``SampleNormalize``: a standard deviation below 1e-6 counts as 1), as the
   study did at train and test time; float32, channels first.

Splits and domains
------------------
The images of a device and split are taken in the order of their paths, as the
study's ids were. Remidio ``Train``: ``KFold(5, shuffle=True, random_state=123)``
fold 0 of scikit-learn, reproduced with numpy (``RandomState(123).permutation``, then
the first ``⌈n/5⌉`` of it held out): the other four fifths are ``train``, the held-out
fifth ``calibration`` (648 and 162 images in the release). Remidio ``Test`` is the
``id`` ``test`` role (264). All Bosch and all Forus images, ``Train`` before ``Test``,
are the ``test`` role of the OOD domains ``bosch`` and ``forus`` (271 together).

Missing masks and other faults
------------------------------
An image for which some expert has no disc or no cup mask is left out, as the study
did, before the split is made; :meth:`ChaksuDataset.skipped` counts them per split and
device, :meth:`ChaksuDataset.skipped_images` says which mask each lacks and
:meth:`ChaksuDataset.note` is a line to print (the count is also logged as a
warning). The study's code also left out, silently, images it could not read, all
images of a device whose expert folder was missing, and images in which no expert
marks a disc; here these are errors, as are a mask whose shape differs from its
image's and two images of one device and split with the same stem. The study kept
all 1345 images of the release, so none of this happened there.

Example
-------
>>> dataset = ChaksuDataset()
>>> dataset.options()
{'root': '', 'size': 128}
>>> dataset.configure(root="/data/chaksu", size="64").options()
{'root': '/data/chaksu', 'size': 64}
>>> dataset.domains, dataset.class_names
(('id', 'bosch', 'forus'), ('background', 'disc', 'cup'))
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from uqeval import UQEvalError
from uqeval.contracts import Sample
from uqeval_torch.options import Options, refuse_bad_request

logger = logging.getLogger(__name__)

#: The roles.
ROLES = ("train", "calibration", "test")
#: ``id`` (Remidio) and the OOD domains, one per other camera.
DOMAINS = ("id", "bosch", "forus")
#: The published split folders, the camera folders and the expert folders.
SPLITS = ("Train", "Test")
DEVICES = ("Bosch", "Forus", "Remidio")
EXPERTS = tuple(f"Expert {number}" for number in range(1, 6))
IMAGE_FOLDER = "1.0_Original_Fundus_Images"
MASK_FOLDER = "3.0_Doctors_Annotations_Binary_OD_OC"
#: Mask folders of an expert and device: the disc and the cup.
PARTS = ("Disc", "Cup")
#: Extensions (lower case) of the image and mask files.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: Mean optic disc diameter (px of the original images) per camera, from the study's code;
#: the crop's side is twice that.
MEAN_DISC_DIAMETER = {"Bosch": 225.29, "Forus": 325.02, "Remidio": 448.05}
#: The device whose images are in distribution; the others are OOD domains of their own.
ID_DEVICE = "Remidio"
#: scikit-learn's KFold settings of the study's split, and the fold used.
N_FOLDS, FOLD, FOLD_SEED = 5, 0, 123
#: The values of option ``size``.
SIZES = (128, 64)
#: A standard deviation below this counts as 1 in the per-image z-score.
STD_EPS = 1e-6

_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class _Image:
    """An image file of the release with its experts' ``(disc, cup)`` mask files."""

    split: str
    device: str
    path: Path
    masks: tuple[tuple[Path, Path], ...]

    @property
    def image_id(self) -> str:
        return f"{self.split}/{self.device}/{self.path.stem}"


@dataclass(frozen=True)
class _Index:
    """The images of each ``(role, domain)``, and the images left out with the masks they lack."""

    images: dict[tuple[str, str], tuple[_Image, ...]]
    skipped: tuple[tuple[str, tuple[str, ...]], ...]


def kfold_split(
    n: int, n_splits: int = N_FOLDS, fold: int = FOLD, seed: int = FOLD_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of ``KFold(n_splits, shuffle=True, random_state=seed)`` on ``n`` items, without scikit-learn.

    scikit-learn shuffles ``arange(n)`` with ``RandomState(seed)`` (what
    ``RandomState(seed).permutation(n)`` gives), cuts it into consecutive folds whose
    sizes differ by at most one (the first ``n % n_splits`` one larger), and returns
    both index sets sorted.

    Returns
    -------
    train, held_out : ndarray of int
        Ascending indices.

    See Also
    --------
    sklearn.model_selection.KFold
    """
    order = np.random.RandomState(seed).permutation(n)
    sizes = np.full(n_splits, n // n_splits)
    sizes[: n % n_splits] += 1
    start = int(sizes[:fold].sum())
    held_out = np.zeros(n, dtype=bool)
    held_out[order[start : start + sizes[fold]]] = True
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (the first in raster order on a tie)."""
    from scipy import ndimage  # here, not at the top: listing the datasets (``uqeval plugins``) needs no scipy

    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def _crop(array: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The ``side`` × ``side`` window at ``(top, left)`` of ``array`` (y, x, …), zero outside it."""
    window = np.zeros((side, side, *array.shape[2:]), dtype=array.dtype)
    height, width = array.shape[:2]
    y0, y1 = max(top, 0), min(top + side, height)
    x0, x1 = max(left, 0), min(left + side, width)
    if y0 < y1 and x0 < x1:
        window[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return window


def _read(path: Path, mode: str, what: str) -> np.ndarray:
    """The file as an array in Pillow's ``mode``; a file Pillow cannot decode is a UQEvalError."""
    try:
        with Image.open(path) as file:
            return np.asarray(file.convert(mode))
    except _READ_ERRORS as error:
        raise UQEvalError(f"dataset 'chaksu': cannot read {what} {path}: {error}") from None


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """The image files directly in ``folder`` by stem; of several with one stem, ``.png`` or the first by name."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in EXTENSIONS and not path.name.startswith(".") and path.is_file():
            files.setdefault(path.stem, []).append(path)
    return {stem: next((p for p in paths if p.suffix.lower() == ".png"), paths[0]) for stem, paths in files.items()}


def _note(skipped: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    """The line of :meth:`ChaksuDataset.note` on the images ``skipped``: (id, masks lacking)."""
    if not skipped:
        return ""
    counts: dict[str, int] = {}
    for image_id, _ in skipped:
        key = image_id.rsplit("/", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    first, lacking = skipped[0]
    return (
        f"dataset 'chaksu': left out {len(skipped)} image{'s' if len(skipped) > 1 else ''} for which an expert "
        f"has no mask, as the study did ({', '.join(f'{key} {n}' for key, n in counts.items())}); "
        f"first: {first} lacks {', '.join(lacking)}"
    )


@dataclass(frozen=True, kw_only=True)
class ChaksuDataset(Options):
    """The Chákṣu optic disc and cup segmentations of five experts; OOD: the Bosch and Forus cameras.

    Satisfies :class:`uqeval.contracts.DatasetSource`; the module docstring describes
    the layout, the preprocessing and the splits.

    Parameters
    ----------
    root : str
        Folder that holds the unpacked ``Train`` and ``Test`` folders of the release
        (``~`` is expanded). Empty by default: the dataset then constructs, but has no
        images to give.
    size : int
        Side of the square images in px: 128 (the study's) or 64.
    """

    name: ClassVar[str] = "chaksu"
    kind: ClassVar[str] = "dataset"
    description: ClassVar[str] = (
        "Chaksu fundus photographs: optic disc and cup by 5 experts; ID: Remidio camera, OOD: Bosch and Forus "
        "(needs the published files, option root)"
    )
    in_channels: ClassVar[int] = 3
    n_classes: ClassVar[int] = 3
    class_names: ClassVar[tuple[str, ...]] = ("background", "disc", "cup")
    domains: ClassVar[tuple[str, ...]] = DOMAINS

    root: str = ""
    size: int = 128

    def __post_init__(self) -> None:
        root = self.root
        if not isinstance(root, str | os.PathLike):
            raise UQEvalError(f"option 'root' of dataset 'chaksu' must be a folder path, got {root!r}")
        object.__setattr__(self, "root", os.fspath(root))
        size = self.size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise UQEvalError(f"option 'size' of dataset 'chaksu' must be an integer, got {size!r}")
        if size not in SIZES:
            raise UQEvalError(f"option 'size' of dataset 'chaksu' must be 128 or 64, got {size}")
        object.__setattr__(self, "size", int(size))

    def samples(self, role: str, domain: str = "id", *, seed: int = 0) -> Iterator[Sample]:
        """The images of ``role`` in ``domain``, each read and preprocessed when drawn.

        Parameters
        ----------
        role : str
            ``train``, ``calibration`` or ``test``.
        domain : str
            ``id`` (Remidio) or ``bosch`` or ``forus``; the OOD domains have ``test``
            images only and yield nothing for the other roles.
        seed : int
            Non-negative; ignored, as nothing here is random.

        Returns
        -------
        Iterator of Sample
            Ids ``{split}/{device}/{stem}`` (``Train/Remidio/IMG_0001``), in the order
            of the module docstring; images (3, size, size) float32, z-scored; labels
            (5, size, size) uint8 with 0 background, 1 disc, 2 cup.

        Raises
        ------
        UQEvalError
            At once for an unknown role or domain, a bad seed, an unset or missing
            ``root`` or a folder of the layout that is missing; while iterating, for an
            image or mask that cannot be read, a mask whose shape differs from its
            image's, or an image in which no expert marks a disc.
        """
        refuse_bad_request("dataset 'chaksu'", role, domain, seed, ROLES, DOMAINS)
        images = self._index.images.get((role, domain), ())
        return (Sample(image.image_id, *self._load(image), domain, role) for image in images)

    def skipped(self) -> dict[str, int]:
        """How many images were left out because an expert lacks a mask, by ``{split}/{device}`` (all six)."""
        counts = {f"{split}/{device}": 0 for split in SPLITS for device in DEVICES}
        for image_id, _ in self._index.skipped:
            counts[image_id.rsplit("/", 1)[0]] += 1
        return counts

    def skipped_images(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The images left out: each id with the masks it lacks (``"Expert 2/Cup"``), in path order."""
        return self._index.skipped

    def note(self) -> str:
        """One line on the images left out for a missing mask, for a front end to print; empty if none."""
        return _note(self._index.skipped)

    @cached_property
    def _index(self) -> _Index:
        """The files of the release, found and split on first use (once per instance)."""
        if not self.root:
            raise UQEvalError(
                "option 'root' of dataset 'chaksu' is not set: pass the folder that holds the unpacked "
                "Train and Test folders of the release (--data-option root=PATH)"
            )
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UQEvalError(f"option 'root' of dataset 'chaksu': folder {root} does not exist")
        found: dict[tuple[str, str], list[_Image]] = {}
        skipped: list[tuple[str, tuple[str, ...]]] = []
        for split in SPLITS:
            for device in DEVICES:
                found[split, device] = self._find(root, split, device, skipped)
        remidio = found["Train", ID_DEVICE]
        if len(remidio) < N_FOLDS:
            raise UQEvalError(
                f"dataset 'chaksu': {root / 'Train' / IMAGE_FOLDER / ID_DEVICE} holds {len(remidio)} usable "
                f"images; the {N_FOLDS}-fold split needs at least {N_FOLDS}"
            )
        train, calibration = kfold_split(len(remidio))
        images = {
            ("train", "id"): tuple(remidio[k] for k in train),
            ("calibration", "id"): tuple(remidio[k] for k in calibration),
            ("test", "id"): tuple(found["Test", ID_DEVICE]),
        }
        for device in DEVICES:
            if device != ID_DEVICE:
                images["test", device.lower()] = tuple(found["Train", device] + found["Test", device])
        if skipped:
            logger.warning("%s", _note(skipped))
        return _Index(images, tuple(skipped))

    @staticmethod
    def _find(root: Path, split: str, device: str, skipped: list[tuple[str, tuple[str, ...]]]) -> list[_Image]:
        """The images of one split and device with all their masks, in path order; the others go to ``skipped``."""
        folder = root / split / IMAGE_FOLDER / device
        if not folder.is_dir():
            raise UQEvalError(f"dataset 'chaksu': image folder {folder} is missing (see the layout in the docs)")
        paths = sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in EXTENSIONS and not path.name.startswith(".") and path.is_file()
        )
        stems: dict[str, Path] = {}
        for path in paths:
            if path.stem in stems:
                raise UQEvalError(
                    f"dataset 'chaksu': images {stems[path.stem]} and {path} have the same stem, "
                    "so their masks cannot be told apart"
                )
            stems[path.stem] = path
        if not paths:
            return []
        masks: list[dict[str, Path]] = []
        for expert in EXPERTS:
            for part in PARTS:
                mask_folder = root / split / MASK_FOLDER / expert / device / part
                if not mask_folder.is_dir():
                    raise UQEvalError(
                        f"dataset 'chaksu': expert folder {mask_folder} is missing for the {device} images of {split}"
                    )
                masks.append(_files_by_stem(mask_folder))
        kept = []
        names = [f"{expert}/{part}" for expert in EXPERTS for part in PARTS]
        for path in paths:
            image = _Image(split, device, path, ())
            lacking = tuple(name for name, files in zip(names, masks, strict=True) if path.stem not in files)
            if lacking:
                skipped.append((image.image_id, lacking))
                continue
            chosen = [files[path.stem] for files in masks]  # Expert 1 Disc, Expert 1 Cup, Expert 2 Disc, …
            kept.append(dataclasses.replace(image, masks=tuple(zip(chosen[0::2], chosen[1::2], strict=True))))
        return kept

    def _load(self, entry: _Image) -> tuple[np.ndarray, np.ndarray]:
        """The preprocessed image (3, size, size) float32 and labels (5, size, size) uint8 of ``entry``."""
        image = _read(entry.path, "RGB", "image")
        labels = np.empty((*image.shape[:2], len(entry.masks)), dtype=np.uint8)
        for rater, (disc_path, cup_path) in enumerate(entry.masks):
            disc, cup = (self._mask(path, entry.path, image.shape[:2]) for path in (disc_path, cup_path))
            disc, cup = _largest_component(disc), _largest_component(cup)
            disc |= cup
            cup &= disc
            labels[..., rater] = disc.astype(np.uint8) + cup
        discs = (labels > 0).any(axis=2)
        rows, cols = np.flatnonzero(discs.any(axis=1)), np.flatnonzero(discs.any(axis=0))
        if rows.size == 0:
            raise UQEvalError(f"dataset 'chaksu': no expert marks a disc in image {entry.path}")
        side = round(2 * MEAN_DISC_DIAMETER[entry.device])
        top = round(float(rows[0] + rows[-1]) / 2 - side / 2)
        left = round(float(cols[0] + cols[-1]) / 2 - side / 2)
        shape = (self.size, self.size)
        crop = Image.fromarray(_crop(image, top, left, side))
        pixels = np.asarray(crop.resize(shape, Image.Resampling.BILINEAR), dtype=np.float64) / 255
        std = pixels.std()
        pixels = (pixels - pixels.mean()) / (std if std >= STD_EPS else 1.0)
        cropped = _crop(labels, top, left, side)
        resized = [
            np.asarray(Image.fromarray(cropped[..., rater]).resize(shape, Image.Resampling.NEAREST))
            for rater in range(cropped.shape[2])
        ]
        return pixels.transpose(2, 0, 1).astype(np.float32), np.stack(resized)

    @staticmethod
    def _mask(path: Path, image_path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """The mask in ``path`` as booleans (grey level > 0), of the image's ``shape``."""
        mask = _read(path, "L", "mask") > 0
        if mask.shape != shape:
            raise UQEvalError(
                f"dataset 'chaksu': mask {path} is {mask.shape[0]}×{mask.shape[1]} px "
                f"but its image {image_path} is {shape[0]}×{shape[1]} px"
            )
        return mask
