"""Checkpoint files of a training run: their paths, reading and checking them
(:func:`load_checkpoint`, :func:`ema_model`, :func:`snapshots`), what a resuming run must agree
with (:func:`check_state_dict`, :func:`compare_dicts`), the RNG states they carry and the errors
they raise. Plain types and tensors only, so ``torch.load(weights_only=True)`` reads them
(docs/training.md, "Checkpoints and resume")."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["CKPT_FORMAT", "CheckpointError", "CheckpointMismatchError", "checkpoint_path", "list_checkpoints",
           "latest_checkpoint", "load_checkpoint", "ema_model", "snapshots", "check_state_dict", "check_plain",
           "compare_dicts", "rng_state", "set_rng_state", "seed_globals"]

#: Format tag stored in every checkpoint.
CKPT_FORMAT = "ddm.training/1"

_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")
_CKPT_KEYS = ("format", "step", "model", "ema", "optimizer", "scheduler", "data", "rng",
              "config", "model_meta", "metrics_window")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or is not a checkpoint of this engine."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint that does not fit the model / config / data of the resuming run."""


# ---------------------------------------------------------------------------------------------
# RNG states (plain types / tensors only, so weights_only loading works)
# ---------------------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict:
    """The global RNG states of this process (torch CPU, CUDA of ``device``, numpy, Python)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    st = {
        "torch_cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal],
                   "gauss_next": gauss_next},
    }
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    """Restore the states :func:`rng_state` returned."""
    torch.set_rng_state(st["torch_cpu"])
    if device.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], device)
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def seed_globals(seed: int) -> None:
    """Seed the global torch, numpy and Python RNGs (the model's own randomness, e.g. dropout)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------
def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """``out_dir/ckpt-{step:08d}.pt``."""
    return Path(out_dir) / f"ckpt-{int(step):08d}.pt"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the checkpoints in ``out_dir``, oldest first (none if no folder)."""
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the largest step in ``out_dir`` (None if there is none)."""
    found = list_checkpoints(Path(out_dir))
    return found[-1][1] if found else None


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, *,
                    map_location: Any = "cpu") -> dict:
    """Read and validate a checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated/corrupt or
    not a checkpoint of this engine.  With ``model``, every tensor name and shape is checked
    against ``model.state_dict()`` (:class:`CheckpointMismatchError` naming the key and both
    shapes) and the (non-EMA) weights are loaded into ``model``.  Returns the checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed type, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); "
            f"delete it to resume from the previous checkpoint") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a {CKPT_FORMAT} checkpoint (format: {got!r})")
    missing = [k for k in _CKPT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    if model is not None:
        check_state_dict(ckpt["model"], model.state_dict(), path, "model")
        model.load_state_dict(ckpt["model"])
    return ckpt


def ema_model(ckpt_path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load the EMA weights of a checkpoint into ``model`` (shapes checked); eval mode."""
    ckpt = load_checkpoint(ckpt_path)
    check_state_dict(ckpt["ema"], model.state_dict(), Path(ckpt_path), "ema")
    model.load_state_dict(ckpt["ema"])
    return model.eval()


def snapshots(out_dir: str | os.PathLike, model: nn.Module) -> list[dict]:
    """The EMA weights of every checkpoint kept in ``out_dir``, oldest first, as
    ``[{"step": step, "ema": state_dict}]`` (shapes checked against ``model``): what a model file
    keeps for the FID-against-training-step figure."""
    out = []
    for step, path in list_checkpoints(Path(out_dir)):
        ema = load_checkpoint(path)["ema"]
        check_state_dict(ema, model.state_dict(), path, "ema")
        out.append({"step": step, "ema": {k: v.detach().cpu() for k, v in ema.items()}})
    return out


def check_state_dict(saved: dict, current: dict, path: Path, what: str) -> None:
    """:class:`CheckpointMismatchError` naming the first tensor of ``what`` (model, ema) that is
    missing on one side or differs in shape between ``saved`` (of ``path``) and ``current``."""
    for k in current:
        if k not in saved:
            raise CheckpointMismatchError(
                f"{path}: {what} tensor {k!r} exists in this model but not in the checkpoint")
    for k, v in saved.items():
        if k not in current:
            raise CheckpointMismatchError(
                f"{path}: {what} tensor {k!r} is in the checkpoint but not in this model")
        a, b = tuple(v.shape), tuple(current[k].shape)
        if a != b:
            raise CheckpointMismatchError(
                f"{path}: {what} tensor {k!r} has shape {a} in the checkpoint but {b} in "
                f"this model")


def _plain(v):
    """Normalise for comparison: tuples -> lists, recursively."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def check_plain(v, where: str) -> None:
    """TypeError naming ``where`` unless ``v`` holds only plain values (what a checkpoint may hold)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            check_plain(x, f"{where}[{i}]")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}")
            check_plain(x, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} must hold only plain values (None/bool/int/float/str/list/"
                    f"tuple/dict); got {type(v).__name__}")


_ABSENT = object()


def compare_dicts(saved: dict, now: dict, path: Path, name: str, allowed=frozenset()) -> None:
    """:class:`CheckpointMismatchError` naming the first key (not in ``allowed``) whose value
    differs between the checkpoint's ``saved`` and this run's ``now`` (tuples equal lists)."""
    saved, now = _plain(saved), _plain(now)
    for k in sorted(set(saved) | set(now), key=str):
        if k in allowed:
            continue
        a, b = saved.get(k, _ABSENT), now.get(k, _ABSENT)
        if a != b:
            fa = "<absent>" if a is _ABSENT else repr(a)
            fb = "<absent>" if b is _ABSENT else repr(b)
            extra = (f"; only {sorted(allowed)} may change on resume" if allowed else "")
            raise CheckpointMismatchError(
                f"cannot resume from {path}: {name}[{k!r}] is {fa} in the checkpoint but {fb} "
                f"in this run{extra}")

