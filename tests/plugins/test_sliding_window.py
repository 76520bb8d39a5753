"""Sliding-window prediction: MONAI's windows and averaging, with or without MONAI installed."""

from __future__ import annotations

import importlib
import itertools
import sys

import pytest
import torch
from torch import nn

from uqeval import UQEvalError
from uqeval_torch import sliding_window as module
from uqeval_torch.sliding_window import SlidingWindow, sliding_window, window_starts

#: An asymmetric volume (z, y, x): two axes larger than the patch below, one smaller.
VOLUME = (1, 2, 7, 19, 13)


def volume(shape: tuple[int, ...] = VOLUME, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def pointwise_net(seed: int = 0) -> nn.Module:
    """1 × 1 × 1 convolutions: a voxel's output depends on that voxel alone."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(2, 5, 1), nn.Tanh(), nn.Conv3d(5, 3, 1)).eval()


def context_net(seed: int = 0) -> nn.Module:
    """3 × 3 × 3 convolutions with zero padding: a window's edges see padding, not the neighbours."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)).eval()


@pytest.mark.parametrize(
    ("size", "patch", "overlap"), [(19, 8, 0.25), (19, 8, 0.0), (13, 5, 0.5), (13, 13, 0.25), (9, 4, 0.9)]
)
def test_the_windows_cover_every_voxel_and_end_at_the_edge(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    covered = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        assert 0 <= start <= size - patch
        covered[start : start + patch] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == size - patch
    assert starts == sorted(set(starts))
    step = max(1, int(patch * (1 - overlap)))
    assert all(b - a <= step for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(("patch", "overlap"), [((4, 8, 6), 0.25), ((7, 5, 13), 0.5), ((5, 8, 20), 0.0)])
def test_a_pointwise_network_gives_the_whole_volume_result(patch, overlap):
    """Every window that holds a voxel computes the same output there, so the average is it
    (the last patch is larger than x: the padding is cropped away)."""
    images, network = volume(), pointwise_net()
    with torch.no_grad():
        whole = network(images)
        windowed = sliding_window(network, images, patch, overlap=overlap, windows_per_pass=3)
    assert windowed.shape == whole.shape and windowed.dtype == torch.float32
    torch.testing.assert_close(windowed, whole, rtol=0, atol=1e-6)


def test_a_network_with_context_differs_at_the_window_edges_but_not_with_one_window():
    images, network = volume(), context_net()
    with torch.no_grad():
        whole = network(images)
        windowed = sliding_window(network, images, (4, 8, 6))
        one = sliding_window(network, images, VOLUME[2:])
    assert (windowed - whole).abs().max() > 1e-3  # a window's border sees zeros, not the neighbours
    torch.testing.assert_close(one, whole, rtol=0, atol=0)


@pytest.mark.parametrize(("patch", "overlap", "windows"), [((4, 8, 6), 0.25, 4), ((5, 8, 16), 0.5, 3)])
def test_the_result_is_monais_sliding_window_inference(patch, overlap, windows):
    """The same windows, padding and constant weights as MONAI (installed with the examples)."""
    from monai.inferers import sliding_window_inference

    images, network = volume((2, *VOLUME[1:])), context_net(1)
    with torch.no_grad():
        ours = sliding_window(network, images, patch, overlap=overlap, windows_per_pass=windows)
        theirs = sliding_window_inference(images, patch, windows, network, overlap=overlap, mode="constant")
    torch.testing.assert_close(ours, torch.as_tensor(theirs), rtol=0, atol=1e-6)


def test_it_works_without_monai(monkeypatch):
    monkeypatch.setitem(sys.modules, "monai", None)  # `import monai` now raises ImportError
    reloaded = importlib.reload(module)
    images, network = volume(), pointwise_net(2)
    with torch.no_grad():
        windowed = reloaded.SlidingWindow(network, (4, 8, 6))(images)
        torch.testing.assert_close(windowed, network(images), rtol=0, atol=1e-6)


def test_a_2d_network_slides_too():
    torch.manual_seed(0)
    network = nn.Conv2d(1, 2, 1)
    images = torch.rand(3, 1, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window(network, images, (4, 4)), network(images), rtol=0, atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(UQEvalError, match="patch_size must be a sequence of positive integers"):
        SlidingWindow(pointwise_net(), (4, 0, 4))
    with pytest.raises(UQEvalError, match="patch_size must be a sequence of positive integers"):
        SlidingWindow(pointwise_net(), 8)
    with pytest.raises(UQEvalError, match=r"overlap must be a number in \[0, 1\)"):
        SlidingWindow(pointwise_net(), (4, 4, 4), overlap=1.0)
    with pytest.raises(UQEvalError, match="windows_per_pass must be a positive integer"):
        SlidingWindow(pointwise_net(), (4, 4, 4), windows_per_pass=0)
    with pytest.raises(UQEvalError, match=r"patch_size \(4, 4\) has 2 sizes, but the images .* have 3 spatial axes"):
        sliding_window(pointwise_net(), volume(), (4, 4))


def test_a_network_that_changes_the_size_is_named():
    shrinking = nn.Conv3d(2, 2, 3)  # no padding: each axis loses 2 voxels
    with pytest.raises(UQEvalError, match=r"the network returned \(4, 2, 2, 6, 4\) for windows of \(4, 8, 6\)"):
        sliding_window(shrinking, volume(), (4, 8, 6))
