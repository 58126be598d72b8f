"""Datasets by name, as uint8 image tensors of shape (N, C, H, W).

``load_dataset(name, root, split, **options)`` returns the images of one split as a uint8
tensor (``duts`` returns an ``(images, masks)`` pair). The models work in [-1, 1]:
:func:`to_model_range` maps uint8 to that range (``u8 / 127.5 - 1``) and :func:`to_uint8`
maps back (round, clamp). Everything is returned in memory: a split costs ``N*C*H*W`` bytes
(CIFAR-10 train: 150 MiB; CelebA-HQ at 256x256: 192 KiB an image, 5.6 GiB for all 30,000; use
``limit=`` to load fewer).

Registered datasets (``DATASETS``):

``digits`` (embedded, no download)
    scikit-learn's ``load_digits()``: 1,797 8x8 grey digits, values 0..16, mapped to uint8 as
    ``round(v * 255 / 16)``. Split: ``train_test_split(indices, test_size=0.25,
    random_state=0, stratify=labels)``, each side sorted by original index: 1,347 train /
    450 test. Option ``resolution`` (default 8, the native size): other sizes are a bilinear
    resize (antialiased, ``align_corners=False``) of the 0..255 values, rounded.
    :func:`load_digits_labels` gives the matching labels.
``cifar10``
    The official python-version tarball (sha256 verified), ``data_batch_1..5`` = train
    (50,000), ``test_batch`` = test (10,000), (N, 3, 32, 32).
``celebahq256``
    No stable public URL: :func:`download_dataset` needs ``source=`` (a folder of images or an
    archive of them). Loaded as an image folder at 256x256 (option ``resolution``). Split
    ``train`` = every image (the paper's unconditional-generation set).
``div2k``
    DIV2K HR images (ETH URLs; no published checksum, so the computed one is recorded).
    ``train`` = DIV2K_train_HR (800), ``test`` = DIV2K_valid_HR (100; the official test HR set
    is not public). Default: a 256x256 centre crop at native scale (``resize=False``), which
    keeps the high-resolution detail super-resolution needs.
``duts``
    DUTS saliency (saliencydetection.net; no published checksum). ``train`` = DUTS-TR,
    ``test`` = DUTS-TE. Returns ``(images (N,3,R,R), masks (N,1,R,R))`` paired by file stem,
    default R = 256; every image must have a mask.
``imagefolder``
    Any folder (``root``), searched recursively for ``.png``/``.jpg``/``.jpeg`` (any case) in
    sorted relative-path order; hidden files and other extensions are ignored. Folder symlinks
    are followed, but each real folder is entered once and each real file loaded once (a loop
    such as ``ln -s . loop`` adds nothing); files reached through links that lead outside the
    folder are loaded, and named in one ``UserWarning``. 16-bit images are scaled to 8 bits by value (the
    high byte: 32768 -> 128), grey and colour alike. Each image is
    converted to RGB (EXIF orientation applied, alpha dropped), its shorter side resized to
    ``resolution`` (default 64, bicubic) and centre-cropped. Files with an image extension
    that cannot be decoded are skipped with a ``UserWarning`` naming them (``on_error="skip"``,
    the default) or raise ``ValueError`` (``on_error="raise"``); no readable image at all is an
    error. :func:`image_folder_manifest` lists the files it reads (path, size, mtime) and
    :func:`image_folder_digest` summarises them: the pipeline's prepare job reruns when it changes.

Data location: ``root`` (or ``$DDM_DATA_ROOT``, default ``./data``) holds ``downloads/`` (the
archives, plus ``<archive>.sha256`` where no checksum is published) and one folder per
dataset (``cifar10/``, ``celebahq256/``, ``div2k/{train,test}/``, ``duts/{train,test}/``).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shutil
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ddm.download import MARKER, DownloadError, extract, fetch
from ddm.imagefolder import (_check_limit, _check_on_error, _check_resolution, _decode_errors,
                             _list_images, _load_folder, _read_image, image_folder_digest, image_folder_manifest)
from ddm.io import make_temp_dir

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Resource",
    "register_dataset",
    "default_root",
    "download_dataset",
    "image_folder_digest",
    "image_folder_manifest",
    "load_dataset",
    "load_digits_labels",
    "load_cifar10_labels",
    "to_model_range",
    "to_uint8",
    "DIGITS_TEST_SIZE",
    "DIGITS_SPLIT_SEED",
]

log = logging.getLogger(__name__)

ROOT_ENV = "DDM_DATA_ROOT"
DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0
_DEFAULT = object()  # "use the registry's checksum"


# --------------------------------------------------------------------------- value ranges
def to_model_range(u8: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float32 in [-1, 1]: ``u8.float() / 127.5 - 1``."""
    if not isinstance(u8, torch.Tensor) or u8.dtype != torch.uint8:
        got = u8.dtype if isinstance(u8, torch.Tensor) else type(u8).__name__
        raise TypeError(
            f"to_model_range expects a uint8 tensor (as load_dataset returns), got {got}; "
            f"for float images in [0, 1] use x * 2 - 1 instead"
        )
    return u8.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images ([-1, 1]) -> uint8: clamp, ``(x + 1) * 127.5``, round."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"to_uint8 expects a floating-point tensor in [-1, 1], got {got}")
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Resource:
    """One downloadable archive of a dataset.

    ``subdir``: where it is extracted, relative to the dataset folder ("" = the folder itself);
    ``content``: the top-level folder the archive contains (used to recognise an already
    extracted copy in a ``source`` folder).
    """

    filename: str | None
    url: str | None
    checksum: str | None
    subdir: str = ""
    content: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, its facts in one place: ``loader(root, split, **options)`` reads a split;
    ``channels`` (as the pipeline loads it; None: no ``presets`` dataset, e.g. a task's data) and
    ``label`` (its name in the report) reach params.yaml's checks and the tables through
    ``ddm.registry.snapshot``, its resolution is ``options["resolution"]``; ``folder_source``: the
    params.yaml ``source`` is the image folder it reads (``imagefolder`` and its variants)."""

    name: str
    description: str
    splits: tuple[str, ...]
    loader: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    resources: tuple[Resource, ...] = ()
    needs_source: bool = False
    channels: int | None = None
    label: str | None = None
    folder_source: bool = False

    def dir(self, root: Path) -> Path:
        return Path(root) / self.name


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to :data:`DATASETS` (a plug-in's own, ``ddm.plugins``); a name given twice is refused."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset '{spec.name}' is already registered")
    DATASETS[spec.name] = spec
    return spec


def default_root() -> Path:
    """``$DDM_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get(ROOT_ENV, "data")).expanduser()


