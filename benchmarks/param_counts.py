"""Parameter counts of ``ddm.nets.UNet`` for the paper's unconditional settings (Table 6).

Run:  python benchmarks/param_counts.py

Compared with the sizes the paper reports in Table 1 (CIFAR-10 175M, CelebA-HQ-256 190M).
The models are built on the ``meta`` device, so nothing is allocated and the script runs in
seconds on a CPU; parameter counts do not depend on the device.

Assumptions:

* CIFAR-10: pixel space, 32x32x3, ch 192, ch_mult [1,2,2,2], 3 blocks, attention at 16 and 8
  (Table 6 and the authors' config), dropout 0.1; heads (phi, eps) = (3, 3) for h_t = c.
* CelebA-HQ-256: the paper trains in the latent space of a KL-f4 autoencoder (3 latent
  channels), so the U-Net sees 64x64x3 latents; ch 96, ch_mult [1,2,3,4] (levels 64, 32,
  16, 8), 3 blocks (Table 6); attention at 16 and 8 is our assumption (the paper does not
  say).  The autoencoder's own parameters are NOT counted.

Findings (numbers this script prints): CIFAR-10 gives 178.45M against the
paper's 175M (+2%); attention at 16 only gives 171.9M, so the paper's net lies between our
two readings -- small block-level differences (e.g. a different attention or time-projection
layout in the authors' code base) account for a few M.  CelebA-HQ-256 with Table 6's ch 96
gives only 104.7M against 190M; the same net with ch 128 gives 186.0M (189.6M with attention
at every level), so the paper's 190M is consistent with a base width of 128 rather than 96,
or with counting extra modules (e.g. the autoencoder), which the paper does not specify.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

try:
    from ddm.nets import UNet, count_parameters
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ddm.nets import UNet, count_parameters

PAPER_M = {"cifar10": 175.0, "celebahq256": 190.0}

SETTINGS = {
    "cifar10": dict(in_channels=3, resolution=32, ch=192, ch_mult=(1, 2, 2, 2), num_blocks=3,
                    attn_resolutions=(16, 8), dropout=0.1),
    "celebahq256": dict(in_channels=3, resolution=64, ch=96, ch_mult=(1, 2, 3, 4),
                        num_blocks=3, attn_resolutions=(16, 8), dropout=0.1),
}

# What-if variants, to judge how far other plausible readings of Table 6 move the count.
VARIANTS = {
    "cifar10": [
        ("attention at 16 only", dict(attn_resolutions=(16,))),
        ("no attention (except middle)", dict(attn_resolutions=())),
        ("attention at every level", dict(attn_resolutions=(32, 16, 8, 4))),
        ("2 blocks per level", dict(num_blocks=2)),
        ("4 blocks per level", dict(num_blocks=4)),
    ],
    "celebahq256": [
        ("attention at every level", dict(attn_resolutions=(64, 32, 16, 8))),
        ("4 blocks per level", dict(num_blocks=4)),
        ("ch 128", dict(ch=128)),
        ("ch 128, attention at every level", dict(ch=128, attn_resolutions=(64, 32, 16, 8))),
        ("ch_mult [1,2,3,4,4]", dict(ch_mult=(1, 2, 3, 4, 4))),
        ("pixel space 256x256 (attn at 32)", dict(resolution=256, attn_resolutions=(32,))),
    ],
}


def count(**kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(UNet(**kwargs))


def breakdown(**kwargs) -> tuple[int, int]:
    """(shared trunk, one decoder) for a two-decoder net."""
    with torch.device("meta"):
        net = UNet(**kwargs)
    dec = sum(p.numel() for n, p in net.named_parameters() if n.startswith("decoders.0."))
    return count_parameters(net) - sum(p.numel() for p in net.decoders.parameters()), dec


def main() -> None:
    fmt = "{:<12} {:<56} {:>10} {:>8} {:>8}"
    print(fmt.format("setting", "model", "params", "M", "paper M"))
    for name, cfg in SETTINGS.items():
        two = count(out_channels=(3, 3), head="decoder", **cfg)
        one = count(out_channels=(3,), head="decoder", **cfg)
        conv = count(out_channels=(3, 3), head="conv", **cfg)
        shared, dec = breakdown(out_channels=(3, 3), **cfg)
        paper = PAPER_M[name]
        print(fmt.format(name, "U-Net+decoder, 2 decoders (paper's model)", two,
                         f"{two / 1e6:.2f}", f"{paper:.0f}"))
        print(fmt.format("", f"  = shared {shared / 1e6:.2f}M + 2 x decoder {dec / 1e6:.2f}M",
                         "", "", ""))
        print(fmt.format("", "  relative to paper", "", f"{100 * (two / 1e6 / paper - 1):+.1f}%",
                         ""))
        print(fmt.format("", "single decoder (plain U-Net)", one, f"{one / 1e6:.2f}", ""))
        print(fmt.format("", "U-Net+conv, 2 heads", conv, f"{conv / 1e6:.2f}", ""))
        for label, over in VARIANTS[name]:
            n = count(out_channels=(3, 3), head="decoder", **{**cfg, **over})
            print(fmt.format("", f"  what-if 2 decoders, {label}", n, f"{n / 1e6:.2f}", ""))
        print()


if __name__ == "__main__":
    main()
