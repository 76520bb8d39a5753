"""The cube store's contract, schema 1: what a store holds, stated once.

The reader (:mod:`uqeval.cube.read`) checks a store against these declarations and the
writer (:mod:`uqeval.cube.write`) builds one from them; docs/cube.md describes them for
users. Every variable's dims end in the store's spatial dims: :data:`SPATIAL_DIMS`
``(y, x)`` for a store of images, :data:`VOLUME_DIMS` ``(z, y, x)`` for a store of
volumes (:meth:`Variable.with_spatial` gives a variable's dims for either). The
declarations :data:`PROBS`, :data:`LABELS` and :data:`INPUT` are those of images; the
reader takes the spatial dims of a store from its probabilities
(:func:`spatial_dims_for`) and holds every other variable to them. Another kind of
store adds its variables here.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from uqeval.errors import UQEvalError
from uqeval.names import ALL_TEST, ID_DOMAIN, IGNORE_LABEL, POOLED_OOD, ROLES, TEST

#: The value of the required group attribute ``schema`` this contract describes.
SCHEMA = 1

#: The dim along which a store lists its images, and the coordinate of their ids.
IMAGE_DIM = "image"
#: The pixel grid every per-image variable shares, slowest-varying first.
SPATIAL_DIMS = ("y", "x")
#: The dims of one image's cube before its pixels: members, samples, classes.
CUBE_DIMS = ("eu", "au", "class")
#: The voxel grid of a store of volumes, slowest-varying first: slices along ``z``.
VOLUME_DIMS = ("z", *SPATIAL_DIMS)
#: The spatial dims a store may have: images ``(y, x)`` or volumes ``(z, y, x)``.
SPATIAL_LAYOUTS = (SPATIAL_DIMS, VOLUME_DIMS)
#: Dims whose size every variable that has them shares with the probabilities.
SHARED_DIMS = (IMAGE_DIM, *SPATIAL_DIMS)
#: :data:`SHARED_DIMS` of a store of volumes.
VOLUME_SHARED_DIMS = (IMAGE_DIM, *VOLUME_DIMS)
#: Optional group attribute: the size of a pixel (voxel) in mm along each spatial dim,
#: ``[z, y, x]`` for volumes, ``[y, x]`` for images.
SPACING_ATTR = "spacing"

#: Storage dtypes of the probabilities (or logits) that a store may hold. Every value is
#: computed on in float32, so float64 gains nothing over float32 but size.
FLOAT_DTYPES = ("float16", "float32", "float64")
#: Storage dtypes of the probabilities that :class:`~uqeval.cube.write.CubeWriter` writes.
WRITTEN_FLOAT_DTYPES = ("float16", "float32")

#: Group attribute where the writer records its progress; absent on stores written
#: by other tools, which then read as complete.
PROGRESS_ATTR = "uqeval_writer"
#: The class index of the background when the ``background`` attribute is absent.
DEFAULT_BACKGROUND = 0
#: Labels are stored as uint8 with :data:`~uqeval.names.IGNORE_LABEL` meaning ignore,
#: which leaves room for this many classes.
MAX_LABELLED_CLASSES = IGNORE_LABEL


@dataclass(frozen=True)
class Variable:
    """One array variable of a store, along ``image`` first.

    Attributes
    ----------
    name : str
    dims : tuple of str
        Its dims in their required order, ``image`` first.
    kinds : str
        numpy dtype kinds a store may hold (``"f"`` floats, ``"iu"`` integers).
    expected : str
        How a message names the dtypes it may hold.
    stored_dtype : str or None
        What :class:`~uqeval.cube.write.CubeWriter` writes (None: the writer's ``dtype``).
    fill_value : float or int
        The writer's fill value.
    counted : tuple of str
        Per-image dims a store must not leave empty, with ``empty_hint`` added to the message.
    empty_hint : str
    """

    name: str
    dims: tuple[str, ...]
    kinds: str
    expected: str
    stored_dtype: str | None
    fill_value: float | int
    counted: tuple[str, ...]
    empty_hint: str = ""

    @property
    def axis(self) -> dict[str, int]:
        """Dim name → axis number."""
        return {dim: number for number, dim in enumerate(self.dims)}

    def image_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """One image's shape, from ``sizes`` (dim name → size)."""
        return tuple(sizes[dim] for dim in self.dims[1:])

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        """Its trailing spatial dims: :data:`SPATIAL_DIMS` or :data:`VOLUME_DIMS`."""
        return VOLUME_DIMS if VOLUME_DIMS[0] in self.dims else SPATIAL_DIMS

    def with_spatial(self, spatial_dims: tuple[str, ...]) -> Variable:
        """The same variable with ``spatial_dims`` (one of :data:`SPATIAL_LAYOUTS`) as its trailing dims."""
        if spatial_dims not in SPATIAL_LAYOUTS:
            raise ValueError(f"spatial dims are one of {SPATIAL_LAYOUTS}, not {spatial_dims}")
        own = self.spatial_dims
        leading = self.dims[: -len(own)]
        counted = tuple(dim for dim in self.counted if dim not in own)
        if any(dim in own for dim in self.counted):
            counted += spatial_dims
        return replace(self, dims=(*leading, *spatial_dims), counted=counted)


_FLOATS = f"floats ({', '.join(FLOAT_DTYPES)})"

#: Softmax probabilities; sum over ``class`` = 1.
PROBS = Variable(
    "probs",
    (IMAGE_DIM, *CUBE_DIMS, *SPATIAL_DIMS),
    kinds="f",
    expected=_FLOATS,
    stored_dtype=None,
    fill_value=np.nan,
    counted=(IMAGE_DIM, *CUBE_DIMS, *SPATIAL_DIMS),
)
#: Logits instead of probabilities: softmax over ``class`` is applied on read.
LOGITS = replace(PROBS, name="logits")
#: The store holds exactly one of these.
VALUES = (PROBS, LOGITS)
#: Raters' label maps: a class index or :data:`~uqeval.names.IGNORE_LABEL` (optional).
LABELS = Variable(
    "labels",
    (IMAGE_DIM, "rater", *SPATIAL_DIMS),
    kinds="iu",
    expected="an integer type",
    stored_dtype="uint8",
    fill_value=IGNORE_LABEL,
    counted=("rater",),
    empty_hint="; leave `labels` out when there are none",
)
#: The input image's pixels; no score uses them (optional).
INPUT = Variable(
    "input",
    (IMAGE_DIM, "channel", *SPATIAL_DIMS),
    kinds="f",
    expected="floats (the input image's pixels, e.g. float32)",
    stored_dtype="float32",
    fill_value=np.nan,
    counted=("channel",),
)
#: The optional per-image arrays beside the probabilities, in the order they are checked.
EXTRAS = (LABELS, INPUT)

#: A *maps store* holds uncertainty maps given as they are, instead of probabilities: any
#: of these (image, [z,] y, x), in nats per pixel, with :data:`MEAN`.
MAP_MEASURES = ("au", "eu", "tu")
MAPS = tuple(
    Variable(
        name,
        (IMAGE_DIM, *SPATIAL_DIMS),
        kinds="f",
        expected=_FLOATS,
        stored_dtype="float32",
        fill_value=np.nan,
        counted=(IMAGE_DIM, *SPATIAL_DIMS),
    )
    for name in MAP_MEASURES
)
#: The mean prediction of a maps store (sum over ``class`` = 1), from which ``pred`` = argmax.
MEAN = Variable(
    "mean",
    (IMAGE_DIM, "class", *SPATIAL_DIMS),
    kinds="f",
    expected=_FLOATS,
    stored_dtype="float32",
    fill_value=np.nan,
    counted=(IMAGE_DIM, "class", *SPATIAL_DIMS),
)
#: ``CubeWriter(variable=...)`` and the attribute ``source_variable`` of a maps store.
MAPS_VARIABLE = "maps"

#: Axis of ``class`` in the probabilities (and logits).
CLASS_AXIS = PROBS.axis["class"]


@dataclass(frozen=True)
class StringVariable:
    """A variable of one non-empty string per image.

    ``default`` fills it when a store leaves it out (None: required); ``allowed``, when
    given, lists every value it may take.
    """

    name: str
    default: str | None
    allowed: tuple[str, ...] | None = None
    dims: tuple[str, ...] = field(default=(IMAGE_DIM,))


#: The image's domain: ``"id"`` for in-distribution images, anything else an OOD shift.
DOMAIN = StringVariable("domain", default=None)
#: Whether an image is used to fit (``"calibration"``) or to score (``"test"``).
ROLE = StringVariable("role", default=TEST, allowed=ROLES)
#: The per-image string variables, in the order they are checked.
STRINGS = (DOMAIN, ROLE)

#: Names of report splits that pool several domains; no image's domain may take one.
RESERVED_DOMAINS = {
    POOLED_OOD: "the split of all OOD domains pooled",
    ALL_TEST: "the split of every test image (ID and OOD)",
}
#: Letters of other scripts that look like the Latin letters of ``id``, ``ood`` and ``all``
#: (after case folding), from Unicode's confusables: Cyrillic, Greek, Armenian, IPA.
_HOMOGLYPHS = str.maketrans(
    {
        "\u0456": "i",  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
        "\u0131": "i",  # LATIN SMALL LETTER DOTLESS I
        "\u03b9": "i",  # GREEK SMALL LETTER IOTA
        "\u0269": "i",  # LATIN SMALL LETTER IOTA
        "\u0501": "d",  # CYRILLIC SMALL LETTER KOMI DE
        "\u043e": "o",  # CYRILLIC SMALL LETTER O
        "\u03bf": "o",  # GREEK SMALL LETTER OMICRON
        "\u0585": "o",  # ARMENIAN SMALL LETTER OH
        "\u0430": "a",  # CYRILLIC SMALL LETTER A
        "\u0251": "a",  # LATIN SMALL LETTER ALPHA
        "\u04cf": "l",  # CYRILLIC SMALL LETTER PALOCHKA
        "\u01c0": "l",  # LATIN LETTER DENTAL CLICK
    }
)
#: Unicode categories dropped before names are compared: format characters (zero-width
#: space and joiners, soft hyphen, bidi marks), control characters and combining marks.
_INVISIBLE = ("Cf", "Cc", "Mn", "Me")


def domain_key(domain: str) -> str:
    r"""What ``domain`` reads as to a person: the key that two look-alike names share.

    NFKC folds compatibility forms (fullwidth ``ｉｄ``, mathematical ``𝐢𝐝``, ligatures)
    into plain letters; format and control characters and combining marks are dropped
    (``i\u200bd``, ``i\u0307d``); case is folded (``ID``); homoglyphs of other scripts
    become the Latin letters they imitate (Cyrillic ``іd``); surrounding whitespace goes.
    Spaces inside a name are kept: ``i d`` is a name of its own.
    """
    text = unicodedata.normalize("NFKC", domain).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(char for char in text if unicodedata.category(char) not in _INVISIBLE)
    return text.translate(_HOMOGLYPHS).strip()


def spelled_out(value: str) -> str:
    """``repr(value)``, followed by the code point and name of each character that is not
    ASCII, so that a look-alike shows how it differs: ``'іd' (U+0456 CYRILLIC SMALL LETTER
    BYELORUSSIAN-UKRAINIAN I)``. ``repr`` already shows ASCII control characters escaped."""
    unusual = dict.fromkeys(char for char in value if not char.isascii())
    if not unusual:
        return repr(value)
    names = ", ".join(f"U+{ord(char):04X} {unicodedata.name(char, 'a control character')}" for char in unusual)
    return f"{value!r} ({names})"


def check_domains(domains: Sequence[str] | np.ndarray, where: str) -> None:
    r"""Refuse a domain a scorer would misread: a reserved name or a look-alike.

    The rule the writer applies when images are appended and the reader when a store is
    opened. A domain is refused when

    - it is ``ood`` or ``all``, the names of report splits that pool several domains
      (:data:`RESERVED_DOMAINS`);
    - it reads as ``id``, ``ood`` or ``all`` (the same :func:`domain_key`) without being
      spelled so: ``ID``, ``" id"``, ``i\u200bd`` (zero-width space), fullwidth ``ｉｄ``,
      Cyrillic ``іd``. Scored as written, images in a look-alike of ``id`` would silently
      count as an OOD shift, OOD detection would lose its ID images and nothing would be
      fitted.

    Parameters
    ----------
    domains : (image,) str
        Each image's domain.
    where : str
        How the message names the source (a store's path, ``CubeWriter.append``), or
        ``""`` for none.

    Raises
    ------
    UQEvalError
        Naming the domain (with the code points of its unusual characters), how many
        images have it, and what it is taken for.
    """
    values, counts = np.unique(np.asarray(domains, dtype=object).astype(str), return_counts=True)
    prefix = f"{where}: " if where else ""
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value == ID_DOMAIN:
            continue
        images = "1 image" if count == 1 else f"{count} images"
        key = domain_key(value)
        if value in RESERVED_DOMAINS:
            raise UQEvalError(
                f"{prefix}domain {value!r} of {images} is a reserved name: {value!r} is {RESERVED_DOMAINS[value]} "
                "in the report; name the OOD shift otherwise"
            )
        if key == ID_DOMAIN:
            raise UQEvalError(
                f"{prefix}domain {spelled_out(value)} of {images} looks like {ID_DOMAIN!r} (in-distribution) but "
                f"is spelled differently; write {ID_DOMAIN!r}"
            )
        if key in RESERVED_DOMAINS:
            raise UQEvalError(
                f"{prefix}domain {spelled_out(value)} of {images} looks like {key!r}, {RESERVED_DOMAINS[key]} "
                "in the report; name the OOD shift otherwise"
            )


#: Group attributes beside ``schema`` (required), all optional; the writer records each.
#: ``class_names`` has one name per class (default :func:`default_class_names`),
#: ``background`` is a class index (default :data:`DEFAULT_BACKGROUND`).
ATTRIBUTES = ("au_method", "eu_method", "model", "dataset", "seed", "class_names", "background")


def default_class_names(n_classes: int) -> list[str]:
    """``class_0``, ``class_1``, ...: the names of classes a store does not name."""
    return [f"class_{c}" for c in range(n_classes)]


def is_class_index(value: object, n_classes: int) -> bool:
    """Whether ``value`` is an integer class index in ``[0, n_classes)`` (the ``background`` rule)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and bool(0 <= value < n_classes)


def are_class_names(value: object) -> bool:
    """Whether ``value`` is a sequence of strings (the ``class_names`` rule, besides one per class)."""
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        return False
    return all(isinstance(name, str) for name in np.asarray(value, dtype=object).tolist())


def invalid_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Where ``labels`` is neither a class index in ``[0, n_classes)`` nor :data:`IGNORE_LABEL`."""
    return ((labels < 0) | (labels >= n_classes)) & (labels != IGNORE_LABEL)


def first_invalid_label(labels: np.ndarray, n_classes: int) -> tuple[tuple[int, ...], int] | None:
    """The position (one number per dim of ``labels``) and value of the first invalid label, or None."""
    bad = invalid_labels(labels, n_classes)
    if not bad.any():
        return None
    position = tuple(int(index) for index in np.argwhere(bad)[0])
    return position, int(labels[position])


def pixel_text(position: Sequence[int]) -> str:
    """A pixel's position in messages, ``y=3, x=4`` (a voxel's ``z=1, y=3, x=4``), from its
    indices along :data:`SPATIAL_DIMS` (or :data:`VOLUME_DIMS`)."""
    dims = VOLUME_DIMS[len(VOLUME_DIMS) - len(position) :]
    return ", ".join(f"{dim}={index}" for dim, index in zip(dims, position, strict=True))


def spatial_dims_for(n_dims: int) -> tuple[str, ...]:
    """The spatial dims that a store whose probabilities have ``n_dims`` dims is held to.

    ``(image, eu, au, class, z, y, x)`` (7 dims) is a store of volumes; anything else is
    held to the dims of images, so that a store of images with a wrong dim gets the
    message it always got.
    """
    return VOLUME_DIMS if n_dims == len(PROBS.dims) + 1 else SPATIAL_DIMS


def maps_spatial_dims_for(n_dims: int) -> tuple[str, ...]:
    """:func:`spatial_dims_for` of a maps store whose ``mean`` has ``n_dims`` dims."""
    return VOLUME_DIMS if n_dims == len(MEAN.dims) + 1 else SPATIAL_DIMS


def is_maps_store(dataset: Any) -> bool:
    """Whether a validated store is a maps store (``mean`` and maps, no probabilities)."""
    return "probs" not in getattr(dataset, "data_vars", {}) and MEAN.name in getattr(dataset, "data_vars", {})


def store_spatial_dims(dataset: Any) -> tuple[str, ...]:
    """The spatial dims of a validated cube (:func:`uqeval.open_cube`): ``("y", "x")`` for
    images, ``("z", "y", "x")`` for volumes. Works on a Dataset or on its ``probs``."""
    values = dataset["probs"] if "probs" in getattr(dataset, "data_vars", {}) else dataset
    return VOLUME_DIMS if VOLUME_DIMS[0] in values.dims else SPATIAL_DIMS


def check_spacing(value: object, spatial_dims: tuple[str, ...], where: str) -> list[float]:
    """The attribute ``spacing`` as a list of floats, one per spatial dim, in mm.

    Raises
    ------
    UQEvalError
        Unless ``value`` holds ``len(spatial_dims)`` positive finite numbers.
    """
    expected = (
        f"{len(spatial_dims)} positive finite numbers, the size of a "
        f"{'voxel' if len(spatial_dims) == 3 else 'pixel'} in mm along ({', '.join(spatial_dims)})"
    )
    numbers = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(numbers, str | bytes) or not isinstance(numbers, Sequence) or len(numbers) != len(spatial_dims):
        raise UQEvalError(f"{where}: attribute `{SPACING_ATTR}` is {value!r}; expected {expected}")
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int | float | np.integer | np.floating):
            raise UQEvalError(f"{where}: attribute `{SPACING_ATTR}` is {value!r}; expected {expected}")
        if not (math.isfinite(number) and number > 0):
            raise UQEvalError(f"{where}: attribute `{SPACING_ATTR}` is {value!r}; expected {expected}")
    return [float(number) for number in numbers]


@dataclass(frozen=True)
class WriteProgress:
    """A store's write progress: whole images written, and whether the writer closed it."""

    n_images: int
    complete: bool

    def record(self) -> dict[str, Any]:
        """The value of :data:`PROGRESS_ATTR` that records this progress."""
        return {"n_images": self.n_images, "complete": self.complete}

    @staticmethod
    def recorded(attrs: Mapping[str, Any]) -> WriteProgress | None:
        """The progress recorded in a store's group attributes; None if no writer recorded any."""
        value = attrs.get(PROGRESS_ATTR)
        if not isinstance(value, Mapping):
            return None
        return WriteProgress(n_images=int(value.get("n_images", 0)), complete=bool(value.get("complete", False)))
