"""ddm.datasets: registry, digits, CIFAR-10 batches, image folders, CelebA-HQ/DIV2K/DUTS layouts.

Everything runs on data built here in the real on-disk formats (pickled CIFAR batches, PNG/JPEG
folders, zip archives named as the official ones); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import BIN, DELETE, REPO, run_snakemake, tiny_params, tool_env
from ddm.datasets import (
    DATASETS,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_SIZE,
    download_dataset,
    image_folder_digest,
    image_folder_manifest,
    load_cifar10_labels,
    load_dataset,
    load_digits_labels,
    to_model_range,
    to_uint8,
)
from ddm.archives import MARKER
from ddm.download import DownloadError
from ddm.io import load_torch


# --------------------------------------------------------------------------- value ranges
def test_model_range_round_trip_is_exact():
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_model_range(u8)
    assert x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(to_uint8(x), u8)
    assert to_uint8(torch.tensor([-3.0, 0.0, 7.0])).tolist() == [0, 128, 255]  # clamped, rounded


def test_model_range_type_errors():
    with pytest.raises(TypeError, match="uint8"):
        to_model_range(torch.zeros(2))
    with pytest.raises(TypeError, match="floating-point"):
        to_uint8(torch.zeros(2, dtype=torch.uint8))


# --------------------------------------------------------------------------- registry
def test_registry_names():
    assert set(DATASETS) == {"digits", "cifar10", "celebahq256", "div2k", "duts", "imagefolder"}


def test_unknown_name_split_option_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*digits, cifar10"):
        load_dataset("mnist", None)
    with pytest.raises(ValueError, match=r"unknown split 'val' for dataset 'digits'; valid splits: train, test"):
        load_dataset("digits", None, "val")
    with pytest.raises(ValueError, match=r"unknown split 'test' for dataset 'celebahq256'"):
        load_dataset("celebahq256", None, "test")
    with pytest.raises(ValueError, match=r"unknown option\(s\) size for dataset 'digits'.*resolution=8"):
        load_dataset("digits", None, size=16)
    with pytest.raises(ValueError, match="unknown dataset 'x'"):
        download_dataset("x", None)
    with pytest.raises(ValueError, match="unknown split"):
        load_digits_labels("validation")


# --------------------------------------------------------------------------- digits
def _documented_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    b = load_digits()
    tr, te = train_test_split(np.arange(len(b.target)), test_size=DIGITS_TEST_SIZE,
                              random_state=DIGITS_SPLIT_SEED, stratify=b.target)
    return b, np.sort(tr), np.sort(te)


def test_digits_shapes_values_labels():
    b, tr, te = _documented_digits_split()
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert train.shape == (1347, 1, 8, 8) and test.shape == (450, 1, 8, 8)
    assert train.dtype == test.dtype == torch.uint8
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 1797
    expected = np.round(b.images[te] * 255 / 16).astype(np.uint8)
    assert np.array_equal(test[:, 0].numpy(), expected)
    assert train.min().item() == 0 and train.max().item() == 255
    assert set(np.unique(train.numpy())) <= {round(v * 255 / 16) for v in range(17)}
    ytr, yte = load_digits_labels("train"), load_digits_labels("test")
    assert ytr.dtype == torch.int64 and ytr.shape == (1347,) and yte.shape == (450,)
    assert np.array_equal(yte.numpy(), b.target[te])
    assert yte.bincount().min() >= 43 and yte.bincount().max() <= 46  # stratified: ~45 a class


def test_digits_deterministic_and_not_aliased():
    a = load_dataset("digits", None, "train")
    a[:] = 0  # mutating a result must not change the next one
    b, c = load_dataset("digits", None, "train"), load_dataset("digits", None, "train")
    assert torch.equal(b, c) and b.float().mean() > 10


def test_digits_resolution_option():
    native = load_dataset("digits", split="test")
    assert torch.equal(load_dataset("digits", split="test", resolution=8), native)
    up = load_dataset("digits", split="test", resolution=16)
    assert up.shape == (450, 1, 16, 16) and up.dtype == torch.uint8
    # a bilinear 2x upsample keeps the mean brightness closely
    assert abs(up.float().mean() - native.float().mean()) < 2
    with pytest.raises(ValueError, match="resolution must be a positive integer.*0"):
        load_dataset("digits", resolution=0)
    with pytest.raises(ValueError, match="resolution must be a positive integer.*'16'"):
        load_dataset("digits", resolution="16")


# --------------------------------------------------------------------------- cifar10
def _write_cifar_folder(folder: Path, n: int = 2) -> dict[str, dict]:
    folder.mkdir(parents=True)
    out = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        rng = np.random.default_rng(i)
        d = {b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        out[name] = d
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 10}))
    return out


def test_cifar10_from_local_folder_source(tmp_path):
    batches = _write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    root = tmp_path / "data"
    download_dataset("cifar10", root, source=str(tmp_path / "src"))
    assert (root / "cifar10" / MARKER).is_file()
    train = load_dataset("cifar10", root)
    assert train.shape == (10, 3, 32, 32) and train.dtype == torch.uint8
    row = batches["data_batch_3"][b"data"][1]
    assert np.array_equal(train[5].numpy(), row.reshape(3, 32, 32))
    assert load_cifar10_labels(root, "test").tolist() == batches["test_batch"][b"labels"]


def test_cifar10_torchvision_layout_is_found(tmp_path):
    _write_cifar_folder(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", tmp_path, "test").shape == (2, 3, 32, 32)


def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        load_dataset("cifar10", tmp_path)
    msg = str(ei.value)
    assert str(tmp_path) in msg and "download_dataset('cifar10'" in msg
    assert "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce" in msg


def test_cifar10_incomplete_and_malicious_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_folder(folder)
    os.remove(folder / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="missing data_batch_4"):
        load_dataset("cifar10", tmp_path, "train")
    # a pickle that would run code is refused, not executed
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(ValueError, match="refusing to unpickle os.system"):
        load_dataset("cifar10", tmp_path, "test")


# --------------------------------------------------------------------------- image folders
def _png(path: Path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    _png(d / "b.png", (40, 30), (255, 0, 0))                      # red, landscape
    _png(d / "a" / "z.PNG", (30, 50), (0, 255, 0))                 # green, portrait, nested
    _png(d / "c.jpg", (64, 64), 200, mode="L")                    # grey JPEG -> RGB
    _png(d / "d.png", (20, 20), (0, 0, 255, 128), mode="RGBA")    # alpha dropped, upscaled
    (d / "notes.txt").write_text("not an image")                  # other extension: ignored
    _png(d / ".hidden.png", (8, 8), (9, 9, 9))                    # hidden: ignored
    return d


def test_imagefolder_sizes_order_and_conversion(image_dir):
    x = load_dataset("imagefolder", image_dir)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.uint8
    # sorted relative paths: a/z.PNG, b.png, c.jpg, d.png
    centre = x[:, :, 32, 32].tolist()
    assert centre[0] == [0, 255, 0] and centre[1] == [255, 0, 0] and centre[3] == [0, 0, 255]
    assert all(abs(v - 200) <= 2 for v in centre[2])
    small = load_dataset("imagefolder", image_dir, resolution=16, limit=2)
    assert small.shape == (2, 3, 16, 16)
    assert torch.equal(load_dataset("imagefolder", image_dir), x)  # deterministic


def test_imagefolder_resize_shorter_side_then_centre_crop(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    im.save(tmp_path / "x.png")
    x = load_dataset("imagefolder", tmp_path, resolution=16)[0]
    # 40x20 -> 32x16, centre crop keeps columns 8..23: left half red, right half blue
    assert x[:, 8, 2].tolist() == [255, 0, 0] and x[:, 8, 13].tolist() == [0, 0, 255]


def test_imagefolder_corrupt_files_skipped_with_warning_or_raise(image_dir):
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = Image.new("RGB", (32, 32), (1, 2, 3))
    good.save(image_dir / "trunc.jpg", quality=95)
    blob = (image_dir / "trunc.jpg").read_bytes()
    (image_dir / "trunc.jpg").write_bytes(blob[: len(blob) // 2])
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\).*broken\.png.*trunc\.jpg"):
        x = load_dataset("imagefolder", image_dir, resolution=8)
    assert x.shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.png.*on_error='skip'"):
        load_dataset("imagefolder", image_dir, resolution=8, on_error="raise")
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', got 'ignore'"):
        load_dataset("imagefolder", image_dir, on_error="ignore")


def test_imagefolder_empty_missing_or_no_root(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match=r"no readable PNG/JPEG image.*1 unreadable"):
            load_dataset("imagefolder", tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        load_dataset("imagefolder", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs root="):
        load_dataset("imagefolder", None)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_dataset("imagefolder", tmp_path, limit=0)
    with pytest.raises(ValueError, match="nothing to download"):
        download_dataset("imagefolder", tmp_path)
    assert download_dataset("digits", tmp_path) is None


def _png16(path: Path, values) -> None:
    """Write a 16-bit PNG (grey: (H, W); RGB: (H, W, 3)) by hand: Pillow cannot write 16-bit RGB."""
    a = np.asarray(values, dtype=">u2")
    h, w = a.shape[:2]
    colour_type = 0 if a.ndim == 2 else 2
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour", ["grey", "rgb"])
def test_imagefolder_16bit_png_is_scaled_by_value(tmp_path, colour):
    v16 = np.array([[0, 2570, 32768], [32896, 60000, 65535], [257, 511, 1000]])  # 16-bit values
    expected = v16 >> 8                                                       # 0, 10, 128, ..., 255
    if colour == "grey":
        _png16(tmp_path / "x.png", v16)
        want = np.stack([expected] * 3)
    else:  # three different channels: R as given, G reversed, B constant 32768
        _png16(tmp_path / "x.png", np.stack([v16, v16[::-1, ::-1], np.full_like(v16, 32768)], axis=-1))
        want = np.stack([expected, expected[::-1, ::-1], np.full_like(expected, 128)])
    _png16(tmp_path / "const.png", np.full((3, 3) if colour == "grey" else (3, 3, 3), 32768))
    x = load_dataset("imagefolder", tmp_path, resolution=3)  # 3x3 at resolution 3: no resampling
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 3, 3)
    assert x[0].unique().tolist() == [128], "a constant 32768 image must load as 128, not clipped to 255"
    assert np.array_equal(x[1].numpy(), want)


def _symlink_tree(tmp_path: Path) -> Path:
    """a.png (red), b/c.png (green), and outside it ext/e.png (blue); links: loop -> ., alias -> b,
    a_link.png -> a.png, ext and b/ext2 -> the outside folder (reached twice)."""
    d, ext = tmp_path / "imgs", tmp_path / "outside"
    _png(d / "a.png", (8, 8), (255, 0, 0))
    _png(d / "b" / "c.png", (8, 8), (0, 255, 0))
    _png(ext / "e.png", (8, 8), (0, 0, 255))
    os.symlink(".", d / "loop")
    os.symlink("b", d / "alias")
    os.symlink("a.png", d / "a_link.png")
    os.symlink(ext, d / "ext")
    os.symlink(ext, d / "b" / "ext2")
    return d


def test_imagefolder_symlink_loop_loads_each_file_once(tmp_path):
    d = _symlink_tree(tmp_path)
    assert [m[0] for m in image_folder_manifest(d)] == ["a.png", "b/c.png", "b/ext2/e.png"]
    x = load_dataset("imagefolder", d, resolution=8)
    assert x.shape == (3, 3, 8, 8), f"{x.shape[0]} images loaded from 3 real files"
    assert x[:, :, 4, 4].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    os.symlink(d, tmp_path / "top")  # the folder itself given as a link: the same three files
    assert len(image_folder_manifest(tmp_path / "top")) == 3
    up = tmp_path / "up"  # a link to the parent folder, deeper down
    _png(up / "s" / "f.png", (8, 8), (9, 9, 9))
    os.symlink("..", up / "s" / "parent")
    assert [m[0] for m in image_folder_manifest(up)] == ["s/f.png"]
    assert load_dataset("imagefolder", up, resolution=8).shape[0] == 1


def test_image_folder_digest_tracks_added_removed_and_changed_images(image_dir):
    before = image_folder_digest(image_dir)
    assert before.startswith("4 files, sha256 ") and image_folder_digest(image_dir) == before
    (image_dir / "notes.txt").write_text("other extensions do not count")
    assert image_folder_digest(image_dir) == before
    _png(image_dir / "e.png", (8, 8), (1, 1, 1))
    added = image_folder_digest(image_dir)
    assert added.startswith("5 files") and added != before
    (image_dir / "b.png").unlink()
    removed = image_folder_digest(image_dir)
    assert removed.startswith("4 files") and removed not in (before, added)
    _png(image_dir / "c.jpg", (64, 64), 10, mode="L")  # same name, new content
    assert image_folder_digest(image_dir) not in (before, added, removed)
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        image_folder_digest(image_dir / "nowhere")


# --------------------------------------------------------------------------- imagefolder in the pipeline
def imagefolder_params(source: str) -> dict:
    """The tiny params with the embedded preset's one dataset an image folder at ``source``."""
    block = {**tiny_params()["presets"]["embedded"]["digits"], "source": source}
    block["fid"] = {**block["fid"], "extractor": "inception-v3-compat"}
    return {"presets.embedded.digits": DELETE, "presets.embedded.imagefolder": block,
            "conditioned": False}  # the conditioned tasks need the digits block


