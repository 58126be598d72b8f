"""The DDM denoiser: a DDPM/NCSN++-style U-Net with one shared encoder and several heads.

Paper background (Huang et al., "Decoupled Diffusion Models: Image to Zero and Zero to
Noise"):

* §4 / §B.2 and Fig. 5: the network predicts the parameters ``phi`` of the image-to-zero
  function ``h_t`` *and* the noise ``eps`` from ``x_t``; the authors "modify the original
  U-Net architecture (Song & Ermon, 2020) and add an extra decoder so that our model has
  two outputs".  ``phi_theta, eps_theta = Net_theta(x_t, t)``.
* Table 5 "Architecture" compares two ways of getting two outputs:

  - ``head="decoder"`` ("U-Net+decoder", the paper's choice, FID 13.92 at 10 steps): ONE
    shared encoder + middle block, and one full decoder per output.  Every decoder receives
    the same encoder skip features and the same time embedding; the decoders have the same
    architecture (only the final output convolution's channel count may differ, e.g.
    ``phi`` with ``2*C`` channels for the two-parameter linear ``h_t``) and separate weights.
    With a single entry in ``out_channels`` this is a plain U-Net.
  - ``head="conv"`` ("U-Net+conv", FID 15.13): a single decoder; head 0 is the usual output
    layer and every further head is "two stacked 3x3 convolutional layers ... from the
    feature map before the output layer".  **Deviation from the paper's text:** the paper
    says these convolutions have "stride 2 and padding 1", which would halve the resolution
    twice and cannot produce an image-sized prediction; we use stride 1, padding 1.  The
    "feature map before the output layer" is taken to be the input of head 0's final
    convolution, i.e. ``SiLU(GroupNorm(h))`` of the decoder's last feature map, and the
    branch is ``conv3x3(ch->ch) -> SiLU -> conv3x3(ch->out)``; so it adds exactly
    ``(9*ch*ch + ch) + (9*ch*out + out)`` parameters per extra head.
* Table 6 gives the settings per task (CIFAR-10: ch 192, ch_mult [1,2,2,2], 3 blocks).

Building blocks (DDPM, Ho et al. 2020; "ADM-lite"):

* Time: continuous ``t in [0, 1]`` is scaled by 1000 (matching DDPM's discrete steps, as the
  paper does in §3) and embedded with a sinusoidal embedding of width ``ch``, followed by
  ``Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch)``.  The time MLP is part of the shared trunk.
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

Condition (Fig. 5 "Cond", §B.2): when ``cond_channels`` is set, a condition encoder shaped
like the U-Net encoder (same ``ch``/``ch_mult``, conv_in then one residual block per level,
strided-conv downsampling, no time embedding) turns ``cond`` (B, cond_channels, R, R) into one
feature map per level.  The feature map of level ``i`` (``ch*ch_mult[i]`` channels at
resolution ``R / 2**i``) is concatenated, together with the image skip feature, to the input
of the first residual block of decoder level ``i`` -- in every decoder ("concatenate these
features and the image features with the same levels as the decoder's inputs").  The paper
uses a pretrained Swin-B as condition encoder in practice; this small conv encoder is the
self-contained stand-in the text describes.

Public API: :class:`UNet`, :func:`build_unet`, :func:`count_parameters`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddm.times import as_batch_t

__all__ = ["UNet", "build_unet", "count_parameters", "HEAD_TYPES", "num_groups"]

#: Valid values of ``UNet(head=...)``.
HEAD_TYPES: tuple[str, ...] = ("decoder", "conv")

_TIME_SCALE = 1000.0


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
    """Table 5 "U-Net+conv" extra head: conv3x3 -> SiLU -> conv3x3 (stride 1, see module doc)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.silu(self.conv1(x)))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _int_tuple(name: str, value, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")
    out = tuple(value)
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must contain positive ints, got {value!r}")
    return out


class UNet(nn.Module):
    """U-Net with a shared encoder and one output per entry of ``out_channels``.

    See the module docstring for the architecture and its relation to the paper.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of each head, e.g. ``(3, 3)`` for (phi, eps) with
            ``h_t = c`` on RGB, ``(6, 3)`` for a two-parameter ``h_t``.
        resolution: spatial size R of the (square) input; must be divisible by
            ``2**(len(ch_mult)-1)``.
        ch, ch_mult, num_blocks: base width, per-level multipliers, residual blocks per
            level in the encoder (decoder levels have ``num_blocks + 1``).
        attn_resolutions: resolutions at which self-attention follows each residual block.
        dropout: dropout rate inside residual blocks.
        head: ``"decoder"`` (one full decoder per head) or ``"conv"`` (one decoder, extra
            heads as two 3x3 convolutions).
        cond_channels: channels of the optional condition input (None: unconditional).
    """

    def __init__(self, *, in_channels: int, out_channels: Sequence[int], resolution: int,
                 ch: int = 64, ch_mult: Sequence[int] = (1, 2, 2, 2), num_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 head: str = "decoder", cond_channels: int | None = None):
        super().__init__()
        if head not in HEAD_TYPES:
            raise ValueError(f"unknown head {head!r}; valid heads are {list(HEAD_TYPES)}")
        in_channels = _positive_int("in_channels", in_channels)
        resolution = _positive_int("resolution", resolution)
        ch = _positive_int("ch", ch)
        num_blocks = _positive_int("num_blocks", num_blocks)
        out_channels = _int_tuple("out_channels", out_channels, allow_empty=False)
        ch_mult = _int_tuple("ch_mult", ch_mult, allow_empty=False)
        attn_resolutions = _int_tuple("attn_resolutions", attn_resolutions, allow_empty=True)
        if cond_channels is not None:
            cond_channels = _positive_int("cond_channels", cond_channels)
        if not (isinstance(dropout, (int, float)) and 0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        factor = 2 ** (len(ch_mult) - 1)
        if resolution % factor != 0:
            raise ValueError(
                f"resolution {resolution} is not divisible by 2**(len(ch_mult)-1) = {factor} "
                f"(ch_mult={list(ch_mult)})"
            )
        level_res = [resolution // 2**i for i in range(len(ch_mult))]
        bad = [r for r in attn_resolutions if r not in level_res]
        if bad:
            raise ValueError(
                f"attn_resolutions {bad} never occur; the levels have resolutions {level_res}"
            )

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.ch = ch
        self.ch_mult = ch_mult
        self.num_blocks = num_blocks
        self.attn_resolutions = attn_resolutions
        self.dropout = float(dropout)
        self.head = head
        self.cond_channels = cond_channels

        temb_ch = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(),
                                        nn.Linear(temb_ch, temb_ch))
        attn_set = set(attn_resolutions)
        self.encoder = Encoder(in_channels, ch, ch_mult, num_blocks, attn_set, resolution,
                               temb_ch, self.dropout)
        self.cond_encoder = (CondEncoder(cond_channels, ch, ch_mult, self.dropout)
                             if cond_channels is not None else None)
        cond_level_ch = self.cond_encoder.level_channels if self.cond_encoder else None

        def make_decoder(out_ch: int) -> Decoder:
            return Decoder(ch, ch_mult, num_blocks, attn_set, resolution, temb_ch,
                           self.dropout, self.encoder.skip_channels,
                           self.encoder.out_channels, out_ch, cond_level_ch)

        if head == "decoder":
            self.decoders = nn.ModuleList([make_decoder(c) for c in out_channels])
            self.conv_heads = nn.ModuleList()
        else:
            self.decoders = nn.ModuleList([make_decoder(out_channels[0])])
            feat = self.decoders[0].feature_channels
            self.conv_heads = nn.ModuleList([ConvHead(feat, c) for c in out_channels[1:]])

    # -- input checks -------------------------------------------------------------------
    def _check_x(self, x: Tensor) -> int:
        expected = (self.in_channels, self.resolution, self.resolution)
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"expected x of shape (B, {self.in_channels}, {self.resolution}, "
                f"{self.resolution}), got {got}"
            )
        return x.shape[0]

    def _encode_cond(self, cond, batch: int) -> list[Tensor] | None:
        if self.cond_encoder is None:
            if cond is not None:
                raise ValueError(
                    "cond was given but this UNet has cond_channels=None (unconditional)"
                )
            return None
        if cond is None:
            raise ValueError(
                f"this UNet has cond_channels={self.cond_channels}; forward needs cond of "
                f"shape ({batch}, {self.cond_channels}, {self.resolution}, {self.resolution})"
            )
        expected = (batch, self.cond_channels, self.resolution, self.resolution)
        if not isinstance(cond, Tensor) or tuple(cond.shape) != expected:
            got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"expected cond of shape {expected}, got {got}")
        return self.cond_encoder(cond)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, *,
                level_hook=None) -> tuple[Tensor, ...]:
        """x (B, in_channels, R, R); t (B,) floats in [0, 1]; returns one tensor per entry of
        out_channels, head i shaped (B, out_channels[i], R, R).  ``level_hook(d, i, h) -> h``,
        if given, maps the output of level ``i`` of decoder ``d`` before its upsampling (the
        cross-attention of ``ddm.conditioning.CondUNet``)."""
        batch = self._check_x(x)
        t = as_batch_t(t, batch, device=x.device, dtype=torch.float32)  # shape only: no sync, compile-safe
        cond_feats = self._encode_cond(cond, batch)
        temb = self.time_embed(timestep_embedding(t * _TIME_SCALE, self.ch))
        hs, h = self.encoder(x, temb)
        hooks = [None if level_hook is None else functools.partial(level_hook, d)
                 for d in range(len(self.decoders))]
        if self.head == "decoder":
            return tuple(dec(h, hs, temb, cond_feats, hooks[d])
                         for d, dec in enumerate(self.decoders))
        dec = self.decoders[0]
        feat = dec.features(h, hs, temb, cond_feats, hooks[0])
        return (dec.conv_out(feat),) + tuple(head(feat) for head in self.conv_heads)


_UNET_KEYS = ("in_channels", "out_channels", "resolution", "ch", "ch_mult", "num_blocks",
              "attn_resolutions", "dropout", "head", "cond_channels")
_UNET_REQUIRED = ("in_channels", "out_channels", "resolution")


def build_unet(cfg: Mapping) -> UNet:
    """Build a :class:`UNet` from a plain mapping with the constructor's keyword names.

    Lists (e.g. from YAML) are accepted for the sequence arguments.  Unknown keys or missing
    required keys raise ``ValueError`` naming them.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"build_unet expects a mapping, got {type(cfg).__name__}")
    unknown = sorted(str(k) for k in cfg if k not in _UNET_KEYS)
    if unknown:
        raise ValueError(f"unknown UNet config keys {unknown}; allowed keys are {list(_UNET_KEYS)}")
    missing = [k for k in _UNET_REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"missing required UNet config keys {missing}")
    kwargs = dict(cfg)
    for k in ("out_channels", "ch_mult", "attn_resolutions"):
        if k in kwargs and isinstance(kwargs[k], list):
            kwargs[k] = tuple(kwargs[k])
    return UNet(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters())
