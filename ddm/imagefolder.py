"""Folders of images (PNG/JPEG), the readers behind the ``imagefolder`` dataset and the
folder-based sources of ``ddm.datasets`` (CelebA-HQ, DIV2K, DUTS): the files of a folder in a stable
order, each real file once (:func:`image_folder_manifest`, summarised by :func:`image_folder_digest`:
the pipeline's prepare job reruns when it changes), and the decoding of each image to uint8
(N, C, R, R) with a clear error or warning for a file that cannot be read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "image_folder_manifest", "image_folder_digest"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder``, in sorted relative-path order, each real file once.

    Symlinks are followed, but each real folder and each real file (by device and inode) is
    taken once: a loop (``ln -s . loop``), a second link to a folder or a file, or a hard link
    adds nothing. Real paths win: the tree is first walked without following folder symlinks
    (regular files before file symlinks), then each folder symlink (sorted by path) is walked,
    following further links, into folders not yet entered. So a file inside the tree is listed
    under its symlink-free path, and symlinks only add what lies outside it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    seen_dirs: set[tuple[int, int]] = set()
    real, linked, dir_links = _walk_images(folder, False, seen_dirs)
    for link in sorted(dir_links):
        more, more_linked, _ = _walk_images(link, True, seen_dirs)
        linked += more + more_linked
    found, seen_files = [], set()
    for path in real + linked:
        try:
            st = path.stat()
            key = (st.st_dev, st.st_ino)
        except OSError:  # a dangling link: kept, so the loader reports it as unreadable
            key = (-1, len(found))
        if key not in seen_files:
            seen_files.add(key)
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _walk_images(top: Path, follow: bool, seen_dirs: set) -> tuple[list[Path], list[Path], list[Path]]:
    """Walk ``top`` (hidden entries skipped), entering no real folder in ``seen_dirs`` (updated):
    (image files that are not symlinks, image file symlinks, folder symlinks left unfollowed)."""
    files, file_links, dir_links = [], [], []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=follow):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not follow:
            dir_links += [Path(dirpath) / d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                path = Path(dirpath) / fn
                (file_links if path.is_symlink() else files).append(path)
    return files, file_links, dir_links


def image_folder_manifest(folder: Path | str) -> list[tuple[str, int, int]]:
    """``(relative path, size in bytes, mtime in ns)`` of every image file the ``imagefolder``
    loader reads under ``folder`` (the files of :func:`list_images`, in its order). An added,
    removed, renamed, resized or touched image changes it; the pipeline uses its digest
    (:func:`image_folder_digest`) as a parameter of the prepare job."""
    folder = Path(folder).expanduser()
    out = []
    for p in list_images(folder):
        try:
            st = p.stat()
            out.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
        except OSError:  # a dangling link
            out.append((p.relative_to(folder).as_posix(), -1, -1))
    return out


def image_folder_digest(folder: Path | str) -> str:
    """A short text that changes whenever :func:`image_folder_manifest` does:
    ``"<n> files, sha256 <hex>"`` of the manifest as JSON."""
    manifest = image_folder_manifest(folder)
    digest = hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    return f"{len(manifest)} files, sha256 {digest}"


#: Pillow modes of grey images with more than 8 bits (16-bit PNGs open as "I;16", or "I").
_WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _to_8bit(im):
    """A 16-bit grey image -> 8-bit "L" by value: ``v >> 8`` (the high byte; 32768 -> 128,
    65535 -> 255, ``v8 * 257`` -> ``v8``), which is what Pillow itself does when it opens a 16-bit
    RGB, RGBA or grey+alpha PNG; a plain ``convert("L")`` would clip every value above 255 to 255.
    Other images are returned as they are."""
    from PIL import Image

    if im.mode not in _WIDE_GREY_MODES:
        return im
    a = np.asarray(im).astype(np.int64)
    return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8))  # 2-D uint8: "L"


def read_image(path: Path, resolution: int, *, mode: str, resample: int, resize: bool) -> np.ndarray:
    """Decode one image -> (C, R, R) uint8. Raises on undecodable files."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = _to_8bit(ImageOps.exif_transpose(im))
        if im.mode != mode:
            if mode == "RGB" and im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA").convert("RGB")  # drop alpha
            else:
                im = im.convert(mode)
        w, h = im.size
        short = min(w, h)
        if resize or short < resolution:
            s = resolution / short
            nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), resample=resample)
            w, h = nw, nh
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return a.transpose(2, 0, 1)


def decode_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this file is not a readable image" (PIL imported here, when needed)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_folder(
    folder: Path,
    *,
    resolution: int,
    limit: int | None,
    on_error: str,
    resize: bool = True,
) -> torch.Tensor:
    """The images under ``folder`` (:func:`list_images`, at most ``limit``) as uint8 RGB (N, 3,
    resolution, resolution): the short side scaled to ``resolution`` (bicubic; without ``resize``
    only when it is smaller), then centre-cropped; unreadable files skipped with one warning
    (``on_error="skip"``) or refused (``"raise"``)."""
    from PIL import Image

    resolution, limit, on_error = check_resolution(resolution), check_limit(limit), check_on_error(on_error)
    paths = list_images(folder)
    errors = decode_errors()
    out: list[np.ndarray] = []
    bad: list[str] = []
    outside: list[str] = []
    inside = Path(folder).resolve()
    for p in paths:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(read_image(p, resolution, mode="RGB", resample=Image.BICUBIC, resize=resize))
        except errors as e:
            if on_error == "raise":
                raise ValueError(
                    f"cannot decode image {p}: {e}. Remove or replace the file, or pass "
                    f"on_error='skip' to skip unreadable files"
                ) from e
            bad.append(f"{p} ({type(e).__name__}: {e})")
            continue
        if not p.resolve().is_relative_to(inside):
            outside.append(f"{p} -> {p.resolve()}")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        warnings.warn(f"skipped {len(bad)} unreadable image file(s) under {folder}: {shown}", UserWarning, stacklevel=3)
    if outside:
        shown = "; ".join(outside[:5]) + (f"; ... ({len(outside) - 5} more)" if len(outside) > 5 else "")
        warnings.warn(f"included {len(outside)} image file(s) under {folder} that are links to files outside it: "
                      f"{shown} (copy them into the folder, or remove the links, if they do not belong to the data "
                      "set)", UserWarning, stacklevel=3)
    if not out:
        raise FileNotFoundError(
            f"no readable PNG/JPEG image under {folder} ({len(paths)} candidate file(s), "
            f"{len(bad)} unreadable); point root at a folder of images"
        )
    return torch.from_numpy(np.stack(out))


# --------------------------------------------------------------------------- option checks (every reader)
def check_resolution(resolution: Any) -> int:
    """``resolution`` checked to be a positive integer (pixels per side)."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(
            f"resolution must be a positive integer (pixels per side), got {resolution!r}"
        )
    return int(resolution)


def check_limit(limit: Any) -> int | None:
    """``limit`` checked to be a positive integer or None (all images)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None (all images), got {limit!r}")
    return int(limit)


def check_on_error(on_error: Any) -> str:
    """``on_error`` checked to be "skip" or "raise"."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return on_error
