"""MC dropout members (``uqeval_torch.eu.dropout``): a member is one fixed mask per layer,
kept for all of its AU samples and every network pass inside them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from uqeval_torch.au.diffusion import Diffusion  # noqa: E402
from uqeval_torch.au.ssn import SSN  # noqa: E402
from uqeval_torch.backbone import Backbone  # noqa: E402
from uqeval_torch.eu.dropout import MCDropout  # noqa: E402
from uqeval_torch.eu.dropout_masks import dropout_layers  # noqa: E402
from uqeval_torch.writing import draw_samples  # noqa: E402

IMAGES = 3


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with every weight redrawn, so that the zero-initialised convs behind the dropout layers pass it on."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return net


def images() -> torch.Tensor:
    return torch.rand(IMAGES, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def kept_channels(output: torch.Tensor) -> tuple[bool, ...]:
    """Which channels of a dropout layer's output are not all zero, over the whole batch."""
    return tuple((output.abs().amax(dim=(0, 2, 3)) > 0).tolist())


def test_a_diffusion_member_keeps_its_masks_for_every_sample_and_denoising_pass():
    network = randomised(Diffusion().build(Backbone("tiny"), in_channels=1, n_classes=2, dropout=0.5))
    members = list(MCDropout().members([network], n=3, seed=0))
    seen: list[dict[int, set[tuple[bool, ...]]]] = []
    for member in members:
        patterns: dict[int, set[tuple[bool, ...]]] = {}
        for index, layer in enumerate(dropout_layers(member)):
            layer.register_forward_hook(
                lambda _, __, output, index=index, patterns=patterns: patterns.setdefault(index, set()).add(
                    kept_channels(output)
                )
            )
        seen.append(patterns)
        with torch.no_grad():
            Diffusion(steps=4).sample(member, images(), 3)  # 4 passes over a batch of 3 samples × 3 images
    for patterns in seen:  # one mask per layer: every pass, sample and image of the member saw it
        assert len(patterns) == len(dropout_layers(network))
        assert all(len(masks) == 1 for masks in patterns.values())
    assert seen[0] != seen[1] != seen[2]  # and members differ


class OtherMasks(MCDropout):
    """MC dropout whose members other than number 1 draw their masks from other seeds."""

    def mask_seed(self, seed: int, member: int, layer: int) -> int:
        return super().mask_seed(seed + (0 if member == 1 else 1000), member, layer)


@pytest.mark.parametrize("au", [SSN(), Diffusion(steps=3)], ids=["ssn", "diffusion"])
def test_a_members_samples_do_not_change_when_only_the_other_members_masks_change(au):
    network = randomised(au.build(Backbone("tiny"), in_channels=1, n_classes=2, dropout=0.5), seed=2)
    draws, others = (
        draw_samples(source, au, images(), trained=[network], members=3, samples=4, seed=5)
        for source in (MCDropout(), OtherMasks())
    )
    torch.testing.assert_close(draws[:, 1], others[:, 1], rtol=0, atol=0)
    assert (draws[:, 0] - others[:, 0]).abs().max() > 1e-4  # the others did change
    assert (draws[:, 2] - others[:, 2]).abs().max() > 1e-4
    assert (draws[:, 1, 1:] - draws[:, 1, :1]).abs().max() > 1e-4  # the member's samples still differ (AU)


def test_a_member_is_its_network_thinned_by_its_masks():
    """With the masks written into the weights (a dropped channel of the conv after a
    dropout is a zero input column), the plain network in evaluation mode gives the member."""
    network = randomised(SSN().build(Backbone("tiny"), in_channels=1, n_classes=2, dropout=0.5)).eval()
    member = next(MCDropout().members([network], n=1, seed=7))
    with torch.no_grad():
        expected = member(images())
        for block, layer in zip(
            (module for module in member.modules() if hasattr(module, "conv2")),
            dropout_layers(member),
            strict=True,
        ):
            hook = next(iter(layer._forward_hooks.values()))
            mask = hook.mask(layer, torch.zeros(1, block.conv2.in_channels, 1, 1))
            block.conv2.weight.mul_(mask / (1 - layer.p))
        layer_hooks = [layer._forward_hooks for layer in dropout_layers(member)]
        for hooks in layer_hooks:
            hooks.clear()
        torch.testing.assert_close(member(images()), expected, rtol=1e-4, atol=1e-5)