def planned(output: str) -> dict[str, list[str]]:
    """rule -> the reasons of its jobs in a `snakemake -n` output."""
    jobs: dict[str, list[str]] = {}
    for rule, reason in re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+reason: (.*)$", output, re.M):
        jobs.setdefault(rule, []).append(reason)
    return jobs


@pytest.mark.slow
def test_imagefolder_changes_rerun_prepare_and_what_depends_on_it(workdir_factory):
    work = workdir_factory(imagefolder_params("images"))
    for i in range(3):
        _png(work / "images" / f"{i}.png", (8, 8), (60 * i, 0, 0))
    target = "data/prepared/imagefolder.pt"
    r = run_snakemake(work, "--cores", "1", target)
    assert r.returncode == 0, r.output[-4000:]
    assert load_torch(work / target, "data", "test").shape == (3, 3, 8, 8)
    r = run_snakemake(work, "-n", target)
    assert r.returncode == 0 and "Nothing to be done" in r.output, r.output[-4000:]

    _png(work / "images" / "sub" / "3.png", (8, 8), (0, 0, 200))  # an image added
    r = run_snakemake(work, "-n", "results/models/imagefolder/ddm.pt", "results/fid/imagefolder/reference.npz")
    assert r.returncode == 0, r.output[-4000:]
    jobs = planned(r.output)
    assert "prepare" in jobs and "Params have changed" in jobs["prepare"][0], r.output[-4000:]
    for rule in ("train", "refstats"):  # downstream: rerun because prepare reruns
        assert jobs.get(rule) and all("updated by another job" in x and target in x
                                      for x in jobs[rule]), (rule, jobs.get(rule))

    (work / "images" / "sub" / "3.png").unlink()  # back to the prepared images: nothing to do
    r = run_snakemake(work, "-n", target)
    assert r.returncode == 0 and "Nothing to be done" in r.output, r.output[-4000:]
    (work / "images" / "0.png").unlink()  # an image removed
    r = run_snakemake(work, "-n", target)
    assert "prepare" in planned(r.output) and "Nothing to be done" not in r.output, r.output[-4000:]

    shutil.rmtree(work / "images")  # a missing folder: one clear error, and nothing is deleted
    r = run_snakemake(work, "--cores", "1", target)
    assert r.returncode != 0, r.output[-4000:]
    assert re.search(r"presets\.embedded\.imagefolder\.source: image folder not found: images; restore it",
                     r.output), r.output[-4000:]
    assert load_torch(work / target, "data", "test").shape[0] == 3  # the prepared images are kept


