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

Time: continuous ``t in [0, 1]`` is scaled by 1000 (matching DDPM's discrete steps, as the
paper does in §3) and embedded with a sinusoidal embedding of width ``ch``, followed by
``Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch)``.  The time MLP is part of the shared trunk.

The layers (DDPM building blocks, the shared encoder, the decoder, the condition encoder and
the conv head; their initialisation) are ``ddm.unet_layers``.

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
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ddm.times import as_batch_t
from ddm.unet_layers import CondEncoder, ConvHead, Decoder, Encoder, timestep_embedding

__all__ = ["UNet", "build_unet", "count_parameters", "HEAD_TYPES"]

#: Valid values of ``UNet(head=...)``.
HEAD_TYPES: tuple[str, ...] = ("decoder", "conv")

_TIME_SCALE = 1000.0


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


def _check_levels(resolution: int, ch_mult: tuple[int, ...], attn_resolutions: tuple[int, ...]) -> None:
    """The levels fit the input: ``resolution`` halves ``len(ch_mult) - 1`` times, and each attention
    resolution is one of the levels'."""
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
        _check_levels(resolution, ch_mult, attn_resolutions)

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


UNET_KEYS = ("in_channels", "out_channels", "resolution", "ch", "ch_mult", "num_blocks",
              "attn_resolutions", "dropout", "head", "cond_channels")
_UNET_REQUIRED = ("in_channels", "out_channels", "resolution")


def build_unet(cfg: Mapping) -> UNet:
    """Build a :class:`UNet` from a plain mapping with the constructor's keyword names.

    Lists (e.g. from YAML) are accepted for the sequence arguments.  Unknown keys or missing
    required keys raise ``ValueError`` naming them.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"build_unet expects a mapping, got {type(cfg).__name__}")
    unknown = sorted(str(k) for k in cfg if k not in UNET_KEYS)
    if unknown:
        raise ValueError(f"unknown UNet config keys {unknown}; allowed keys are {list(UNET_KEYS)}")
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
