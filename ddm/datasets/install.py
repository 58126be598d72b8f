"""Downloading a dataset of :mod:`ddm.datasets` into its folder: :func:`download_dataset` (the
archives of a spec's :class:`~ddm.datasets.base.Resource` s, fetched and checked by
:mod:`ddm.download` and unpacked by :mod:`ddm.archives`, or a local ``source`` folder copied
atomically), and ``maybe_download``, the readers' ``download=True``.

Data location: ``root`` (or ``$DDM_DATA_ROOT``, default ``./data``) holds ``downloads/`` (the
archives, plus ``<archive>.sha256`` where no checksum is published) and one folder per
dataset (``cifar10/``, ``celebahq256/``, ``div2k/{train,test}/``, ``duts/{train,test}/``).
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from ddm.datasets.base import get_spec, default_root
from ddm.archives import MARKER, extract
from ddm.download import DownloadError, fetch
from ddm.io import make_temp_dir

__all__ = ["download_dataset", "prepare_dataset"]

log = logging.getLogger(__name__)

_DEFAULT = object()  # "use the registry's checksum"


def maybe_download(name: str, root: Path, download: bool, probe: Callable[[], Any]) -> None:
    """With ``download``, fetch dataset ``name`` into ``root`` when ``probe()`` finds it missing."""
    if not download:
        return
    try:
        probe()
    except FileNotFoundError:
        download_dataset(name, root)


# --------------------------------------------------------------------------- downloading
def _local_path(s: str) -> Path | None:
    """The local path a ``source`` names (plain path or file:// URL), else None."""
    parsed = urllib.parse.urlparse(s)
    if parsed.scheme.lower() == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme.lower() in ("http", "https"):
        return None
    return Path(s).expanduser()


def _copy_tree_atomic(src: Path, dest: Path) -> Path:
    """Copy folder ``src`` to ``dest`` through a temporary sibling, then rename."""
    if (dest / MARKER).is_file():
        log.info("%s already present", dest)
        return dest
    if dest.exists():
        raise DownloadError(
            f"{dest} exists but has no completion marker ({MARKER}); delete it and rerun"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest.parent, f".{dest.name}.copy-")  # 0777 minus the umask
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER))
        (tmp / MARKER).write_text(f'{{"copied_from": "{src}"}}\n')
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("copied %s -> %s (a folder is not checksummed; the loader checks its contents)", src, dest)
    return dest


def _check_download_args(name: str, spec, root: Path, source: str | None, checksum: Any) -> Path | None:
    """The arguments of :func:`download_dataset` that cannot work, refused before any transfer;
    returns ``source`` as a local path when it is one."""
    single = len(spec.resources) == 1
    if checksum is not _DEFAULT and checksum is not None and not single:
        raise ValueError(
            f"dataset {name!r} has {len(spec.resources)} archives; a single checksum cannot "
            f"apply to all of them (pass checksum=None to record instead of verify)"
        )
    if spec.needs_source and source is None:
        raise DownloadError(
            f"dataset {name!r} has no stable public download URL: obtain it yourself and pass "
            f"source=<a folder of images or an archive (.zip/.tar/.tar.gz) of them>, e.g. "
            f"download_dataset({name!r}, {str(root)!r}, source='/path/to/celeba_hq_256')"
        )
    local = _local_path(source) if source is not None else None
    if source is not None and not single and not source.endswith("/") and not (local and local.is_dir()):
        raise ValueError(
            f"dataset {name!r} has {len(spec.resources)} archives "
            f"({', '.join(r.filename for r in spec.resources if r.filename)}): source must be a "
            f"folder or a URL prefix ending in '/' that holds them, got {source!r}"
        )
    return local


