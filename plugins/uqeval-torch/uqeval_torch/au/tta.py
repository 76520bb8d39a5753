"""``tta``: test-time augmentation of a softmax network, as ValUES ships it.

The network is the plain segmentation network of ``softmax``, trained with
cross-entropy; its AU samples are its softmax maps over the 8 symmetries of the square
pixel grid (rotations by 0°, 90°, 180°, 270°, flips along y and x, transpose and
anti-transpose; the 4 that keep a rectangle's shape for non-square images), each mapped
back by the exact inverse transform. ``--samples n`` uses the first n of them.
"""

from __future__ import annotations

import torch
from torch import nn

from uqeval.errors import UQEvalError
from uqeval_torch.au.softmax import Softmax
from uqeval_torch.sources import flips_and_rotations


class TestTimeAugmentation(Softmax):
    """Softmax maps of one network over flips and 90° rotations, each inverted on the output.

    It builds and trains exactly as :class:`~uqeval_torch.au.softmax.Softmax`; only
    sampling differs.
    """

    __test__ = False  # not a pytest test class
    name = "tta"
    description = "test-time augmentation: a softmax UNet's maps over flips and 90° rotations (default 8 samples)"
    deterministic = False
    default_samples = 8

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """The first ``n`` transforms' softmax maps, mapped back: (n, batch, class, y, x)."""
        transforms = flips_and_rotations(images.shape[-2] == images.shape[-1])
        if not 1 <= n <= len(transforms):
            raise UQEvalError(
                f"AU method 'tta' draws 1 to {len(transforms)} samples on {images.shape[-2]}×{images.shape[-1]} "
                f"images (one per flip or rotation), not {n}"
            )
        return torch.stack(
            [
                transform.inverse(torch.softmax(model(transform.forward(images)).float(), dim=1))
                for transform in transforms[:n]
            ]
        )
