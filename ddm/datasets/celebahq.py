"""``celebahq256``: CelebA-HQ at 256x256. No stable public URL: :func:`~ddm.datasets.download_dataset`
needs ``source=`` (a folder of images or an archive of them). Loaded as an image folder at 256x256
(option ``resolution``). Split ``train`` = every image (the paper's unconditional-generation set).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddm.datasets.base import DATASETS, DatasetSpec, Resource, require_dir, register_dataset
from ddm.imagefolder import load_folder

__all__: list[str] = []


def _load_celebahq(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
) -> torch.Tensor:
    folder = require_dir(DATASETS["celebahq256"].dir(root), "celebahq256", root)
    return load_folder(folder, resolution=resolution, limit=limit, on_error=on_error)



SPEC = register_dataset(DatasetSpec(
    "celebahq256", "CelebA-HQ at 256x256; no stable public URL: supply it with download_dataset(source=...)",
    ("train",), _load_celebahq, {"resolution": 256, "limit": None, "on_error": "skip"},
    (Resource(None, None, None, "", None),), needs_source=True, channels=3, label="CelebA-HQ-256"))
