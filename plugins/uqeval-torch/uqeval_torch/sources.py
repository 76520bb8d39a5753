"""Your own PyTorch segmentation model as EU members × AU samples: the names to import.

A cube holds, per image, ``eu`` members × ``au`` samples of class probabilities. The
*EU source* says where the members come from; the *AU source* says how each member
draws its samples. They are the plugin's EU and AU methods themselves, given your
networks instead of training their own, so any EU source composes with any AU source,
and :func:`uqeval_torch.writing.write_cube` writes what they draw to a store, with the
same loop as ``uqeval predict``.

EU sources
    :class:`Ensemble` (several models or checkpoints: a deep ensemble),
    :class:`MCDropout` (one model whose dropout layers each keep one fixed mask per
    member: a member is one thinned network) and :class:`SingleModel` (one model: no EU;
    uqeval then takes the AU samples as the members, the samples-as-members convention).
AU sources
    :class:`Softmax` (one deterministic map), :class:`TestTimeAugmentation` (flips,
    90° rotations, intensity and noise, each inverted exactly on the output),
    :class:`Sampler` (your own callable), or a trained family's method (SSN, diffusion, …).

A model is any ``nn.Module`` that maps images ``(batch, channel, y, x)`` to logits
``(batch, class, y, x)`` (or to probabilities with ``outputs="probabilities"``).

Example
-------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Dropout2d(0.2), nn.Conv2d(8, 2, 1))
>>> eu, au = MCDropout(model, members=4), TestTimeAugmentation()
>>> eu.n_dropout_layers, eu.default_members, au.default_samples
(1, 4, 8)
>>> draws = draw_samples(eu, au, torch.rand(3, 1, 16, 16))
>>> tuple(draws.shape)  # (image, eu, au, class, y, x)
(3, 4, 8, 2, 16, 16)
"""

from __future__ import annotations

from uqeval_torch.au.sampler import Sampler
from uqeval_torch.au.softmax import Softmax
from uqeval_torch.au.tta import (
    TestTimeAugmentation,
    Transform,
    flips_and_rotations,
    gaussian_noise,
    intensity,
    volume_flips,
)
from uqeval_torch.eu.dropout import MCDropout
from uqeval_torch.eu.dropout_masks import DROPOUT_TYPES, dropout_layers
from uqeval_torch.eu.ensemble import Ensemble
from uqeval_torch.eu.none import SingleModel
from uqeval_torch.members import check_probabilities
from uqeval_torch.writing import draw_samples

__all__ = [
    "DROPOUT_TYPES",
    "Ensemble",
    "MCDropout",
    "Sampler",
    "SingleModel",
    "Softmax",
    "TestTimeAugmentation",
    "Transform",
    "check_probabilities",
    "draw_samples",
    "dropout_layers",
    "flips_and_rotations",
    "gaussian_noise",
    "intensity",
    "volume_flips",
]
