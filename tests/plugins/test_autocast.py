"""bf16 autocast, as training and prediction use it on CUDA, checked on the CPU for every AU method.

CI has no GPU; torch's CPU autocast runs the convolutions and matmuls in bf16 as CUDA's
does, so a method that lets bf16 leak into its probabilities or its loss fails here too.
"""

from __future__ import annotations

import pytest
import torch

from uqeval.plugins import plugin_manager
from uqeval_torch.backbone import Backbone

METHODS = ["softmax", "ssn", "prob_unet", "diffusion"]


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Weights drawn away from the zero-initialised heads, so that outputs depend on the input."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 32, 32, generator=generator)
    labels = (images[:, 0] > 0.5).long()
    return images, labels


@pytest.mark.parametrize("name", METHODS)
def test_samples_under_bf16_autocast_are_float32_probabilities_close_to_float32(name, batch):
    method = plugin_manager().au_method(name)
    model = randomised(method.build(Backbone("tiny"), in_channels=1, n_classes=2))
    images, _ = batch
    with torch.no_grad():
        torch.manual_seed(2)
        plain = method.sample(model, images, 3)
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = method.sample(model, images, 3)
    assert mixed.dtype == torch.float32
    assert mixed.shape == plain.shape == (3, 2, 2, 32, 32)
    torch.testing.assert_close(mixed.sum(dim=2), torch.ones(3, 2, 32, 32), atol=1e-5, rtol=0)
    assert (mixed >= 0).all()
    # bf16 keeps 8 bits of mantissa: probabilities agree to a few 1e-2 at worst.
    assert (mixed - plain).abs().max() < 0.05
    assert (mixed - plain).abs().mean() < 0.01


@pytest.mark.parametrize("name", METHODS)
def test_the_loss_under_bf16_autocast_is_float32_finite_and_close(name, batch):
    method = plugin_manager().au_method(name)
    model = randomised(method.build(Backbone("tiny"), in_channels=1, n_classes=2)).train()
    images, labels = batch
    torch.manual_seed(3)
    plain = method.loss(model, images, labels, epoch=20)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method.loss(model, images, labels, epoch=20)
    assert mixed.dtype == torch.float32
    assert torch.isfinite(mixed)
    torch.testing.assert_close(mixed, plain, rtol=0.02, atol=1e-3)
    mixed.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
