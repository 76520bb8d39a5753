"""The attention UNet every reference family shares: the study's network (ADM style).

The study's code (``um/models/diff_unet2D_module.py`` of JakobLC/DiffUncertainty) builds
it; this is our own implementation of the same layout, with the same parameter count.
At full size (``width=32``, channel multipliers 1, 2, 4, 8, so 32, 64, 128 and 256
channels at 1, 1/2, 1/4 and 1/8 of the input side)::

    stem 3×3 conv ─┬ [Res ×2] ─ down ─ [Res ×2] ─ down ─ [Res+Attn ×2] ─ down ─ [Res+Attn ×2]
                   │  every stem, ResBlock and down output is pushed on a stack of skips
    middle: Res ─ Attn ─ Res
    decoder: per scale, deepest first, [cat(h, pop()) → Res (+Attn)] ×3, then up (not at the top)
    head: GroupNorm ─ SiLU ─ 3×3 conv (zero-initialised)

- **ResBlock**: GroupNorm → SiLU → 3×3 conv → (+ timestep projection) → GroupNorm → SiLU
  → MC dropout → 3×3 conv (zero-initialised), added to the input (through a 1×1 conv when
  the channels change).
- **Attention** (the two deepest scales, after every ResBlock; once in the middle): every
  pixel is a token; 4-head self-attention, pre-normed, residual, output projection
  zero-initialised, no MLP.
- **Down**: a strided 3×3 conv; **up**: nearest-neighbour ×2 then a 3×3 conv. Neither
  changes the channels; the first ResBlock of a scale does.
- **Skips** are concatenated: the encoder pushes the stem's output and the output of
  each of its blocks (ResBlocks and downsamplings) on a stack, and each decoder ResBlock
  pops one. That is why the decoder has one ResBlock more per scale than the encoder.
- **Timestep**: every ResBlock carries a projection SiLU → linear from a 4·width
  timestep embedding, as in the study's code, where it exists whether or not the network
  is conditioned on time (the study's counts include it). A diffusion network
  (``timestep=True``) also has the embedding itself: sinusoids of ``t`` ∈ [0, 1]
  (:func:`timestep_features`) → linear → SiLU → linear. In the other networks the
  projections get no input and never change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

#: Groups of every GroupNorm whose channels divide by it.
NORM_GROUPS = 32
#: The longest period of the timestep sinusoids (the study's code: 10, for t ∈ [0, 1]).
TIMESTEP_PERIOD = 10.0


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm as the study's code builds it: 32 groups when ``channels`` divides by 32,
    else one group per channel; ε = 1e-5. At full size every GroupNorm has 32 groups."""
    return nn.GroupNorm(NORM_GROUPS if channels % NORM_GROUPS == 0 else channels, channels, eps=1e-5)