@pytest.mark.slow
def test_dvc_download_stage_depends_on_a_local_source_folder(workdir_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    sys.path.insert(0, str(REPO / "workflow"))
    import make_dvc_yaml

    work = workdir_factory(imagefolder_params("images"), extra=("ddm",))
    _png(work / "images" / "0.png", (8, 8), (1, 2, 3))
    sources = make_dvc_yaml.source_deps(work / "params.yaml")
    assert sources == ["images"]
    (work / "dvc.yaml").write_text(make_dvc_yaml.render(make_dvc_yaml.load_phases(), sources))
    stage = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["download"]
    assert "images" in stage["deps"]
    (work / "data" / "prepared").mkdir(parents=True)
    (work / "data" / "prepared" / "imagefolder.pt").write_bytes(b"x")
    env = tool_env(DVC_NO_ANALYTICS="1")

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=300)

    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                [str(BIN / "dvc"), "commit", "-f", "-q", "download"]):
        r = run(*cmd)
        assert r.returncode == 0, r.stdout + r.stderr
    r = run(str(BIN / "dvc"), "status", "download")
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    _png(work / "images" / "1.png", (8, 8), (4, 5, 6))
    r = run(str(BIN / "dvc"), "status", "download")
    assert r.returncode == 0 and re.search(r"modified:\s+images", r.stdout), r.stdout + r.stderr

    # the generator's other cases: file:// URLs are paths, http(s) sources are not deps
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["presets"]["other"] = {"cifar10": {"source": "https://mirror.example/"},
                                  "celebahq256": {"source": "file:///data/faces.zip"}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert make_dvc_yaml.source_deps(work / "params.yaml") == ["/data/faces.zip", "images"]


# --------------------------------------------------------------------------- celebahq256
def test_celebahq_needs_a_source(tmp_path):
    with pytest.raises(DownloadError, match=r"no stable public download URL.*source="):
        download_dataset("celebahq256", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"celebahq256.*source="):
        load_dataset("celebahq256", tmp_path)


def test_celebahq_from_folder_and_from_archive(tmp_path):
    src = tmp_path / "faces"
    for i in range(3):
        _png(src / f"{i:05d}.jpg", (300, 300), (10 * i, 0, 0))
    root = tmp_path / "data"
    download_dataset("celebahq256", root, source=str(src))
    x = load_dataset("celebahq256", root)
    assert x.shape == (3, 3, 256, 256) and x.dtype == torch.uint8

    archive = tmp_path / "celeba_hq_256.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"celeba_hq_256/{f.name}")
    root2 = tmp_path / "data2"
    download_dataset("celebahq256", root2, source=archive.as_uri())
    record = root2 / "downloads" / "celeba_hq_256.zip.sha256"  # no published checksum: recorded
    assert record.read_text().split()[0] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert torch.equal(load_dataset("celebahq256", root2, resolution=32),
                       load_dataset("celebahq256", root, resolution=32))


# --------------------------------------------------------------------------- div2k / duts
def _zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent).as_posix())


