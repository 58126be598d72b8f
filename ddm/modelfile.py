"""Model files and sample seeds: what ``ddm train`` writes and every later step reads.

A model file (format ``ddm.model/1``, :data:`FORMAT`) is one torch file holding a dict:

==============  ===============================================================================
format          ``"ddm.model/1"``
cfg             the resolved config it was trained with (``ddm.config.resolve``)
model_kwargs    the U-Net's constructor arguments (``ddm.experiment.model_kwargs``)
state_dict      the EMA weights (CPU tensors)
checkpoint      the trainer checkpoint they come from (a path, for the record)
snapshots       optional: the EMA weights of every kept checkpoint, ``[{"step", "ema"}, ...]``
                (``ddm.training.snapshots``; the convergence figure)
sha256          the digest of all the entries above (``ddm.digests.payload_digest``): written by
                ``ddm.io.save_torch``, verified (and dropped) by ``ddm.io.load_torch``, so a file
                changed after it was written is refused
==============  ===============================================================================

:func:`save_model` writes one (atomically), :func:`read_model` reads and checks one,
:func:`ddm.experiment.load_model` makes the experiment and the network of one. A file that is not a model file
is an ``ddm.io.InputError`` naming the file and ``ddm train``.

Seeds (:func:`sample_seeds`): FID repeat r draws its samples with the seeds
``SEED_BLOCK * (r + 1) + i``, so repeats are disjoint and every method sees the same seeds.

Only the standard library is imported at module level (torch inside the functions), so
``ddm.cli`` imports this module at start and ``ddm --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ddm.io import InputError, load_torch, save_torch

__all__ = ["FORMAT", "SEED_BLOCK", "model_blob", "save_model", "read_model", "sample_seeds"]

#: The ``format`` entry of a model file.
FORMAT = "ddm.model/1"
#: Seeds of one FID repeat come in blocks of this size (:func:`sample_seeds`).
SEED_BLOCK = 1_000_000
#: The entries every model file holds.
_REQUIRED = ("cfg", "model_kwargs", "state_dict")


def model_blob(exp, model, *, checkpoint: str | os.PathLike = "", snapshots: list[dict] | None = None) -> dict:
    """The dict a model file holds: ``exp``'s config and U-Net arguments (a
    ``ddm.experiment.Experiment``), ``model``'s weights on the CPU, the checkpoint they come from
    and, if given, the snapshots."""
    blob = {
        "format": FORMAT,
        "cfg": exp.cfg,
        "model_kwargs": exp.model_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "checkpoint": str(checkpoint),
    }
    if snapshots is not None:
        blob["snapshots"] = snapshots
    return blob


def save_model(path: str | os.PathLike, exp, model, *, checkpoint: str | os.PathLike = "",
               snapshots: list[dict] | None = None) -> Path:
    """Write a model file of ``model`` trained as ``exp`` says to ``path`` (atomically)."""
    return save_torch(model_blob(exp, model, checkpoint=checkpoint, snapshots=snapshots), path)


def read_model(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a model file, checked to be one (its format and entries)."""
    blob = load_torch(path, "model file", "ddm train")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not set(_REQUIRED) <= set(blob):
        raise InputError(f"model file {path} is not a model written by `ddm train` (format {FORMAT})")
    return blob


def sample_seeds(repeat: int, num_samples: int) -> list[int]:
    """Seeds of FID repeat ``repeat``: disjoint blocks, the same for every method."""
    if not 0 <= num_samples <= SEED_BLOCK:
        raise ValueError(f"num_samples must lie in 0..{SEED_BLOCK} (seed blocks of repeats are disjoint)")
    return [SEED_BLOCK * (repeat + 1) + i for i in range(num_samples)]
