"""The FID feature extractors by their params.yaml name (``fid: extractor:``), each registered the
one way a plug-in registers one, :func:`register_extractor`: its torch-fidelity class, the feature
layer FID uses, its label, and where its weights file comes from (:class:`Weights`). Nothing here or
in ``ddm.metrics`` branches on an extractor's name.

The package's two:

``"inception-v3-compat"``
    torch-fidelity's own InceptionV3 (the "FID" of the literature; CIFAR-10, CelebA-HQ). Its
    weights come from ``fid: weights:`` or from the torch hub cache,
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``. When neither
    exists a ``ddm.io.MissingWeightsError`` names the file, the URL torch-fidelity fetches it from
    and the command that fetches it on a connected machine (:func:`fetch_inception_weights`).
    There is never a quiet fallback to another extractor.

``"digits-classifier"``
    A small CNN trained on the 8x8 scikit-learn digits (``ddm.digits_classifier``); its features
    are the 64-d penultimate layer. ``ddm extractor`` trains it (its :class:`Weights` ``make``).
    It is the extractor for the CPU-sized digits experiments; an FID computed with it is *not*
    comparable to an Inception FID.

An extractor whose weights have neither a default place nor a maker reads the file ``fid:
weights:`` names; params validation (``ddm.validation``) refuses a preset whose file is not there,
in one line, before any job starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ddm.digits_classifier import (DIGITS_CLASSIFIER, DigitsClassifierFeatureExtractor, missing_digits_message,
                                   train_digits_classifier)
from ddm.io import MissingWeightsError, file_checksum
from ddm.names import EXTRACTORS

__all__ = ["Weights", "WEIGHTS", "register_extractor", "resolve_weights", "INCEPTION", "INCEPTION_WEIGHTS_URL",
           "INCEPTION_WEIGHTS_FILENAME", "default_inception_weights_path", "fetch_inception_weights"]


@dataclass(frozen=True)
class Weights:
    """Where an FID extractor's weights file comes from.

    ``default()``: the file to use when params.yaml names none (None: ``fid: weights:`` must name
    one); ``make(path, seed)``: writes the file at ``path`` (``ddm extractor``) and returns what
    the extractor file records beside it; ``file_name``: the name ``make`` writes under; ``missing(path)``:
    the message for a file that is not there (default: one line naming ``fid: weights``)."""

    default: Callable[[], Path] | None = None
    make: Callable[[Path, int], dict[str, Any]] | None = None
    file_name: str | None = None
    missing: Callable[[Any], str] | None = None

    def __post_init__(self):
        if self.make and not self.file_name:
            raise TypeError("Weights(make=...) needs file_name: the name of the file make writes")

    @property
    def source(self) -> str:
        """``"made"`` (``ddm extractor`` makes it), ``"default"`` (params.yaml may name it, else the
        default place) or ``"params"`` (params.yaml must name it): ``ddm.names.EXTRACTORS``' ``weights``."""
        return "made" if self.make else "default" if self.default else "params"

    def resolve(self, extractor: str, path: str | os.PathLike | None) -> Path:
        """The weights file to use; :class:`MissingWeightsError` if it is not there."""
        file = Path(path) if path is not None else self.default() if self.default else None
        if file is None or not file.is_file():
            raise MissingWeightsError(self.missing(file) if self.missing else
                                      f"FID extractor {extractor!r}: weights file not found: {path} (set fid: weights "
                                      "in params.yaml to its path)")
        return file


#: FID extractor name -> where its weights come from.
WEIGHTS: dict[str, Weights] = {}


def register_extractor(name: str, layer: str, *, label: str | None = None, weights: Weights = Weights()):
    """Class decorator: a torch-fidelity feature extractor (``FeatureExtractorBase``; built as
    ``cls(name, features_list, feature_extractor_weights_path=...)``) as the FID extractor ``name``
    of params.yaml, FID on its feature ``layer``; its weights as ``weights`` says (default: the file
    ``fid: weights:`` names). A name is registered once."""
    def add(cls):
        EXTRACTORS.register(name, label=label, weights=weights.source)(layer)  # refuses a name given twice
        if FEATURE_EXTRACTORS_REGISTRY.get(name) is not cls:  # torch-fidelity's own Inception is there already
            torch_fidelity.register_feature_extractor(name, cls)
        WEIGHTS[name] = weights
        return cls
    return add


