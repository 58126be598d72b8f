"""The safe extraction of a fetched archive (standard library only): :func:`extract`.

``extract`` unpacks ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` (an archive that
:func:`ddm.download.fetch` verified) into a temporary sibling directory, writes a completion
marker (:data:`MARKER`, ``.ddm_complete``) there and renames the directory into place, so a
``dest_dir`` that exists with its marker is complete and is skipped. Members with absolute
paths, ``..`` components, links pointing outside, or device files are refused
(:class:`ddm.download.DownloadError`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from ddm.download import DownloadError
from ddm.io import make_temp_dir

__all__ = ["extract", "MARKER"]

log = logging.getLogger("ddm.download")  # the fetcher's logger, as before the split: one to filter on

#: The completion marker of an extracted (or copied) folder: a folder with it is complete.
MARKER = ".ddm_complete"


def _check_member_name(name: str, archive: Path) -> None:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise DownloadError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    if ".." in p.parts:
        raise DownloadError(f"refusing to extract {archive}: member {name!r} contains '..'")


def _archive_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise DownloadError(
        f"{archive} is neither a tar(.gz) nor a zip archive; supply a .tar, .tar.gz, .tgz or .zip"
    )


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _check_member_name(m.name, archive)
            if m.isdev():
                raise DownloadError(f"refusing to extract {archive}: member {m.name!r} is a device")
            if m.issym() or m.islnk():
                target = PurePosixPath(m.linkname.replace("\\", "/"))
                if m.linkname.startswith("/") or ".." in target.parts:
                    raise DownloadError(
                        f"refusing to extract {archive}: link {m.name!r} points to {m.linkname!r}"
                    )
        if hasattr(tarfile, "data_filter"):
            tf.extractall(into, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tf.extractall(into, members=members)


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member_name(info.filename, archive)
        zf.extractall(into)


def extract(archive: Path, dest_dir: Path) -> Path:
    """Extract ``archive`` (tar, tar.gz/tgz, zip) into ``dest_dir`` atomically; return ``dest_dir``.

    The archive is unpacked into a temporary sibling directory, a marker file ``.ddm_complete``
    is written into it, and it is renamed to ``dest_dir``. If ``dest_dir`` already exists with
    that marker, nothing is done. A ``dest_dir`` that exists without the marker was not made by
    this function (or is damaged): it is left alone and :class:`DownloadError` is raised.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if (dest_dir / MARKER).is_file():
        log.info("%s already extracted", dest_dir)
        return dest_dir
    if dest_dir.exists():
        raise DownloadError(
            f"{dest_dir} exists but has no completion marker ({MARKER}); it may be incomplete. "
            f"Delete it and rerun to extract {archive} again."
        )
    if not archive.is_file():
        raise DownloadError(f"archive not found: {archive}")
    kind = _archive_kind(archive)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest_dir.parent, f".{dest_dir.name}.extract-")  # the umask's mode, not 0700
    try:
        try:
            (_extract_zip if kind == "zip" else _extract_tar)(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise DownloadError(
                f"could not extract {archive}: {e}. The archive may be damaged: delete it and "
                f"download it again."
            ) from e
        (tmp / MARKER).write_text(
            json.dumps({"archive": archive.name, "size": archive.stat().st_size}) + "\n"
        )
        os.rename(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("extracted %s -> %s", archive, dest_dir)
    return dest_dir
