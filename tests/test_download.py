"""ddm.download: fetch (file://, local path, http with Range/resume); ddm.archives: extract.

Real transfers only: a CIFAR-10-format archive built here is served from a file:// URL and
from an http.server on 127.0.0.1 whose handler honours Range requests and can cut a
transfer short once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from ddm.archives import MARKER, extract
from ddm.datasets import download_dataset, load_cifar10_labels, load_dataset
from ddm.download import DownloadError, fetch, parse_checksum

N_PER_BATCH = 3


# --------------------------------------------------------------------------- fixtures
def _cifar_batch(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def make_cifar_archive(path: Path) -> dict[str, dict]:
    """A tar.gz in the layout of the official cifar-10-python.tar.gz, a few images a batch."""
    batches = {f"data_batch_{i}": _cifar_batch(i, N_PER_BATCH) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(99, N_PER_BATCH + 1)
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                             b"frog", b"horse", b"ship", b"truck"],
            b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072}
    with tarfile.open(path, "w:gz") as tf:
        for name, obj in [*batches.items(), ("batches.meta", meta)]:
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return batches


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server:
    """http.server on 127.0.0.1 serving ``directory``; records each request's Range header."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.requests: list[dict] = []
        self.truncate_next = 0  # cut this many upcoming responses short (half the body)
        self.ignore_range = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append({"path": self.path, "range": rng})
                f = outer.directory / self.path.lstrip("/")
                if not f.is_file():
                    self.send_error(404, "Not Found")
                    return
                body = f.read_bytes()
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if outer.truncate_next > 0:
                    outer.truncate_next -= 1
                    payload = payload[: len(payload) // 2]
                self.wfile.write(payload)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def served(tmp_path_factory):
    src = tmp_path_factory.mktemp("srv")
    archive = src / "cifar-10-python.tar.gz"
    batches = make_cifar_archive(archive)
    with Server(src) as server:
        yield server, archive, batches


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- checksums
def test_parse_checksum_forms():
    h = "ab" * 32
    assert parse_checksum(h) == ("sha256", h)
    assert parse_checksum("SHA256:" + h.upper()) == ("sha256", h)
    assert parse_checksum("md5:" + "0f" * 16) == ("md5", "0f" * 16)
    with pytest.raises(ValueError, match="md5:"):
        parse_checksum("0f" * 16)  # a bare MD5 must say so
    with pytest.raises(ValueError, match="unsupported checksum algorithm 'crc'"):
        parse_checksum("crc:1234")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_checksum("sha256:xyz")


# --------------------------------------------------------------------------- file sources
def test_fetch_file_url_and_plain_path(served, tmp_path):
    _, archive, _ = served
    sha = sha256_of(archive)
    for i, src in enumerate([archive.as_uri(), str(archive)]):
        dest = tmp_path / f"dl{i}" / "a.tar.gz"
        assert fetch(src, dest, sha) == dest
        assert dest.read_bytes() == archive.read_bytes()
        assert leftovers(dest.parent) == ["a.tar.gz"]


def test_fetch_returns_at_once_when_present(served, tmp_path):
    _, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(archive.read_bytes())
    # the source does not exist: only an early return can succeed
    assert fetch(str(tmp_path / "nowhere.tar.gz"), dest, sha256_of(archive)) == dest


def test_fetch_md5_checksum(served, tmp_path):
    _, archive, _ = served
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = fetch(archive.as_uri(), tmp_path / "a.tgz", f"md5:{md5}")
    assert dest.is_file()


def test_fetch_bad_checksum_file_leaves_nothing(served, tmp_path):
    _, archive, _ = served
    dest = tmp_path / "dl" / "a.tar.gz"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as ei:
        fetch(archive.as_uri(), dest, wrong)
    msg = str(ei.value)
    assert archive.as_uri() in msg and wrong in msg and sha256_of(archive) in msg
    assert str(dest) in msg
    assert leftovers(dest.parent) == []


def test_fetch_missing_local_file(tmp_path):
    dest = tmp_path / "a.tar.gz"
    src = tmp_path / "missing.tar.gz"
    sha = "1" * 64
    with pytest.raises(DownloadError) as ei:
        fetch(src.as_uri(), dest, sha)
    msg = str(ei.value)
    assert src.as_uri() in msg and sha in msg and str(dest) in msg
    assert leftovers(tmp_path) == []


def test_fetch_unknown_checksum_records_sha256(served, tmp_path, caplog):
    _, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    with caplog.at_level(logging.WARNING, logger="ddm.download"):
        fetch(str(archive), dest, None)
    record = tmp_path / "a.tar.gz.sha256"
    assert record.read_text().split() == [sha256_of(archive), "a.tar.gz"]
    assert "NOT verified" in caplog.text and str(record) in caplog.text


def test_fetch_refetches_when_present_file_is_wrong(served, tmp_path):
    _, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"not the archive")
    fetch(archive.as_uri(), dest, sha256_of(archive))
    assert dest.read_bytes() == archive.read_bytes()


