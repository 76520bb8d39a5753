"""Reading the arrays of prediction and label files: ``.npy``, ``.npz``, NIfTI, PNG and TIFF.

Every reader names the file when it cannot read it, and never unpickles: ``.npy`` and
``.npz`` files are loaded with ``allow_pickle=False``, and nothing here opens a
``.pkl``. NIfTI needs nibabel (the extra ``uqeval[import]``), imported only when a
NIfTI file is read.

Axis order: a NIfTI array is stored with ``x`` varying fastest, and nibabel shows it as
``(x, y, z)``; SimpleITK, nnU-Net's default reader, shows the same data as ``(z, y,
x)``. :func:`read_nifti` returns the SimpleITK order, ``(z, y, x)`` (a 2D file ``(y,
x)``; a fourth NIfTI dim, such as classes, first), and the voxel spacing in the same
order. PNG and TIFF images are ``(y, x)`` as stored (a multi-page TIFF ``(z, y, x)``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

from uqeval.errors import UQEvalError

#: File endings read, longest first so that ``.nii.gz`` wins over ``.gz``.
NIFTI_ENDINGS = (".nii.gz", ".nii")
IMAGE_ENDINGS = (".png", ".tif", ".tiff")
NUMPY_ENDINGS = (".npy", ".npz")
ENDINGS = (*NIFTI_ENDINGS, *NUMPY_ENDINGS, *IMAGE_ENDINGS)
#: What installs the optional readers.
INSTALL_HINT = "pip install 'uqeval[import]'"


def ending(path: Path) -> str:
    """The file's ending among :data:`ENDINGS` (lower case), or its suffix when none matches."""
    name = path.name.lower()
    return next((end for end in ENDINGS if name.endswith(end)), path.suffix.lower())


def nibabel() -> ModuleType:
    """The nibabel module, or an error that says how to install it."""
    try:
        import nibabel
    except ImportError:
        raise UQEvalError(f"reading NIfTI files needs nibabel, which is not installed: {INSTALL_HINT}") from None
    return nibabel


def _unreadable(path: Path, what: str, error: BaseException) -> UQEvalError:
    return UQEvalError(f"{path}: cannot be read as {what} ({type(error).__name__}: {error})")


def _nifti_image(path: Path, reorient: bool):
    nib = nibabel()
    try:
        image = nib.load(str(path))
        return nib.as_closest_canonical(image) if reorient else image
    except Exception as error:  # nibabel raises many kinds for a damaged file
        raise _unreadable(path, "NIfTI", error) from None


def _to_simpleitk_order(array: np.ndarray) -> np.ndarray:
    """nibabel's ``(x, y[, z][, c])`` as ``([c,] [z,] y, x)``."""
    spatial = min(array.ndim, 3)
    order = [*range(spatial, array.ndim), *reversed(range(spatial))]
    return array.transpose(order)


def nifti_spacing(path: Path, *, reorient: bool = False) -> list[float]:
    """The voxel size of a NIfTI file in mm, ``[z, y, x]`` (``[y, x]`` for a 2D file), from its header only."""
    image = _nifti_image(path, reorient)
    zooms = [float(value) for value in image.header.get_zooms()[: min(len(image.shape), 3)]]
    return zooms[::-1]


def read_nifti(path: Path, *, reorient: bool = False) -> np.ndarray:
    """A NIfTI file's array in SimpleITK's order, ``(z, y, x)`` (see the module docstring).

    ``reorient`` first turns the image to the closest canonical (RAS) orientation, as
    nnU-Net's ``NibabelIOWithReorient`` does.
    """
    image = _nifti_image(path, reorient)
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as error:  # a truncated gzip stream, a short file
        raise _unreadable(path, "NIfTI", error) from None
    return _to_simpleitk_order(np.asarray(array))


