"""Cube stores for the tests of :mod:`uqeval.cube`: made by hand (without uqeval) or by the writer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from uqeval import CubeWriter, UQEvalError

# Spelled out, not taken from uqeval.cube.contract: the tests pin the contract.
PROBS_DIMS = ("image", "eu", "au", "class", "y", "x")
LABELS_DIMS = ("image", "rater", "y", "x")
SHAPE = {"n_classes": 3, "eu": 2, "au": 2, "height": 4, "width": 5}


def make_probs(n_images: int, seed: int = 0, n_classes: int = 3, eu: int = 2, au: int = 2, height=4, width=5):
    """Softmax-like float32 probabilities (image, eu, au, class, y, x)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=(n_images, eu, au, height, width))
    return np.moveaxis(probs, -1, 3).astype(np.float32)


def make_labels(n_images: int, raters: int = 2, seed: int = 1, n_classes: int = 3, height=4, width=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=(n_images, raters, height, width)).astype(np.uint8)
    labels[:, 0, 0, 0] = 255  # ignore
    return labels


def hand_dataset(
    n_images: int = 3,
    ids=("img-a", "img-b", "img-c"),
    *,
    labels: bool = True,
    seed: int = 0,
    **sizes,
) -> xr.Dataset:
    """A valid in-memory cube with fixed-width unicode strings, built without uqeval."""
    probs = make_probs(n_images, seed=seed, **sizes)
    n_classes, height, width = probs.shape[3:]
    data_vars = {
        "probs": (PROBS_DIMS, probs),
        "domain": (("image",), np.array(["id", "blur", "id", "noise"][:n_images] + ["id"] * (n_images - 4))),
        "role": (("image",), np.array(["calibration"] + ["test"] * (n_images - 1))),
    }
    if labels:
        data_vars["labels"] = (LABELS_DIMS, make_labels(n_images, n_classes=n_classes, height=height, width=width))
    attrs = {"schema": 1, "class_names": [f"c{c}" for c in range(n_classes)], "background": 0, "au_method": "ssn"}
    return xr.Dataset(data_vars, coords={"image": np.array(list(ids)[:n_images])}, attrs=attrs)


def save(dataset: xr.Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed-width unicode: no zarr v3 spec yet
        dataset.to_zarr(path, zarr_format=3, consolidated=False, mode="w")
    return path


def write_store(path: Path, probs: np.ndarray, batches=None, *, labels=None, ids=None, domain=None, **kwargs):
    """Write ``probs`` with a CubeWriter in the given batch sizes (default one batch)."""
    batches = batches or [len(probs)]
    n_classes, height, width = probs.shape[3:]
    options = {"n_classes": n_classes, "eu": probs.shape[1], "au": probs.shape[2], "height": height, "width": width}
    options |= kwargs
    if labels is not None:
        options.setdefault("raters", labels.shape[1])
    start = 0
    with CubeWriter(path, **options) as writer:
        for size in batches:
            part = slice(start, start + size)
            extra = {}
            if labels is not None:
                extra["labels"] = labels[part]
            if ids is not None:
                extra["image_ids"] = ids[part]
            if domain is not None:
                extra["domain"] = domain[part]
            writer.append(probs[part], **extra)
            start += size
    assert start == len(probs)
    return path


def assert_same_store(a: xr.Dataset, b: xr.Dataset) -> None:
    assert a.image.values.tolist() == b.image.values.tolist()
    for name in ("domain", "role"):
        assert a[name].values.tolist() == b[name].values.tolist()
    assert a.probs.dtype == b.probs.dtype
    np.testing.assert_array_equal(a.probs.values, b.probs.values)
    assert ("labels" in a) == ("labels" in b)
    if "labels" in a:
        np.testing.assert_array_equal(a.labels.values, b.labels.values)
    assert a.probs.chunks == b.probs.chunks
    assert a.attrs == b.attrs


def assert_raises(match: str, function, *args, **kwargs) -> str:
    with pytest.raises(UQEvalError, match=match) as info:
        function(*args, **kwargs)
    return str(info.value)
