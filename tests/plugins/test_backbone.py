"""The shared attention UNet: sizes, parameter counts, shapes, the study's layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uqeval_torch.backbone import (
    SIZES,
    AttentionBlock,
    AttentionUNet,
    Backbone,
    ResBlock,
    group_norm,
    parameter_count,
    timestep_features,
)


def test_full_size_softmax_has_the_studys_parameter_count():
    # The study reports 15.78 M parameters for its softmax model (§3.3).
    count = parameter_count(Backbone("full")(in_channels=1, out_channels=2))
    assert abs(count - 15.78e6) / 15.78e6 < 0.02


def test_full_size_counts_follow_the_layout():
    net = Backbone("full")(in_channels=1, out_channels=2)
    channels = [32, 64, 128, 256]
    assert [stage.blocks[-1].conv2.out_channels for stage in net.encoder] == channels
    assert [len(stage.blocks) for stage in net.encoder] == [2, 2, 2, 2]
    assert len(net.middle.blocks) == 2
    # Attention only at the two deepest scales (and in the middle).
    attention = [isinstance(stage.attention[0], AttentionBlock) for stage in net.encoder]
    assert attention == [False, False, True, True]
    assert all(isinstance(block, AttentionBlock) for block in net.middle.attention)
    assert [conv.out_channels for conv in net.up] == channels[:-1]
    # One 1×1 conv on the residual path exactly where the channels change (32→64, 64→128, 128→256).
    shortcuts = [
        module for module in net.modules() if isinstance(module, ResBlock) and isinstance(module.skip, nn.Conv2d)
    ]
    assert [(block.skip.in_channels, block.skip.out_channels) for block in shortcuts] == [
        (32, 64),
        (64, 128),
        (128, 256),
    ]


def test_tiny_is_the_same_network_narrower():
    tiny = Backbone("tiny")(in_channels=1, out_channels=2)
    full = Backbone("full")(in_channels=1, out_channels=2)
    assert SIZES["tiny"].width == 8
    assert len(list(tiny.modules())) == len(list(full.modules()))
    assert parameter_count(tiny) < parameter_count(full) / 10


@pytest.mark.parametrize("side", [16, 32, 48])
def test_output_keeps_the_image_size(side):
    net = Backbone("tiny")(in_channels=3, out_channels=4)
    assert net(torch.zeros(2, 3, side, side)).shape == (2, 4, side, side)
    assert net.features(torch.zeros(1, 3, side, side)).shape == (1, net.feature_channels, side, side)


def test_sides_must_divide_by_eight():
    net = Backbone("tiny")(in_channels=1, out_channels=2)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 20, 20))


def test_encoder_only_gives_the_deepest_map():
    encoder = Backbone("tiny")(in_channels=3, out_channels=1, encoder_only=True)
    assert not hasattr(encoder, "decoder")
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 64, 4, 4)
    assert encoder.out_channels == 64


def test_width_scale_and_group_norm_divisibility():
    net = Backbone("full")(in_channels=1, out_channels=2, width_scale=0.75)
    assert net.feature_channels == 24
    for module in net.modules():
        if isinstance(module, nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    assert group_norm(24).num_groups == 8 and group_norm(256).num_groups == 32


def test_timestep_embedding_reaches_every_resblock():
    net = Backbone("tiny")(in_channels=1, out_channels=2, timestep=True)
    blocks = [module for module in net.modules() if isinstance(module, ResBlock)]
    assert blocks and all(block.embedding is not None for block in blocks)
    x = torch.randn(2, 1, 16, 16)
    torch.manual_seed(0)
    for block in blocks:  # the projections start anywhere but zero, so t must matter
        nn.init.normal_(block.embedding.weight)
    assert not torch.allclose(net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.9, 0.9])))
    with pytest.raises(ValueError, match="diffusion times"):
        net(x)
    # At full size the embedding adds only a little (the study: 15.81 M against 15.78 M).
    full = parameter_count(Backbone("full")(in_channels=3, out_channels=2, timestep=True))
    assert 0 < full - parameter_count(Backbone("full")(in_channels=3, out_channels=2)) < 0.1e6


def test_timestep_features_are_sinusoids():
    features = timestep_features(torch.tensor([0.0, 0.5]), 8)
    assert features.shape == (2, 8)
    assert torch.equal(features[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.allclose(features[1, 0], torch.sin(torch.tensor(500.0)))


def test_attention_is_permutation_equivariant_over_pixels():
    # Every pixel is a token: permuting pixels permutes the output the same way.
    torch.manual_seed(0)
    block = AttentionBlock(8).eval()
    x = torch.randn(1, 8, 4, 4)
    permutation = torch.randperm(16)
    permuted = x.flatten(2)[:, :, permutation].reshape(1, 8, 4, 4)
    expected = block(x).flatten(2)[:, :, permutation]
    assert torch.allclose(block(permuted).flatten(2), expected, atol=1e-5)


def test_dropout_is_channelwise_and_only_when_asked():
    plain = Backbone("tiny")(in_channels=1, out_channels=2)
    assert not any(isinstance(m, nn.Dropout2d) for m in plain.modules())
    dropped = Backbone("tiny")(in_channels=1, out_channels=2, dropout=0.2)
    layers = [m for m in dropped.modules() if isinstance(m, nn.Dropout2d)]
    assert layers and all(layer.p == 0.2 for layer in layers)
    x = torch.randn(1, 1, 16, 16)
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="sizes are"):
        Backbone("huge")


def test_attention_unet_direct_construction():
    net = AttentionUNet(2, 3, shape=SIZES["tiny"])
    assert net(torch.zeros(1, 2, 16, 16)).shape == (1, 3, 16, 16)
