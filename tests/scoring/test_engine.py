"""The engine: a store that vanishes while it is scored is said to be gone, in one line, and
what it keeps per image stays compact."""

from __future__ import annotations

import gc
import shutil
import tracemalloc

import numpy as np
import pytest
from helpers import write_synthetic_store

from uqeval import CubeWriter, UQEvalError, score


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("engine") / "cube.zarr", n_images=24, size=16)


@pytest.mark.parametrize(
    "when",
    [
        "first batch",  # absent chunks read as NaN probabilities
        "calibrate",  # the spilled batches' second look
        "last batch",  # the examples' labels are read after the last batch
    ],
)
def test_a_store_removed_while_it_is_scored_is_said_to_be_gone(small_store, tmp_path, when):
    path = shutil.copytree(small_store, tmp_path / "cube.zarr")

    def remove(phase: str, done: int, total: int) -> None:
        due = {"first batch": True, "calibrate": phase == "calibrate", "last batch": done == total}[when]
        if due and path.exists():
            shutil.rmtree(path)

    with pytest.raises(UQEvalError) as info:
        score(path, progress=remove, batch_bytes=1)
    assert str(info.value) == f"{path}: the store was removed while it was scored"


# --------------------------------------------------------------------------- memory per image

#: What scoring may keep per image, at its peak, besides a few batches: the issue's bound of
#: 1 KB, and half a KB more for pq's per-image ECE tables (20 bins × 3 sums, before and
#: after temperature scaling, float64: 960 bytes), kept per image so that the bootstrap
#: can resample them.
BYTES_PER_IMAGE = 1536


def tiny_store(path, n_images: int):
    """``n_images`` images of 4 × 4 pixels, every sixth a calibration image, half of them ID."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0], size=(n_images, 2, 2, 4, 4)).transpose(0, 1, 2, 5, 3, 4).astype(np.float32)
    labels = rng.integers(0, 2, size=(n_images, 2, 4, 4)).astype(np.uint8)
    positions = np.arange(n_images)
    with CubeWriter(path, n_classes=2, eu=2, au=2, height=4, width=4, raters=2) as writer:
        writer.append(
            probs,
            labels,
            domain=np.where(positions % 2 == 0, "id", "blur").tolist(),
            role=np.where(positions % 6 == 0, "calibration", "test").tolist(),
            image_ids=[f"img-{index:06d}" for index in positions],
        )
    return path


def peak_bytes(path) -> int:
    """tracemalloc's peak while scoring ``path``, one chunk (64 images) per batch."""
    gc.collect()
    tracemalloc.start()
    try:
        score(path, batch_bytes=64 * 2 * 2 * 2 * 16 * 4)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # scores 4,000 tiny images under tracemalloc (about 30 s on 2 cores)
def test_memory_per_image_is_compact(tmp_path):
    """Per-image state grows by at most 1 KB per image (it was 5.4 KB: per-image dicts of
    calibration tables kept three times, histogram cells of every batch, a str per domain)."""
    small, large = tiny_store(tmp_path / "small.zarr", 1000), tiny_store(tmp_path / "large.zarr", 4000)
    score(small)  # imports, compilation and caches, outside the measurement
    growth = (peak_bytes(large) - peak_bytes(small)) / 3000
    assert growth < BYTES_PER_IMAGE, f"{growth:.0f} bytes per image"
