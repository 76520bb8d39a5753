"""The study's OOD shifts (uqeval_torch.data.shifts), checked against independent references."""

from __future__ import annotations

import doctest
import io

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter

from uqeval import UQEvalError
from uqeval_torch.data import shifts
from uqeval_torch.data.shifts import (
    BLUR_KERNEL_PROBABILITIES,
    BLUR_KERNEL_SIZES,
    BLUR_SIGMA,
    CLAHE_CLIP_LIMIT,
    JPEG_QUALITY,
    NOISE_SCALE,
    SHIFTS,
    shift_image,
)


def textured(size: int = 64, seed: int = 0, low: float = -1.2, high: float = 2.3) -> np.ndarray:
    """A smooth random grey image (1, size, size) float32 spanning [low, high], with a bright blob."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((size, size)), 2.0, mode="wrap")
    yy, xx = np.mgrid[0:size, 0:size]
    field += 3 * field.std() * np.exp(-((yy - size / 2) ** 2 + (xx - size / 3) ** 2) / (2 * (size / 8) ** 2))
    field = (field - field.min()) / (field.max() - field.min())
    return (low + (high - low) * field).astype(np.float32)[None]


def shift(image: np.ndarray, domain: str, seed: int = 0) -> np.ndarray:
    return shift_image(image, domain, np.random.default_rng(seed))


def high_frequency_energy(plane: np.ndarray) -> float:
    """Spectral energy above a quarter of the Nyquist frequency, mean removed."""
    spectrum = np.abs(np.fft.fft2(plane - plane.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(plane.shape[0]), np.fft.fftfreq(plane.shape[1]), indexing="ij")
    return float(spectrum[np.hypot(fy, fx) > 0.125].sum())


def local_contrast(plane: np.ndarray) -> float:
    """Mean standard deviation in 8×8 windows."""
    mean = uniform_filter(plane.astype(float), 8)
    return float(np.sqrt(np.maximum(uniform_filter(plane.astype(float) ** 2, 8) - mean**2, 0)).mean())


def min_max_uint8(plane: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = float(plane.min()), float(plane.max())
    return np.clip((plane - low) / (high - low) * 255, 0, 255).astype(np.uint8), low, high - low


# --- every shift ----------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", SHIFTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_are_kept(domain, dtype, channels):
    image = np.repeat(textured(48), channels, axis=0).astype(dtype)
    shifted = shift(image, domain)
    assert shifted.shape == image.shape
    assert shifted.dtype == dtype
    assert np.isfinite(shifted).all()
    assert not np.shares_memory(shifted, image)


@pytest.mark.parametrize("domain", SHIFTS)
def test_same_seed_same_image_and_other_seeds_differ(domain):
    image = textured(128)  # at 64 px, CLAHE's tiles are too small for its clip limit to matter
    before = image.copy()
    first, again = shift(image, domain, seed=3), shift(image, domain, seed=3)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(image, before)  # the input is not changed
    # JPEG's quality is one of 11 integers, so two seeds may draw the same one; some of five must differ.
    assert any(not np.array_equal(first, shift(image, domain, seed=seed)) for seed in range(4, 9))
    assert not np.array_equal(first, image)


@pytest.mark.parametrize("domain", SHIFTS)
def test_replicated_grey_stays_replicated_and_matches_the_grey_shift(domain):
    grey = textured()
    shifted = shift(np.repeat(grey, 3, axis=0), domain, seed=5)
    for channel in shifted:
        np.testing.assert_array_equal(channel, shifted[0])
    np.testing.assert_array_equal(shifted[:1], shift(grey, domain, seed=5))


@pytest.mark.parametrize("domain", ["blur", "contrast", "jpeg"])
def test_distinct_channels_are_shifted_one_by_one_with_the_same_parameters(domain):
    colour = np.concatenate([textured(seed=1), textured(seed=2, low=0, high=1), textured(seed=3, low=5, high=6)])
    shifted = shift(colour, domain, seed=2)
    for channel in range(3):
        np.testing.assert_array_equal(shifted[channel : channel + 1], shift(colour[channel : channel + 1], domain, 2))


def test_distinct_channels_get_their_own_noise():
    colour = np.concatenate([textured(seed=1), textured(seed=2)])
    noise = shift(colour, "noise") - colour
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.1


@pytest.mark.parametrize("domain", SHIFTS)
@pytest.mark.parametrize("value", [0.0, -3.5, 1e6])
def test_a_constant_image_comes_back_finite_and_unchanged(domain, value):
    image = np.full((3, 32, 32), value, dtype=np.float32)
    shifted = shift(image, domain)
    assert np.isfinite(shifted).all()
    np.testing.assert_array_equal(shifted, image)


def test_an_unknown_domain_is_named_with_the_shifts():
    with pytest.raises(UQEvalError, match=r"unknown shift 'fog'; shifts: noise, blur, contrast, jpeg"):
        shift(textured(), "fog")
    with pytest.raises(UQEvalError, match="unknown shift 'id'"):
        shift(textured(), "id")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 32), np.float32), r"\(channel, y, x\) floating image, got shape \(32, 32\)"),
        (np.zeros((1, 32, 32), np.uint8), "floating image, got shape .* of uint8"),
        (np.full((1, 8, 8), np.nan, np.float32), "finite pixel values"),
    ],
)
def test_an_image_that_is_not_a_finite_float_stack_is_refused(image, message):
    with pytest.raises(UQEvalError, match=message):
        shift(image, "blur")


# --- noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_noise_has_the_drawn_fraction_of_the_image_std_and_is_not_clipped(seed):
    image = textured(128, low=0.0, high=1.0)
    scale = np.random.default_rng(seed).uniform(*NOISE_SCALE)  # the first draw
    assert NOISE_SCALE[0] <= scale <= NOISE_SCALE[1]
    noise = (shift(image, "noise", seed) - image).astype(float)
    expected = scale * float(image.std())
    assert noise.std() == pytest.approx(expected, rel=0.03)
    assert abs(noise.mean()) < 4 * expected / 128
    shifted = image + noise
    assert shifted.min() < 0.0 or shifted.max() > 1.0  # values leave [0, 1]: nothing clips them


def test_noise_std_stays_within_the_range_over_many_seeds():
    image = textured(64)
    ratios = [float((shift(image, "noise", seed) - image).std() / image.std()) for seed in range(40)]
    assert NOISE_SCALE[0] * 0.95 <= min(ratios) and max(ratios) <= NOISE_SCALE[1] * 1.05
    assert max(ratios) - min(ratios) > 0.25  # spread over the range, not a fixed strength


# --- blur -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size", [64, 128])
def test_blur_is_scipys_gaussian_truncated_to_the_drawn_kernel(seed, size):
    image = textured(size)
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(*BLUR_SIGMA) * size
    kernel = int(rng.choice(BLUR_KERNEL_SIZES, p=BLUR_KERNEL_PROBABILITIES))
    reference = gaussian_filter(image[0].astype(float), sigma, radius=(kernel - 1) // 2, mode="mirror")
    np.testing.assert_allclose(shift(image, "blur", seed)[0], reference, rtol=0, atol=1e-5)


def test_blur_kernel_sizes_follow_albumentations_draw():
    """Sizes 3, 5, 7 with probabilities 1/5, 2/5, 2/5, found back from the output alone."""
    image = textured(16)
    counts = dict.fromkeys(BLUR_KERNEL_SIZES, 0)
    for seed in range(300):
        shifted = shift(image, "blur", seed)[0]
        sigma = np.random.default_rng(seed).uniform(*BLUR_SIGMA) * 16
        errors = {
            k: np.abs(shifted - gaussian_filter(image[0].astype(float), sigma, radius=k // 2, mode="mirror")).max()
            for k in BLUR_KERNEL_SIZES
        }
        best = min(errors, key=errors.get)
        assert errors[best] < 1e-5
        counts[best] += 1
    frequencies = np.array([counts[k] for k in BLUR_KERNEL_SIZES]) / 300
    np.testing.assert_allclose(frequencies, BLUR_KERNEL_PROBABILITIES, atol=0.08)


@pytest.mark.parametrize("seed", range(5))
def test_blur_lowers_high_frequencies_and_keeps_the_mean(seed):
    image = textured(128, seed=seed) + 0.3 * np.random.default_rng(seed).standard_normal((1, 128, 128)).astype(
        np.float32
    )
    blurred = shift(image, "blur", seed)
    assert high_frequency_energy(blurred[0]) < 0.5 * high_frequency_energy(image[0])
    assert blurred.mean() == pytest.approx(image.mean(), abs=0.01 * float(image.std()))
    assert image.min() <= blurred.min() and blurred.max() <= image.max()


# --- contrast (CLAHE) -----------------------------------------------------------------------------


def low_contrast(size: int = 128) -> np.ndarray:
    """A dim, flat image: a faint texture over a narrow band of grey, with one bright speck."""
    image = 0.5 + 0.02 * textured(size, low=0.0, high=1.0)
    image[0, 3, 3] = 1.0
    return image.astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_clahe_is_opencvs_on_the_min_max_image_with_the_drawn_clip_limit(seed):
    image = textured(128, seed=seed)
    clip = np.random.default_rng(seed).uniform(*CLAHE_CLIP_LIMIT)  # the only draw
    grey, low, scale = min_max_uint8(image[0].astype(float))
    expected = low + scale * cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(grey) / 255.0
    np.testing.assert_allclose(shift(image, "contrast", seed)[0], expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("seed", range(5))
def test_clahe_raises_local_contrast_and_keeps_the_range(seed):
    image = low_contrast()
    shifted = shift(image, "contrast", seed)
    assert local_contrast(shifted[0]) > 1.5 * local_contrast(image[0])
    assert image.min() <= shifted.min() and shifted.max() <= image.max()


# --- JPEG -----------------------------------------------------------------------------------------


def pillow_jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    """An independent JPEG round trip (Pillow's libjpeg) of a grey uint8 image replicated to RGB."""
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded)[:, :, 0]


