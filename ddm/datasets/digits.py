"""``digits`` (embedded, no download): scikit-learn's ``load_digits()``, 1,797 8x8 grey digits,
values 0..16, mapped to uint8 as ``round(v * 255 / 16)``.

Split: ``train_test_split(indices, test_size=0.25, random_state=0, stratify=labels)``, each side
sorted by original index: 1,347 train / 450 test. Option ``resolution`` (default 8, the native
size): other sizes are a bilinear resize (antialiased, ``align_corners=False``) of the 0..255
values, rounded. :func:`load_digits_labels` gives the matching labels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddm.datasets.base import DATASETS, DatasetSpec, check_split, register_dataset
from ddm.imagefolder import check_resolution

__all__ = ["DIGITS_TEST_SIZE", "DIGITS_SPLIT_SEED", "load_digits_labels"]

DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8), float 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    idx = {"train": np.sort(train_idx), "test": np.sort(test_idx)}
    for a in (images, labels, *idx.values()):
        a.setflags(write=False)
    return images, labels, idx


def _load_digits(root: Path | None, split: str, *, resolution: int = 8) -> torch.Tensor:
    resolution = check_resolution(resolution)
    images, _, idx = _digits_arrays()
    x = torch.from_numpy(images[idx[split]].astype(np.float64) * (255.0 / 16.0))
    x = x.unsqueeze(1)  # (N, 1, 8, 8), 0..255 float
    if resolution != x.shape[-1]:
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
        )
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def load_digits_labels(split: str = "train") -> torch.Tensor:
    """Labels (int64, 0..9) of the ``digits`` split, in the order :func:`load_dataset` uses."""
    check_split(DATASETS["digits"], split)
    _, labels, idx = _digits_arrays()
    return torch.from_numpy(labels[idx[split]].copy())



SPEC = register_dataset(DatasetSpec(
    "digits", "scikit-learn handwritten digits, 8x8 grey, embedded (no download)", ("train", "test"),
    _load_digits, {"resolution": 8}, channels=1, label="Digits (8$\\times$8)"))
