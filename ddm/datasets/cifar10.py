"""``cifar10``: the official python-version tarball (sha256 verified), ``data_batch_1..5`` = train
(50,000), ``test_batch`` = test (10,000), (N, 3, 32, 32); the pickled batches are read by an
unpickler that admits only what they contain. :func:`load_cifar10_labels` gives the labels.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddm.datasets.base import DATASETS, DatasetSpec, Resource, check_split, default_root, register_dataset
from ddm.datasets.install import maybe_download

__all__ = ["CIFAR10_URL", "CIFAR10_SHA256", "CIFAR10_MD5", "load_cifar10_labels"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # the one published on the CIFAR page
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, bytes, numpy arrays)."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: not part of a CIFAR-10 batch file"
            )
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(
            f"{path} is not a valid CIFAR-10 python batch ({e}); delete the cifar10 folder and "
            f"download the official archive again"
        ) from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a valid CIFAR-10 python batch (not a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} lacks the 'data'/'labels' entries of a CIFAR-10 batch")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {data.dtype} "
            f"{data.shape}"
        )
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    # rows are [1024 red, 1024 green, 1024 blue], each plane row-major 32x32
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10_dir(root: Path) -> Path:
    root = Path(root)
    candidates = [
        root / "cifar10" / CIFAR10_FOLDER,
        root / CIFAR10_FOLDER,
        root / "cifar10",
        root,
    ]
    for c in candidates:
        if (c / "data_batch_1").is_file() or (c / "test_batch").is_file():
            return c
    raise FileNotFoundError(
        f"CIFAR-10 not found under {root} (looked for data_batch_1/test_batch in "
        f"{', '.join(str(c) for c in candidates)}). Run "
        f"ddm.datasets.download_dataset('cifar10', {str(root)!r}) (or pass download=True), or put "
        f"the official {Path(CIFAR10_URL).name} (sha256 {CIFAR10_SHA256}) at "
        f"{root / 'downloads' / Path(CIFAR10_URL).name} and run download_dataset again."
    )


def _cifar10_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = _cifar10_dir(root)
    missing = [n for n in _CIFAR10_FILES[split] if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}; delete it "
            f"and run download_dataset('cifar10', ...) again"
        )
    parts = [_read_batch(folder / n) for n in _CIFAR10_FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_cifar10(root: Path, split: str, *, download: bool = False) -> torch.Tensor:
    maybe_download("cifar10", root, download, lambda: _cifar10_dir(root))
    images, _ = _cifar10_arrays(root, split)
    return torch.from_numpy(np.ascontiguousarray(images))


def load_cifar10_labels(root: Path | str | None, split: str = "train") -> torch.Tensor:
    """CIFAR-10 labels (int64, 0..9) in the order :func:`load_dataset` returns the images."""
    check_split(DATASETS["cifar10"], split)
    _, labels = _cifar10_arrays(Path(root) if root is not None else default_root(), split)
    return torch.from_numpy(labels)


SPEC = register_dataset(DatasetSpec(
    "cifar10", "CIFAR-10, 32x32 RGB, official python-version tarball", ("train", "test"), _load_cifar10,
    {"download": False},
    (Resource(Path(CIFAR10_URL).name, CIFAR10_URL, f"sha256:{CIFAR10_SHA256}", "", CIFAR10_FOLDER),),
    channels=3, label="CIFAR-10"))