# --------------------------------------------------------------------------- http sources
def test_http_good_archive_downloads_extracts_loads(served, tmp_path):
    server, archive, batches = served
    root = tmp_path / "data"
    out = download_dataset("cifar10", root, source=server.url(archive.name),
                           checksum=sha256_of(archive), retries=0)
    assert out == root / "cifar10"
    assert [r["range"] for r in server.requests] == [None]
    assert (root / "downloads" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert (root / "cifar10" / MARKER).is_file()
    train = load_dataset("cifar10", root, "train")
    test = load_dataset("cifar10", root, "test")
    assert train.shape == (5 * N_PER_BATCH, 3, 32, 32) and train.dtype == torch.uint8
    assert test.shape == (N_PER_BATCH + 1, 3, 32, 32)
    # row layout: 1024 red, 1024 green, 1024 blue, each row-major 32x32
    row = batches["data_batch_2"][b"data"][1]
    img = train[N_PER_BATCH + 1].numpy()
    assert img[0, 0, 0] == row[0] and img[0, 0, 1] == row[1] and img[0, 1, 0] == row[32]
    assert img[1, 0, 0] == row[1024] and img[2, 31, 31] == row[3071]
    assert np.array_equal(test.numpy().reshape(-1, 3072), batches["test_batch"][b"data"])
    labels = load_cifar10_labels(root, "train")
    assert labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    # a second call finds everything in place and makes no request
    download_dataset("cifar10", root, source=server.url(archive.name), checksum=sha256_of(archive))
    assert len(server.requests) == 1


def test_http_file_url_source_for_dataset(served, tmp_path):
    _, archive, _ = served
    root = tmp_path / "data"
    download_dataset("cifar10", root, source=archive.as_uri(), checksum=sha256_of(archive))
    assert load_dataset("cifar10", root, "test").shape == (N_PER_BATCH + 1, 3, 32, 32)


def test_http_bad_checksum_rejected_nothing_left(served, tmp_path):
    server, archive, _ = served
    root = tmp_path / "data"
    url = server.url(archive.name)
    wrong = "sha256:" + "f" * 64
    with pytest.raises(DownloadError) as ei:
        download_dataset("cifar10", root, source=url, checksum=wrong, retries=0)
    msg = str(ei.value)
    dest = root / "downloads" / "cifar-10-python.tar.gz"
    assert url in msg and "f" * 64 in msg and sha256_of(archive) in msg and str(dest) in msg
    assert leftovers(root / "downloads") == []
    assert not (root / "cifar10").exists()


def test_http_truncated_transfer_resumes_with_range(served, tmp_path):
    server, archive, _ = served
    server.truncate_next = 1
    dest = tmp_path / "a.tar.gz"
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=2, backoff=0)
    assert dest.read_bytes() == archive.read_bytes()
    half = archive.stat().st_size // 2
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert leftovers(tmp_path) == ["a.tar.gz"]


def test_http_cut_short_without_retries_keeps_part_for_next_run(served, tmp_path):
    server, archive, _ = served
    server.truncate_next = 1
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match="is kept and will be resumed"):
        fetch(server.url(archive.name), dest, sha256_of(archive), retries=0)
    assert leftovers(tmp_path) == ["a.tar.gz.part"]  # nothing at dest
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=0)
    assert dest.read_bytes() == archive.read_bytes()
    assert server.requests[1]["range"] == f"bytes={archive.stat().st_size // 2}-"


def test_http_range_ignored_restarts_from_zero(served, tmp_path):
    server, archive, _ = served
    server.truncate_next = 1
    server.ignore_range = True  # answers 200 with the whole file to a Range request
    dest = tmp_path / "a.tar.gz"
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=2, backoff=0)
    assert dest.read_bytes() == archive.read_bytes()
    assert server.requests[1]["range"] == f"bytes={archive.stat().st_size // 2}-"


