"""ddm.data: registry, digits, CIFAR-10 batches, image folders, CelebA-HQ/DIV2K/DUTS layouts.

Everything runs on data built here in the real on-disk formats (pickled CIFAR batches, PNG/JPEG
folders, zip archives named as the official ones); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddm.data import (
    DATASETS,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_SIZE,
    download_dataset,
    load_cifar10_labels,
    load_dataset,
    load_digits_labels,
    to_model_range,
    to_uint8,
)
from ddm.download import MARKER, DownloadError


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
