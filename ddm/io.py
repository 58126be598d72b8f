"""Atomic file output: nothing is half-written (temp file beside the target, then os.replace);
the one file checksum of the package (:func:`file_checksum`); and the checked reading of an
input file (:func:`check_input_file`, :func:`load_torch`): a file that is missing, empty or
unreadable is an :class:`InputError` (one line naming the file and the command that writes it;
``ddm`` exits with code 2).

Permissions: the temporary file (and folder, :func:`make_temp_dir`) is created with mode 0666
(0777) and the process umask applied by the kernel, as ``open()`` / ``mkdir`` would; so the
renamed output gets what the umask gives (0644 under umask 0022, 0640 under 0027), not the
0600/0700 of ``tempfile.mkstemp``/``mkdtemp``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "make_temp_dir", "save_torch", "save_json", "save_text", "file_checksum", "TMP_PREFIX",
           "CHUNK", "InputError", "check_input_file", "load_torch", "utc_timestamp"]

#: Prefix of the temporary files (a writer killed mid-write may leave one; never a target).
TMP_PREFIX = ".tmp-"
#: Block size of file reads and copies (1 MiB).
CHUNK = 1 << 20


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
    """``torch.save(obj)`` to ``path`` atomically (torch is imported here: the rest of ddm.io,
    e.g. for workflow/make_dvc_yaml.py, does not need it)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON with sorted keys (byte-stable) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` as UTF-8 to ``path`` atomically (no newline translation)."""
    return atomic_write(path, lambda f: f.write(text.encode()))


# -- input files ------------------------------------------------------------------------------------
class InputError(ValueError):
    """An option value or input file a step cannot use (``ddm``: exit code 2)."""


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a non-empty file; else an InputError naming ``what``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {path} does not exist")
    if not p.is_file():
        raise InputError(f"{what} {path} is not a file")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty: write it again")
    return p


def load_torch(path: str | os.PathLike, what: str, maker: str, *, mmap: bool = False) -> Any:
    """The object in a torch file, loaded safely (tensors and plain containers only,
    ``weights_only=True``) onto the CPU; InputError naming ``what`` and the command ``maker`` that
    writes it for any file that cannot be read. ``mmap``: tensors read from the file as they are
    used (a data set larger than memory, streamed by ``ddm refstats``)."""
    import torch

    p = check_input_file(path, what)
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # any failure to read means the file is unusable; torch's text is not shown
        raise InputError(f"{what} {path} cannot be read ({type(e).__name__}: truncated, corrupt or not a "
                         f"file of `{maker}`): write it again with `{maker}`") from None


# -- checksums --------------------------------------------------------------------------------------
def _digest(path: str, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _digest_memo(path: str, algo: str, size: int, mtime_ns: int, inode: int) -> str:
    return _digest(path, algo)


def file_checksum(path: str | os.PathLike, algo: str = "sha256", *, memo: bool = False) -> str:
    """Hex digest of a file with ``hashlib.new(algo)`` (sha256 by default), read in 1 MiB blocks.

    The one file checksum of the package: the verification of downloads (``ddm.download``) and
    the weights' sha256 of the FID extractors (``ddm.metrics``, ``ddm extractor``).
    ``memo=True`` memoises on the real path, algorithm, size, modification time and inode (hashing
    the same large weights file again is free); a file rewritten within one clock tick with the
    same size could then give a stale digest, so checks of fresh downloads leave it off."""
    try:
        hashlib.new(algo)
    except (ValueError, TypeError):
        raise ValueError(f"file_checksum: unknown hash algorithm {algo!r}; use one of hashlib's, e.g. "
                         f"'sha256' or 'md5'") from None
    p = os.path.realpath(os.fspath(path))
    if not memo:
        return _digest(p, algo)
    st = os.stat(p)
    return _digest_memo(p, algo, st.st_size, st.st_mtime_ns, st.st_ino)


def utc_timestamp(seconds: float | None = None) -> str:
    """UTC time as ``2026-11-30T06:25:13Z`` (now, or ``seconds`` since the epoch): the
    ``computed_at`` field of a metric file (``ddm evaluate``)."""
    from datetime import datetime, timezone

    when = datetime.now(timezone.utc) if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
