"""The study's out-of-distribution shifts: noise, blur, contrast (CLAHE) and JPEG, one draw per image.

Any dataset can shift its test images with :func:`shift_image`; every random draw comes
from the generator it is given, so a dataset that seeds one generator per image (as
``SeedSequence(seed, spawn_key=(image, domain))``) gets the same images on every run.
The settings are those the study's code ran (its offline augmentation script built on
albumentations 1.3.0 and OpenCV), not only those its paper states; where the two differ,
this module follows the code and says so.

Shifts (``side`` = the shorter image side in px)
------------------------------------------------
noise
    Additive gaussian noise of standard deviation ``s·std(image)``, ``s ~ U[0.1, 0.5]``,
    with ``std`` over the whole image; not clipped, so values may leave the original range.
blur
    OpenCV's ``GaussianBlur`` with ``σ ~ U[0.05, 0.2]·side`` px (6.4–25.6 px at 128 px)
    and a square kernel of 3, 5 or 7 px drawn with probabilities 1/5, 2/5, 2/5; borders
    reflected without repeating the edge pixel (OpenCV's ``BORDER_REFLECT_101``). This is
    what the study's "kernel capped at 3–7 px" means: albumentations' ``GaussianBlur``
    with its default ``blur_limit=(3, 7)`` draws an integer in [3, 7] and rounds an even
    one up to the next odd size, and the kernel is truncated to that size whatever σ is.
    With σ this large the truncated kernel is nearly flat: the shift is close to a 3×3,
    5×5 or 7×7 box blur, far milder than a full gaussian of that σ.
contrast
    CLAHE (OpenCV's ``createCLAHE``) on 8×8 tiles with a clip limit drawn from
    ``U[1, 5]``. The study asked albumentations for ``CLAHE(clip_limit=5.0)``, and
    albumentations reads a single number as the range ``(1, clip_limit)``; so the clip
    limit its code ran is uniform in [1, 5], not a fixed 5.
jpeg
    An OpenCV JPEG round trip at a quality drawn uniformly from the integers 10 to 20
    (both included). As in the study, the grey image is replicated to three channels,
    encoded as a colour JPEG (with OpenCV's default 4:2:0 chroma subsampling) and decoded,
    and the first channel is kept.

CLAHE and JPEG act on a min–max 8-bit version of each plane, ``floor(255·(x - min) /
(max - min))``, as the study made it (it truncates rather than rounds), and map the
result ``v`` back to the original range with ``min + (max - min)·v/255``: the output
stays within [min, max]. A constant plane comes back unchanged (the study divided by
``max(max - min, 1e-8)`` instead, which changes a constant image by less than 1e-8).

Channels
--------
An image is (channel, y, x). When its channels are all equal (a grey image replicated,
like the LIDC slices), the shift is computed once on that grey plane and replicated, so
the channels stay equal: exactly what the study did on its grey images. Otherwise each
channel is shifted as a grey image of its own, with the same drawn parameters (σ,
kernel, clip limit, quality), its own noise field and its own min–max range; that is a
choice of this module (the study shifted grey images only), not a colour-aware JPEG or
CLAHE.

Randomness
----------
Every draw comes from the ``rng`` passed in, in a documented order (see
:func:`shift_image`), so a test can recompute the parameters from a generator seeded
alike. The study drew from Python's and NumPy's global generators, so no draw here
repeats one of its draws exactly; the distributions are the same.

Libraries
---------
OpenCV (``opencv-python-headless``) for blur, CLAHE and JPEG, as albumentations called
it in the study; the only differences from the study's implementation are the random
draws and the OpenCV and libjpeg versions (the study pinned OpenCV 4.7). NumPy for the
noise.

Example
-------
>>> rng = np.random.default_rng(0)
>>> image = rng.random((3, 32, 32), dtype=np.float32)
>>> shifted = shift_image(image, "jpeg", np.random.default_rng(1))
>>> shifted.shape, shifted.dtype
((3, 32, 32), dtype('float32'))
>>> bool(shifted.min() >= image.min() and shifted.max() <= image.max())
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uqeval import UQEvalError

#: The shifts, in the order datasets list them after ``id``.
SHIFTS: tuple[str, ...] = ("noise", "blur", "contrast", "jpeg")

#: Range of ``s``: the noise's standard deviation is ``s`` times the image's.
NOISE_SCALE = (0.1, 0.5)
#: Range of the blur's σ, as a fraction of the image's shorter side.
BLUR_SIGMA = (0.05, 0.2)
#: Sizes (px) of the blur's square kernel, and their probabilities (albumentations'
#: draw of an integer in [3, 7], even sizes rounded up).
BLUR_KERNEL_SIZES = (3, 5, 7)
BLUR_KERNEL_PROBABILITIES = (0.2, 0.4, 0.4)
#: Range of the CLAHE clip limit (albumentations' reading of ``clip_limit=5.0``).
CLAHE_CLIP_LIMIT = (1.0, 5.0)
#: CLAHE's grid of tiles (rows, columns).
CLAHE_TILES = (8, 8)
#: JPEG quality range, both ends included.
JPEG_QUALITY = (10, 20)


def shift_image(image: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``image`` under the OOD shift ``domain``; every random draw comes from ``rng``.

    Parameters
    ----------
    image : (channel, y, x) floating array
        Finite values; float32 in the datasets of uqeval-torch.
    domain : str
        One of :data:`SHIFTS`.
    rng : numpy.random.Generator
        Draws, in this order: ``noise`` ``s`` then the noise field (channel-first, one
        plane for replicated grey images); ``blur`` σ's fraction of the side, then the
        kernel size (``rng.choice``); ``contrast`` the clip limit; ``jpeg`` the quality
        (``rng.integers``).

    Returns
    -------
    numpy.ndarray
        The shifted image, of the same shape and dtype.

    Raises
    ------
    UQEvalError
        For an unknown domain (the message lists :data:`SHIFTS`), or an image that is not
        a finite (channel, y, x) floating array.

    See Also
    --------
    scipy.ndimage.gaussian_filter : with ``radius=(k - 1) // 2`` and ``mode="mirror"``,
        the same blur as the ``blur`` shift with kernel size ``k``.
    """
    if domain not in SHIFTS:
        raise UQEvalError(f"unknown shift {domain!r}; shifts: {', '.join(SHIFTS)}")
    array = np.asarray(image)
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise UQEvalError(
            f"shift {domain!r} needs a (channel, y, x) floating image, got shape {array.shape} of {array.dtype}"
        )
    if not np.isfinite(array).all():
        raise UQEvalError(f"shift {domain!r} needs finite pixel values; the image holds NaN or infinity")
    replicated = all(np.array_equal(array[0], plane) for plane in array[1:])
    planes = array[:1] if replicated else array
    shifted = _SHIFT_FUNCTIONS[domain](planes.astype(np.float64), rng)
    if replicated:
        shifted = np.repeat(shifted, array.shape[0], axis=0)
    return shifted.astype(array.dtype)