def _archive_source(name: str, res, source: str | None, local: Path | None, single: bool,
                    dest_dir: Path) -> str | None:
    """Where :func:`download_dataset` fetches resource ``res``'s archive from (see its ``source``):
    the registry's URL, a mirror's, ``source`` itself, or the archive in the local folder
    ``local``; None when that folder's extracted content (or, for a single-archive dataset, the
    folder itself) was copied into ``dest_dir`` instead."""
    if local is not None and local.is_dir():
        by_name = local / res.filename if res.filename else None
        extracted = local / res.content if res.content else None
        if by_name is not None and by_name.is_file():
            return str(by_name)
        if extracted is not None and extracted.is_dir():
            _copy_tree_atomic(extracted, dest_dir / res.content)
            (dest_dir / MARKER).touch()
            return None
        if single:
            _copy_tree_atomic(local, dest_dir)
            return None
        raise DownloadError(
            f"source folder {local} holds neither {res.filename} nor an extracted "
            f"{res.content}/ folder for dataset {name!r}"
        )
    if source is None:
        return res.url
    if source.endswith("/"):
        return source + res.filename
    return source


def download_dataset(
    name: str,
    root: Path | str | None = None,
    source: str | None = None,
    *,
    checksum: Any = _DEFAULT,
    retries: int = 3,
    timeout: float = 60,
) -> Path | None:
    """Download (or copy) dataset ``name`` into ``root`` and extract it; return its folder.

    Archives go to ``<root>/downloads/``, contents to ``<root>/<name>/[<split>/]``.

    ``source`` overrides where the data comes from:

    * a URL (``http(s)://``, ``file://``) or path of an archive: for single-archive datasets
      (``cifar10``, ``celebahq256``);
    * a URL ending in ``/``: a mirror holding the official file names;
    * a local folder: for each archive, ``<folder>/<official name>`` is used if present, else an
      already extracted ``<folder>/<top-level folder>`` (e.g. ``cifar-10-batches-py``,
      ``DUTS-TR``) is copied; for single-archive datasets the folder itself is copied as the
      extracted content (e.g. a folder of CelebA-HQ images).

    ``checksum``: by default the registry's (CIFAR-10: the official sha256; DIV2K, DUTS and
    CelebA-HQ: none published, so the computed sha256 is recorded beside the archive and NOT
    verified). Pass a ``"sha256:..."``/``"md5:..."`` string (single-archive datasets only) or
    ``None`` to override. ``digits`` needs no download (returns None).
    """
    spec = get_spec(name)
    if name == "digits":
        log.info("dataset 'digits' ships with scikit-learn: nothing to download")
        return None
    if name == "imagefolder":
        raise ValueError("dataset 'imagefolder' reads root directly; there is nothing to download")
    root = Path(root).expanduser() if root is not None else default_root()
    target = spec.dir(root)
    single = len(spec.resources) == 1
    local = _check_download_args(name, spec, root, source, checksum)

    for res in spec.resources:
        dest_dir = target / res.subdir if res.subdir else target
        if (dest_dir / MARKER).is_file():
            log.info("%s already installed at %s", res.filename or name, dest_dir)
            continue
        expected = res.checksum if checksum is _DEFAULT else checksum
        url = _archive_source(name, res, source, local, single, dest_dir)
        if url is None:
            continue
        filename = res.filename or Path(urllib.parse.urlparse(url).path).name
        if not filename:
            raise ValueError(f"cannot tell an archive file name from source {source!r}")
        archive = fetch(url, root / "downloads" / filename, expected, retries=retries, timeout=timeout)
        extract(archive, dest_dir)
    return target


def prepare_dataset(name: str, block: Mapping, root: str | os.PathLike | None, where: str):
    """The images of ``ddm prepare``: the training split of dataset ``name`` as its params.yaml
    block (``block``, at ``where`` in params.yaml) gives it: at the block's ``resolution`` where the
    dataset has that option; downloaded into ``root`` first (or unpacked from the block's
    ``source``) where it has resources; read from the folder ``source`` names for a folder
    dataset (``imagefolder``), a ``ConfigError`` if it names none."""
    from ddm.datasets.base import DATASETS, load_dataset
    from ddm.yamlio import ConfigError

    spec = DATASETS[name]
    options = {"resolution": block["resolution"]} if "resolution" in spec.options else {}
    if spec.folder_source:  # the user's own folder (imagefolder and its variants), named by `source`
        root = block.get("source")
        if not root:
            raise ConfigError(f"params.yaml: {where}/source: not set (set it to a folder of images)")
    elif spec.resources:
        download_dataset(name, root, source=block.get("source"))
    return load_dataset(name, root, "train", **options)
