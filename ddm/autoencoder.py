"""A small KL-regularised autoencoder for latent-space DDM (§5.1: "we translate the diffusion
process into latent space for high-resolution (>256) image synthesis following Rombach et al.
(2022)").

The design is latent diffusion's ``AutoencoderKL`` at a small size: a convolutional encoder with
residual blocks (:class:`AutoencoderResBlock`, no time input) and ``len(ch_mult) - 1`` strided
down-samplings (down-sampling factor f = 4 with the default three levels) ending in the mean and
log-variance of a diagonal Gaussian over ``z_channels`` (3 or 4) latent channels, and a mirrored
decoder. Training loss per image (:class:`AutoencoderObjective`, for :func:`ddm.training.train`):

    L = |x - D(z)|_1 (mean over pixels) + kl_weight * KL(q(z|x) || N(0, I)) / #pixels,
    z = mean + exp(logvar / 2) * eps.

The authors fine-tune LDM's kl-f4 with its perceptual (LPIPS) and adversarial losses; neither
weights nor discriminator exist offline, so this autoencoder is trained from scratch with the
L1 + KL part of that loss only. Latents are scaled by a stored factor (LDM: 1 / std of the
training latents; the authors' kl-f4 uses 0.165), set by :meth:`KLAutoencoder.fit_scale` and
saved in the state dict, so ``encode`` gives unit-scale latents and ``decode`` undoes it.

Short training: with the KL weight of LDM (1e-6) the posterior variance only shrinks through the
reconstruction gradient; started at exp(0) = 1, a short run would decode through unit noise. The
bias of the log-variance output therefore starts at ``LOGVAR_INIT`` = -6 (a choice for short
runs, not measured on its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ddm.unet_layers import Downsample, Upsample, num_groups

__all__ = ["KLAutoencoder", "AutoencoderObjective", "reconstruction_psnr", "LOGVAR_INIT", "AUTOENCODER_FORMAT",
           "build_autoencoder", "fit_autoencoder", "train_autoencoder", "save_autoencoder", "load_autoencoder",
           "encode_images", "decode_latents"]

#: Initial bias of the log-variance output (posterior std about 0.05 at the start).
LOGVAR_INIT = -6.0
#: The ``format`` entry of an autoencoder file (``ddm train-autoencoder``).
AUTOENCODER_FORMAT = "ddm.autoencoder/1"


def _norm(c: int) -> nn.GroupNorm:
    """GroupNorm with at least 4 channels per group (at most 32 groups, LDM's 32 at 128
    channels). One channel per group would be an instance norm that erases each image's
    channel means, i.e. its colours (measured, ch 8, 300 steps: 18.5 dB against 22.2 dB)."""
    return nn.GroupNorm(num_groups(c, max(1, c // 4)), c, eps=1e-6)


class AutoencoderResBlock(nn.Module):
    """LDM's residual block without a time input: (GroupNorm, SiLU, conv3x3) twice + skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                  _norm(out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, ch: int, ch_mult: Sequence[int], num_blocks: int,
                 z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        layers, cur = [], ch
        for i, mult in enumerate(ch_mult):
            for _ in range(num_blocks):
                layers.append(AutoencoderResBlock(cur, ch * mult))
                cur = ch * mult
            if i != len(ch_mult) - 1:
                layers.append(Downsample(cur))
        out = nn.Conv2d(cur, 2 * z_channels, 3, padding=1)
        with torch.no_grad():  # log-variance starts at LOGVAR_INIT (module docstring)
            out.bias[z_channels:].fill_(LOGVAR_INIT)
        layers += [AutoencoderResBlock(cur, cur), _norm(cur), nn.SiLU(), out]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.conv_in(x))