def resolve_weights(extractor: str, weights_path: str | os.PathLike | None) -> Path:
    """The weights file an extractor will use; raises :class:`MissingWeightsError` if absent."""
    if extractor not in WEIGHTS:
        raise ValueError(f"unknown FID extractor {extractor!r}; known: {', '.join(map(repr, WEIGHTS))}")
    return WEIGHTS[extractor].resolve(extractor, weights_path)


# -- Inception --------------------------------------------------------------------------------------
INCEPTION = "inception-v3-compat"
INCEPTION_WEIGHTS_URL = URL_INCEPTION_V3
INCEPTION_WEIGHTS_FILENAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]


def default_inception_weights_path() -> Path:
    """Where torch-fidelity (through torch.hub) looks for its Inception weights:
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def _missing_inception_message(tried: Path) -> str:
    dest = default_inception_weights_path()
    return (
        f"Inception weights for FID (extractor {INCEPTION!r}) not found: {tried}\n"
        f"  file: {INCEPTION_WEIGHTS_FILENAME} (about 100 MB; the 8 hex digits in its name are the "
        f"hash prefix torch.hub uses; reference statistics record the full sha256 of the file used)\n"
        f"  torch-fidelity downloads it from: {INCEPTION_WEIGHTS_URL}\n"
        f"  on a connected machine, fetch it with:\n"
        f"    python -c \"from ddm.metrics import fetch_inception_weights; "
        f"fetch_inception_weights('{dest}')\"\n"
        f"  or: curl -L -o {dest} {INCEPTION_WEIGHTS_URL}\n"
        f"  then copy it to {dest} (the torch hub cache; set $TORCH_HOME to move it) or pass "
        f"weights_path=... explicitly. No other extractor is substituted."
    )


def fetch_inception_weights(
    dest: str | os.PathLike | None = None, *, url: str = INCEPTION_WEIGHTS_URL, progress: bool = True
) -> Path:
    """Download torch-fidelity's Inception weights to ``dest`` (default: the torch hub cache).

    Uses the same download as torch-fidelity (``torch.hub.load_state_dict_from_url`` on
    torch-fidelity's URL), only with an explicit destination; needs network access. An existing
    ``dest`` is not downloaded again. Checks that the file holds a state dict with Inception's
    1008-way ``fc`` layer, prints its sha256 and returns its path. ``url`` may be changed (e.g. a
    ``file://`` mirror).
    """
    dest = Path(dest) if dest is not None else default_inception_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    existed = dest.exists()
    state = torch.hub.load_state_dict_from_url(
        url, model_dir=str(dest.parent), file_name=dest.name, progress=progress, map_location="cpu"
    )
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (1008, 2048):
        if not existed:
            dest.unlink(missing_ok=True)  # never leave a wrong file where FID would pick it up
        raise ValueError(f"{dest} (from {url}) is not torch-fidelity's InceptionV3 state dict")
    print(f"{dest}  sha256={file_checksum(dest, memo=True)}")
    return dest


def _train_digits(path: Path, seed: int) -> dict[str, Any]:
    """The digits classifier trained (seconds, CPU) and written to ``path``; its test accuracy."""
    return {"test_accuracy": train_digits_classifier(path, seed=seed)}


# -- the package's two, registered as a plug-in registers one -----------------------------------------
register_extractor(INCEPTION, "2048", label="FID (InceptionV3)",
                   weights=Weights(default=default_inception_weights_path, missing=_missing_inception_message),
                   )(FeatureExtractorInceptionV3)
register_extractor(DIGITS_CLASSIFIER, "64", label="FID (digits classifier)",
                   weights=Weights(make=_train_digits, file_name="digits_classifier.pt", missing=missing_digits_message),
                   )(DigitsClassifierFeatureExtractor)