def test_div2k_from_mirror_folder_of_official_zips(tmp_path):
    stage, mirror = tmp_path / "stage", tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (280, 300, 3), dtype=np.uint8)
    for sub, names in [("DIV2K_train_HR", ["0001", "0002"]), ("DIV2K_valid_HR", ["0801"])]:
        for n in names:
            (stage / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(hr).save(stage / sub / f"{n}.png")
        _zip_folder(stage / sub, mirror / f"{sub}.zip")
    root = tmp_path / "data"
    download_dataset("div2k", root, source=str(mirror))
    for name in ("DIV2K_train_HR.zip", "DIV2K_valid_HR.zip"):
        assert (root / "downloads" / f"{name}.sha256").is_file()
    train, test = load_dataset("div2k", root, "train"), load_dataset("div2k", root, "test")
    assert train.shape == (2, 3, 256, 256) and test.shape == (1, 3, 256, 256)
    # default: a centre crop at native scale, pixel for pixel
    top, left = (280 - 256) // 2, (300 - 256) // 2
    assert np.array_equal(test[0].numpy().transpose(1, 2, 0), hr[top:top + 256, left:left + 256])
    assert load_dataset("div2k", root, "test", resize=True, resolution=64).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="single checksum cannot"):
        download_dataset("div2k", root, checksum="0" * 64)
    with pytest.raises(ValueError, match="source must be a folder or a URL prefix"):
        download_dataset("div2k", tmp_path / "other", source=str(mirror / "DIV2K_train_HR.zip"))


def test_duts_pairs_images_and_masks(tmp_path):
    src = tmp_path / "src"
    for split in ("TR", "TE"):
        for i in range(2):
            _png(src / f"DUTS-{split}" / f"DUTS-{split}-Image" / f"ILSVRC_{i}.jpg", (48, 40), (0, 90, 0))
            _png(src / f"DUTS-{split}" / f"DUTS-{split}-Mask" / f"ILSVRC_{i}.png", (48, 40), 255, mode="L")
    _zip_folder(src / "DUTS-TR", src / "DUTS-TR.zip")  # train from the archive, test extracted
    shutil.rmtree(src / "DUTS-TR")
    root = tmp_path / "data"
    download_dataset("duts", root, source=str(src))
    for split in ("train", "test"):
        images, masks = load_dataset("duts", root, split, resolution=32)
        assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32)
        assert masks.dtype == torch.uint8 and masks.min().item() == 255
    os.remove(next((root / "duts" / "test").rglob("ILSVRC_1.png")))
    with pytest.raises(ValueError, match=r"1 DUTS image\(s\).*no mask.*ILSVRC_1\.jpg"):
        load_dataset("duts", root, "test")