# --------------------------------------------------------------------------- digits (scikit-learn)
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8), float 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    idx = {"train": np.sort(train_idx), "test": np.sort(test_idx)}
    for a in (images, labels, *idx.values()):
        a.setflags(write=False)
    return images, labels, idx


def _load_digits(root: Path | None, split: str, *, resolution: int = 8) -> torch.Tensor:
    resolution = _check_resolution(resolution)
    images, _, idx = _digits_arrays()
    x = torch.from_numpy(images[idx[split]].astype(np.float64) * (255.0 / 16.0))
    x = x.unsqueeze(1)  # (N, 1, 8, 8), 0..255 float
    if resolution != x.shape[-1]:
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
        )
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def load_digits_labels(split: str = "train") -> torch.Tensor:
    """Labels (int64, 0..9) of the ``digits`` split, in the order :func:`load_dataset` uses."""
    _check_split(DATASETS["digits"], split)
    _, labels, idx = _digits_arrays()
    return torch.from_numpy(labels[idx[split]].copy())


# --------------------------------------------------------------------------- cifar10
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
        f"ddm.data.download_dataset('cifar10', {str(root)!r}) (or pass download=True), or put "
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
    _maybe_download("cifar10", root, download, lambda: _cifar10_dir(root))
    images, _ = _cifar10_arrays(root, split)
    return torch.from_numpy(np.ascontiguousarray(images))


def load_cifar10_labels(root: Path | str | None, split: str = "train") -> torch.Tensor:
    """CIFAR-10 labels (int64, 0..9) in the order :func:`load_dataset` returns the images."""
    _check_split(DATASETS["cifar10"], split)
    _, labels = _cifar10_arrays(Path(root) if root is not None else default_root(), split)
    return torch.from_numpy(labels)