def zero_initialised(module: nn.Module) -> nn.Module:
    """``module`` with every parameter set to zero (ADM's last convs), returned for chaining."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
    return module


def timestep_features(t: torch.Tensor, channels: int, max_period: float = TIMESTEP_PERIOD) -> torch.Tensor:
    """Sinusoidal features of diffusion times ``t`` ∈ [0, 1]: (batch,) → (batch, channels).

    Half cosines, then half sines, of ``t``·f with frequencies f geometric from 1 down to
    (just above) 1/``max_period``; an odd ``channels`` gets a last column of zeros.

    Examples
    --------
    >>> timestep_features(torch.tensor([0.0]), 4)
    tensor([[1., 1., 0., 0.]])
    """
    half = channels // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if channels % 2:
        features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=1)
    return features


class ResBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv (+ timestep projection) → GroupNorm → SiLU → dropout → 3×3 conv, plus the input.

    Parameters
    ----------
    in_channels, out_channels : channels of the input and output; the residual path
        has a 1×1 conv when they differ.
    embedding_channels : channels of the timestep embedding that :attr:`timestep_projection`
        maps to ``out_channels`` (it exists even when :meth:`forward` never gets one).
    dropout : probability of the block's single channel-wise dropout (:class:`torch.nn.Dropout2d`); 0 for none.
    """

    def __init__(self, in_channels: int, out_channels: int, *, embedding_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.timestep_projection = nn.Linear(embedding_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_initialised(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if embedding is not None:
            h = h + self.timestep_projection(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels, pre-normed and residual; no MLP.

    The output projection starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, *, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention over {channels} channels cannot be split into {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_initialised(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # (batch, 3, heads, channels per head, tokens) → q, k, v as (batch, heads, tokens, channels per head)
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(-1, -2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """A strided 3×3 conv: half the side, the same channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv with the same channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Head(nn.Module):
    """GroupNorm → SiLU → 3×3 conv (zero-initialised): features to an output map.

    The network's output layer, and the shape of SSN's covariance heads.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = group_norm(in_channels)
        self.conv = zero_initialised(nn.Conv2d(in_channels, out_channels, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(features)))


class UNetBlock(nn.Module):
    """A ResBlock, then attention when ``attention``, then an upsampling when ``upsample``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        attention: bool,
        heads: int,
        embedding_channels: int,
        dropout: float,
        upsample: bool = False,
    ):
        super().__init__()
        self.resblock = ResBlock(in_channels, out_channels, embedding_channels=embedding_channels, dropout=dropout)
        self.attention = AttentionBlock(out_channels, heads=heads) if attention else None
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        h = self.resblock(x, embedding)
        if self.attention is not None:
            h = self.attention(h)
        return h if self.upsample is None else self.upsample(h)


@dataclass(frozen=True)
class UNetShape:
    """The settings of an :class:`AttentionUNet` that a size (``tiny``, ``full``) fixes.

    Attributes
    ----------
    width : channels at full resolution (the study: 32).
    multipliers : channels per scale as multiples of ``width``; one downsampling between scales.
    blocks : ResBlocks per scale in the encoder; the decoder has ``blocks + 1``.
    middle_blocks : ResBlocks in the middle, with attention between them.
    attention_scales : how many of the deepest scales (and so the middle) have attention.
    heads : attention heads.
    """

    width: int = 32
    multipliers: Sequence[int] = field(default=(1, 2, 4, 8))
    blocks: int = 2
    middle_blocks: int = 2
    attention_scales: int = 2
    heads: int = 4

    @property
    def downsampling(self) -> int:
        """The factor by which the deepest scale is smaller; image sides must divide by it."""
        return 2 ** (len(self.multipliers) - 1)

    @property
    def channels(self) -> list[int]:
        """Channels per scale, from full resolution down."""
        return [self.width * multiplier for multiplier in self.multipliers]

    @property
    def embedding_channels(self) -> int:
        """Channels of the timestep embedding (4·width, as ADM)."""
        return 4 * self.width

    def scaled(self, factor: float) -> UNetShape:
        """The multipliers after the first scaled by ``factor`` and rounded (Python's ``round``).

        This is how the study narrows its Prob. UNet (factor 0.75): (1, 2, 4, 8) →
        (1, 2, 3, 6), so 32/64/96/192 channels at full size; the width, and with it the
        feature channels and the timestep embedding, stay.
        """
        if not factor > 0:
            raise ValueError(f"width_scale must be positive; got {factor}")
        if factor == 1:
            return self
        first, *rest = self.multipliers
        return replace(self, multipliers=(first, *(max(1, round(m * factor)) for m in rest)))


#: The sizes ``uqeval train --size`` offers: the study's network and the same at 1/4 width for CPUs.
SIZES: dict[str, UNetShape] = {"full": UNetShape(), "tiny": UNetShape(width=8)}


class AttentionUNet(nn.Module):
    """The shared attention UNet: images (batch, in_channels, y, x) → (batch, out_channels, y, x).

    Parameters
    ----------
    in_channels, out_channels : channels of the input and of the head's output.
    shape : the sizes (:data:`SIZES`).
    dropout : probability of the one channel-wise dropout (:class:`torch.nn.Dropout2d`) in every ResBlock
        (encoder, middle and decoder); 0 for none.
    timestep : condition on diffusion times: :meth:`forward` then takes ``t`` (batch,) in [0, 1].
    encoder_only : build just the stem, encoder and middle (Prob. UNet's prior and
        posterior nets); :meth:`forward` then returns the middle's output map.

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
        channels = shape.channels
        levels = len(channels)
        self.shape = shape
        self.encoder_only = encoder_only
        embedding = shape.embedding_channels
        self.time_embedding = (
            nn.Sequential(nn.Linear(shape.width, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
            if timestep
            else None
        )

        def block(in_channels: int, level: int, *, upsample: bool = False) -> UNetBlock:
            return UNetBlock(
                in_channels,
                channels[level],
                attention=level >= levels - shape.attention_scales,
                heads=shape.heads,
                embedding_channels=embedding,
                dropout=dropout,
                upsample=upsample,
            )

        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList()
        skip_channels = [channels[0]]
        current = channels[0]
        for level in range(levels):
            for _ in range(shape.blocks):
                self.encoder.append(block(current, level))
                current = channels[level]
                skip_channels.append(current)
            if level < levels - 1:
                self.encoder.append(Downsample(current))
                skip_channels.append(current)
        self.middle = nn.ModuleList(
            ResBlock(current, current, embedding_channels=embedding, dropout=dropout)
            for _ in range(shape.middle_blocks)
        )
        self.middle_attention = nn.ModuleList(
            AttentionBlock(current, heads=shape.heads) if shape.attention_scales > 0 else nn.Identity()
            for _ in range(shape.middle_blocks - 1)
        )
        self.out_channels = current if encoder_only else out_channels
        if encoder_only:
            return
        self.decoder = nn.ModuleList()
        for level in reversed(range(levels)):
            for index in range(shape.blocks + 1):
                upsample = level > 0 and index == shape.blocks
                self.decoder.append(block(current + skip_channels.pop(), level, upsample=upsample))
                current = channels[level]
        self.head = Head(current, out_channels)

    @property
    def feature_channels(self) -> int:
        """Channels of :meth:`features` (the width at full resolution)."""
        return self.shape.channels[0]

    def _embedding(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor | None:
        if self.time_embedding is None:
            if t is not None:
                raise ValueError("this network takes no diffusion times; build it with timestep=True")
            return None
        if t is None:
            raise ValueError("this network takes diffusion times `t`")
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        return self.time_embedding(timestep_features(t, self.shape.width).to(x.dtype))

    def _check_side(self, x: torch.Tensor) -> None:
        factor = self.shape.downsampling
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image sides must be multiples of {factor}; got {tuple(x.shape[-2:])}")

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """The last decoder map before the head, (batch, width, y, x), not normalised; for
        an encoder the middle's output (batch, width·multipliers[-1], y/8, x/8)."""
        self._check_side(x)
        embedding = self._embedding(x, t)
        h = self.stem(x)
        skips = [h]
        for layer in self.encoder:
            h = layer(h) if isinstance(layer, Downsample) else layer(h, embedding)
            skips.append(h)
        h = self.middle[0](h, embedding)
        for attention, resblock in zip(self.middle_attention, self.middle[1:], strict=True):
            h = resblock(attention(h), embedding)
        if self.encoder_only:
            return h
        for layer in self.decoder:
            h = layer(torch.cat([h, skips.pop()], dim=1), embedding)
        return h

    def head_of(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer (:class:`Head`): GroupNorm → SiLU → 3×3 conv to ``out_channels``."""
        return self.head(features)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x, t)
        return features if self.encoder_only else self.head_of(features)


@dataclass(frozen=True)
class Backbone:
    """The factory the AU methods build their networks from (``AUMethod.build``'s ``backbone``).

    ``Backbone("tiny")(in_channels=1, out_channels=2)`` is a tiny :class:`AttentionUNet`;
    ``width_scale`` narrows the deeper scales (:meth:`UNetShape.scaled`; Prob. UNet: 0.75).
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
        return AttentionUNet(
            in_channels,
            out_channels,
            shape=self.shape.scaled(width_scale),
            dropout=dropout,
            timestep=timestep,
            encoder_only=encoder_only,
        )


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
