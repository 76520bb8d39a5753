"""The shared attention UNet: the study's layout, sizes, skips, attention, timesteps and MC dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqeval_torch.backbone import (
    SIZES,
    AttentionBlock,
    AttentionUNet,
    Backbone,
    Downsample,
    Head,
    ResBlock,
    UNetShape,
    Upsample,
    group_norm,
    parameter_count,
    timestep_features,
)


def randomised(net: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """``net`` with every weight redrawn, so that the zero-initialised convs do not hide anything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
        for module in net.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.fill_(1.0)
    return net


def modules_of(net: nn.Module, kind: type) -> list[nn.Module]:
    return [module for module in net.modules() if isinstance(module, kind)]


def test_full_size_follows_the_studys_layout():
    net = Backbone("full")(in_channels=3, out_channels=2)
    resblocks = [layer for layer in net.encoder if not isinstance(layer, Downsample)]
    assert [block.resblock.conv2.out_channels for block in resblocks] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert [isinstance(layer, Downsample) for layer in net.encoder] == [False, False, True] * 3 + [False, False]
    assert [layer.conv.stride for layer in net.encoder if isinstance(layer, Downsample)] == [(2, 2)] * 3
    # Attention with 4 heads after every ResBlock of the two deepest scales, and once in the middle.
    assert [block.attention is not None for block in resblocks] == [False] * 4 + [True] * 4
    assert len(net.middle) == 2 and isinstance(net.middle_attention[0], AttentionBlock)
    assert all(block.heads == 4 for block in modules_of(net, AttentionBlock))
    assert len(modules_of(net, AttentionBlock)) == 4 + 1 + 6
    # Decoder: 3 ResBlocks per scale, deepest first; each takes the concatenation of h and a popped skip.
    assert [block.resblock.conv1.in_channels for block in net.decoder] == [
        *(512, 512, 384),
        *(384, 256, 192),
        *(192, 128, 96),
        *(96, 64, 64),
    ]
    assert [block.resblock.conv2.out_channels for block in net.decoder] == [256] * 3 + [128] * 3 + [64] * 3 + [32] * 3
    assert [index for index, block in enumerate(net.decoder) if block.upsample is not None] == [2, 5, 8]
    assert len(modules_of(net, ResBlock)) == 8 + 2 + 12
    # No MLP anywhere in the attention blocks: only norm, qkv and the output projection.
    assert {name for name, _ in AttentionBlock(64).named_children()} == {"norm", "qkv", "out"}


def test_zero_initialised_convs_make_a_fresh_network_output_zero():
    net = Backbone("tiny")(in_channels=1, out_channels=3)
    for block in modules_of(net, ResBlock):
        assert not block.conv2.weight.any() and not block.conv2.bias.any()
    for attention in modules_of(net, AttentionBlock):
        assert not attention.out.weight.any() and not attention.out.bias.any()
    assert not net.head.conv.weight.any()
    # Every ResBlock and attention block starts as its shortcut, and the head at zero.
    assert torch.equal(net(torch.randn(2, 1, 16, 16)), torch.zeros(2, 3, 16, 16))


def test_tiny_is_the_same_network_at_a_quarter_of_the_width():
    tiny = Backbone("tiny")(in_channels=1, out_channels=2)
    full = Backbone("full")(in_channels=1, out_channels=2)
    assert SIZES["tiny"] == UNetShape(width=8)
    assert [type(m) for m in tiny.modules()] == [type(m) for m in full.modules()]
    assert parameter_count(tiny) == 994_042
    assert parameter_count(full) == 15_786_466


@pytest.mark.parametrize("side", [16, 32, 48])
def test_output_keeps_the_image_size(side):
    net = Backbone("tiny")(in_channels=3, out_channels=4)
    assert net(torch.zeros(2, 3, side, side)).shape == (2, 4, side, side)
    assert net.features(torch.zeros(1, 3, side, side)).shape == (1, net.feature_channels, side, side)