def _load_imagefolder(
    root: Path | None,
    split: str,
    *,
    resolution: int = 64,
    limit: int | None = None,
    on_error: str = "skip",
) -> torch.Tensor:
    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<a folder of PNG/JPEG images>")
    return _load_folder(Path(root), resolution=resolution, limit=limit, on_error=on_error)


def _require_dir(path: Path, name: str, root: Path) -> Path:
    if not path.is_dir():
        spec = DATASETS[name]
        how = (
            f"download_dataset({name!r}, {str(root)!r}, source=<a folder or archive of images>)"
            if spec.needs_source
            else f"download_dataset({name!r}, {str(root)!r}) (or pass download=True)"
        )
        raise FileNotFoundError(f"dataset {name!r} not found at {path}; run ddm.data.{how}")
    return path


def _load_celebahq(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
) -> torch.Tensor:
    folder = _require_dir(DATASETS["celebahq256"].dir(root), "celebahq256", root)
    return _load_folder(folder, resolution=resolution, limit=limit, on_error=on_error)


def _load_div2k(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
    resize: bool = False,
    download: bool = False,
) -> torch.Tensor:
    folder = DATASETS["div2k"].dir(root) / split
    _maybe_download("div2k", root, download, lambda: _require_dir(folder, "div2k", root))
    _require_dir(folder, "div2k", root)
    return _load_folder(folder, resolution=resolution, limit=limit, on_error=on_error, resize=resize)


def _find_dir(base: Path, suffix: str) -> Path | None:
    hits = sorted(
        p for p in base.rglob(f"*{suffix}") if p.is_dir() and not p.name.startswith(".")
    )
    return hits[0] if hits else None


def _load_duts(
    root: Path,
    split: str,
    *,
    resolution: int = 256,
    limit: int | None = None,
    on_error: str = "skip",
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    resolution, limit, on_error = _check_resolution(resolution), _check_limit(limit), _check_on_error(on_error)
    base = DATASETS["duts"].dir(root) / split
    _maybe_download("duts", root, download, lambda: _require_dir(base, "duts", root))
    _require_dir(base, "duts", root)
    img_dir, mask_dir = _find_dir(base, "-Image"), _find_dir(base, "-Mask")
    if img_dir is None or mask_dir is None:
        raise FileNotFoundError(
            f"{base} must contain a '*-Image' and a '*-Mask' folder (as DUTS-TR.zip / "
            f"DUTS-TE.zip do); found image folder {img_dir}, mask folder {mask_dir}"
        )
    images = _list_images(img_dir)
    masks = {p.stem: p for p in _list_images(mask_dir)}
    unpaired = [p.name for p in images if p.stem not in masks]
    if unpaired:
        raise ValueError(
            f"{len(unpaired)} DUTS image(s) in {img_dir} have no mask in {mask_dir} (by file "
            f"stem), e.g. {', '.join(unpaired[:5])}; restore the masks or remove those images"
        )
    errors = _decode_errors()
    xs, ms, bad = [], [], []
    for p in images:
        if limit is not None and len(xs) >= limit:
            break
        try:
            x = _read_image(p, resolution, mode="RGB", resample=Image.BICUBIC, resize=True)
            m = _read_image(masks[p.stem], resolution, mode="L", resample=Image.BILINEAR, resize=True)
        except errors as e:
            if on_error == "raise":
                raise ValueError(f"cannot decode DUTS pair {p.stem!r}: {e}") from e
            bad.append(p.stem)
            continue
        if x.shape[1:] != m.shape[1:]:
            raise ValueError(f"DUTS image and mask {p.stem!r} differ in shape after resizing")
        xs.append(x)
        ms.append(m)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable DUTS pair(s) under {base}: {bad[:5]}", UserWarning, stacklevel=3)
    if not xs:
        raise FileNotFoundError(f"no readable DUTS image/mask pair under {base}")
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms))


# --------------------------------------------------------------------------- the registry
DIV2K_BASE = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
DUTS_BASE = "http://saliencydetection.net/duts/download/"

