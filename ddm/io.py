"""Atomic file output: nothing is half-written (temp file beside the target, then os.replace);
the one file checksum of the package (:func:`file_checksum`); and the checked reading of an
input file (:func:`check_input_file`, :func:`load_torch`, :func:`load_json`, :func:`load_npz`): a
file that is missing, empty or unreadable is an :class:`InputError` (one line naming the file and
the command that writes it; ``ddm`` exits with code 2); the checked writing of an output
(:func:`check_output` before any work, :func:`writing` around the write): a folder that cannot
take it, a full disk, is an :class:`OutputError` naming the file (exit code 1). The weights file
of a pretrained network (an FID extractor's: ``ddm.metrics``, ``ddm.digits_classifier``; the
Swin-B condition encoder's) that is not on disk is a :class:`MissingWeightsError` (exit code 1),
never downloaded quietly.

Product checksums: every product (model, sample, data and task files, FID statistics, metric
JSON) carries a sha256 digest of its payload, added by the one writer of its kind
(:func:`save_torch`, :func:`save_json`, :func:`save_npz`) and verified by the one reader
(:func:`load_torch`, :func:`load_json`, :func:`load_npz`; :func:`verify_product` for any file).
The digest covers the payload's values, not the container's bytes (:mod:`ddm.digests`):

* torch file: a dict payload gets the key ``"sha256"``, a digest of the rest of the dict; any
  other payload (a tensor of images) is stored as ``{"payload": obj, "sha256": ...}`` (with
  ``"meta"`` beside it when given: a sample file's set and range, under the same digest) and read
  back as ``obj`` (:func:`ddm.digests.payload_digest`).
* .npz: the extra entry ``sha256``, the same walk over the other arrays (sorted by name).
* JSON: the top-level key ``"sha256"``, :func:`ddm.digests.json_digest` of the rest of the object
  as it reads back.

A file whose digest does not match, or that has none, changed after it was written (or an old
ddm wrote it): the reader's :class:`InputError` names it and the fix (delete it, ``snakemake
all`` rebuilds it). Only the digest field is added: every other value is written as before.

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
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, IO

from ddm.digests import json_digest, payload_digest

__all__ = ["atomic_write", "make_temp_dir", "save_torch", "save_json", "save_npz", "save_text", "file_checksum",
           "TMP_PREFIX", "CHUNK", "InputError", "MissingWeightsError", "check_input_file", "load_torch", "load_json",
           "load_npz", "verify_product", "DIGEST_KEY", "REBUILD", "utc_timestamp",
           "OutputError", "check_output", "writing"]

#: Prefix of the temporary files (a writer killed mid-write may leave one; never a target).
TMP_PREFIX = ".tmp-"
#: Block size of file reads and copies (1 MiB).
CHUNK = 1 << 20
#: The key (torch dict, JSON object) or entry (.npz) of a product's payload digest.
DIGEST_KEY = "sha256"
#: Where a non-dict torch payload (a tensor of images) is stored beside the digest, and its meta.
_PAYLOAD_KEY, _META_KEY = "payload", "meta"
#: The fix for a product whose digest does not verify.
REBUILD = "delete it and rerun: `snakemake all` rebuilds it"


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


def save_torch(obj: Any, path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """``torch.save`` of ``obj`` with its payload digest (module docstring) to ``path``
    atomically: a dict gets the key ``"sha256"``, anything else is stored as ``{"payload": obj,
    "sha256": ...}``; :func:`load_torch` verifies the digest and returns ``obj``. ``meta`` (a
    non-dict payload only: e.g. a sample shard's set and range, ``ddm.shards``) is stored beside it
    as ``"meta"``, under the same digest (of ``{"payload": obj, "meta": meta}``), and read back with
    ``load_torch(..., with_meta=True)``. torch is imported here: the rest of ddm.io, e.g. for
    workflow/make_dvc_yaml.py, does not need it."""
    import torch

    if isinstance(obj, dict):
        if DIGEST_KEY in obj or set(obj) in ({_PAYLOAD_KEY}, {_PAYLOAD_KEY, _META_KEY}) or meta is not None:
            raise ValueError(f"save_torch: a dict payload cannot hold the key {DIGEST_KEY!r}, only {_PAYLOAD_KEY!r} "
                             f"(and {_META_KEY!r}), or take meta= (reserved for the checksum and the wrapper)")
        blob = {**obj, DIGEST_KEY: payload_digest(obj)}
    else:
        wrapped = {_PAYLOAD_KEY: obj} if meta is None else {_PAYLOAD_KEY: obj, _META_KEY: meta}
        blob = {**wrapped, DIGEST_KEY: payload_digest(obj if meta is None else wrapped)}
    return atomic_write(path, lambda f: torch.save(blob, f))


def save_json(obj: dict, path: str | os.PathLike) -> Path:
    """``obj`` (a dict) as indented JSON with sorted keys (byte-stable) to ``path`` atomically,
    with the top-level key ``"sha256"``: :func:`json_digest` of ``obj`` as it reads back."""
    if not isinstance(obj, dict) or DIGEST_KEY in obj:
        raise ValueError(f"save_json: the payload must be a dict without the key {DIGEST_KEY!r}")
    digest = json_digest(json.loads(json.dumps(obj)))  # as a reader sees it (e.g. int keys -> str)
    text = json.dumps({**obj, DIGEST_KEY: digest}, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez`` of ``arrays`` (name -> array) to ``path`` atomically, with the extra entry
    ``sha256``: :func:`payload_digest` of the arrays (by name, dtype, shape and bytes)."""
    import numpy as np

    if DIGEST_KEY in arrays:
        raise ValueError(f"save_npz: the entry name {DIGEST_KEY!r} is reserved for the checksum")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    digest = np.asarray(payload_digest(arrays))
    return atomic_write(path, lambda f: np.savez(f, **arrays, **{DIGEST_KEY: digest}))


def save_text(text: str, path: str | os.PathLike) -> Path:
    """``text`` as UTF-8 to ``path`` atomically (no newline translation)."""
    return atomic_write(path, lambda f: f.write(text.encode()))


# -- outputs ------------------------------------------------------------------------------------------
class OutputError(RuntimeError):
    """An output that cannot be written: read-only folder, disk full (``ddm``: exit code 1)."""


def check_output(path: str | os.PathLike, what: str = "--out") -> Path:
    """Before any work: ``path`` can be written (a file, in a folder that is writable). ``what``
    names it in the refusal (``ddm``: its option)."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise InputError(f"{what} {path} exists and is not a regular file (a folder or a device): name a file")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {path}: {parent} is not a folder")
    if parent != p.parent:  # the folders will be made: the nearest existing one must be writable
        if os.access(parent, os.W_OK | os.X_OK):
            return p
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    try:  # a real probe: a read-only mount is writable by os.access's account for root
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror} (folder {parent})") from None
    return p


def _os_error(e: BaseException | None) -> OSError | None:
    """The OS error (with an errno) behind ``e``: torch.save reports a full disk as a
    RuntimeError raised while its zip writer closes, with the OSError as its context."""
    seen = set()
    while e is not None and id(e) not in seen and not (isinstance(e, OSError) and e.errno is not None):
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return e if isinstance(e, OSError) and e.errno is not None else None


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """OS errors while writing ``path`` (read-only folder, disk full) become one
    :class:`OutputError` naming it; a library's own OSError without an errno (e.g. a missing
    weights file) passes through."""
    try:
        yield
    except Exception as e:
        err = _os_error(e)
        if err is None:
            raise
        raise OutputError(f"cannot write {path}: {err.strerror}") from e


# -- input files ------------------------------------------------------------------------------------
class InputError(ValueError):
    """An option value or input file a step cannot use (``ddm``: exit code 2)."""


class MissingWeightsError(FileNotFoundError):
    """The weights of a feature extractor are not on disk (and will not be downloaded quietly)."""


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


def _checksum_error(path, what: str, stored: Any, actual: str) -> InputError | None:
    """None if ``stored`` is the digest ``actual``; else the one-line refusal naming the file."""
    if stored is None:
        return InputError(f"{what} {path} carries no sha256 checksum: it changed after it was written (corrupt "
                          f"or edited) or an older ddm wrote it; {REBUILD}")
    if stored != actual:
        return InputError(f"{what} {path} changed after it was written (corrupt or edited): its sha256 "
                          f"checksum does not match its contents; {REBUILD}")
    return None


def load_torch(path: str | os.PathLike, what: str, maker: str, *, mmap: bool = False, with_meta: bool = False) -> Any:
    """The payload of a torch file of :func:`save_torch`, loaded safely (tensors and plain
    containers only, ``weights_only=True``) onto the CPU, its digest verified; InputError naming
    ``what`` and the command ``maker`` that writes it for a file that cannot be read, and naming
    the fix for one whose digest does not verify. A dict payload comes back without its
    ``"sha256"`` key. ``mmap``: tensors read from the file as they are used (a data set larger
    than memory, streamed by ``ddm refstats``; the digest reads it once, through the page cache).
    ``with_meta``: the pair (payload, meta of :func:`save_torch`, or None)."""
    import torch

    p = check_input_file(path, what)
    try:
        with warnings.catch_warnings():  # e.g. a raw pickle's protocol warning: the refusal says it all
            warnings.simplefilter("ignore")
            blob = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # any failure to read means the file is unusable; torch's text is not shown
        raise InputError(f"{what} {path} cannot be read ({type(e).__name__}: truncated, corrupt or not a "
                         f"file of `{maker}`): write it again with `{maker}`") from None
    if not isinstance(blob, dict):
        raise _checksum_error(path, what, None, "")
    rest = {k: v for k, v in blob.items() if k != DIGEST_KEY}
    payload = rest[_PAYLOAD_KEY] if set(rest) == {_PAYLOAD_KEY} else rest
    err = _checksum_error(path, what, blob.get(DIGEST_KEY), payload_digest(payload))
    if err:
        raise err
    meta = rest[_META_KEY] if set(rest) == {_PAYLOAD_KEY, _META_KEY} else None
    payload = rest[_PAYLOAD_KEY] if meta is not None else payload
    return (payload, meta) if with_meta else payload


def load_json(path: str | os.PathLike, what: str, maker: str) -> dict:
    """The object of a JSON file of :func:`save_json`, its digest verified (without the key
    ``"sha256"``); InputError naming ``what`` and ``maker`` for a file that is not a JSON object,
    and naming the fix for one whose digest does not verify. Imports neither torch nor numpy."""
    p = check_input_file(path, what)
    try:
        obj = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file: write it again with `{maker}`") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}): "
                         f"write it again with `{maker}`") from None
    if not isinstance(obj, dict):
        got = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(obj), "a number")
        raise InputError(f"{what} {path} is not a file of `{maker}`: (top level): expected an object, got {got}")
    rest = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    err = _checksum_error(path, what, obj.get(DIGEST_KEY), json_digest(rest))
    if err:
        raise err
    return rest


def load_npz(path: str | os.PathLike, what: str, maker: str) -> dict:
    """The arrays (name -> array) of an .npz file of :func:`save_npz`, its digest verified
    (without the ``sha256`` entry); InputError naming ``what`` and ``maker`` for a file that cannot
    be read, and naming the fix for one whose digest does not verify. No pickles."""
    import numpy as np

    p = check_input_file(path, what)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # any failure to read means the file is unusable
        raise InputError(f"{what} {path} cannot be read ({type(e).__name__}: truncated, corrupt or not a "
                         f"file of `{maker}`): write it again with `{maker}`") from None
    stored = arrays.pop(DIGEST_KEY, None)
    err = _checksum_error(path, what, None if stored is None else str(stored), payload_digest(arrays))
    if err:
        raise err
    return arrays


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


#: The readers of :func:`verify_product`, by file suffix; any other kind carries no digest.
_VERIFIERS = {".json": load_json, ".npz": load_npz, ".pt": load_torch}


def verify_product(path: str | os.PathLike) -> str | None:
    """None if the product ``path`` verifies (its digest matches its payload) or is a kind that
    carries no digest (png, pdf, tex, csv, ...); else the one-line refusal that its reader would
    give (the file's name and the fix). A folder (a DVC output such as results/models) is each
    product in it, recursively in name order, skipping temporary files: the first refusal or None.
    For the pipeline's last check before ``dvc commit`` records a product. A .json file is read
    without importing torch or numpy; a .pt file imports torch."""
    p = Path(path)
    if p.is_dir():
        files = (f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(TMP_PREFIX))
        return next((msg for f in files if (msg := verify_product(f))), None)
    verify = _VERIFIERS.get(p.suffix)
    if verify is None:
        return None
    try:
        verify(p, "product", "snakemake all")
    except InputError as e:
        return str(e)
    return None


def utc_timestamp(seconds: float | None = None) -> str:
    """UTC time as ``2026-11-30T06:25:13Z`` (now, or ``seconds`` since the epoch): the
    ``computed_at`` field of a metric file (``ddm evaluate``)."""
    from datetime import datetime, timezone

    when = datetime.now(timezone.utc) if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
