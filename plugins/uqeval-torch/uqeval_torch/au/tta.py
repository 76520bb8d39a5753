"""``tta``: test-time augmentation of a softmax network, as ValUES ships it.

The network is the plain segmentation network of ``softmax``, trained with
cross-entropy; its AU samples are its softmax maps over test-time transforms, each
mapped back by the transform's exact inverse. By default the transforms are the 8
symmetries of the square pixel grid (rotations by 0°, 90°, 180°, 270°, flips along y
and x, transpose and anti-transpose; the 4 that keep a rectangle's shape for non-square
images), and for volumes the 8 flips along any of z, y and x (:func:`volume_flips`);
``--samples n`` uses the first n of them. :func:`intensity` and :func:`gaussian_noise`
add intensity perturbations for a model of your own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from uqeval import UQEvalError
from uqeval_torch.au.softmax import Softmax

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Transform:
    """A test-time transform: ``forward`` on the images, ``inverse`` on the output maps.

    Both take and return ``(batch, channels, y, x)`` tensors, or ``(batch, channels, z, y,
    x)`` for volumes; ``inverse`` must undo the spatial part of ``forward`` exactly (an
    intensity change needs none: the identity).
    """

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def flips_and_rotations(square: bool = True) -> list[Transform]:
    """The symmetries of the pixel grid, each with its exact inverse.

    With ``square`` the 8 of the dihedral group (identity, 90°, 180°, 270° rotations, the
    flips along y and x, the transpose and the anti-transpose); otherwise the 4 that keep
    a rectangle's shape (identity, flips along y and x, 180° rotation).
    """
    import torch

    def rotation(k: int) -> Transform:
        return Transform(
            f"rotate {90 * k}°",
            lambda t: torch.rot90(t, k, dims=(-2, -1)),
            lambda t: torch.rot90(t, -k, dims=(-2, -1)),
        )

    def flip(dim: int, name: str) -> Transform:
        return Transform(name, lambda t: torch.flip(t, dims=(dim,)), lambda t: torch.flip(t, dims=(dim,)))

    transpose = Transform("transpose", lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1))
    anti = Transform(
        "anti-transpose",
        lambda t: torch.rot90(t, 2, dims=(-2, -1)).transpose(-2, -1),
        lambda t: torch.rot90(t.transpose(-2, -1), -2, dims=(-2, -1)),
    )
    group = [Transform("identity", _identity, _identity), flip(-2, "flip y"), flip(-1, "flip x"), rotation(2)]
    return [*group, rotation(1), rotation(3), transpose, anti] if square else group


def volume_flips() -> list[Transform]:
    """The 8 flips of a volume ``(…, z, y, x)``: along every subset of the three axes, each its own inverse.

    In order: identity, flips along z, y and x, then along (z, y), (z, x), (y, x) and
    all three; so the first 4 flip each axis once. They keep any volume's shape.
    """
    import torch

    def flip(axes: tuple[str, ...]) -> Transform:
        dims = tuple(-3 + "zyx".index(axis) for axis in axes)
        return Transform(
            f"flip {' '.join(axes)}", lambda t: torch.flip(t, dims=dims), lambda t: torch.flip(t, dims=dims)
        )

    subsets = [axes for count in (1, 2, 3) for axes in itertools.combinations("zyx", count)]
    return [Transform("identity", _identity, _identity), *(flip(axes) for axes in subsets)]


def default_transforms(spatial: tuple[int, ...]) -> list[Transform]:
    """The default transforms for images of ``spatial`` size: :func:`flips_and_rotations`
    for ``(y, x)`` (8 when square, else 4), :func:`volume_flips` for ``(z, y, x)``."""
    if len(spatial) == 3:
        return volume_flips()
    return flips_and_rotations(spatial[-2] == spatial[-1])


def intensity(scale: float = 1.0, shift: float = 0.0) -> Transform:
    """``scale · image + shift`` (in units of each image's standard deviation for ``shift``)."""
    return Transform(
        f"intensity ×{scale:g}{shift:+g}σ",
        lambda t: scale * t + shift * _image_std(t),
        _identity,
    )


def gaussian_noise(relative_std: float = 0.05) -> Transform:
    """Additive gaussian noise of ``relative_std`` times each image's standard deviation.

    The noise comes from the global torch generator, which the writer seeds per batch, so
    a rerun draws the same noise.
    """
    import torch

    return Transform(
        f"noise {relative_std:g}σ",
        lambda t: t + relative_std * _image_std(t) * torch.randn_like(t),
        _identity,
    )


def _image_std(images: torch.Tensor) -> torch.Tensor:
    """Each image's standard deviation over its channels and pixels (or voxels): ``(batch, 1, …)``."""
    return images.std(dim=tuple(range(1, images.ndim)), keepdim=True)


class TestTimeAugmentation(Softmax):
    """Softmax maps of one network over test-time transforms, each inverted on the output.

    It builds and trains exactly as :class:`~uqeval_torch.au.softmax.Softmax`; only
    sampling differs. A network that is equivariant to the transforms (e.g. made of 1×1
    convolutions) gives identical samples: the inversion is exact.

    Parameters
    ----------
    transforms : the :class:`Transform` list; default :func:`default_transforms`: for
        images :func:`flips_and_rotations` (the 8 symmetries of a square grid; a
        non-square image gets the 4 that keep its shape), for volumes ``(z, y, x)``
        :func:`volume_flips` (the 8 flips along z, y and x).
    samples : how many of ``transforms`` to use by default (the first ``samples``; default all).
    """

    __test__ = False  # not a pytest test class
    name = "tta"
    description = (
        "test-time augmentation: a softmax UNet's maps over flips and 90° rotations "
        "(volumes: flips along z, y, x; default 8 samples)"
    )
    deterministic = False

    def __init__(self, transforms: Sequence[Transform] | None = None, *, samples: int | None = None) -> None:
        self.transforms = list(transforms) if transforms is not None else None
        if self.transforms is not None and not all(isinstance(item, Transform) for item in self.transforms):
            raise UQEvalError("TestTimeAugmentation: transforms must be uqeval_torch.au.tta.Transform objects")
        available = len(self.transforms) if self.transforms is not None else 8
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise UQEvalError(f"TestTimeAugmentation: samples must be a positive integer, got {samples!r}")
        if samples is not None and samples > available:
            raise UQEvalError(f"TestTimeAugmentation: {samples} samples asked for, but only {available} transforms")
        if available < 2 and samples is None:
            raise UQEvalError("TestTimeAugmentation: at least 2 transforms are needed to sample")
        self.samples = samples
        self.default_samples = samples or available

    def chosen(self, spatial: Sequence[int], n: int) -> list[Transform]:
        """The first ``n`` transforms for images of ``spatial`` size (``(y, x)`` or ``(z, y, x)``)."""
        spatial = tuple(int(size) for size in spatial)
        transforms = self.transforms if self.transforms is not None else default_transforms(spatial)
        if not 1 <= n <= len(transforms):
            why = "one per transform"
            if self.transforms is None and len(spatial) == 2 and spatial[0] != spatial[1]:
                height, width = spatial
                why = f"non-square images ({height}×{width}) have only {len(transforms)} flips and rotations"
            raise UQEvalError(f"AU method 'tta' draws 1 to {len(transforms)} samples ({why}), not {n}")
        return transforms[:n]

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        """The first ``n`` transforms' softmax maps, mapped back: (n, batch, class, [z,] y, x)."""
        import torch

        from uqeval_torch.members import check_probabilities

        draws = []
        for transform in self.chosen(images.shape[2:], n):
            probabilities = torch.softmax(model(transform.forward(images)).float(), dim=1)
            back = transform.inverse(probabilities)
            draws.append(check_probabilities(back, images, f"the inverse of TTA transform {transform.name!r}"))
        return torch.stack(draws)
