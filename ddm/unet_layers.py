"""The layers of the DDM denoiser's U-Net (``ddm.nets.UNet``; paper §B.2, Fig. 5, Table 5, Table 6).

Building blocks (DDPM, Ho et al. 2020; "ADM-lite"):

* Time: :func:`timestep_embedding`, the sinusoidal embedding (DDPM / Transformer) of the scaled
  times; ``ddm.nets`` scales t by 1000 and follows it with the time MLP.
* Residual block: ``GroupNorm -> SiLU -> conv3x3 -> + Linear(SiLU(temb)) -> GroupNorm ->
  SiLU -> Dropout -> conv3x3``, plus a 1x1 convolution on the skip path when the channel
  count changes.
* Self-attention (single head, DDPM style) after each residual block at the resolutions in
  ``attn_resolutions`` and in the middle block (``res -> attn -> res``).
* Downsampling: strided 3x3 convolution; upsampling: nearest-neighbour x2 then 3x3 conv.
* GroupNorm uses 32 groups where the channel count allows it, else the largest divisor of
  the channel count that is <= 32 (so tiny test nets with ch=16 or 24 work).
* The final output convolution of every head is zero-initialised (common practice: the
  network starts by predicting zero).  All other layers keep PyTorch's default init, so
  weights are fully determined by ``torch.manual_seed``.

The parts the U-Net is assembled from: :class:`Encoder` (the shared trunk: conv_in, down path,
middle block), :class:`Decoder` (up path and output layer: one per head with ``head="decoder"``,
Fig. 5), :class:`CondEncoder` (the condition encoder of Fig. 5 "Cond") and :class:`ConvHead`
(Table 5 "U-Net+conv": the extra heads; stride 1, a deviation ``ddm.nets`` explains).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["num_groups", "timestep_embedding", "ResBlock", "AttnBlock", "Downsample", "Upsample", "Encoder",
           "Decoder", "CondEncoder", "ConvHead"]


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest divisor of ``channels`` that is <= ``max_groups`` (32 when it divides)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding (DDPM / Transformer) of a (B,) tensor of (scaled) times."""
    half = dim // 2
    t = t.float()
    if half == 0:
        return torch.zeros(t.shape[0], dim, device=t.device)
    denom = max(half - 1, 1)
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / denom)
    )
    args = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """DDPM residual block; ``temb_channels=None`` gives the time-free variant."""

    def __init__(self, in_ch: int, out_ch: int, temb_channels: int | None, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_ch) if temb_channels else None
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb_proj is not None:
            h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (DDPM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, hh * ww).transpose(-1, -2)  # b,3,hw,c
        q, k, v = qkv.unbind(1)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        h = h.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """Residual blocks (+ optional attention after each) of one resolution level."""

    def __init__(self, blocks: list[ResBlock], attn_channels: int | None,
                 resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(
            [AttnBlock(attn_channels) for _ in blocks] if attn_channels else []
        )
        self.resample = resample


class Encoder(nn.Module):
    """Shared trunk: conv_in, down path and middle block.  Returns (skips, h)."""

    def __init__(self, in_channels, ch, ch_mult, num_blocks, attn_res, resolution, temb_ch,
                 dropout):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.levels = nn.ModuleList()
        cur, res = ch, resolution
        self.skip_channels = [ch]
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            blocks = []
            for _ in range(num_blocks):
                blocks.append(ResBlock(cur, out, temb_ch, dropout))
                cur = out
                self.skip_channels.append(cur)
            last = i == len(ch_mult) - 1
            down = None if last else Downsample(cur)
            if not last:
                self.skip_channels.append(cur)
            self.levels.append(_Level(blocks, out if res in attn_res else None, down))
            if not last:
                res //= 2
        self.mid_block1 = ResBlock(cur, cur, temb_ch, dropout)
        self.mid_attn = AttnBlock(cur)
        self.mid_block2 = ResBlock(cur, cur, temb_ch, dropout)
        self.out_channels = cur

    def forward(self, x: Tensor, temb: Tensor) -> tuple[list[Tensor], Tensor]:
        h = self.conv_in(x)
        hs = [h]
        for level in self.levels:
            for j, block in enumerate(level.blocks):
                h = block(h, temb)
                if len(level.attns):
                    h = level.attns[j](h)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)
        return hs, h


class Decoder(nn.Module):
    """Up path + output layer.  ``levels[k]`` handles encoder level ``L-1-k``."""

    def __init__(self, ch, ch_mult, num_blocks, attn_res, resolution, temb_ch, dropout,
                 skip_channels, mid_channels, out_channels, cond_level_channels):
        super().__init__()
        skips = list(skip_channels)
        cur = mid_channels
        n = len(ch_mult)
        res = resolution // 2 ** (n - 1)
        self.levels = nn.ModuleList()
        for i in reversed(range(n)):
            out = ch * ch_mult[i]
            blocks = []
            for j in range(num_blocks + 1):
                extra = cond_level_channels[i] if (cond_level_channels and j == 0) else 0
                blocks.append(ResBlock(cur + skips.pop() + extra, out, temb_ch, dropout))
                cur = out
            up = Upsample(cur) if i != 0 else None
            self.levels.append(_Level(blocks, out if res in attn_res else None, up))
            if i != 0:
                res *= 2
        assert not skips
        self.norm_out = _norm(cur)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.feature_channels = cur

    def features(self, h: Tensor, hs: list[Tensor], temb: Tensor,
                 cond_feats: list[Tensor] | None, level_hook=None) -> Tensor:
        """Return the input of the final conv, ``SiLU(GroupNorm(h_last))``.  ``level_hook(i, h)``,
        if given, maps level ``i``'s output before its upsampling (``ddm.conditioning``)."""
        hs = list(hs)
        n = len(self.levels)
        for k, level in enumerate(self.levels):
            i = n - 1 - k
            for j, block in enumerate(level.blocks):
                parts = [h, hs.pop()]
                if cond_feats is not None and j == 0:
                    parts.append(cond_feats[i])
                h = block(torch.cat(parts, dim=1), temb)
                if len(level.attns):
                    h = level.attns[j](h)
            if level_hook is not None:
                h = level_hook(i, h)
            if level.resample is not None:
                h = level.resample(h)
        return F.silu(self.norm_out(h))

    def forward(self, h, hs, temb, cond_feats, level_hook=None):
        return self.conv_out(self.features(h, hs, temb, cond_feats, level_hook))


class CondEncoder(nn.Module):
    """Downsampling conv encoder for the condition: one feature map per level, no time."""

    def __init__(self, cond_channels, ch, ch_mult, dropout):
        super().__init__()
        self.conv_in = nn.Conv2d(cond_channels, ch, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        cur = ch
        self.level_channels = []
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            self.blocks.append(ResBlock(cur, out, None, dropout))
            cur = out
            self.level_channels.append(cur)
            if i != len(ch_mult) - 1:
                self.downs.append(Downsample(cur))

    def forward(self, c: Tensor) -> list[Tensor]:
        h = self.conv_in(c)
        feats = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            feats.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return feats


class ConvHead(nn.Module):
    """Table 5 "U-Net+conv" extra head: conv3x3 -> SiLU -> conv3x3 (stride 1: see ``ddm.nets``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.silu(self.conv1(x)))
