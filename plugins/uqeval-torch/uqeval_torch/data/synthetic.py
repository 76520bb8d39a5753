"""The ``synthetic`` dataset: shapes on a textured background, drawn by raters who disagree.

Made on the fly, with no download, and deterministic: image ``k`` of a role is drawn
from ``SeedSequence(seed, spawn_key=(role, k))`` alone, so it is the same however many
images are drawn, and the roles never share a scene.

Generative model (lengths in pixels, intensities in [0, 1])
-----------------------------------------------------------
Scene
    A base grey level in [0.25, 0.4] plus a smooth texture (periodic gaussian-filtered white
    noise: a low-frequency part of standard deviation 0.05 and a finer part of 0.02)
    and sensor noise of standard deviation 0.015. On it one shape, a second smaller
    one 30 % of the time, or none 6 % of the time. A shape is an ellipse (semi-axes
    12–26 % of the image side for the first shape, 7–14 % for the second, axis ratio
    up to 1.7) with a wobbly border (2nd and 3rd angular harmonics of up to 8 % of the
    radius), brighter than the background by 0.2–0.35 and with an edge blurred over
    0.3–2 px. With three classes every shape holds a core (35–55 % of its size,
    brighter by another 0.1–0.2, edge 0.5–2.5 px), like an optic cup in its disc.
Faint shapes
    The first shape is faint 20 % of the time, the second 50 % (option ``faint``: the
    first shape's probability; the second's is 2.5× that, at most 1): its contrast is
    0.06–0.1, about that of the texture.
Raters
    Each rater thresholds the shape's (approximate) signed distance ``d`` at their own
    offset: the rater's mask is ``d < o``, so ``o > 0`` draws a generous border. The
    offset is the rater's fixed habit (evenly spread over ±0.5 px from the tightest
    rater to the most generous), plus a draw per shape of standard deviation
    ``0.4 + 0.5·w`` px, where ``w`` is the width of the shape's blurred edge (×1.3 on
    faint shapes), plus a slow wobble along the border of up to 0.6 px. Offsets are
    kept within [-2.5, 2.5] px (and above ``-0.4`` × the shape's minor semi-axis, so
    that no border swallows a small shape). The core's border is drawn the same way,
    inside the rater's shape. A faint shape is marked by a random subset of the raters
    that holds some of them but not all (with one rater: a coin flip). Rater variance
    therefore lives on the borders, widest where edges are blurry, and on faint
    shapes; images without a shape have all raters agree on background.
OOD domains
    The ``test`` images shifted, same scenes and labels. With ``shifts="study"`` (the
    default) these are the study's shifts of :mod:`uqeval_torch.data.shifts`, one draw
    per image, the same module LIDC-IDRI and Chaksu use; the ``noise`` shift is not
    clipped, so its images may leave [0, 1]. With ``shifts="fixed"`` they are this
    dataset's own, stronger shifts of fixed strength scaled by ``severity``, which are
    not the study's: ``blur`` (gaussian, ``σ = 1.5·severity·size/64`` px), ``noise``
    (additive gaussian, standard deviation ``0.25·severity``: absolute, not relative to
    the image), ``contrast`` (scaled linearly around the image mean by
    ``max(0.1, 1 - 0.6·severity)``, not CLAHE) and ``jpeg`` (8-bit JPEG round trip at
    quality ``round(10/severity)`` within [1, 95]), each clipped to [0, 1].

Example
-------
>>> dataset = SyntheticDataset(size=32, n_classes=3)
>>> sample = next(iter(dataset.samples("test", "noise")))
>>> sample.image_id, sample.role, sample.domain
('test-0000-noise', 'test', 'noise')
>>> sample.image.shape, sample.image.dtype, sample.labels.shape, sample.labels.dtype
((1, 32, 32), dtype('float32'), (4, 32, 32), dtype('uint8'))
>>> options = dataset.configure(size="48", shifts="fixed", severity="0.5").options()
>>> options["size"], options["shifts"], options["severity"], options["faint"], options["n_train"]
(48, 'fixed', 0.5, 0.2, 256)
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from uqeval import UQEvalError
from uqeval.contracts import Sample
from uqeval_torch.data.shifts import shift_image
from uqeval_torch.options import Options, refuse_bad_request

#: The roles, in the order of their index in the seed's spawn key.
ROLES = ("train", "calibration", "test")
#: ``id`` and the OOD shifts, in the order of their index in a shift's spawn key.
DOMAINS = ("id", "blur", "noise", "contrast", "jpeg")
#: Values of the option ``shifts``: the study's shifts, or this dataset's own fixed ones.
SHIFT_KINDS = ("study", "fixed")

#: Range of the background's grey level.
BASE = (0.25, 0.4)
#: Probability that an image holds no shape.
EMPTY_PROBABILITY = 0.06
#: Probability that an image with a shape holds a second one.
SECOND_PROBABILITY = 0.3
#: Default probability that the first shape is faint (option ``faint``); the second shape
#: is faint ``SECOND_FAINT_FACTOR`` times as often.
FAINT_PROBABILITY = 0.2
SECOND_FAINT_FACTOR = 2.5
#: Range of the semi-major axis, as a fraction of the image side, of the first and second shape.
RADIUS = ((0.12, 0.26), (0.07, 0.14))
#: Contrast of a shape over the background: normal and faint.
CONTRAST = ((0.2, 0.35), (0.06, 0.1))
#: Width (px) of a shape's blurred edge, and of a core's.
EDGE_WIDTH = ((0.3, 2.0), (0.5, 2.5))
#: A rater's border offset (px) is kept within these bounds.
MAX_OFFSET = 2.5
#: The raters' fixed habits are spread evenly over ± this (px).
RATER_HABIT = 0.5


@dataclass(frozen=True)
class _Outline:
    """A wobbly ellipse: centre (y, x) and semi-axes in px, rotation, angular harmonics."""

    cy: float
    cx: float
    a: float
    b: float
    theta: float
    amplitudes: np.ndarray
    phases: np.ndarray

    def distance(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signed distance (px, negative inside) along the ray from the centre, and the ray's angle.

        The angle ``φ`` is that of the point in the ellipse's own frame, normalised to a
        circle, returned as ``(cos φ, sin φ)``. The distance along the ray overestimates
        the distance to the border by the secant of the angle between ray and normal: a
        few per cent for these shapes.
        """
        dy, dx = yy - self.cy, xx - self.cx
        cos, sin = math.cos(self.theta), math.sin(self.theta)
        u = (cos * dx + sin * dy) / self.a
        v = (cos * dy - sin * dx) / self.b
        rho = np.hypot(u, v)
        centre = rho == 0
        c = np.where(centre, 1.0, u / np.where(centre, 1.0, rho))
        s = np.where(centre, 0.0, v / np.where(centre, 1.0, rho))
        radius = 1.0
        for k, amplitude, phase in zip((2, 3), self.amplitudes, self.phases, strict=True):
            radius = radius + amplitude * _cos_multiple(c, s, k, phase)
        return (rho - radius) * np.hypot(self.a * c, self.b * s), c, s


