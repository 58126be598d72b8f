"""Atomic file output: nothing is half-written (temp file beside the target, then os.replace).

Permissions: the temporary file (and folder, :func:`make_temp_dir`) is created with mode 0666
(0777) and the process umask applied by the kernel, as ``open()`` / ``mkdir`` would; so the
renamed output gets what the umask gives (0644 under umask 0022, 0640 under 0027), not the
0600/0700 of ``tempfile.mkstemp``/``mkdtemp``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, IO

import torch

__all__ = ["atomic_write", "make_temp_dir", "save_torch", "save_json", "save_text", "TMP_PREFIX"]

#: Prefix of the temporary files (a writer killed mid-write may leave one; never a target).
TMP_PREFIX = ".tmp-"


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_exclusive(parent: Path, prefix: str, create: Callable[[str], Any]) -> tuple[Any, Path]:
    """``create(path)`` on a fresh random name ``<parent>/<prefix><hex>``, retried on a clash."""
    for _ in range(100):
        tmp = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            return create(str(tmp)), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary name {prefix}* in {parent}: 100 names taken")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder ``<parent>/<prefix><random>`` with mode 0777 minus the umask (unlike
    ``tempfile.mkdtemp``'s 0700), for building a folder that is then renamed into place."""
    parent = Path(parent)
    return _create_exclusive(parent, prefix, lambda p: os.mkdir(p, 0o777))[1]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through ``write(fileobj)`` into a temporary file beside ``path``, fsync, rename
    over ``path`` and fsync the folder: readers see the old file or the whole new one. The file
    gets mode 0666 minus the umask (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd, tmp = _create_exclusive(path.parent, f"{TMP_PREFIX}{path.name}.", lambda p: os.open(p, flags, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))
