"""Sliding-window prediction: a network that sees patches, run over volumes larger than its patch.

:class:`SlidingWindow` wraps a member network so that each call predicts a whole image
or volume from overlapping windows of ``patch_size``: the windows' outputs are averaged
where they overlap, with equal weights. The windows are MONAI's
(``monai.inferers.sliding_window_inference`` with ``mode="constant"``) and so is the
result, to float rounding, without MONAI: along each spatial axis of size ``S`` and
patch ``P < S`` the windows start every ``⌊P·(1 − overlap)⌋`` voxels (at least 1), the
last one moved back to end at ``S``; an axis no longer than its patch has one window,
the input zero-padded on both sides up to ``P`` (the output is cropped back).

The output at voxel ``v`` is

    out(v) = Σ_w f_w(v) / N(v),

``f_w`` the network's output (logits) on window ``w``, summed over the ``N(v)`` windows
that contain ``v``. A network that is pointwise (``1 × 1 × 1`` convolutions) gives the
whole-volume output exactly: every window sees the same value at ``v``. (A member given
``outputs="probabilities"`` returns their logarithms, so its windows' probabilities are
blended by their normalised geometric mean.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uqeval import UQEvalError

#: Windows per network call by default: several small windows keep a CPU or GPU busy.
WINDOWS_PER_PASS = 4


def check_patch_size(patch_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """``patch_size`` as a tuple of positive integers, after checking ``0 ≤ overlap < 1``."""
    try:
        sizes = tuple(patch_size)
    except TypeError:
        raise UQEvalError(f"patch_size must be a sequence of positive integers, got {patch_size!r}") from None
    if not sizes or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in sizes):
        raise UQEvalError(f"patch_size must be a sequence of positive integers, got {patch_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0.0 <= overlap < 1.0:
        raise UQEvalError(f"overlap must be a number in [0, 1), got {overlap!r}")
    return sizes


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Where the windows along one axis of ``size`` voxels start, for a ``patch`` no larger than ``size``.

    Every ``⌊patch·(1 − overlap)⌋`` voxels (at least 1; one window when ``patch ==
    size``), the last window moved back so that it ends at ``size``.

    >>> window_starts(32, 16, 0.25), window_starts(24, 16, 0.25), window_starts(16, 16, 0.5)
    ([0, 12, 16], [0, 8], [0])
    """
    if patch >= size:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = next(index for index in itertools.count() if index * step + patch >= size) + 1
    return [min(index * step, size - patch) for index in range(count)]


def sliding_window(
    network: nn.Module,
    images: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.25,
    windows_per_pass: int = WINDOWS_PER_PASS,
) -> torch.Tensor:
    """``network``'s output for ``images`` ``(batch, channel, [z,] y, x)``, predicted window by window.

    Parameters
    ----------
    network : maps ``(n, channel, *patch_size)`` to ``(n, class, *patch_size)``.
    images : the whole images or volumes.
    patch_size : the window, one size per spatial axis.
    overlap : the fraction of a window that the next one along an axis overlaps, in [0, 1).
    windows_per_pass : windows per call of ``network`` (of every image of the batch).

    Returns
    -------
    torch.Tensor
        ``(batch, class, [z,] y, x)`` float32: each voxel's mean output over the windows that hold it.
    """
    patch = check_patch_size(patch_size, overlap)
    spatial = tuple(images.shape[2:])
    if len(patch) != len(spatial):
        raise UQEvalError(
            f"patch_size {patch} has {len(patch)} sizes, but the images {tuple(images.shape)} have "
            f"{len(spatial)} spatial axes"
        )
    padding = [max(0, p - s) for p, s in zip(patch, spatial, strict=True)]
    if any(padding):
        # F.pad takes (before, after) pairs from the last axis to the first; MONAI pads the same way.
        pairs = [(pad // 2, pad - pad // 2) for pad in reversed(padding)]
        images = F.pad(images, [side for pair in pairs for side in pair])
    padded = tuple(images.shape[2:])
    corners = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(padded, patch, strict=True))))
    windows = [tuple(slice(start, start + p) for start, p in zip(corner, patch, strict=True)) for corner in corners]
    batch = images.shape[0]
    total: torch.Tensor | None = None
    counts = torch.zeros(padded, dtype=torch.float32, device=images.device)
    for first in range(0, len(windows), max(1, windows_per_pass)):
        group = windows[first : first + windows_per_pass]
        outputs = network(torch.cat([images[(slice(None), slice(None), *window)] for window in group]))
        if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape[2:]) != patch:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise UQEvalError(
                f"sliding window: the network returned {shape} for windows of {patch}; it must return "
                "(window, class, *patch_size): class scores of the same size as its input"
            )
        if total is None:
            total = torch.zeros((batch, outputs.shape[1], *padded), dtype=torch.float32, device=images.device)
        for index, window in enumerate(group):
            total[(slice(None), slice(None), *window)] += outputs[index * batch : (index + 1) * batch].float()
            counts[window] += 1.0
    assert total is not None  # at least one window
    averaged = total / counts
    crop = tuple(slice(pad // 2, pad // 2 + size) for pad, size in zip(padding, spatial, strict=True))
    return averaged[(slice(None), slice(None), *crop)]


class SlidingWindow(nn.Module):
    """A network predicted window by window (:func:`sliding_window`): a module like any other.

    Parameters
    ----------
    network : the member network, which sees ``patch_size`` windows.
    patch_size : the window, one size per spatial axis (``(z, y, x)`` for volumes).
    overlap : the fraction of a window that the next one overlaps (default 0.25, MONAI's).
    windows_per_pass : windows per network call.
    """

    def __init__(
        self,
        network: nn.Module,
        patch_size: Sequence[int],
        *,
        overlap: float = 0.25,
        windows_per_pass: int = WINDOWS_PER_PASS,
    ) -> None:
        super().__init__()
        self.network = network
        self.patch_size = check_patch_size(patch_size, overlap)
        self.overlap = float(overlap)
        if isinstance(windows_per_pass, bool) or not isinstance(windows_per_pass, int) or windows_per_pass < 1:
            raise UQEvalError(f"windows_per_pass must be a positive integer, got {windows_per_pass!r}")
        self.windows_per_pass = windows_per_pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return sliding_window(
            self.network, images, self.patch_size, overlap=self.overlap, windows_per_pass=self.windows_per_pass
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, overlap={self.overlap:g}, windows_per_pass={self.windows_per_pass}"