def test_http_resumes_part_left_by_an_earlier_run(served, tmp_path):
    server, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    data = archive.read_bytes()
    (tmp_path / "a.tar.gz.part").write_bytes(data[:100])
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=0)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == ["bytes=100-"]


def test_http_stale_part_restarts_once(served, tmp_path):
    server, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    (tmp_path / "a.tar.gz.part").write_bytes(b"\0" * 100)  # not a prefix of the file
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=0)
    assert dest.read_bytes() == archive.read_bytes()
    assert [r["range"] for r in server.requests] == ["bytes=100-", None]


def test_http_complete_part_is_accepted_on_416(served, tmp_path):
    server, archive, _ = served
    dest = tmp_path / "a.tar.gz"
    (tmp_path / "a.tar.gz.part").write_bytes(archive.read_bytes())
    fetch(server.url(archive.name), dest, sha256_of(archive), retries=0)
    assert dest.read_bytes() == archive.read_bytes()
    assert leftovers(tmp_path) == ["a.tar.gz"]


def test_http_missing_file_is_clear_and_not_retried(served, tmp_path):
    server, _, _ = served
    url = server.url("nope.tar.gz")
    dest = tmp_path / "a.tar.gz"
    sha = "2" * 64
    with pytest.raises(DownloadError) as ei:
        fetch(url, dest, sha, retries=3, backoff=0)
    msg = str(ei.value)
    assert url in msg and "404" in msg and sha in msg and str(dest) in msg
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == []


def test_unreachable_url_is_clear(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/x"
    dest = tmp_path / "x"
    sha = "3" * 64
    with pytest.raises(DownloadError) as ei:
        fetch(url, dest, sha, retries=1, backoff=0, timeout=5)
    msg = str(ei.value)
    assert url in msg and sha in msg and str(dest) in msg and "2 attempt" in msg
    assert not dest.exists()


def test_unreachable_without_checksum_says_so(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/DIV2K_train_HR.zip"
    with pytest.raises(DownloadError, match="none known"):
        fetch(url, tmp_path / "d.zip", None, retries=0)


def test_fetch_rejects_bad_arguments(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.org/x", tmp_path / "x", None)
    with pytest.raises(ValueError, match="malformed sha256"):
        fetch(str(tmp_path / "x"), tmp_path / "y", "abc")


# --------------------------------------------------------------------------- extract
def test_extract_tar_atomic_and_skips_when_complete(served, tmp_path):
    _, archive, _ = served
    out = tmp_path / "out"
    assert extract(archive, out) == out
    assert (out / "cifar-10-batches-py" / "test_batch").is_file()
    assert (out / MARKER).is_file()
    assert leftovers(tmp_path) == ["out"]  # no temporary sibling left
    (out / "cifar-10-batches-py" / "extra").write_text("kept")
    extract(tmp_path / "gone.tar.gz", out)  # complete: the archive is not even opened
    assert (out / "cifar-10-batches-py" / "extra").is_file()


def test_extract_zip(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("DUTS-TE/DUTS-TE-Image/a.jpg", b"x")
        zf.writestr("DUTS-TE/README", "hello")
    out = extract(archive, tmp_path / "o")
    assert (out / "DUTS-TE" / "README").read_text() == "hello"


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_extract_refuses_escaping_members(tmp_path, member, fmt):
    archive = tmp_path / f"bad.{fmt}"
    if fmt == "tar":
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo(member)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(zipfile.ZipInfo(member), b"evil")
    with pytest.raises(DownloadError, match="refusing to extract"):
        extract(archive, tmp_path / "out" / "x")
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_escaping_symlink(tmp_path):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(DownloadError, match="points to"):
        extract(archive, tmp_path / "out")


def test_extract_errors(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive")
    with pytest.raises(DownloadError, match="neither a tar"):
        extract(junk, tmp_path / "o")
    (tmp_path / "half").mkdir()
    with pytest.raises(DownloadError, match="no completion marker"):
        extract(junk, tmp_path / "half")
    with pytest.raises(DownloadError, match="archive not found"):
        extract(tmp_path / "missing.zip", tmp_path / "o2")