def _cos_multiple(c: np.ndarray, s: np.ndarray, k: int, phase: float | np.ndarray) -> np.ndarray:
    """``cos(k·φ + phase)`` from ``c = cos φ`` and ``s = sin φ``, for ``k`` in 1, 2, 3."""
    if k == 1:
        ck, sk = c, s
    elif k == 2:
        ck, sk = c * c - s * s, 2 * c * s
    else:
        ck, sk = c * (4 * c * c - 3), s * (3 - 4 * s * s)
    return ck * np.cos(phase) - sk * np.sin(phase)


@dataclass(frozen=True)
class _Shape:
    """A shape of a scene: its outline, faintness, contrast and edge; the same for its core."""

    outline: _Outline
    faint: bool
    contrast: float
    width: float
    core: _Outline
    core_contrast: float
    core_width: float


def _draw_shape(rng: np.random.Generator, size: int, second: bool, faint_probability: float) -> _Shape:
    """One shape; always the same number of draws, so later draws do not depend on it."""
    a = rng.uniform(*RADIUS[second]) * size
    b = a * rng.uniform(0.6, 1.0)
    theta = rng.uniform(0.0, math.pi)
    margin = 1.2 * a + 1.0
    cy, cx = rng.uniform(margin, size - 1 - margin, size=2)
    outline = _Outline(cy, cx, a, b, theta, rng.uniform(0.0, 0.08, 2), rng.uniform(0.0, 2 * math.pi, 2))
    faint = bool(rng.random() < min(1.0, faint_probability * (SECOND_FAINT_FACTOR if second else 1.0)))
    contrast = rng.uniform(*CONTRAST[faint])
    width = rng.uniform(*EDGE_WIDTH[0])
    scale = rng.uniform(0.35, 0.55)
    shift, direction = rng.uniform(0.0, 0.15 * b), rng.uniform(0.0, 2 * math.pi)
    core = _Outline(
        cy + shift * math.sin(direction),
        cx + shift * math.cos(direction),
        a * scale,
        b * scale,
        theta + rng.uniform(-0.3, 0.3),
        rng.uniform(0.0, 0.05, 2),
        rng.uniform(0.0, 2 * math.pi, 2),
    )
    return _Shape(outline, faint, contrast, width, core, rng.uniform(0.1, 0.2), rng.uniform(*EDGE_WIDTH[1]))


