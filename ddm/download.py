"""A robust file fetcher (standard library only).

``fetch`` accepts ``http(s)://`` URLs, ``file://`` URLs and plain local paths. It streams into
``<dest>.part``, resumes a partial ``.part`` with an HTTP ``Range`` request on a retry (and
restarts from zero when the server ignores ``Range`` and answers 200), verifies the checksum
of the complete file, and only then renames it atomically to ``dest``. Nothing half-written is
ever left at ``dest``.

Checksum policy
---------------
``sha256`` is a checksum string: a bare 64-digit hex string (SHA-256), or ``"sha256:<hex>"``, or
``"md5:<hex>"`` (for sources that only publish an MD5). ``None`` means "no checksum is known":
the file is NOT verified; its SHA-256 is computed, written next to it as ``<dest>.sha256``
(``sha256sum`` format) and a warning is logged saying so. A later run with a known checksum
verifies against it; the recorded value is never used as if it had been published.

The safe extraction of a fetched archive is :func:`ddm.archives.extract`.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ddm.io import CHUNK, file_checksum  # file_checksum: re-exported (the one checksum of ddm)

__all__ = ["DownloadError", "fetch", "file_checksum", "parse_checksum"]

log = logging.getLogger(__name__)

USER_AGENT = "ddm-fetch/0.1 (+python-urllib)"
_HEX_LEN = {"sha256": 64, "md5": 32}
# HTTP statuses that will not change on a retry.
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or extracted; the message says how to fix it."""


class _Transient(Exception):
    """An attempt failed in a way a retry may fix (connection cut short, timeout, 5xx)."""


# --------------------------------------------------------------------------- checksums
def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"`` / ``"md5:<hex>"`` / bare 64-hex (SHA-256) -> ``(algorithm, hex)``."""
    text = checksum.strip()
    if ":" in text:
        algo, _, digest = text.partition(":")
        algo = algo.strip().lower()
    else:
        algo, digest = "sha256", text
    digest = digest.strip().lower()
    if algo not in _HEX_LEN:
        raise ValueError(
            f"unsupported checksum algorithm {algo!r} in {checksum!r}; "
            f"use 'sha256:<hex>' (or a bare 64-digit SHA-256) or 'md5:<hex>'"
        )
    if len(digest) != _HEX_LEN[algo] or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"malformed {algo} checksum {checksum!r}: expected {_HEX_LEN[algo]} hex digits"
            + (" (prefix an MD5 with 'md5:')" if algo == "sha256" and len(digest) == 32 else "")
        )
    return algo, digest


def _describe(checksum: str | None) -> str:
    if checksum is None:
        return "none known (the file will not be verified; its sha256 is recorded)"
    algo, digest = parse_checksum(checksum)
    return f"{algo}:{digest}"


def _matches(path: Path, checksum: str) -> tuple[bool, str]:
    algo, digest = parse_checksum(checksum)
    actual = file_checksum(path, algo)
    return actual == digest, f"{algo}:{actual}"


def _record_sha256(dest: Path, url: str) -> None:
    digest = file_checksum(dest, "sha256")
    record = dest.with_name(dest.name + ".sha256")
    record.write_text(f"{digest}  {dest.name}\n")
    log.warning(
        "no checksum is known for %s: the file was NOT verified; its computed sha256 %s was "
        "recorded in %s", url, digest, record,
    )


# --------------------------------------------------------------------------- sources
def _classify(url_or_path: str) -> tuple[str, str]:
    """-> ("http", url) or ("file", local path)."""
    s = str(url_or_path)
    parsed = urllib.parse.urlparse(s)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return "http", s
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"unsupported file:// URL with a host: {s!r}; use file:///abs/path")
        return "file", urllib.request.url2pathname(parsed.path)
    if scheme == "" or len(scheme) == 1:  # plain path (a one-letter "scheme" is a drive)
        return "file", s
    raise DownloadError(
        f"unsupported URL scheme {scheme!r} in {s!r}; use http(s)://, file:// or a local path"
    )


def _copy_local(src: str, part: Path) -> None:
    p = Path(src).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    with open(p, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)