def file_shape(path: Path) -> tuple[int, ...]:
    """The shape :func:`read_array` will give a file's array (NIfTI in SimpleITK's order),
    from its header only."""
    kind = ending(path)
    if kind == ".npy":
        try:
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except Exception as error:  # a damaged header, a pickled object array
            raise _unreadable(path, "an .npy file", error) from None
    if kind == ".npz":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [name.removesuffix(".npy") for name in archive.namelist()]
        except Exception as error:  # not a zip file
            raise _unreadable(path, "an .npz file", error) from None
        if len(names) != 1:
            listed = ", ".join(map(repr, names))
            raise UQEvalError(f"{path}: holds {len(names)} arrays ({listed}); expected exactly one")
        return npz_member_header(path, names[0])[0]
    if kind not in (*NIFTI_ENDINGS, *IMAGE_ENDINGS):
        raise UQEvalError(f"{path}: files ending in {kind!r} are not read; use one of {', '.join(ENDINGS)}")
    if kind in NIFTI_ENDINGS:
        shape = tuple(int(size) for size in _nifti_image(path, reorient=False).shape)
        spatial = min(len(shape), 3)
        return (*shape[spatial:], *reversed(shape[:spatial]))
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            channels = len(image.getbands())
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise _unreadable(path, "an image", error) from None
    shape = (height, width) if channels == 1 else (height, width, channels)
    return shape if frames == 1 else (frames, *shape)


def read_image(path: Path) -> np.ndarray:
    """A PNG or TIFF file as ``(y, x)``, ``(y, x, channel)``, or ``(z, y, x)`` for a multi-page TIFF."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = []
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frames.append(np.asarray(image))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise _unreadable(path, "an image", error) from None
    return frames[0] if len(frames) == 1 else np.stack(frames)


def npz_member_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of array ``key`` of an ``.npz`` file, from its header only.

    Raises
    ------
    UQEvalError
        When the file is not a readable ``.npz`` or lacks ``key`` (naming the keys it has).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            if key not in names:
                raise UQEvalError(f"{path}: holds the array(s) {', '.join(map(repr, names))}, not {key!r}")
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                reader = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = reader(member)
    except UQEvalError:
        raise
    except Exception as error:  # not a zip file, a damaged member header
        raise _unreadable(path, "an .npz file", error) from None
    return tuple(shape), np.dtype(dtype)


def read_npz(path: Path, key: str | None = None) -> np.ndarray:
    """Array ``key`` of an ``.npz`` file; without ``key``, its only array."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise UQEvalError(
                        f"{path}: holds {len(names)} arrays ({', '.join(map(repr, names))}); expected exactly one"
                    )
                key = names[0]
            if key not in names:
                raise UQEvalError(f"{path}: holds the array(s) {', '.join(map(repr, names))}, not {key!r}")
            return archive[key]
    except UQEvalError:
        raise
    except Exception as error:  # not a zip file, a damaged or pickled member
        raise _unreadable(path, "an .npz file", error) from None


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:  # a pickled object array, a damaged header
        raise _unreadable(path, "an .npy file", error) from None


def read_array(path: Path) -> np.ndarray:
    """The array of a file of any of :data:`ENDINGS`, NIfTI in SimpleITK's order.

    Raises
    ------
    UQEvalError
        For a missing file, another ending, or a file that cannot be read, naming it.
    """
    if not path.is_file():
        raise UQEvalError(f"{path}: no such file")
    kind = ending(path)
    if kind in NIFTI_ENDINGS:
        return read_nifti(path)
    if kind == ".npy":
        return read_npy(path)
    if kind == ".npz":
        return read_npz(path)
    if kind in IMAGE_ENDINGS:
        return read_image(path)
    raise UQEvalError(f"{path}: files ending in {kind!r} are not read; use one of {', '.join(ENDINGS)}")


def as_probabilities(array: np.ndarray, path: Path) -> np.ndarray:
    """Probabilities as float32: floats as they are, integers scaled to [0, 1] by their dtype's maximum.

    An 8-bit PNG of 255 is 1.0, a 16-bit one of 65535 is 1.0.
    """
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    if array.dtype.kind == "b":
        return array.astype(np.float32)
    raise UQEvalError(f"{path}: holds {array.dtype} values; expected probabilities (floats or integer images)")


def as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Label maps as integers; float files are accepted when every value is a whole number."""
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    raise UQEvalError(f"{path}: holds {array.dtype} values that are not whole numbers; labels are class indices")
