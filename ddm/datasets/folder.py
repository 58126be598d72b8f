"""``imagefolder``: any folder (``root``) of PNG/JPEG images, read by :mod:`ddm.imagefolder`.

The folder is searched recursively for ``.png``/``.jpg``/``.jpeg`` (any case) in sorted
relative-path order; hidden files and other extensions are ignored. Folder symlinks are followed,
but each real folder is entered once and each real file loaded once (a loop such as
``ln -s . loop`` adds nothing); files reached through links that lead outside the folder are
loaded, and named in one ``UserWarning``. 16-bit images are scaled to 8 bits by value (the high
byte: 32768 -> 128), grey and colour alike. Each image is converted to RGB (EXIF orientation
applied, alpha dropped), its shorter side resized to ``resolution`` (default 64, bicubic) and
centre-cropped. Files with an image extension that cannot be decoded are skipped with a
``UserWarning`` naming them (``on_error="skip"``, the default) or raise ``ValueError``
(``on_error="raise"``); no readable image at all is an error.
:func:`~ddm.imagefolder.image_folder_manifest` lists the files it reads (path, size, mtime) and
:func:`~ddm.imagefolder.image_folder_digest` summarises them: the pipeline's prepare job reruns
when it changes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddm.datasets.base import DatasetSpec, register_dataset
from ddm.imagefolder import load_folder

__all__: list[str] = []


def _load_imagefolder(
    root: Path | None,
    split: str,
    *,
    resolution: int = 64,
    limit: int | None = None,
    on_error: str = "skip",
) -> torch.Tensor:
    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<a folder of PNG/JPEG images>")
    return load_folder(Path(root), resolution=resolution, limit=limit, on_error=on_error)



SPEC = register_dataset(DatasetSpec(
    "imagefolder", "any folder of PNG/JPEG images (root = the folder)", ("train",), _load_imagefolder,
    {"resolution": 64, "limit": None, "on_error": "skip"}, channels=3, folder_source=True))
