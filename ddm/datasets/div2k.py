"""``div2k``: DIV2K HR images (ETH URLs; no published checksum, so the computed one is recorded).
``train`` = DIV2K_train_HR (800), ``test`` = DIV2K_valid_HR (100; the official test HR set is not
public). Default: a 256x256 centre crop at native scale (``resize=False``), which keeps the
high-resolution detail super-resolution needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddm.datasets.base import DATASETS, DatasetSpec, Resource, require_dir, register_dataset
from ddm.datasets.install import maybe_download
from ddm.imagefolder import load_folder

__all__ = ["DIV2K_BASE"]

DIV2K_BASE = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"


def _load_div2k(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
    resize: bool = False,
    download: bool = False,
) -> torch.Tensor:
    folder = DATASETS["div2k"].dir(root) / split
    maybe_download("div2k", root, download, lambda: require_dir(folder, "div2k", root))
    require_dir(folder, "div2k", root)
    return load_folder(folder, resolution=resolution, limit=limit, on_error=on_error, resize=resize)



SPEC = register_dataset(DatasetSpec(
    "div2k", "DIV2K high-resolution images (train: 800, test = official validation: 100)",
    ("train", "test"), _load_div2k,
    {"resolution": 256, "limit": None, "on_error": "skip", "resize": False, "download": False},
    (Resource("DIV2K_train_HR.zip", DIV2K_BASE + "DIV2K_train_HR.zip", None, "train", "DIV2K_train_HR"),
     Resource("DIV2K_valid_HR.zip", DIV2K_BASE + "DIV2K_valid_HR.zip", None, "test", "DIV2K_valid_HR"))))