def _texture_filters(size: int) -> np.ndarray:
    """Transfer functions (2, size, size//2 + 1) of periodic gaussian filters of σ = size/8 and size/32 px."""
    squared = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    sigmas = np.array([size / 8, size / 32])[:, None, None]
    return np.exp(-2 * math.pi**2 * sigmas**2 * squared)


def _textures(rng: np.random.Generator, filters: np.ndarray) -> np.ndarray:
    """Two smooth textures (2, y, x): white noise through ``filters``, each of mean 0 and standard deviation 1."""
    size = filters.shape[1]
    fields = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((2, size, size))) * filters, s=(size, size))
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    return fields / np.maximum(fields.std(axis=(1, 2), keepdims=True), 1e-12)


@dataclass(frozen=True)
class _Borders:
    """How each rater draws one border: offsets (px), and the wobble's amplitude (px), order and phase."""

    offsets: np.ndarray
    amplitudes: np.ndarray
    orders: np.ndarray
    phases: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, habits: np.ndarray, spread: float) -> _Borders:
        """Each rater's habit plus a draw of standard deviation ``spread`` (px), and a wobble."""
        n = len(habits)
        return cls(
            habits + spread * rng.standard_normal(n),
            rng.uniform(0.0, 0.6, n),
            rng.integers(1, 3, n),
            rng.uniform(0.0, 2 * math.pi, n),
        )

    def masks(self, distance: np.ndarray, c: np.ndarray, s: np.ndarray, low: float) -> np.ndarray:
        """Each rater's mask (rater, y, x): ``distance < offset``, the offset kept within [low, MAX_OFFSET]."""
        masks = np.empty((len(self.offsets), *distance.shape), dtype=bool)
        for rater, (offset, amplitude, order, phase) in enumerate(
            zip(self.offsets, self.amplitudes, self.orders, self.phases, strict=True)
        ):
            wobble = amplitude * _cos_multiple(c, s, int(order), phase)
            np.less(distance, np.clip(offset + wobble, low, MAX_OFFSET), out=masks[rater])
        return masks