def test_sides_must_divide_by_eight():
    net = Backbone("tiny")(in_channels=1, out_channels=2)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 20, 20))


def test_every_encoder_output_reaches_the_decoder():
    # Skips are concatenated: each decoder block's input has its own channels plus one
    # popped encoder output's, and the stack of those is used up exactly.
    net = randomised(Backbone("tiny")(in_channels=1, out_channels=2)).eval()
    x = torch.randn(1, 1, 16, 16)
    pops = []
    for block in net.decoder:
        block.register_forward_pre_hook(lambda _, inputs: pops.append(inputs[0].shape[1]))
    net(x)
    assert pops == [block.resblock.conv1.in_channels for block in net.decoder]
    assert len(pops) == 1 + 2 * 4 + 3  # stem + every ResBlock + every downsampling of the encoder


def test_encoder_only_gives_the_middles_map():
    encoder = Backbone("tiny")(in_channels=3, out_channels=1, encoder_only=True)
    assert not hasattr(encoder, "decoder") and not hasattr(encoder, "head")
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 64, 4, 4)
    assert encoder.out_channels == 64


def test_width_scale_narrows_the_deeper_scales_as_the_study():
    # The study's Prob. UNet: multipliers (1, 2, 4, 8) × 0.75, rounded, the first kept: (1, 2, 3, 6).
    net = Backbone("full")(in_channels=3, out_channels=2, width_scale=0.75)
    assert net.shape.multipliers == (1, 2, 3, 6)
    assert net.shape.channels == [32, 64, 96, 192]
    assert net.feature_channels == 32
    assert parameter_count(net) == 9_302_786  # the study's Prob. UNet's UNet
    assert Backbone("tiny").shape.scaled(0.75).channels == [8, 16, 24, 48]
    assert Backbone("tiny").shape.scaled(1.0) is Backbone("tiny").shape
    with pytest.raises(ValueError, match="positive"):
        Backbone("tiny")(in_channels=1, out_channels=2, width_scale=0.0)


def test_group_norm_groups_follow_the_studys_rule():
    assert group_norm(256).num_groups == 32 and group_norm(96).num_groups == 32
    assert group_norm(24).num_groups == 24 and group_norm(8).num_groups == 8
    # At full size every GroupNorm has 32 groups.
    net = Backbone("full")(in_channels=3, out_channels=2, width_scale=0.75)
    assert {norm.num_groups for norm in modules_of(net, nn.GroupNorm)} == {32}


def test_timestep_features_are_sinusoids_of_period_up_to_ten():
    features = timestep_features(torch.tensor([0.0, 0.5]), 8)
    assert features.shape == (2, 8)
    assert torch.equal(features[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    frequencies = [10 ** (-i / 4) for i in range(4)]
    expected = [math.cos(0.5 * f) for f in frequencies] + [math.sin(0.5 * f) for f in frequencies]
    torch.testing.assert_close(features[1], torch.tensor(expected))
    assert timestep_features(torch.tensor([0.3]), 5)[0, -1] == 0.0


def test_timestep_embedding_reaches_every_resblock():
    net = randomised(Backbone("tiny")(in_channels=1, out_channels=2, timestep=True))
    assert net.time_embedding[0].in_features == 8 and net.time_embedding[-1].out_features == 32
    x = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.9, 0.9])))
    torch.testing.assert_close(net(x, torch.tensor(0.4)), net(x, torch.tensor([0.4, 0.4])))
    with pytest.raises(ValueError, match="diffusion times"):
        net(x)
    plain = Backbone("tiny")(in_channels=1, out_channels=2)
    assert plain.time_embedding is None
    with pytest.raises(ValueError, match="no diffusion times"):
        plain(x, torch.tensor([0.1, 0.1]))
    # The per-ResBlock projections exist in both, as in the study's code; the embedding MLP
    # (8→32→32 at tiny size) and the extra input channels are the whole difference.
    full = Backbone("full")
    difference = parameter_count(full(in_channels=5, out_channels=2, timestep=True)) - parameter_count(
        full(in_channels=3, out_channels=2)
    )
    assert difference == (32 * 128 + 128) + (128 * 128 + 128) + 2 * 32 * 9