class _Decoder(nn.Module):
    def __init__(self, out_channels: int, ch: int, ch_mult: Sequence[int], num_blocks: int,
                 z_channels: int):
        super().__init__()
        cur = ch * ch_mult[-1]
        layers = [nn.Conv2d(z_channels, cur, 3, padding=1), AutoencoderResBlock(cur, cur)]
        for i in reversed(range(len(ch_mult))):
            for _ in range(num_blocks + 1):
                layers.append(AutoencoderResBlock(cur, ch * ch_mult[i]))
                cur = ch * ch_mult[i]
            if i != 0:
                layers.append(Upsample(cur))
        layers += [_norm(cur), nn.SiLU(), nn.Conv2d(cur, out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)


class KLAutoencoder(nn.Module):
    """KL autoencoder (LDM's ``AutoencoderKL``, small). Down-sampling factor
    ``2 ** (len(ch_mult) - 1)`` (4 by default); ``z_channels`` latent channels (3 or 4, as the
    authors' and LDM's kl-f4). ``encode`` / ``decode`` work on scaled latents (``scale_factor``,
    a buffer saved with the weights)."""

    def __init__(self, in_channels: int = 3, z_channels: int = 4, ch: int = 32,
                 ch_mult: Sequence[int] = (1, 2, 2), num_blocks: int = 1,
                 kl_weight: float = 1e-6):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("z_channels", z_channels), ("ch", ch),
                        ("num_blocks", num_blocks)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"KLAutoencoder: {name} must be a positive int, got {v!r}")
        if not ch_mult or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0
                              for m in ch_mult):
            raise ValueError(f"KLAutoencoder: ch_mult must be positive ints, got {ch_mult!r}")
        if not kl_weight >= 0:
            raise ValueError(f"KLAutoencoder: kl_weight must be >= 0, got {kl_weight!r}")
        self.in_channels, self.z_channels = in_channels, z_channels
        self.kl_weight = float(kl_weight)
        self.factor = 2 ** (len(ch_mult) - 1)
        self.encoder = _Encoder(in_channels, ch, tuple(ch_mult), num_blocks, z_channels)
        self.decoder = _Decoder(in_channels, ch, tuple(ch_mult), num_blocks, z_channels)
        self.register_buffer("scale_factor", torch.ones(()))

    def _check(self, x: Tensor) -> Tensor:
        k = self.factor
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"KLAutoencoder expects images (B, {self.in_channels}, H, W) with "
                             f"H, W divisible by {k}, got {tuple(x.shape)}")
        return x

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (clamped to [-30, 20], as LDM) of q(z | x), unscaled."""
        mean, logvar = self.encoder(self._check(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents ``scale_factor * z``: the posterior mean, or a draw with ``sample``."""
        mean, logvar = self.posterior(x)
        z = mean
        if sample:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + (0.5 * logvar).exp() * eps
        return z * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        """Images from scaled latents (the inverse of :meth:`encode`'s scaling)."""
        if z.dim() != 4 or z.shape[1] != self.z_channels:
            raise ValueError(f"KLAutoencoder.decode expects latents (B, {self.z_channels}, h, w), "
                             f"got {tuple(z.shape)}")
        return self.decoder(z / self.scale_factor)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(reconstruction, per-image KL divergence summed over latent elements); ``eps`` is the
        reparameterisation noise (None: use the mean)."""
        mean, logvar = self.posterior(x)
        z = mean if eps is None else mean + (0.5 * logvar).exp() * eps
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        return self.decoder(z), kl

    @torch.no_grad()
    def fit_scale(self, data: Tensor, batch_size: int = 256) -> float:
        """Set ``scale_factor`` to 1 / std of the posterior means over ``data`` (LDM); return it."""
        zs = [self.posterior(data[i:i + batch_size])[0]
              for i in range(0, data.shape[0], batch_size)]
        std = torch.cat(zs).float().std()
        if not torch.isfinite(std) or std <= 0:
            raise ValueError(f"latent std is {float(std)}: cannot scale the latents")
        self.scale_factor.fill_(1.0 / float(std))
        return float(self.scale_factor)


class AutoencoderObjective:
    """L1 reconstruction + kl_weight * KL per pixel, per image (module docstring), in the
    protocol of :mod:`ddm.training` (``draw`` makes the reparameterisation noise)."""

    def __init__(self, autoencoder: KLAutoencoder):
        self.z_channels, self.factor = autoencoder.z_channels, autoencoder.factor
        self.kl_weight = autoencoder.kl_weight

    def draw(self, x0: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        b, _, h, w = x0.shape
        shape = (b, self.z_channels, h // self.factor, w // self.factor)
        return {"eps": torch.randn(shape, generator=generator, device=x0.device)}

    def __call__(self, model, x0: Tensor,
                 noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        rec, kl = model(x0, noise["eps"].to(x0))
        l1 = (rec - x0).abs().flatten(1).mean(1)
        kl = kl / x0[0].numel()
        return l1 + self.kl_weight * kl, {"l1": l1.detach(), "kl": kl.detach()}


@torch.no_grad()
def reconstruction_psnr(autoencoder: KLAutoencoder, images: Tensor, batch_size: int = 256) -> float:
    """Mean PSNR (dB, RGB, no crop, :func:`ddm.metrics.psnr` on uint8) of ``decode(encode(x))``
    against ``x`` for model-range images (N, C, H, W) in [-1, 1]."""
    from ddm.datasets import to_uint8
    from ddm.metrics import psnr

    rec = torch.cat([autoencoder.decode(autoencoder.encode(images[i:i + batch_size]))
                     for i in range(0, images.shape[0], batch_size)])
    return psnr(to_uint8(rec), to_uint8(images), crop_border=0, y_channel=False)


# -- the pipeline's autoencoder of a latent task (rule train_autoencoder) -------------------------
def build_autoencoder(latent: Mapping, channels: int) -> KLAutoencoder:
    """The :class:`KLAutoencoder` of a task's resolved ``latent`` block
    (``ddm.config.resolve_task(...)["latent"]``) for images of ``channels`` channels (§5.1: the
    >256 px tasks run in the latent space of a KL autoencoder, factor 4)."""
    return KLAutoencoder(in_channels=channels, z_channels=latent["z_channels"], ch=latent["ch"],
                         ch_mult=tuple(latent["ch_mult"]), num_blocks=latent["num_blocks"],
                         kl_weight=latent["kl_weight"])


def fit_autoencoder(latent: Mapping, channels: int, images: Tensor, ckpt_dir, *, seed: int = 0,
                    device: str | torch.device = "cpu") -> KLAutoencoder:
    """Train a task's autoencoder on its training targets (model-range images) with
    :func:`ddm.training.train` for ``latent["steps"]`` steps (resuming from ``ckpt_dir``), load
    the final (non-EMA) weights and fit the latent scale (LDM's 1 / std, §5.1 via Rombach et al.
    2022); eval mode, on the CPU."""
    from ddm.training import TrainConfig, load_checkpoint, train

    cfg = TrainConfig(steps=latent["steps"], batch_size=latent["batch_size"], accum=latent.get("accum", 1),
                      lr=latent["lr"], lr_min=latent["lr_min"], weight_decay=0.0, ckpt_every=latent["steps"], keep_last=1,
                      log_every=max(1, latent["steps"] // 10), seed=seed)
    torch.manual_seed(seed)
    ae = build_autoencoder(latent, channels)
    final = train(ae.train(), AutoencoderObjective(ae), images, cfg, ckpt_dir, device=device)
    ae = build_autoencoder(latent, channels)
    load_checkpoint(final, ae)
    ae.eval().fit_scale(images)
    return ae


def train_autoencoder(task: str, data: Mapping, latent: Mapping, train_images: Tensor, test_images: Tensor, ckpt_dir,
                      out, *, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """A latent task's autoencoder as ``ddm train-autoencoder`` makes it (§5.1: latent diffusion,
    factor 4): fitted on the task's training targets ``train_images`` (model range) in
    ``ckpt_dir`` (:func:`fit_autoencoder`), its reconstruction PSNR measured on the test targets
    ``test_images`` (:func:`reconstruction_psnr`) and written to ``out`` with the task's ``data``
    and ``latent`` blocks (:func:`save_autoencoder`). Returns its metric record: PSNR, factor,
    latent channels, scale factor, test count and ``computed_at``."""
    from ddm.io import utc_timestamp, writing

    channels = int(train_images.shape[1])
    with writing(ckpt_dir):
        ae = fit_autoencoder(latent, channels, train_images, ckpt_dir, seed=seed, device=device)
    psnr = reconstruction_psnr(ae, test_images)
    with writing(out):
        save_autoencoder(out, ae, {"task": task, "channels": channels, "data": data, "latent": latent}, psnr)
    return {"task": task, "psnr": psnr, "factor": ae.factor, "z_channels": latent["z_channels"],
            "scale_factor": float(ae.scale_factor), "num_samples": len(test_images), "computed_at": utc_timestamp()}


def save_autoencoder(path, ae: KLAutoencoder, cfg: Mapping, psnr: float):
    """Write an autoencoder file (:data:`AUTOENCODER_FORMAT`, atomically, ``ddm.io.save_torch``):
    the task's resolved ``cfg`` (task, channels, data, latent), the weights with the fitted
    ``scale_factor`` and the test-split reconstruction PSNR (§5.1's latent space)."""
    from ddm.io import save_torch

    return save_torch({"format": AUTOENCODER_FORMAT, "cfg": dict(cfg), "psnr": float(psnr),
                       "state_dict": {k: v.detach().cpu() for k, v in ae.state_dict().items()}}, path)


def load_autoencoder(path, device="cpu") -> tuple[dict, KLAutoencoder]:
    """(its cfg, the autoencoder in eval mode) of a file of :func:`save_autoencoder`; an
    ``ddm.io.InputError`` naming the file and ``ddm train-autoencoder`` otherwise (§5.1)."""
    from ddm.io import InputError, load_torch

    blob = load_torch(path, "autoencoder file", "ddm train-autoencoder")
    if not isinstance(blob, dict) or blob.get("format") != AUTOENCODER_FORMAT or "state_dict" not in blob:
        raise InputError(f"autoencoder file {path} was not written by `ddm train-autoencoder` "
                         f"({AUTOENCODER_FORMAT})")
    try:
        ae = build_autoencoder(blob["cfg"]["latent"], blob["cfg"]["channels"])
        ae.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise InputError(f"autoencoder file {path}: its config and weights do not make an autoencoder "
                         f"({type(e).__name__}: {first}): train it again with `ddm train-autoencoder`") from None
    return blob["cfg"], ae.to(device).eval()


@torch.no_grad()
def encode_images(ae: KLAutoencoder, images: Tensor, batch_size: int = 256) -> Tensor:
    """Scaled latents (posterior means, §5.1) of model-range images, in batches, on the CPU."""
    dev = ae.scale_factor.device
    return torch.cat([ae.encode(images[i:i + batch_size].to(dev)).cpu()
                      for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def decode_latents(ae: KLAutoencoder, z: Tensor, batch_size: int = 256) -> Tensor:
    """Model-range images of scaled latents (§5.1: samples leave the latent space), on the CPU."""
    dev = ae.scale_factor.device
    return torch.cat([ae.decode(z[i:i + batch_size].to(dev)).cpu() for i in range(0, z.shape[0], batch_size)])
