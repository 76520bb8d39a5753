"""Label handling the AU methods share: ignore labels, one-hot maps, masked cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uqeval import IGNORE_LABEL

__all__ = ["IGNORE_LABEL", "cross_entropy", "one_hot"]


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices (batch, y, x) → float one-hot maps (batch, class, y, x); ignored pixels are all zero."""
    valid = labels != IGNORE_LABEL
    hot = F.one_hot(torch.where(valid, labels, 0).long(), n_classes).permute(0, 3, 1, 2).float()
    return hot * valid[:, None].float()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per labelled pixel) of logits (batch, class, y, x) against labels (batch, y, x).

    A batch without a labelled pixel gives 0 (with a gradient), not NaN.
    """
    losses = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_LABEL, reduction="sum")
    return losses / (labels != IGNORE_LABEL).sum().clamp(min=1)