def test_attention_is_permutation_equivariant_over_pixels():
    # Every pixel is a token: permuting pixels permutes the output the same way.
    block = randomised(AttentionBlock(8, heads=4)).eval()
    x = torch.randn(1, 8, 4, 4)
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    permuted = x.flatten(2)[:, :, permutation].reshape(1, 8, 4, 4)
    expected = block(x).flatten(2)[:, :, permutation]
    assert torch.allclose(block(permuted).flatten(2), expected, atol=1e-5)
    with pytest.raises(ValueError, match="heads"):
        AttentionBlock(6, heads=4)


def test_attention_matches_a_per_head_softmax_written_out():
    block = randomised(AttentionBlock(8, heads=2), seed=3, std=0.5).eval()
    x = torch.randn(1, 8, 2, 3)
    with torch.no_grad():
        normed = block.norm(x).flatten(2)[0]  # (channel, token)
        qkv = block.qkv.weight[:, :, 0, 0] @ normed + block.qkv.bias[:, None]  # (3·channel, token)
        q, k, v = qkv.reshape(3, 2, 4, 6)  # (head, channel per head, token) each
        heads = [v[h] @ torch.softmax(q[h].T @ k[h] / 2.0, dim=-1).T for h in range(2)]
        attended = torch.cat(heads)  # (channel, token)
        expected = x.flatten(2)[0] + block.out.weight[:, :, 0, 0] @ attended + block.out.bias[:, None]
        torch.testing.assert_close(block(x).flatten(2)[0], expected, atol=1e-5, rtol=1e-5)


def test_resampling_keeps_the_channels():
    x = torch.randn(1, 4, 8, 8)
    assert Downsample(4)(x).shape == (1, 4, 4, 4)
    assert Upsample(4)(x).shape == (1, 4, 16, 16)
    assert Head(4, 3)(x).shape == (1, 3, 8, 8)


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="sizes are"):
        Backbone("huge")


def test_attention_unet_direct_construction():
    net = AttentionUNet(2, 3, shape=SIZES["tiny"])
    assert net(torch.zeros(1, 2, 16, 16)).shape == (1, 3, 16, 16)


# --- MC dropout ---------------------------------------------------------------------------------


def dropout_net(p: float = 0.3, **options) -> AttentionUNet:
    return randomised(Backbone("tiny")(in_channels=1, out_channels=2, dropout=p, **options))


def test_one_channelwise_dropout_per_resblock_before_its_second_conv():
    net = dropout_net(0.2)
    layers = modules_of(net, nn.Dropout2d)
    resblocks = modules_of(net, ResBlock)
    assert len(layers) == len(resblocks) == 22
    assert all(isinstance(block.dropout, nn.Dropout2d) and block.dropout.p == 0.2 for block in resblocks)
    # Not in attention, resampling or the head.
    for kind in (AttentionBlock, Downsample, Upsample, Head):
        assert not any(modules_of(module, nn.Dropout2d) for module in modules_of(net, kind))
    assert not modules_of(Backbone("tiny")(in_channels=1, out_channels=2), nn.Dropout2d)
    # The mask acts on the second conv's input: whole channels of it are zero.
    block = resblocks[0].train()
    seen = []
    block.conv2.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    torch.manual_seed(0)
    block(torch.randn(2, 8, 8, 8))
    channel_maxima = seen[0].abs().amax(dim=(-2, -1))
    assert (channel_maxima == 0).any() and (channel_maxima > 0).any()


def test_prior_and_posterior_style_encoders_have_dropout_too():
    encoder = Backbone("tiny")(in_channels=1, out_channels=2, dropout=0.2, encoder_only=True)
    assert len(modules_of(encoder, nn.Dropout2d)) == len(modules_of(encoder, ResBlock)) == 10


def test_dropout_is_off_in_eval_mode_and_on_in_training():
    net = dropout_net(0.3).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