DATASETS: dict[str, DatasetSpec] = {}
for _spec in (
    DatasetSpec("digits", "scikit-learn handwritten digits, 8x8 grey, embedded (no download)", ("train", "test"),
                _load_digits, {"resolution": 8}, channels=1, label="Digits (8$\\times$8)"),
    DatasetSpec("cifar10", "CIFAR-10, 32x32 RGB, official python-version tarball", ("train", "test"), _load_cifar10,
                {"download": False},
                (Resource(Path(CIFAR10_URL).name, CIFAR10_URL, f"sha256:{CIFAR10_SHA256}", "", CIFAR10_FOLDER),),
                channels=3, label="CIFAR-10"),
    DatasetSpec("celebahq256", "CelebA-HQ at 256x256; no stable public URL: supply it with download_dataset(source=...)",
                ("train",), _load_celebahq, {"resolution": 256, "limit": None, "on_error": "skip"},
                (Resource(None, None, None, "", None),), needs_source=True, channels=3, label="CelebA-HQ-256"),
    DatasetSpec("div2k", "DIV2K high-resolution images (train: 800, test = official validation: 100)",
                ("train", "test"), _load_div2k,
                {"resolution": 256, "limit": None, "on_error": "skip", "resize": False, "download": False},
                (Resource("DIV2K_train_HR.zip", DIV2K_BASE + "DIV2K_train_HR.zip", None, "train", "DIV2K_train_HR"),
                 Resource("DIV2K_valid_HR.zip", DIV2K_BASE + "DIV2K_valid_HR.zip", None, "test", "DIV2K_valid_HR"))),
    DatasetSpec("duts", "DUTS saliency detection: (images, masks); train = DUTS-TR, test = DUTS-TE", ("train", "test"),
                _load_duts, {"resolution": 256, "limit": None, "on_error": "skip", "download": False},
                (Resource("DUTS-TR.zip", DUTS_BASE + "DUTS-TR.zip", None, "train", "DUTS-TR"),
                 Resource("DUTS-TE.zip", DUTS_BASE + "DUTS-TE.zip", None, "test", "DUTS-TE"))),
    DatasetSpec("imagefolder", "any folder of PNG/JPEG images (root = the folder)", ("train",), _load_imagefolder,
                {"resolution": 64, "limit": None, "on_error": "skip"}, channels=3, folder_source=True),
):
    register_dataset(_spec)


def _get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(
            f"unknown split {split!r} for dataset {spec.name!r}; valid splits: {', '.join(spec.splits)}"
        )


def load_dataset(
    name: str, root: Path | str | None = None, split: str = "train", **options: Any
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Images of ``split`` of dataset ``name`` as a uint8 tensor (N, C, H, W).

    ``root``: the data folder (default ``$DDM_DATA_ROOT`` or ``./data``; ignored by ``digits``;
    for ``imagefolder`` the image folder itself). ``options``: per dataset, see ``DATASETS[name]
    .options`` for the valid ones and their defaults (``download=True`` fetches a missing
    dataset first). ``duts`` returns ``(images, masks)``.
    """
    spec = _get_spec(name)
    _check_split(spec, split)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid options "
            f"(with defaults): {valid}"
        )
    if spec.folder_source:
        path = Path(root).expanduser() if root is not None else None
    else:
        path = Path(root).expanduser() if root is not None else default_root()
    return spec.loader(path, split, **options)


def _maybe_download(name: str, root: Path, download: bool, probe: Callable[[], Any]) -> None:
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
    spec = _get_spec(name)
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
        if local is not None and local.is_dir():
            by_name = local / res.filename if res.filename else None
            extracted = local / res.content if res.content else None
            if by_name is not None and by_name.is_file():
                url = str(by_name)
            elif extracted is not None and extracted.is_dir():
                _copy_tree_atomic(extracted, dest_dir / res.content)
                (dest_dir / MARKER).touch()
                continue
            elif single:
                _copy_tree_atomic(local, dest_dir)
                continue
            else:
                raise DownloadError(
                    f"source folder {local} holds neither {res.filename} nor an extracted "
                    f"{res.content}/ folder for dataset {name!r}"
                )
        elif source is None:
            url = res.url
        elif source.endswith("/"):
            url = source + res.filename
        else:
            url = source
        filename = res.filename or Path(urllib.parse.urlparse(url).path).name
        if not filename:
            raise ValueError(f"cannot tell an archive file name from source {source!r}")
        archive = fetch(url, root / "downloads" / filename, expected, retries=retries, timeout=timeout)
        extract(archive, dest_dir)
    return target