def _noise(planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    scale = rng.uniform(*NOISE_SCALE)
    return planes + rng.normal(0.0, scale * planes.std(), planes.shape)


def _blur(planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(*BLUR_SIGMA) * min(planes.shape[1:])
    size = int(rng.choice(BLUR_KERNEL_SIZES, p=BLUR_KERNEL_PROBABILITIES))
    return np.stack([gaussian_blur(plane, sigma, size) for plane in planes])


def _contrast(planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2  # here, not at the top: listing the datasets (``uqeval plugins``) needs no OpenCV

    clahe = cv2.createCLAHE(clipLimit=rng.uniform(*CLAHE_CLIP_LIMIT), tileGridSize=CLAHE_TILES)
    return np.stack([_through_uint8(plane, clahe.apply) for plane in planes])


def _jpeg(planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return np.stack([_through_uint8(plane, lambda grey: jpeg_round_trip(grey, quality)) for plane in planes])


_SHIFT_FUNCTIONS = {"noise": _noise, "blur": _blur, "contrast": _contrast, "jpeg": _jpeg}


def gaussian_blur(plane: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """``plane`` (y, x) blurred by a gaussian of ``sigma`` px truncated to a ``size``×``size`` kernel.

    The kernel is normalised to sum 1 after truncation; borders are reflected without
    repeating the edge pixel (OpenCV's ``BORDER_REFLECT_101``, scipy's ``mirror``).
    """
    import cv2

    return cv2.GaussianBlur(
        np.ascontiguousarray(plane),
        (size, size),
        sigmaX=sigma,
        sigmaY=sigma,
        borderType=cv2.BORDER_REFLECT_101,
    )


def jpeg_round_trip(grey: np.ndarray, quality: int) -> np.ndarray:
    """An 8-bit grey image (y, x) after a colour JPEG round trip at ``quality``, first channel kept.

    The grey image is replicated to three channels first, as the study did.
    """
    import cv2

    colour = np.repeat(np.ascontiguousarray(grey)[:, :, None], 3, axis=2)
    encoded, buffer = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not encoded:  # pragma: no cover - OpenCV encodes any 8-bit image
        raise UQEvalError(f"OpenCV could not JPEG-encode an image of shape {grey.shape}")
    return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)[:, :, 0]


def _through_uint8(plane: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``transform`` applied to the min–max 8-bit version of ``plane``, mapped back to its range.

    A constant plane has no 8-bit version and is returned as it is.
    """
    low = float(plane.min())
    scale = float(plane.max()) - low
    if scale == 0:
        return plane.copy()
    grey = np.clip((plane - low) / scale * 255.0, 0, 255).astype(np.uint8)
    return low + scale * (transform(grey).astype(np.float64) / 255.0)
