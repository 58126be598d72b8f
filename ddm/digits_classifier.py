"""The digits classifier: the FID feature extractor ``"digits-classifier"`` of the CPU-sized digits
experiments (``ddm.metrics``; FID is the metric of the paper's Table 1, §5.1, there on Inception's
features).

:class:`DigitsClassifier` is a small CNN for the 8x8 scikit-learn digits; its features are the
64-d penultimate layer (taken before its ReLU, so the feature covariance has full rank). An FID
computed with it is *not* comparable to an Inception FID.

* :func:`train_digits_classifier` trains it on the digits train split (CPU, one thread,
  deterministic for a seed; seconds) and writes the checkpoint (``ddm extractor``);
  :func:`load_digits_classifier` reads it back, its checksum verified. A missing checkpoint is a
  ``ddm.io.MissingWeightsError`` that says how to write it.
* :class:`DigitsClassifierFeatureExtractor` is its torch-fidelity feature extractor, registered
  under :data:`DIGITS_CLASSIFIER` by ``ddm.extractors`` (as a plug-in's is). It
  runs in float64, so that features (and FID) do not depend on batch composition.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ddm.io import REBUILD, InputError, MissingWeightsError, load_torch, save_torch

__all__ = ["DIGITS_CLASSIFIER", "DigitsClassifier", "DigitsClassifierFeatureExtractor", "train_digits_classifier",
           "load_digits_classifier"]

#: The extractor's name (params.yaml ``fid: extractor:``, torch-fidelity's registry, ``ddm.extractors``).
DIGITS_CLASSIFIER = "digits-classifier"
_DIGITS_ARCH = "ddm-digits-cnn-v1"


def missing_digits_message(weights_path) -> str:
    """The refusal for a missing digits-classifier weights file: the path and the command that writes it."""
    return (
        f"digits-classifier weights not found: {weights_path}\n"
        f"  the {DIGITS_CLASSIFIER!r} FID extractor needs the checkpoint written by\n"
        f"    python -c \"from ddm.digits_classifier import train_digits_classifier; "
        f"train_digits_classifier('{weights_path or 'digits_classifier.pt'}')\"\n"
        f"  (CPU, seconds), passed as weights_path / feature_extractor_weights_path."
    )


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 grey digits. ``embed`` gives the 64-d penultimate layer (taken before
    its ReLU, so the feature covariance has full rank); ``forward`` gives the 10 logits.

    Input: float tensor (B, 1, 8, 8) with pixel values in [0, 255].
    """

    FEATURE_DIM = 64

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 2 * 2, self.FEATURE_DIM)
        self.fc2 = nn.Linear(self.FEATURE_DIM, 10)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x / 127.5 - 1.0
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 4x4
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)  # 2x2
        return self.fc1(x.flatten(1))

    def logits_from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_embedding(self.embed(x))


def _default_digits_split(split: str):
    # Lazy: ddm.datasets is written alongside this module.
    from ddm.datasets import load_dataset, load_digits_labels

    return load_dataset("digits", None, split), load_digits_labels(split)


