"""The attention UNet every reference family shares (the study's appendix A.2).

Layout at full size (``width=32``, channel multipliers 1, 2, 4, 8, so 32, 64, 128 and
256 channels at 1, 1/2, 1/4 and 1/8 of the input side)::

    stem 3×3 conv ─ [ResBlock ×2] ─ avgpool ─ [ResBlock ×2] ─ avgpool ─ [ResBlock+Attn ×2] ─ avgpool
      ─ [ResBlock+Attn ×2] ─ middle [ResBlock+Attn ×2] ─ [ResBlock+Attn ×3] ─ up ─ + skip ─ [ResBlock+Attn ×3]
      ─ up ─ + skip ─ [ResBlock ×3] ─ up ─ + skip ─ [ResBlock ×3] ─ GroupNorm ─ SiLU ─ 3×3 conv ─ head

- **ResBlock**: GroupNorm → SiLU → 3×3 conv → GroupNorm → SiLU → 3×3 conv, added to
  the input (through a 1×1 conv when the channels change). With ``dropout`` > 0 a
  channel-wise dropout comes before each conv (MC dropout); with a timestep embedding
  its projection is added after the first conv.
- **Attention** (the two deepest scales, after every ResBlock): every pixel is a token;
  single-head self-attention and then a 3× MLP, each pre-normed and residual.
- **Down**: 2×2 average pooling; the first conv after it changes the channels.
  **Up**: nearest-neighbour ×2 then a 3×3 conv that changes the channels. **Skips**:
  the encoder's output at a scale, just before it is pooled, is added to the decoder
  just after the upsampling back to that scale.

Where the study is silent we chose what brings the softmax model to its reported size
(15.78 M parameters): the decoder has one ResBlock more per scale than the encoder, as
in the DDPM/ADM UNets that Simple Diffusion builds on, and attention blocks carry an
MLP, as Simple Diffusion's transformer blocks do. GroupNorm uses
``gcd(channels, 32)`` groups, so any width works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

#: Groups of every GroupNorm, reduced to a divisor of the channels where needed.
NORM_GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(channels, 32)`` groups and ε = 1e-5."""
    return nn.GroupNorm(math.gcd(channels, NORM_GROUPS), channels, eps=1e-5)