@dataclass(frozen=True, kw_only=True)
class SyntheticDataset(Options):
    """Synthetic shapes drawn by several raters, with blur, noise, contrast and JPEG shifts.

    Satisfies :class:`uqeval.contracts.DatasetSource`; the module docstring describes the
    generative model.

    Parameters
    ----------
    size : int
        Side of the square images in px: a multiple of 8, at least 16.
    n_classes : int
        2 (``background``, ``shape``) or 3 (``background``, ``shape``, ``core``).
    raters : int
        Raters per image, at least 1.
    n_train, n_calibration, n_test : int
        Images per role (``n_train`` at least 1, the others at least 0). Every OOD
        domain holds the ``n_test`` test images, shifted.
    shifts : str
        ``study`` (the study's shifts, drawn per image) or ``fixed`` (this dataset's own
        stronger shifts, scaled by ``severity``); see the module docstring.
    severity : float
        Scales every ``fixed`` OOD shift (> 0; 1 is the default strength). With
        ``shifts="study"`` it must stay 1: the study's shifts have no strength to scale.
    faint : float
        Probability in [0, 1] that the first shape is faint (the second: 2.5× that, at
        most 1). Faint shapes are what only some raters mark; fewer of them make an
        easier task (``uqeval train --profile cpu`` uses 0.1).
    """

    name: ClassVar[str] = "synthetic"
    kind: ClassVar[str] = "dataset"
    description: ClassVar[str] = (
        "Shapes on a textured background drawn by raters who disagree on borders and faint shapes; "
        "OOD: blur, noise, contrast, JPEG"
    )
    in_channels: ClassVar[int] = 1
    domains: ClassVar[tuple[str, ...]] = DOMAINS

    size: int = 64
    n_classes: int = 2
    raters: int = 4
    n_train: int = 256
    n_calibration: int = 64
    n_test: int = 64
    shifts: str = "study"
    severity: float = 1.0
    faint: float = FAINT_PROBABILITY

    def __post_init__(self) -> None:
        minimum = {"size": 16, "n_classes": 2, "raters": 1, "n_train": 1, "n_calibration": 0, "n_test": 0}
        for option, least in minimum.items():
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise UQEvalError(f"option {option!r} of dataset 'synthetic' must be an integer, got {value!r}")
            if value < least:
                raise UQEvalError(f"option {option!r} of dataset 'synthetic' must be at least {least}, got {value}")
            object.__setattr__(self, option, int(value))
        if self.size % 8:
            raise UQEvalError(f"option 'size' of dataset 'synthetic' must be a multiple of 8, got {self.size}")
        if self.n_classes not in (2, 3):
            raise UQEvalError(f"option 'n_classes' of dataset 'synthetic' must be 2 or 3, got {self.n_classes}")
        severity = self.severity
        if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not math.isfinite(severity):
            raise UQEvalError(f"option 'severity' of dataset 'synthetic' must be a finite number, got {severity!r}")
        if severity <= 0:
            raise UQEvalError(f"option 'severity' of dataset 'synthetic' must be positive, got {severity}")
        object.__setattr__(self, "severity", float(severity))
        if self.shifts not in SHIFT_KINDS:
            raise UQEvalError(
                f"option 'shifts' of dataset 'synthetic' must be one of {', '.join(SHIFT_KINDS)}, got {self.shifts!r}"
            )
        if self.shifts == "study" and self.severity != 1.0:
            raise UQEvalError(
                f"option 'severity' of dataset 'synthetic' scales the fixed shifts only; "
                f"set shifts=fixed to use severity {self.severity}"
            )
        faint = self.faint
        if isinstance(faint, bool) or not isinstance(faint, numbers.Real) or not 0 <= faint <= 1:
            raise UQEvalError(f"option 'faint' of dataset 'synthetic' must be a probability in [0, 1], got {faint!r}")
        object.__setattr__(self, "faint", float(faint))

    @property
    def class_names(self) -> tuple[str, ...]:
        """``background``, ``shape`` and, with three classes, ``core``."""
        return ("background", "shape", "core")[: self.n_classes]

    def count(self, role: str) -> int:
        """How many images ``role`` has (in every domain for ``test``)."""
        return {"train": self.n_train, "calibration": self.n_calibration, "test": self.n_test}[role]

    def samples(self, role: str, domain: str = "id", *, seed: int = 0) -> Iterator[Sample]:
        """The images of ``role`` in ``domain``, drawn lazily and deterministically.

        Parameters
        ----------
        role : str
            ``train``, ``calibration`` or ``test``.
        domain : str
            ``id`` or an OOD shift (:attr:`domains`); OOD domains have ``test`` images
            only and yield nothing for the other roles.
        seed : int
            Non-negative; picks the scenes, the raters and the noise of the ``noise`` shift.

        Returns
        -------
        Iterator of Sample
            Ids ``{role}-{k:04d}`` in ``id`` and ``{role}-{k:04d}-{domain}`` otherwise;
            images (1, size, size) float32 in [0, 1]; labels (raters, size, size) uint8.

        Raises
        ------
        UQEvalError
            For an unknown role or domain, or a seed that is not a non-negative integer.
        """
        refuse_bad_request("dataset 'synthetic'", role, domain, seed, ROLES, DOMAINS)
        if domain != "id" and role != "test":
            return iter(())
        return self._generate(role, domain, int(seed))

    def _generate(self, role: str, domain: str, seed: int) -> Iterator[Sample]:
        role_index, domain_index = ROLES.index(role), DOMAINS.index(domain)
        count = self.count(role)
        digits = max(4, len(str(count - 1)))
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(float)
        filters = _texture_filters(self.size)
        for index in range(count):
            image, labels = self._scene(np.random.SeedSequence(seed, spawn_key=(role_index, index)), yy, xx, filters)
            image_id = f"{role}-{index:0{digits}d}"
            if domain != "id":
                shift_rng = np.random.default_rng(
                    np.random.SeedSequence(seed, spawn_key=(role_index, index, domain_index))
                )
                image = self._shift(image, domain, shift_rng)
                image_id = f"{image_id}-{domain}"
            yield Sample(image_id, image.astype(np.float32)[None], labels, domain, role)

    def _scene(
        self, seed: np.random.SeedSequence, yy: np.ndarray, xx: np.ndarray, filters: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One ID image (y, x) float64 in [0, 1] and its labels (rater, y, x) uint8.

        The scene and the raters draw from separate streams, so the number of raters
        does not change the image, and neither does ``n_classes`` change the shapes.
        """
        from scipy.special import expit  # here, not at the top: listing the datasets needs no scipy

        scene_seed, rater_seed = seed.spawn(2)
        rng, rater_rng = np.random.default_rng(scene_seed), np.random.default_rng(rater_seed)
        size, raters = self.size, self.raters
        n_shapes = 0 if rng.random() < EMPTY_PROBABILITY else 1 + int(rng.random() < SECOND_PROBABILITY)
        shapes = [_draw_shape(rng, size, second, self.faint) for second in (False, True)][:n_shapes]
        low_frequency, fine = _textures(rng, filters)
        image = rng.uniform(*BASE) + 0.05 * low_frequency + 0.02 * fine + 0.015 * rng.standard_normal((size, size))
        habits = np.linspace(-RATER_HABIT, RATER_HABIT, raters) if raters > 1 else np.zeros(1)
        labels = np.zeros((raters, size, size), dtype=np.uint8)
        for shape in shapes:
            # The raters' draws come first and always in full, so n_classes changes no border.
            order = rater_rng.permutation(raters)
            markers = rater_rng.integers(1, raters) if raters > 1 else rater_rng.integers(0, 2)
            spread = (0.4 + 0.5 * shape.width) * (1.3 if shape.faint else 1.0)
            borders = _Borders.draw(rater_rng, habits, spread)
            core_borders = _Borders.draw(rater_rng, habits, 0.4 + 0.5 * shape.core_width)
            distance, c, s = shape.outline.distance(yy, xx)
            image += shape.contrast * expit(-distance / shape.width)
            masks = borders.masks(distance, c, s, low=-min(MAX_OFFSET, 0.4 * shape.outline.b))
            if shape.faint:
                masks[order[markers:]] = False
            labels[masks & (labels == 0)] = 1
            if self.n_classes == 3:
                distance, c, s = shape.core.distance(yy, xx)
                image += shape.core_contrast * expit(-distance / shape.core_width)
                cores = core_borders.masks(distance, c, s, low=-min(MAX_OFFSET, 0.4 * shape.core.b))
                labels[cores & masks] = 2
        return np.clip(image, 0.0, 1.0), labels

    def _shift(self, image: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
        """``image`` (y, x) under the OOD shift ``domain``: the study's, or the fixed one clipped to [0, 1]."""
        if self.shifts == "study":
            return shift_image(image[None], domain, rng)[0]
        severity = self.severity
        if domain == "blur":
            from scipy.ndimage import gaussian_filter

            shifted = gaussian_filter(image, sigma=1.5 * severity * self.size / 64, mode="reflect")
        elif domain == "noise":
            shifted = image + rng.normal(0.0, 0.25 * severity, image.shape)
        elif domain == "contrast":
            mean = image.mean()
            shifted = mean + max(0.1, 1.0 - 0.6 * severity) * (image - mean)
        else:  # jpeg
            quality = min(95, max(1, round(10 / severity)))
            buffer = io.BytesIO()
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                shifted = np.asarray(decoded.convert("L"), dtype=float) / 255
        return np.clip(shifted, 0.0, 1.0)
