"""The hole masks of the inpainting task (:func:`ddm.tasks.inpainting_task`; CelebA-HQ in
Table 2 of the paper, with the masks of Suvorov et al., 2022): :func:`lama_mask`, our own
implementation of the distribution of LaMa's training masks for CelebA-HQ 256
(:data:`LAMA_CELEBA`: a 50/50 mix of irregular thick strokes, :func:`draw_stroke`, and boxes,
lengths scaled by size/256), and :func:`inpainting_masks`, a task's masks, each depending only on
(seed, index, size) (:func:`example_rng`): every method sees the same masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["LAMA_CELEBA", "example_rng", "draw_stroke", "lama_mask", "inpainting_masks"]

#: LaMa's mask parameters for CelebA-HQ at 256x256 (its abl-04-256-mh-dist-celeba config):
#: irregular strokes and boxes, equally likely.
LAMA_CELEBA = {
    "irregular": {"max_angle": 4, "max_len": 200, "max_width": 100, "min_times": 1, "max_times": 5},
    "box": {"margin": 10, "bbox_min_size": 30, "bbox_max_size": 150, "min_times": 1,
            "max_times": 4},
    "base_size": 256,
}


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of example ``index`` of a task (its crop, its layout, its mask): an example
    does not depend on how many are drawn."""
    return np.random.default_rng([int(seed), int(index)])


def draw_stroke(mask: np.ndarray, start: tuple[float, float], end: tuple[float, float],
                width: float) -> None:
    """Set the pixels of ``mask`` (H, W) whose centres -- pixel (row, col) at (x, y) = (col,
    row) -- lie within ``width / 2`` of the segment start-end, given as (x, y): a thick line with
    round caps. The half-width is at least 0.5 so that a stroke is never empty."""
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    s = np.zeros_like(x)
    if length2 > 0:  # position of the nearest point along the segment, clipped to its ends
        s = np.clip(((x - x0) * dx + (y - y0) * dy) / length2, 0, 1)
    dist = np.hypot(x - (x0 + s * dx), y - (y0 + s * dy))
    mask[dist <= max(width / 2, 0.5)] = True


def _irregular(rng: np.random.Generator, size: int, p: dict, scale: float) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for i in range(int(rng.integers(p["min_times"], p["max_times"] + 1))):
        x, y = rng.uniform(0, size, size=2)
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(p["max_angle"]))
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = scale * (10 + rng.uniform(0, p["max_len"]))
            width = scale * (5 + rng.uniform(0, p["max_width"]))
            x1 = float(np.clip(x + length * math.sin(angle), 0, size))
            y1 = float(np.clip(y + length * math.cos(angle), 0, size))
            draw_stroke(mask, (x, y), (x1, y1), width)
            x, y = x1, y1
    return mask


def _boxes(rng: np.random.Generator, size: int, p: dict, scale: float) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    margin = scale * p["margin"]
    lo = scale * p["bbox_min_size"]
    hi = max(min(scale * p["bbox_max_size"], size - 2 * margin), lo)
    for _ in range(int(rng.integers(p["min_times"], p["max_times"] + 1))):
        bw, bh = rng.uniform(lo, hi, size=2)
        x0 = rng.uniform(margin, max(size - margin - bw, margin))
        y0 = rng.uniform(margin, max(size - margin - bh, margin))
        r0, c0 = int(round(y0)), int(round(x0))
        mask[r0:max(int(round(y0 + bh)), r0 + 1), c0:max(int(round(x0 + bw)), c0 + 1)] = True
    return mask


def lama_mask(rng: np.random.Generator, size: int, params: dict = LAMA_CELEBA) -> np.ndarray:
    """One (size, size) boolean hole mask (True = missing) drawn like LaMa's training masks
    (Suvorov et al., 2022, "mixed" generator with CelebA-HQ's parameters, ``LAMA_CELEBA``):
    with probability 1/2, 1-5 irregular strokes of 1-5 segments each (angle 0.01 + k rad,
    k in 0..3, mirrored on even strokes; length 10 + U(0, 200), width 5 + U(0, 100)); else 1-4
    boxes of side U(30, 150) kept 10 from the border. Lengths are in pixels of a 256 image and
    scaled by size/256; LaMa draws integers, we draw the same ranges continuously."""
    scale = size / params["base_size"]
    if rng.random() < 0.5:
        return _irregular(rng, size, params["irregular"], scale)
    return _boxes(rng, size, params["box"], scale)


def inpainting_masks(n: int, size: int, seed: int = 0) -> Tensor:
    """``n`` hole masks (n, 1, size, size), uint8 0/1; mask i depends only on (seed, i, size)."""
    return torch.from_numpy(
        np.stack([lama_mask(example_rng(seed, i), size) for i in range(int(n))])[:, None].astype(np.uint8)
    )
