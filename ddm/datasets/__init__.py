"""Datasets by name, as uint8 image tensors of shape (N, C, H, W): one module per source, each
holding its reader and its :class:`DatasetSpec` (channels, resolution option, label, download
resources) and registering it, as torchvision's datasets do.

``load_dataset(name, root, split, **options)`` returns the images of one split as a uint8
tensor (``duts`` returns an ``(images, masks)`` pair). The models work in [-1, 1]:
:func:`to_model_range` maps uint8 to that range (``u8 / 127.5 - 1``) and :func:`to_uint8`
maps back (round, clamp). Everything is returned in memory: a split costs ``N*C*H*W`` bytes
(CIFAR-10 train: 150 MiB; CelebA-HQ at 256x256: 192 KiB an image, 5.6 GiB for all 30,000; use
``limit=`` to load fewer).

Modules (registered in this order in :data:`DATASETS`; a plug-in's own follow, ``ddm.plugins``):

* ``ddm.datasets.base``: the registry (:class:`DatasetSpec`, :class:`Resource`,
  :func:`register_dataset`), :func:`default_root`, :func:`load_dataset`, the value ranges;
* ``ddm.datasets.install``: :func:`download_dataset` (archives and local ``source`` folders),
  :func:`prepare_dataset` (a params.yaml block's training images: ``ddm prepare``);
* ``ddm.datasets.digits``: ``digits``, scikit-learn's 8x8 digits (embedded; :func:`load_digits_labels`);
* ``ddm.datasets.cifar10``: ``cifar10``, the official python batches (:func:`load_cifar10_labels`);
* ``ddm.datasets.celebahq``: ``celebahq256``, a folder of CelebA-HQ images supplied by ``source=``;
* ``ddm.datasets.div2k``: ``div2k``, DIV2K HR images (train / official validation);
* ``ddm.datasets.duts``: ``duts``, DUTS saliency (image, mask) pairs;
* ``ddm.datasets.folder``: ``imagefolder``, any folder of PNG/JPEG images (:mod:`ddm.imagefolder`).

Data location: ``root`` (or ``$DDM_DATA_ROOT``, default ``./data``) holds ``downloads/`` (the
archives, plus ``<archive>.sha256`` where no checksum is published) and one folder per
dataset (``cifar10/``, ``celebahq256/``, ``div2k/{train,test}/``, ``duts/{train,test}/``).

Import from here (``from ddm.datasets import load_dataset``): importing the package registers
every source, so :data:`DATASETS` is complete whichever name is imported.
"""

from __future__ import annotations

from ddm.datasets import digits, cifar10, celebahq, div2k, duts, folder
from ddm.datasets.base import (DATASETS, DatasetSpec, ModelRangeImages, Resource, default_root, load_dataset,
                               register_dataset, to_model_range, to_uint8)
from ddm.datasets.cifar10 import load_cifar10_labels
from ddm.datasets.digits import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, load_digits_labels
from ddm.datasets.install import download_dataset, prepare_dataset
from ddm.imagefolder import image_folder_digest, image_folder_manifest

#: The source modules, in the order they register their datasets (the order of :data:`DATASETS`).
SOURCES = (digits, cifar10, celebahq, div2k, duts, folder)

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Resource",
    "register_dataset",
    "default_root",
    "download_dataset",
    "prepare_dataset",
    "image_folder_digest",
    "image_folder_manifest",
    "load_dataset",
    "load_digits_labels",
    "load_cifar10_labels",
    "to_model_range",
    "ModelRangeImages",
    "to_uint8",
    "DIGITS_TEST_SIZE",
    "DIGITS_SPLIT_SEED",
]