@pytest.mark.parametrize("seed", range(5))
def test_jpeg_matches_pillow_at_the_drawn_quality(seed):
    image = textured(64, seed=seed)
    quality = int(np.random.default_rng(seed).integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    assert JPEG_QUALITY[0] <= quality <= JPEG_QUALITY[1]
    grey, low, scale = min_max_uint8(image[0].astype(float))
    reference = pillow_jpeg(grey, quality).astype(float)
    levels = (shift(image, "jpeg", seed)[0] - low) / scale * 255
    assert np.abs(levels - reference).max() <= 1.0 + 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_jpeg_changes_the_image_a_little_within_its_range(seed):
    image = textured(128, seed=seed)
    shifted = shift(image, "jpeg", seed)
    assert not np.array_equal(shifted, image)
    span = float(image.max() - image.min())
    assert np.abs(shifted - image).mean() < 0.05 * span
    assert image.min() <= shifted.min() and shifted.max() <= image.max()


def test_jpeg_qualities_cover_the_integers_10_to_20():
    image = textured(32)
    grey, low, scale = min_max_uint8(image[0].astype(float))
    references = {quality: pillow_jpeg(grey, quality) for quality in range(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)}
    seen = set()
    for seed in range(120):
        levels = np.rint((shift(image, "jpeg", seed)[0] - low) / scale * 255)
        seen.update(q for q, reference in references.items() if np.abs(levels - reference).max() <= 1)
    assert seen == set(references)


def test_clahe_on_64_px_images_clips_at_one_count_whatever_the_limit():
    """OpenCV clips a tile's histogram at max(1, int(limit · tile pixels / 256)): 1 for 8×8-px tiles and limits ≤ 5."""
    image = textured(64)
    outputs = [shift(image, "contrast", seed) for seed in range(6)]
    limits = [np.random.default_rng(seed).uniform(*CLAHE_CLIP_LIMIT) for seed in range(6)]
    assert max(limits) - min(limits) > 1
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_module_docstring_runs():
    assert doctest.testmod(shifts).failed == 0