def timestep_features(t: torch.Tensor, channels: int) -> torch.Tensor:
    """Sinusoidal features of diffusion times ``t`` ∈ [0, 1]: (batch,) → (batch, channels).

    Frequencies are geometric from 1 to 1000 (times ``t``·1000 as in DDPM), half sines,
    half cosines.
    """
    half = channels // 2
    frequencies = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * 1000.0)[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResBlock(nn.Module):
    """Norm → SiLU → (dropout) → 3×3 conv, twice, plus the input (1×1 conv if channels change)."""

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.0, embedding_channels: int = 0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.embedding = nn.Linear(embedding_channels, out_channels) if embedding_channels else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.dropout(F.silu(self.norm1(x))))
        if self.embedding is not None:
            if embedding is None:
                raise ValueError("this ResBlock takes a timestep embedding")
            h = h + self.embedding(embedding)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels, then an MLP; both pre-normed and residual."""

    def __init__(self, channels: int, *, mlp_ratio: int = 3):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.mlp_norm = group_norm(channels)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, mlp_ratio * channels, 1), nn.SiLU(), nn.Conv2d(mlp_ratio * channels, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, 1, channels, height * width).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (batch, 1 head, tokens, channels)
        x = x + self.out(attended.transpose(-1, -2).reshape(batch, channels, height, width))
        return x + self.mlp(self.mlp_norm(x))


class Stage(nn.Module):
    """ResBlocks at one scale, each followed by attention when ``attention``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int,
        *,
        attention: bool,
        mlp_ratio: int,
        dropout: float,
        embedding_channels: int,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                dropout=dropout,
                embedding_channels=embedding_channels,
            )
            for i in range(blocks)
        )
        self.attention = nn.ModuleList(
            AttentionBlock(out_channels, mlp_ratio=mlp_ratio) if attention else nn.Identity() for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        for block, attention in zip(self.blocks, self.attention, strict=True):
            x = attention(block(x, embedding))
        return x


@dataclass(frozen=True)
class UNetShape:
    """The settings of an :class:`AttentionUNet` that a size (``tiny``, ``full``) fixes.

    Attributes
    ----------
    width : channels at full resolution (the study: 32).
    multipliers : channels per scale as multiples of ``width``; one downsampling between scales.
    encoder_blocks, decoder_blocks, middle_blocks : ResBlocks per scale and in the middle.
    attention_scales : how many of the deepest scales (and the middle) have attention.
    mlp_ratio : hidden channels of the attention blocks' MLP, as a multiple of the channels.
    embedding_channels : sinusoidal timestep features projected into every ResBlock
        (diffusion); 0 for none.
    """

    width: int = 32
    multipliers: Sequence[int] = field(default=(1, 2, 4, 8))
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    middle_blocks: int = 2
    attention_scales: int = 2
    mlp_ratio: int = 3
    embedding_channels: int = 16

    @property
    def downsampling(self) -> int:
        """The factor by which the deepest scale is smaller; image sides must divide by it."""
        return 2 ** (len(self.multipliers) - 1)


#: The sizes ``uqeval train --size`` offers: the study's network and a CPU-sized one.
SIZES: dict[str, UNetShape] = {"full": UNetShape(), "tiny": UNetShape(width=8)}


class AttentionUNet(nn.Module):
    """The shared attention UNet: images (batch, in_channels, y, x) → (batch, out_channels, y, x).

    Parameters
    ----------
    in_channels, out_channels : channels of the input and of the head's output.
    shape : the sizes (:data:`SIZES`); ``width`` is the channel count at full resolution.
    dropout : channel-wise dropout probability before every conv of every ResBlock.
    timestep : add a sinusoidal timestep embedding to every ResBlock (diffusion); then
        :meth:`forward` takes ``t`` (batch,) in [0, 1].
    encoder_only : build just the encoder and middle (Prob. UNet's prior and posterior
        nets); :meth:`forward` then returns the deepest feature map.

    Examples
    --------
    >>> net = AttentionUNet(1, 2, shape=SIZES["tiny"])
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 2, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        shape: UNetShape = SIZES["full"],
        dropout: float = 0.0,
        timestep: bool = False,
        encoder_only: bool = False,
    ):
        super().__init__()
        if any(shape.width * m % 2 for m in shape.multipliers):
            raise ValueError(f"width {shape.width} × multipliers {tuple(shape.multipliers)} must give even channels")
        self.shape = shape
        self.encoder_only = encoder_only
        self.embedding_channels = shape.embedding_channels if timestep else 0
        channels = [shape.width * m for m in shape.multipliers]
        n_scales = len(channels)
        options = {"mlp_ratio": shape.mlp_ratio, "dropout": dropout, "embedding_channels": self.embedding_channels}
        deep = [scale >= n_scales - shape.attention_scales for scale in range(n_scales)]
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            Stage(channels[max(scale - 1, 0)], channels[scale], shape.encoder_blocks, attention=deep[scale], **options)
            for scale in range(n_scales)
        )
        self.middle = Stage(
            channels[-1], channels[-1], shape.middle_blocks, attention=shape.attention_scales > 0, **options
        )
        self.out_channels = channels[-1] if encoder_only else out_channels
        if encoder_only:
            return
        self.decoder = nn.ModuleList(
            Stage(channels[scale], channels[scale], shape.decoder_blocks, attention=deep[scale], **options)
            for scale in range(n_scales)
        )
        self.up = nn.ModuleList(
            nn.Conv2d(channels[scale], channels[scale - 1], 3, padding=1) for scale in range(1, n_scales)
        )
        self.head_norm = group_norm(channels[0])
        self.head = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    @property
    def feature_channels(self) -> int:
        """Channels of :meth:`features` (the width at full resolution)."""
        return self.shape.width

    def _embedding(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if not self.embedding_channels:
            return None
        if t is None:
            raise ValueError("this network takes diffusion times `t`")
        return timestep_features(t, self.embedding_channels)

    def _encode(self, x: torch.Tensor, embedding: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        factor = self.shape.downsampling
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image sides must be multiples of {factor}; got {tuple(x.shape[-2:])}")
        h = self.stem(x)
        skips = []
        for scale, stage in enumerate(self.encoder):
            if scale:
                skips.append(h)
                h = F.avg_pool2d(h, 2)
            h = stage(h, embedding)
        return self.middle(h, embedding), skips

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """The last decoder feature map before the head: (batch, width, y, x), or the
        deepest map (batch, width·multipliers[-1], y/8, x/8) for an encoder."""
        embedding = self._embedding(t)
        h, skips = self._encode(x, embedding)
        if self.encoder_only:
            return h
        for scale in reversed(range(len(self.decoder))):
            h = self.decoder[scale](h, embedding)
            if scale:
                h = self.up[scale - 1](F.interpolate(h, scale_factor=2.0, mode="nearest")) + skips[scale - 1]
        return h

    def head_of(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer: GroupNorm → SiLU → 3×3 conv to ``out_channels``."""
        return self.head(F.silu(self.head_norm(features)))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x, t)
        return features if self.encoder_only else self.head_of(features)


@dataclass(frozen=True)
class Backbone:
    """The factory the AU methods build their networks from (``AUMethod.build``'s ``backbone``).

    ``Backbone("tiny")(in_channels=1, out_channels=2)`` is a tiny :class:`AttentionUNet`;
    ``width_scale`` scales the width (Prob. UNet uses 0.75 of it for all three nets).
    """

    size: str = "full"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; sizes are {sorted(SIZES)}")

    @property
    def shape(self) -> UNetShape:
        return SIZES[self.size]

    def __call__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        width_scale: float = 1.0,
        timestep: bool = False,
        encoder_only: bool = False,
    ) -> AttentionUNet:
        width = max(2, 2 * round(self.shape.width * width_scale / 2))
        return AttentionUNet(
            in_channels,
            out_channels,
            shape=replace(self.shape, width=width),
            dropout=dropout,
            timestep=timestep,
            encoder_only=encoder_only,
        )


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
