"""What every dataset of :mod:`ddm.datasets` shares: the value ranges (:func:`to_model_range`,
:func:`to_uint8`), the registry (:class:`DatasetSpec`, :class:`Resource`, :data:`DATASETS`,
:func:`register_dataset`), the data location (:func:`default_root`) and :func:`load_dataset`,
which checks a split and its options against the dataset's spec and calls its reader.

The models work in [-1, 1]: :func:`to_model_range` maps uint8 to that range (``u8 / 127.5 - 1``)
and :func:`to_uint8` maps back (round, clamp).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["DATASETS", "DatasetSpec", "Resource", "register_dataset", "default_root", "load_dataset",
           "to_model_range", "to_uint8", "ModelRangeImages"]

ROOT_ENV = "DDM_DATA_ROOT"


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


class ModelRangeImages:
    """uint8 images (N, C, H, W) read in the model range one batch at a time: ``images[idx]`` is
    ``to_model_range(u8)[idx]`` exactly (the same elementwise arithmetic), while memory holds the
    uint8 tensor, a quarter of a float32 copy (CIFAR-10's 50,000 images: 154 MB instead of 614 MB;
    CelebA-HQ at 256²: 5.9 GB instead of 23.6 GB), or, for a memory-mapped file
    (``ddm.contracts.load_images(..., mmap=True)``), no private copy at all: its pages are the
    page cache's, shared by the processes of a node and dropped under memory pressure. What
    ``ddm.training.Trainer`` reads of its data: ``shape``, ``dtype``, ``device`` and ``[idx]``."""

    def __init__(self, u8: torch.Tensor):
        if not isinstance(u8, torch.Tensor) or u8.dtype != torch.uint8 or u8.dim() != 4:
            got = f"{u8.dtype} {tuple(u8.shape)}" if isinstance(u8, torch.Tensor) else type(u8).__name__
            raise TypeError(f"ModelRangeImages expects uint8 images (N, C, H, W), got {got}")
        self.u8 = u8
        self.shape, self.dtype, self.device = u8.shape, torch.float32, u8.device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        return to_model_range(self.u8[idx])


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



#: Every registered dataset by name, in registration order (``ddm.datasets`` registers its own
#: sources in the order digits, cifar10, celebahq256, div2k, duts, imagefolder; a plug-in's follow).
DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to :data:`DATASETS` (a plug-in's own, ``ddm.plugins``); a name given twice is refused."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset '{spec.name}' is already registered")
    DATASETS[spec.name] = spec
    return spec


def default_root() -> Path:
    """``$DDM_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get(ROOT_ENV, "data")).expanduser()



def get_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; a ValueError naming the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def check_split(spec: DatasetSpec, split: str) -> None:
    """A ValueError naming the valid splits unless ``split`` is one of ``spec``'s."""
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
    spec = get_spec(name)
    check_split(spec, split)
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



def require_dir(path: Path, name: str, root: Path) -> Path:
    """``path`` if it is a folder, else a FileNotFoundError naming the ``download_dataset`` call that makes it."""
    if not path.is_dir():
        spec = DATASETS[name]
        how = (
            f"download_dataset({name!r}, {str(root)!r}, source=<a folder or archive of images>)"
            if spec.needs_source
            else f"download_dataset({name!r}, {str(root)!r}) (or pass download=True)"
        )
        raise FileNotFoundError(f"dataset {name!r} not found at {path}; run ddm.datasets.{how}")
    return path

