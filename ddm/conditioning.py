"""Image-conditioned DDM (§5.1, §5.3, Fig. 5, §B.2; Tables 2 and 3 of the paper).

The paper trains DDM on three image-conditioned tasks (saliency detection, super-resolution,
inpainting): "we use an additional encoder to extract features for the conditional input which
are used to correlate the features of x_t by attention mechanisms" (§5.1), with Swin-B as that
encoder "in practice" (§B.2). x0 is the target image (the mask, the high-resolution image, the
complete image) and the objective is DDM's (Eq. 10, :class:`ddm.losses.DDMObjective`); the
DDPM baseline of Table 2 is :class:`ddm.losses.VPObjective` on the same backbone.

What is here:

* :class:`CondUNet` -- the two-decoder U-Net of :mod:`ddm.nets` plus a condition encoder and one
  cross-attention block per decoder level, in *every* decoder (Fig. 5: the condition branch
  feeds both the phi and the eps decoder). The queries are the decoder's x_t features, the keys
  and values the condition features of the same level; a fixed 2-D sinusoidal embedding of the
  normalised pixel position is added to queries and keys, so attention can align positions
  (without it, attention is blind to *where* a condition feature lies, which matters for all
  three tasks). The block sits after a level's residual blocks, before its upsampling
  (``UNet.forward(level_hook=...)``).
* Condition encoders: ``encoder="conv"`` (default; trained from scratch, works offline) is
  :class:`ddm.unet_layers.CondEncoder`, a down-sampling conv encoder like the U-Net's encoder (§B.2),
  one feature map per U-Net level; ``encoder="swin_b"`` is torchvision's Swin-B with ImageNet
  weights read from a local file (:class:`ddm.swin.SwinConditionEncoder`,
  :func:`ddm.swin.load_swin_b`), its four stages resized and projected to the U-Net's levels.
* The signature stays ``net(x, t) -> heads``: ``net(x, t, cond=c)``, and :func:`bind` gives
  ``functools.partial(net, cond=c)`` for the samplers of :mod:`ddm.sampling` /
  :mod:`ddm.baselines`. For training with :func:`ddm.training.train`, :class:`ConditionedObjective`
  wraps any objective and reads the condition from extra channels of the data tensor
  (:func:`pack`).

The paper is inconsistent about the fusion: §5.1 says attention, §B.2 says the condition features
are *concatenated* to the decoder inputs. Both are here, as ``CondUNet(conditioning=...)``:
``"cross_attention"`` (default, §5.1) and ``"concat"`` (§B.2: ``ddm.nets.UNet(cond_channels=...)``,
its conv encoder's level-i features concatenated to the input of decoder level i, in every
decoder). params.yaml names it ``model.conditioning`` in a conditioned preset or one task's block.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddm.nets import UNet
from ddm.swin import SwinConditionEncoder
from ddm.unet_layers import CondEncoder, num_groups

__all__ = [
    "CONDITIONINGS",
    "ENCODERS",
    "CondUNet",
    "CrossAttention",
    "ConditionedObjective",
    "bind",
    "build_cond_unet",
    "pack",
    "position_embedding",
]

#: Valid values of ``CondUNet(encoder=...)``.
ENCODERS: tuple[str, ...] = ("conv", "swin_b")
#: Valid values of ``CondUNet(conditioning=...)``: how the condition features reach x_t's (module
#: docstring); the first is the default.
CONDITIONINGS: tuple[str, ...] = ("cross_attention", "concat")


# -- cross-attention ----------------------------------------------------------------------------
def position_embedding(height: int, width: int, dim: int, max_freq: float,
                       device=None) -> Tensor:
    """(height*width, dim) 2-D sinusoidal embedding of the pixel centres' normalised positions
    (u, v) = ((row + 0.5)/height, (col + 0.5)/width): sin/cos of pi f u and pi f v for dim // 4
    frequencies f geometric from 1 to ``max_freq``; zero-padded to ``dim``. It depends on the
    normalised position only, so grids of different resolutions line up."""
    n = dim // 4
    out = torch.zeros(height * width, dim, device=device)
    if n == 0:
        return out
    freqs = torch.logspace(0, math.log10(max(max_freq, 1.0)), n, device=device) * math.pi
    u = (torch.arange(height, device=device) + 0.5) / height
    v = (torch.arange(width, device=device) + 0.5) / width
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    au, av = uu.reshape(-1, 1) * freqs, vv.reshape(-1, 1) * freqs
    out[:, : 4 * n] = torch.cat([au.sin(), au.cos(), av.sin(), av.cos()], dim=1)
    return out


class CrossAttention(nn.Module):
    """Multi-head attention from x_t features (queries) to condition features (keys, values)
    with a residual connection (§5.1 "correlate the features of x_t by attention mechanisms").
    Heads of width about 64 (one head below 128 channels). Positions enter through
    :func:`position_embedding`, added to queries (times a learned gain, initially 1) and keys."""

    def __init__(self, channels: int, context_channels: int, max_freq: float):
        super().__init__()
        self.heads = num_groups(channels, max(1, channels // 64))
        self.max_freq = float(max_freq)
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=1e-6)
        self.norm_context = nn.GroupNorm(num_groups(context_channels), context_channels, eps=1e-6)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(context_channels, channels)
        self.v = nn.Linear(context_channels, channels)
        self.proj = nn.Linear(channels, channels)
        self.pos_gain = nn.Parameter(torch.ones(()))

    def _tokens(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)  # (B, HW, C)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hc, wc = context.shape[-2:]
        pos_q = position_embedding(h, w, c, self.max_freq, x.device).to(x.dtype)
        pos_k = position_embedding(hc, wc, c, self.max_freq, x.device).to(x.dtype)
        q = self.q(self._tokens(self.norm(x))) + self.pos_gain * pos_q
        ctx = self._tokens(self.norm_context(context))
        k, v = self.k(ctx) + pos_k, self.v(ctx)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        a = a.transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(a).transpose(1, 2).reshape(b, c, h, w)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# -- the conditioned U-Net ----------------------------------------------------------------------
def _resolutions(unet: UNet) -> list[int]:
    return [unet.resolution // 2**i for i in range(len(unet.ch_mult))]


class CondUNet(nn.Module):
    """Two-decoder U-Net (:class:`ddm.nets.UNet`, Fig. 5) conditioned on an image through a
    condition encoder and cross-attention in every decoder (module docstring).

    Args:
        cond_channels: channels of the condition image (B, cond_channels, R, R).
        encoder: ``"conv"`` (trained from scratch, default) or ``"swin_b"`` (ImageNet weights
            from ``encoder_weights``, default :func:`ddm.swin.default_swin_b_weights`).
        cross_attn_resolutions: the levels (by resolution) that get a cross-attention block in
            each decoder; None (default) = every level.
        cond_resolution: the condition's size when it differs from x_t's (latent diffusion, §5.1:
            x_t is an autoencoder's latent, the condition stays in pixel space); None (default) =
            the U-Net's resolution. The encoder's level i is then cond_resolution / 2**i pixels,
            and cross-attention lines it up with x_t's level by normalised position.
        conditioning: ``"cross_attention"`` (default, §5.1) or ``"concat"`` (§B.2: the U-Net's own
            condition path, ``ddm.nets.UNet(cond_channels=...)``; conv encoder, condition at x_t's
            size, no cross-attention blocks).
        **unet: the keyword arguments of :class:`ddm.nets.UNet` except ``cond_channels``.

    ``forward(x, t, cond)`` returns the U-Net's heads; ``cond`` is required.
    """

    def __init__(self, *, cond_channels: int, encoder: str = "conv",
                 encoder_weights: str | os.PathLike | None = None,
                 cross_attn_resolutions: Sequence[int] | None = None,
                 cond_resolution: int | None = None, conditioning: str = "cross_attention", **unet):
        super().__init__()
        if "cond_channels" in unet or "level_hook" in unet:
            raise ValueError("CondUNet takes cond_channels itself; do not pass it in the UNet keys")
        if not _positive_int(cond_channels):
            raise ValueError(f"cond_channels must be a positive int, got {cond_channels!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown condition encoder {encoder!r}; valid encoders are "
                             f"{list(ENCODERS)}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; valid values are {list(CONDITIONINGS)}")
        if cond_resolution is not None and not _positive_int(cond_resolution):
            raise ValueError(f"cond_resolution must be a positive int or None, got {cond_resolution!r}")
        self.cond_channels, self.encoder_name, self.conditioning = cond_channels, encoder, conditioning
        if conditioning == "concat":
            self._concat(unet, encoder, cross_attn_resolutions, cond_resolution)
            return
        self.unet = UNet(**unet)
        self.cond_resolution = cond_resolution or self.unet.resolution
        level_res = _resolutions(self.unet)
        chans = [self.unet.ch * m for m in self.unet.ch_mult]
        wanted = level_res if cross_attn_resolutions is None else list(cross_attn_resolutions)
        bad = [r for r in wanted if r not in level_res]
        if bad or not wanted:
            raise ValueError(f"cross_attn_resolutions {list(wanted)} must be a non-empty subset of "
                             f"the level resolutions {level_res}")
        self.cross_attn_resolutions = tuple(sorted(set(wanted), reverse=True))
        if encoder == "conv":
            self.cond_encoder = CondEncoder(cond_channels, self.unet.ch, self.unet.ch_mult,
                                            self.unet.dropout)
        else:
            self.cond_encoder = SwinConditionEncoder(cond_channels, chans, encoder_weights)
        max_freq = self.unet.resolution / 2
        self.cross = nn.ModuleList(
            nn.ModuleDict({str(i): CrossAttention(chans[i], chans[i], max_freq)
                           for i, r in enumerate(level_res) if r in self.cross_attn_resolutions})
            for _ in self.unet.decoders
        )

    def _concat(self, unet: dict, encoder: str, cross_attn_resolutions, cond_resolution) -> None:
        """§B.2's reading: the U-Net's own condition path (concatenation), nothing else."""
        self.unet = UNet(**unet, cond_channels=self.cond_channels)
        bad = {"encoder": encoder if encoder != "conv" else None,
               "cross_attn_resolutions": cross_attn_resolutions,
               "cond_resolution": cond_resolution if cond_resolution not in (None, self.unet.resolution) else None}
        bad = {k: v for k, v in bad.items() if v is not None}
        if bad:
            raise ValueError(f"conditioning 'concat' concatenates a conv encoder's features at x_t's own size "
                             f"({self.unet.resolution}); it takes no {', '.join(f'{k}={v!r}' for k, v in bad.items())}: "
                             "use conditioning 'cross_attention' for those (a latent task's pixel-space "
                             "condition, the Swin-B encoder, chosen cross-attention levels)")
        self.cond_resolution, self.cross_attn_resolutions = self.unet.resolution, ()
        self.cross = nn.ModuleList()

    # the attributes callers read from a UNet
    in_channels = property(lambda self: self.unet.in_channels)
    out_channels = property(lambda self: self.unet.out_channels)
    resolution = property(lambda self: self.unet.resolution)
    head = property(lambda self: self.unet.head)

    def _check_cond(self, cond, batch: int) -> Tensor:
        expected = (batch, self.cond_channels, self.cond_resolution, self.cond_resolution)
        if not isinstance(cond, Tensor) or tuple(cond.shape) != expected:
            got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"CondUNet needs cond of shape {expected} (bind it with "
                             f"ddm.conditioning.bind(net, cond)), got {got}")
        return cond

    def forward(self, x: Tensor, t, cond: Tensor | None = None) -> tuple[Tensor, ...]:
        """Heads of the U-Net for x_t ``x`` (B, C, R, R) at times ``t`` given ``cond``."""
        cond = self._check_cond(cond, x.shape[0] if isinstance(x, Tensor) else -1)
        if self.conditioning == "concat":
            return self.unet(x, t, cond.to(x.dtype))
        feats = self.cond_encoder(cond.to(x.dtype))

        def hook(d: int, i: int, h: Tensor) -> Tensor:
            block = self.cross[d][str(i)] if str(i) in self.cross[d] else None
            return h if block is None else block(h, feats[i])

        return self.unet(x, t, level_hook=hook)


def bind(net: nn.Module, cond: Tensor):
    """``net(x, t)`` with the condition bound: what the samplers call (``sample_ddm(bind(net, c),
    process, noise, grid, rng=rng)``); the noise batch must match ``cond``'s."""
    return functools.partial(net, cond=cond)


_COND_KEYS = ("cond_channels", "encoder", "encoder_weights", "cross_attn_resolutions", "cond_resolution",
              "conditioning")


def build_cond_unet(cfg: Mapping) -> CondUNet:
    """A :class:`CondUNet` from a plain mapping: the UNet keys of :func:`ddm.nets.build_unet`
    plus ``cond_channels`` (required), ``encoder``, ``encoder_weights``,
    ``cross_attn_resolutions``, ``cond_resolution``, ``conditioning`` (§5.1, §B.2). Unknown keys raise ``ValueError``
    naming them."""
    from ddm.nets import UNET_KEYS  # the one list of UNet keys

    if not isinstance(cfg, Mapping):
        raise ValueError(f"build_cond_unet expects a mapping, got {type(cfg).__name__}")
    allowed = [k for k in UNET_KEYS if k != "cond_channels"] + list(_COND_KEYS)
    unknown = sorted(str(k) for k in cfg if k not in allowed)
    if unknown:
        raise ValueError(f"unknown conditioned-UNet config keys {unknown}; allowed keys are "
                         f"{allowed}")
    if "cond_channels" not in cfg:
        raise ValueError("missing required conditioned-UNet config key 'cond_channels'")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return CondUNet(**kwargs)


# -- training: the condition travels with the data ------------------------------------------------
def pack(target: Tensor, cond: Tensor, factor: int = 1) -> Tensor:
    """One data tensor (N, C_target + C_cond * factor**2, R, R) for :func:`ddm.training.train`
    (§5.1): the target x0 first, then the condition (:class:`ConditionedObjective` splits it
    again). ``factor``: the condition is ``factor`` times the target's size (a latent target,
    §5.1) and travels space-to-depth (``pixel_unshuffle``, lossless)."""
    r = target.shape[2:]
    if target.shape[0] != cond.shape[0] or tuple(cond.shape[2:]) != tuple(factor * s for s in r):
        raise ValueError(f"target {tuple(target.shape)} and condition {tuple(cond.shape)} need the "
                         f"same count and size (the condition's {factor} times the target's): resize the condition")
    return torch.cat([target, F.pixel_unshuffle(cond.to(target.dtype), factor)], dim=1)


class ConditionedObjective:
    """Any training objective (DDM's Eq. 10, the VP/DDPM baseline's Eq. 4) on packed data
    (:func:`pack`): channels ``[:target_channels]`` are x0, the rest the condition (``cond_factor``
    times x0's size, packed space-to-depth: a latent x0, §5.1), which is bound to the model for the
    call. ``draw`` sees only x0, so the noise is that of x0."""

    def __init__(self, objective, target_channels: int, cond_factor: int = 1):
        if not _positive_int(target_channels) or not _positive_int(cond_factor):
            raise ValueError(f"target_channels and cond_factor must be positive ints, got "
                             f"{target_channels!r}, {cond_factor!r}")
        self.objective, self.target_channels, self.cond_factor = objective, target_channels, cond_factor

    def split(self, data: Tensor) -> tuple[Tensor, Tensor]:
        k = self.target_channels
        if data.dim() != 4 or data.shape[1] <= k or (data.shape[1] - k) % self.cond_factor**2:
            raise ValueError(f"packed data must be (B, {k} + condition channels, R, R), got "
                             f"{tuple(data.shape)}; build it with ddm.conditioning.pack")
        return data[:, :k], F.pixel_shuffle(data[:, k:], self.cond_factor)

    def draw(self, data: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.objective.draw(self.split(data)[0], generator)

    def __call__(self, model, data: Tensor, noise: dict[str, Tensor]):
        x0, cond = self.split(data)
        return self.objective(bind(model, cond), x0, noise)
