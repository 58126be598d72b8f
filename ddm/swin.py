"""The Swin-B condition encoder of the image-conditioned DDM (§B.2 of the paper: "we use the
Swin-B as our condition encoder"), ``CondUNet(encoder="swin_b")`` of :mod:`ddm.conditioning`:

* :func:`load_swin_b`: torchvision's Swin-B with the ImageNet weights of a local file (default
  :func:`default_swin_b_weights`, where torchvision caches ``SWIN_B_URL``); a missing file is a
  :class:`ddm.io.MissingWeightsError` naming it and where to get it, never a quiet download;
* :class:`SwinConditionEncoder`: its four stages resized and projected to the U-Net's levels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddm.unet_layers import num_groups

__all__ = ["SWIN_B_URL", "SwinConditionEncoder", "default_swin_b_weights", "load_swin_b"]

#: torchvision's Swin-B ImageNet-1k weights (``Swin_B_Weights.IMAGENET1K_V1``).
SWIN_B_URL = "https://download.pytorch.org/models/swin_b-68c6b09e.pth"
_SWIN_STAGES = ((1, 128, 4), (3, 256, 8), (5, 512, 16), (7, 1024, 32))  # features index, ch, stride
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def default_swin_b_weights() -> Path:
    """Where torchvision would cache the Swin-B weights: ``$TORCH_HOME/hub/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(SWIN_B_URL).name


def _missing_swin_message(path: Path) -> str:
    return (
        f"Swin-B ImageNet weights not found: {path}. This machine cannot download them; on a "
        f"connected machine fetch {SWIN_B_URL} (torchvision Swin_B_Weights.IMAGENET1K_V1) and put "
        f"the file at {path}, or set encoder_weights to where it is; encoder: conv needs no weights"
    )


def load_swin_b(weights_path: str | os.PathLike | None = None) -> nn.Module:
    """torchvision's Swin-B (Liu et al., 2021; the paper's condition encoder, §B.2) with the
    ImageNet weights of a local file (default :func:`default_swin_b_weights`). A missing file
    raises :class:`ddm.io.MissingWeightsError` naming the file and where to get it."""
    from torchvision.models import swin_b

    from ddm.io import MissingWeightsError

    path = Path(weights_path) if weights_path is not None else default_swin_b_weights()
    if not path.is_file():
        raise MissingWeightsError(_missing_swin_message(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = swin_b(weights=None)
        model.load_state_dict(state)
    except Exception as err:  # a wrong or damaged file: say which, and what it should be
        detail = " ".join(str(err).split())[:200]
        raise ValueError(
            f"{path} is not torchvision's Swin-B state dict ({type(err).__name__}: {detail}); "
            f"fetch {SWIN_B_URL} again"
        ) from err
    return model


class SwinConditionEncoder(nn.Module):
    """Swin-B stages -> one feature map per U-Net level (§B.2 "we use the Swin-B as our
    condition encoder"). The condition (in [-1, 1]) is mapped to ImageNet's normalisation; a
    condition with other than 3 channels goes through a learned 1x1 convolution to 3 first.
    U-Net level i (stride 2**i) takes the Swin stage with the nearest stride (4, 8, 16, 32),
    bilinearly resized to the level's resolution, GroupNorm + 1x1 conv to the level's channels."""

    def __init__(self, cond_channels: int, level_channels: Sequence[int],
                 weights_path: str | os.PathLike | None = None):
        super().__init__()
        self.backbone = load_swin_b(weights_path).features
        self.adapter = nn.Conv2d(cond_channels, 3, 1) if cond_channels != 3 else nn.Identity()
        for name, value in (("mean", _IMAGENET_MEAN), ("std", _IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(value).view(1, 3, 1, 1), persistent=False)
        self.stage_of_level = [
            min(range(len(_SWIN_STAGES)), key=lambda k: abs(math.log2(_SWIN_STAGES[k][2]) - i))
            for i in range(len(level_channels))
        ]
        self.proj = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(num_groups(_SWIN_STAGES[k][1]), _SWIN_STAGES[k][1]),
                          nn.Conv2d(_SWIN_STAGES[k][1], c, 1))
            for k, c in zip(self.stage_of_level, level_channels)
        )
        self.level_channels = list(level_channels)

    def forward(self, c: Tensor) -> list[Tensor]:
        x = ((self.adapter(c) + 1) / 2 - self.mean) / self.std
        stages, wanted = {}, {_SWIN_STAGES[k][0] for k in self.stage_of_level}
        for idx, layer in enumerate(self.backbone):
            x = layer(x)
            if idx in wanted:
                stages[idx] = x.permute(0, 3, 1, 2)  # torchvision's Swin is channels-last
            if idx >= max(wanted):
                break
        size = c.shape[-1]
        out = []
        for i, (k, proj) in enumerate(zip(self.stage_of_level, self.proj)):
            res = size // 2**i
            f = F.interpolate(stages[_SWIN_STAGES[k][0]], size=(res, res), mode="bilinear",
                              align_corners=False)
            out.append(proj(f))
        return out
