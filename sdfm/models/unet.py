"""A compact DDPM-style UNet velocity field for small images (8x8 to 64x64).

Layout (Ho et al. 2020, reduced): a 3x3 input convolution; per resolution level ``i``,
``num_res_blocks`` residual blocks at ``base_channels * channel_mults[i]`` channels (each followed
by self-attention when the level's resolution is in ``attention_resolutions``) and a strided
downsampling convolution between levels; a middle block (res, attention, res); the mirror-image
decoder with ``num_res_blocks + 1`` blocks per level fed by the skip connections and
nearest-neighbour upsampling; GroupNorm, SiLU and a zero-initialised 3x3 output convolution.

Every residual block adds a projection of the conditioning vector ``c(t, r, label)`` (see
:mod:`sdfm.models.embeddings`) to its features. Inputs whose side is not a multiple of
``2^(levels - 1)`` (28x28 with three levels) are zero-padded on the bottom/right to the next
multiple and the output is cropped back. Attention uses an explicit softmax (not
``scaled_dot_product_attention``) so that forward-mode AD (MeanFlow's JVP) works everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdfm.models.embeddings import Conditioning

__all__ = ["UNetVelocity"]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))) + W c)))`` with a 1x1 skip when channels change."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(embed_dim, out_ch)
        self.norm2, self.drop = _norm(out_ch), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(c))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, head_dim: int = 64) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, ch, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, ch // self.heads, hh * ww).unbind(1)
        weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(ch // self.heads), dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(b, ch, hh, ww)
        return x + self.proj(out)


class Stage(nn.Module):
    """One residual block, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, embed_dim, dropout)
        self.attn = SelfAttention(out_ch) if attention else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.attn(self.res(x, c))


class UNetVelocity(nn.Module):
    """Velocity ``v(x, t)`` (or MeanFlow ``u(x, r, t)``) on (B, C, H, W) images.

    Args:
        in_channels: image channels C.
        image_size: side H (= W), or an ``(H, W)`` pair.
        base_channels: channels of the first level.
        channel_mults: channel multiplier per resolution level; ``len`` levels, ``len - 1`` downsamplings.
        num_res_blocks: residual blocks per level in the encoder (decoder: one more).
        attention_resolutions: feature-map sides (after padding) that get self-attention.
        dropout: dropout inside the residual blocks.
        num_classes: number of labels for a class-conditional model; the null class is index
            ``num_classes``.
        class_dropout: probability of replacing a label by the null class during training; the
            model only stores it (the training loop draws the mask, see ``sdfm.fm.objectives``).
        mean_flow: also condition on the start time r (MeanFlow).
        cond_channels: channels of an image condition (super-resolution: the low-resolution
            image), 0 for none. The condition, (B, cond_channels * h * w) flat or
            (B, cond_channels, h, w), is upsampled (nearest) to H x W and concatenated with x.
        cond_size: its side ``(h, w)`` (default: H x W).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int | tuple[int, int],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (),
        dropout: float = 0.0,
        num_classes: int | None = None,
        class_dropout: float = 0.1,
        mean_flow: bool = False,
        cond_channels: int = 0,
        cond_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.cond_channels = int(cond_channels)
        self.cond_size = tuple(int(s) for s in cond_size) if cond_size is not None else size
        factor = 2 ** (len(channel_mults) - 1)
        self.image_size, self.in_channels = size, in_channels
        self.padded_size = tuple(factor * math.ceil(s / factor) for s in size)
        self.num_classes, self.class_dropout, self.mean_flow = num_classes, class_dropout, mean_flow
        embed_dim = 4 * base_channels
        self.cond = Conditioning(embed_dim, base_channels, num_classes, mean_flow)
        self.conv_in = nn.Conv2d(in_channels + self.cond_channels, base_channels, 3, padding=1)

        self.down, skip_channels = nn.ModuleList(), [base_channels]
        ch, res = base_channels, self.padded_size[0]
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(Stage(ch, base_channels * mult, embed_dim, dropout, res in attention_resolutions))
                ch = base_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                res //= 2
        self.mid = nn.ModuleList([Stage(ch, ch, embed_dim, dropout, True), Stage(ch, ch, embed_dim, dropout, False)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(Stage(ch + skip_channels.pop(), out, embed_dim, dropout, res in attention_resolutions))
                ch = out
            if level > 0:
                upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
                self.up.append(upsample)
                res *= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        labels: Tensor | None = None,
        r: Tensor | float | None = None,
        drop_labels: bool | Tensor = False,
        cond: Tensor | None = None,
    ) -> Tensor:
        """Return the velocity at ``(x, t)``, shape (B, C, H, W) like ``x``.

        Args:
            x: (B, C, H, W) states.
            t: scalar or (B,) times in [0, 1].
            labels: (B,) class labels, or ``None`` (the null class) for a conditional model.
            r: scalar or (B,) start times (MeanFlow models only; default ``r = t``).
            drop_labels: replace the labels by the null class (a bool, or a (B,) mask).
            cond: the image condition of a model built with ``cond_channels`` (required then).
        """
        height, width = x.shape[-2:]
        if (height, width) != self.image_size or x.shape[1] != self.in_channels:
            expected = (self.in_channels, *self.image_size)
            raise ValueError(f"expected (B, {', '.join(map(str, expected))}) images, got {tuple(x.shape)}")
        c = self.cond(t, x, labels, r, drop_labels)
        h = torch.cat([x, self._condition_channels(cond, x)], dim=1) if self.cond_channels else x
        if cond is not None and not self.cond_channels:
            raise ValueError("cond was given to a model built without cond_channels")
        pad_h, pad_w = self.padded_size[0] - height, self.padded_size[1] - width
        h = F.pad(h, (0, pad_w, 0, pad_h)) if pad_h or pad_w else h
        h = self.conv_in(h)
        skips = [h]
        for module in self.down:
            h = module(h, c) if isinstance(module, Stage) else module(h)
            skips.append(h)
        for module in self.mid:
            h = module(h, c)
        for module in self.up:
            h = module(torch.cat([h, skips.pop()], dim=1), c) if isinstance(module, Stage) else module(h)
        return self.out(h)[..., :height, :width]

    def _condition_channels(self, cond: Tensor | None, x: Tensor) -> Tensor:
        """The (B, cond_channels, H, W) input channels of the condition (nearest upsampling)."""
        shape = (x.shape[0], self.cond_channels, *self.cond_size)
        if cond is None or cond.numel() != x.shape[0] * self.cond_channels * self.cond_size[0] * self.cond_size[1]:
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"this model needs cond of shape {shape} (or flat), got {got}")
        grid = cond.reshape(shape).to(x.dtype)
        return grid if self.cond_size == self.image_size else F.interpolate(grid, size=self.image_size, mode="nearest")
