"""ddm.io: atomic output (nothing half-written) with the permissions the umask gives.

Every place that writes through a temporary name is checked under two umasks: ddm.io's writers
(atomic_write, save_torch, save_json, save_text, make_temp_dir), the folder copy of a dataset
source (ddm.datasets.download_dataset) and the dvc.yaml generator (workflow/make_dvc_yaml.py).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import REPO, tool_env
from ddm.datasets import download_dataset
from ddm.io import TMP_PREFIX, atomic_write, file_checksum, load_json, make_temp_dir, save_json, save_text, save_torch

UMASKS = [0o022, 0o027]


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:04o}")
def umask(request):
    """Run the test under this umask; the old one is restored afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_permissions(tmp_path, umask):
    files = [
        save_torch(torch.arange(3), tmp_path / "a.pt"),
        save_json({"x": 1}, tmp_path / "sub" / "b.json"),
        save_text("hello\n", tmp_path / "c.tex"),
        atomic_write(tmp_path / "d.bin", lambda f: f.write(b"\x00\x01")),
    ]
    for f in files:
        assert mode(f) == 0o666 & ~umask, f"{f.name}: {mode(f):04o}"
    assert mode(tmp_path / "sub") == 0o777 & ~umask
    assert mode(files[0]) == (0o644 if umask == 0o022 else 0o640)


def test_replacing_a_private_file_gives_the_umask_permissions(tmp_path, umask):
    target = tmp_path / "x.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    save_json({"y": 2}, target)
    assert mode(target) == 0o666 & ~umask
    assert load_json(target, "x", "test") == {"y": 2}


def test_make_temp_dir_gets_the_umask_permissions(tmp_path, umask):
    a, b = make_temp_dir(tmp_path, ".x-"), make_temp_dir(tmp_path, ".x-")
    assert a != b and a.is_dir() and b.is_dir() and a.name.startswith(".x-")
    assert mode(a) == 0o777 & ~umask


def test_copied_dataset_folder_gets_the_umask_permissions(tmp_path, umask):
    src = tmp_path / "faces"
    src.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(src / "0.png")
    target = download_dataset("celebahq256", tmp_path / "data", source=str(src))
    assert mode(target) == 0o777 & ~umask


def test_generated_dvc_yaml_gets_the_umask_permissions(tmp_path, umask):
    out = tmp_path / "dvc.yaml"
    r = subprocess.run([sys.executable, str(REPO / "workflow" / "make_dvc_yaml.py"), "--out", str(out)],
                       env=tool_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mode(out) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.txt"
    save_text("old\n", target)

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))


def test_file_checksum_is_the_one_of_metrics_and_download(tmp_path):
    """ddm.io.file_checksum: hashlib's digest in 1 MiB blocks; ddm.download re-exports it."""
    import ddm.download

    f = tmp_path / "w.bin"
    data = os.urandom((1 << 20) + 17)  # more than one block
    f.write_bytes(data)
    assert file_checksum(f) == hashlib.sha256(data).hexdigest()
    assert file_checksum(f, "md5") == hashlib.md5(data).hexdigest()
    assert file_checksum(f, memo=True) == file_checksum(str(f)) == hashlib.sha256(data).hexdigest()
    assert ddm.download.file_checksum is file_checksum
    save_text("other\n", f)  # replaced (a new inode): the memoised digest is not reused
    assert file_checksum(f, memo=True) == hashlib.sha256(b"other\n").hexdigest()
    with pytest.raises(ValueError, match=r"unknown hash algorithm 'sha3000'.*'sha256'"):
        file_checksum(f, "sha3000")