def _http_attempt(url: str, part: Path, timeout: float) -> None:
    """One HTTP transfer into ``part``, resuming it when it already holds bytes."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Range not satisfiable: the .part is probably already complete. Let the checksum
            # decide; an incomplete or stale .part is then discarded.
            log.info("server says %s is already complete at %d bytes", part, have)
            return
        if e.code in _PERMANENT_HTTP:
            raise
        raise _Transient(f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Transient(str(reason)) from e

    with resp:
        status = resp.status
        if have and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                log.info("server resumed at byte %s instead of %d: restarting", start, have)
                resp.close()
                part.unlink()
                raise _Transient("server answered a different byte range")
            mode = "ab"
            log.info("resuming %s at byte %d", url, have)
        else:
            if have:
                log.info("server ignored the Range request (HTTP %d): restarting %s", status, url)
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        got = 0
        total = (have + expected) if expected is not None else None
        next_report = 0.1
        try:
            with open(part, mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if total and (have + got) / total >= next_report:
                        log.debug("%s: %.0f%%", url, 100 * (have + got) / total)
                        next_report += 0.1
        except (http.client.IncompleteRead, socket.timeout, ConnectionError, OSError) as e:
            raise _Transient(f"transfer interrupted after {have + got} bytes: {e}") from e
        if expected is not None and got < expected:
            raise _Transient(f"transfer cut short: {got} of {expected} bytes received")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value:
        return None
    try:
        unit, _, rng = value.strip().partition(" ")
        return int(rng.split("-", 1)[0]) if unit.lower() == "bytes" else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- fetch
def fetch(
    url_or_path: str,
    dest: Path,
    sha256: str | None,
    *,
    retries: int = 3,
    timeout: float = 60,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``url_or_path`` to ``dest`` (verified, atomically) and return ``dest``.

    ``sha256``: the expected checksum (see the module docstring; ``"md5:<hex>"`` is accepted),
    or ``None`` when none is published: then the computed SHA-256 is recorded in
    ``<dest>.sha256`` and a warning is logged. ``retries``: further attempts after the first
    one for transient failures (cut connections, timeouts, HTTP 5xx), waiting ``backoff``
    seconds, doubled each time; a retry resumes the ``.part`` file with a ``Range`` request.
    ``timeout``: socket timeout in seconds per attempt.

    If ``dest`` already exists with the right checksum it is returned at once (with no checksum
    known, an existing ``dest`` is returned as is). A wrong checksum after a transfer deletes
    the ``.part`` and raises :class:`DownloadError` naming the URL, both checksums and the path
    where the file can be placed by hand; so does an unreachable URL or a missing file.
    """
    dest = Path(dest)
    if sha256 is not None:
        parse_checksum(sha256)  # fail early on a malformed checksum
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    url = str(url_or_path)
    kind, where = _classify(url)
    part = dest.with_suffix(dest.suffix + ".part")
    hint = f"Expected checksum: {_describe(sha256)}. If you have this file, place it by hand at {dest} and rerun."

    if _already_there(dest, sha256, url):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    resumed_once_from_stale = False
    attempt = 0
    while True:
        attempt += 1
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(kind, where, part, timeout, url, hint)
        except _Transient as e:
            _wait_or_give_up(e, attempt, retries, backoff, url, part, hint)
            continue
        actual = _install(part, dest, sha256, url, hint)
        if actual is None:
            return dest
        if resumed and kind == "http" and not resumed_once_from_stale:
            # The .part we resumed may have been stale (another version of the file): one
            # clean transfer from byte 0 before giving up.
            resumed_once_from_stale = True
            log.warning("checksum mismatch after a resumed transfer of %s: restarting from 0", url)
            continue
        raise DownloadError(f"checksum mismatch for {url}: expected {_describe(sha256)}, got {actual}. The download "
                            f"was deleted. If you have a correct copy, place it by hand at {dest} and rerun.")


def _install(part: Path, dest: Path, sha256: str | None, url: str, hint: str) -> str | None:
    """After a transfer: rename ``part`` to ``dest`` when it verifies, or when no checksum is known
    (its sha256 then recorded), and return None; else delete ``part`` and return its checksum
    (``"algo:hex"``). A transfer that left no ``part`` is a DownloadError."""
    if not part.exists():
        raise DownloadError(f"download of {url} produced no data. {hint}")
    if sha256 is None:
        os.replace(part, dest)
        _record_sha256(dest, url)
        return None
    ok, actual = _matches(part, sha256)
    if ok:
        os.replace(part, dest)
        log.info("fetched and verified %s -> %s", url, dest)
        return None
    _discard(part)
    return actual


def _already_there(dest: Path, sha256: str | None, url: str) -> bool:
    """True if ``dest`` exists and may be used as is (right checksum, or none known)."""
    if not dest.exists():
        return False
    if sha256 is None:
        if not dest.with_name(dest.name + ".sha256").exists():
            _record_sha256(dest, url)
        return True
    ok, actual = _matches(dest, sha256)
    if ok:
        log.info("%s already present and verified", dest)
        return True
    log.warning("%s exists but its checksum is %s, not %s: fetching %s again", dest, actual, _describe(sha256), url)
    return False


def _transfer(kind: str, where, part: Path, timeout: float, url: str, hint: str) -> None:
    """One attempt to fill ``part``; a permanent failure is a DownloadError, a transient one
    (cut connection, timeout, HTTP 5xx) stays a ``_Transient``."""
    try:
        if kind == "file":
            _copy_local(where, part)
        else:
            _http_attempt(where, part, timeout)
    except urllib.error.HTTPError as e:
        _discard(part)
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}. {hint}") from e
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        _discard(part)
        raise DownloadError(f"could not read {url}: {e}. {hint}") from e


def _wait_or_give_up(e: Exception, attempt: int, retries: int, backoff: float, url: str, part: Path,
                     hint: str) -> None:
    """After a transient failure: sleep before the next attempt, or raise once retries are spent."""
    if attempt > retries:
        kept = (f" (The partial download {part} is kept and will be resumed.)"
                if part.exists() and part.stat().st_size else "")
        raise DownloadError(f"could not download {url} after {attempt} attempt(s): {e}. {hint}{kept}") from e
    wait = backoff * (2 ** (attempt - 1))
    log.warning("download of %s failed (%s); retrying in %.1f s", url, e, wait)
    time.sleep(wait)


def _discard(part: Path) -> None:
    try:
        part.unlink()
    except FileNotFoundError:
        pass