def _as_digit_batch(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.dtype != torch.uint8:
        raise TypeError(f"digits images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (8, 8):
        raise ValueError(f"digits images must be (N,1,8,8) uint8, got {tuple(x.shape)}")
    return x.float()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


def train_digits_classifier(
    out_path: str | os.PathLike,
    seed: int = 0,
    epochs: int = 30,
    *,
    train: tuple | None = None,
    test: tuple | None = None,
    batch_size: int = 64,
    lr: float = 3e-3,
    min_accuracy: float = 0.95,
) -> float:
    """Train the digits classifier (CPU, deterministic for a seed) and save it to ``out_path``.

    ``train`` / ``test`` are ``(images uint8 (N,1,8,8), labels (N,))``; by default they are the
    digits train and test splits of ``ddm.datasets``. AdamW with a one-cycle (cosine) learning rate,
    random +-1 pixel shifts as augmentation; trained on one CPU thread (restored afterwards). The checkpoint (written atomically) holds the state dict, the test
    accuracy and the training settings. Returns the test accuracy; raises RuntimeError if it is
    below ``min_accuracy`` (the checkpoint is then not written).
    """
    if train is None:
        train = _default_digits_split("train")
    if test is None:
        test = _default_digits_split("test")
    xtr, ytr = _as_digit_batch(train[0]), torch.as_tensor(np.asarray(train[1]), dtype=torch.long)
    xte, yte = _as_digit_batch(test[0]), torch.as_tensor(np.asarray(test[1]), dtype=torch.long)

    threads = torch.get_num_threads()
    # One thread: the same result run to run whatever the core count (and fastest for this tiny net).
    torch.set_num_threads(1)
    try:
        model, train_acc, test_acc = _train_digits(xtr, ytr, xte, yte, seed, epochs, batch_size, lr)
    finally:
        torch.set_num_threads(threads)
    if test_acc < min_accuracy:
        raise RuntimeError(f"digits classifier test accuracy {test_acc:.4f} < {min_accuracy}")
    ckpt = {
        "arch": _DIGITS_ARCH,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "num_train": int(len(xtr)),
        "num_test": int(len(xte)),
        "seed": int(seed),
        "epochs": int(epochs),
        "feature_dim": DigitsClassifier.FEATURE_DIM,
    }
    save_torch(ckpt, Path(out_path))  # atomically, with its checksum (ddm.io)
    return test_acc


def _train_digits(xtr, ytr, xte, yte, seed, epochs, batch_size, lr):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = DigitsClassifier()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(len(xtr) / batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
        # All 3x3 one-pixel shifts of every image: (N, 3, 3, 8, 8).
        windows = F.pad(xtr, (1, 1, 1, 1))[:, 0].unfold(1, 8, 1).unfold(2, 8, 1)
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(xtr), generator=gen)
            shifts = torch.randint(0, 3, (len(xtr), 2), generator=gen)
            for i in range(0, len(xtr), batch_size):
                idx = perm[i : i + batch_size]
                xb = windows[idx, shifts[idx, 0], shifts[idx, 1]][:, None]
                loss = F.cross_entropy(model(xb), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model, _accuracy(model, xtr, ytr), _accuracy(model, xte, yte)


def load_digits_classifier(weights_path: str | os.PathLike) -> tuple[DigitsClassifier, dict]:
    """Load a checkpoint written by :func:`train_digits_classifier`: (model in eval mode, metadata)."""
    if weights_path is None or not Path(weights_path).is_file():
        raise MissingWeightsError(missing_digits_message(weights_path))
    try:  # its checksum verified; it is rebuilt with the extractor.json beside it
        ckpt = load_torch(weights_path, "digits classifier file", "ddm extractor")
    except InputError as e:
        raise InputError(str(e).replace(REBUILD, f"delete it and {Path(weights_path).with_name('extractor.json')} "
                                                 "and rerun: `snakemake all` rebuilds them")) from None
    if not isinstance(ckpt, dict) or ckpt.get("arch") != _DIGITS_ARCH:
        raise ValueError(f"{weights_path} is not a {_DIGITS_ARCH} checkpoint")
    model = DigitsClassifier()
    model.load_state_dict(ckpt["state_dict"])
    model.eval().requires_grad_(False)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


class DigitsClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor ``"digits-classifier"``.

    Built by torch-fidelity as ``cls(name, features_list, feature_extractor_weights_path=...,
    **kwargs)``; the weights path is the checkpoint of :func:`train_digits_classifier` (required).
    Input: uint8 (B, 3, 8, 8) as torch-fidelity supplies it; channel 0 is the grey image. Runs in
    float64 so that features (and FID) do not depend on batch composition. Features: ``"64"``
    (penultimate layer, used for FID/KID/PRC) and ``"logits"``.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        model, meta = load_digits_classifier(feature_extractor_weights_path)
        self.model = model.double()
        self.meta = meta
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "64", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 3, 8, 8]) * 255).to(torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8):
            raise ValueError("digits-classifier expects torch.uint8 images")
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (8, 8):
            raise ValueError(f"digits-classifier expects Bx3x8x8 input, got {tuple(x.shape)}")
        h = self.model.embed(x[:, :1].to(torch.float64))
        out = {"64": h}
        if "logits" in self.features_list:
            out["logits"] = self.model.logits_from_embedding(h)
        return tuple(out[a] for a in self.features_list)

