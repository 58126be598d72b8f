"""``duts``: DUTS saliency (saliencydetection.net; no published checksum). ``train`` = DUTS-TR,
``test`` = DUTS-TE. Returns ``(images (N,3,R,R), masks (N,1,R,R))`` paired by file stem, default
R = 256; every image must have a mask.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ddm.datasets.base import DATASETS, DatasetSpec, Resource, require_dir, register_dataset
from ddm.datasets.install import maybe_download
from ddm.imagefolder import check_limit, check_on_error, check_resolution, decode_errors, list_images, read_image

__all__ = ["DUTS_BASE"]

DUTS_BASE = "http://saliencydetection.net/duts/download/"


def _find_dir(base: Path, suffix: str) -> Path | None:
    hits = sorted(
        p for p in base.rglob(f"*{suffix}") if p.is_dir() and not p.name.startswith(".")
    )
    return hits[0] if hits else None


def _load_duts(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    resolution, limit, on_error = check_resolution(resolution), check_limit(limit), check_on_error(on_error)
    base = DATASETS["duts"].dir(root) / split
    maybe_download("duts", root, download, lambda: require_dir(base, "duts", root))
    require_dir(base, "duts", root)
    img_dir, mask_dir = _find_dir(base, "-Image"), _find_dir(base, "-Mask")
    if img_dir is None or mask_dir is None:
        raise FileNotFoundError(
            f"{base} must contain a '*-Image' and a '*-Mask' folder (as DUTS-TR.zip / "
            f"DUTS-TE.zip do); found image folder {img_dir}, mask folder {mask_dir}"
        )
    images = list_images(img_dir)
    masks = {p.stem: p for p in list_images(mask_dir)}
    unpaired = [p.name for p in images if p.stem not in masks]
    if unpaired:
        raise ValueError(
            f"{len(unpaired)} DUTS image(s) in {img_dir} have no mask in {mask_dir} (by file "
            f"stem), e.g. {', '.join(unpaired[:5])}; restore the masks or remove those images"
        )
    errors = decode_errors()
    xs, ms, bad = [], [], []
    for p in images:
        if limit is not None and len(xs) >= limit:
            break
        try:
            x = read_image(p, resolution, mode="RGB", resample=Image.BICUBIC, resize=True)
            m = read_image(masks[p.stem], resolution, mode="L", resample=Image.BILINEAR, resize=True)
        except errors as e:
            if on_error == "raise":
                raise ValueError(f"cannot decode DUTS pair {p.stem!r}: {e}") from e
            bad.append(p.stem)
            continue
        if x.shape[1:] != m.shape[1:]:
            raise ValueError(f"DUTS image and mask {p.stem!r} differ in shape after resizing")
        xs.append(x)
        ms.append(m)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable DUTS pair(s) under {base}: {bad[:5]}", UserWarning, stacklevel=3)
    if not xs:
        raise FileNotFoundError(f"no readable DUTS image/mask pair under {base}")
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms))


SPEC = register_dataset(DatasetSpec(
    "duts", "DUTS saliency detection: (images, masks); train = DUTS-TR, test = DUTS-TE", ("train", "test"),
    _load_duts, {"resolution": 256, "limit": None, "on_error": "skip", "download": False},
    (Resource("DUTS-TR.zip", DUTS_BASE + "DUTS-TR.zip", None, "train", "DUTS-TR"),
     Resource("DUTS-TE.zip", DUTS_BASE + "DUTS-TE.zip", None, "test", "DUTS-TE"))))
