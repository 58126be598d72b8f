"""Training engine, independent of what is trained (paper §B.3 "Training details", Table 6).

``Trainer(model, objective, data, cfg, out_dir).fit()`` (or the wrapper :func:`train`) runs
AdamW with the paper's polynomial learning-rate decay, gradient-norm clipping and an EMA of the
weights, with exact resume from checkpoints, preemption (SIGTERM/SIGUSR1 -> checkpoint -> exit
75), DistributedDataParallel under torchrun, and the GPU fast path of :class:`TrainConfig`
(channels_last, TF32, bf16 autocast, ``torch.compile``, pinned host memory).

The objective is a plug-in (:class:`Objective`): ``draw(x0, generator)`` returns all the
randomness of one step for the global batch (CPU tensors), ``objective(model, x0, noise)`` the
per-sample loss and named terms.  Every choice (schedule, EMA, loss scaling under DDP and
accumulation, checkpoint contents, what may change on resume) is explained in
docs/training.md.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ddm.io import TMP_PREFIX, atomic_write

__all__ = [
    "snapshots",
    "Objective", "TrainConfig", "Trainer", "lr_at", "train", "load_checkpoint", "ema_model",
    "init_distributed", "checkpoint_path", "latest_checkpoint",
    "TrainingInterrupted", "NonFiniteLoss", "CheckpointError", "CheckpointMismatchError",
    "PREEMPT_EXIT_CODE", "RESUMABLE_KEYS", "CKPT_FORMAT", "PRECISIONS",
]

log = logging.getLogger(__name__)

#: Valid values of ``TrainConfig.precision`` (no fp16: paper §B.3; bf16: CUDA autocast only).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: Exit status of a preempted run (EX_TEMPFAIL, sysexits.h): "temporary failure, retry".
PREEMPT_EXIT_CODE = 75
#: Config keys that may differ between a checkpoint and the run that resumes it: the length
#: of the run, bookkeeping, and options that change the speed (or float rounding) but not the
#: mathematics: accumulation, the fast path and the launch geometry.
RESUMABLE_KEYS = frozenset({"steps", "ckpt_every", "keep_last", "log_every", "accum",
                            "channels_last", "compile", "compile_backend", "pin_memory",
                            "gpus", "nodes"})
#: Format tag stored in every checkpoint.
CKPT_FORMAT = "ddm.training/1"

_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")
_METRICS = "metrics.csv"
_PREEMPT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))
_CKPT_KEYS = ("format", "step", "model", "ema", "optimizer", "scheduler", "data", "rng",
              "config", "model_meta", "metrics_window")
_F64 = torch.float64
_NONE = torch.iinfo(torch.int64).max  # "no bad step" in the all-reduced non-finite flags


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------
class Objective(Protocol):
    def draw(self, x0: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """All randomness of one step for a (global) batch x0, every tensor with leading dim B."""

    def __call__(self, model: nn.Module, x0: Tensor,
                 noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample loss (B,) and per-sample named terms {name: (B,)}."""


class TrainingInterrupted(SystemExit):
    """Raised after a preemption checkpoint; exits the process with PREEMPT_EXIT_CODE."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int | None = None):
        super().__init__(PREEMPT_EXIT_CODE)
        self.step = step
        self.checkpoint = checkpoint
        self.signum = signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name if self.signum is not None else "signal"
        return (f"training preempted by {name} after step {self.step}; checkpoint "
                f"{self.checkpoint}; exit code {PREEMPT_EXIT_CODE}")


class NonFiniteLoss(RuntimeError):
    """A NaN/inf loss (or gradient norm); ``.step`` is the first bad step (1-based)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or is not a checkpoint of this engine."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint that does not fit the model / config / data of the resuming run."""


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults follow paper Table 6 (CIFAR-10) and §B.3.

    Fast path (GPU; see docs/training.md): ``precision="bf16"`` (CUDA autocast; refused on
    CPU), ``tf32`` (CUDA matmuls and convolutions; no effect on CPU), ``channels_last``
    (model and 4-D inputs in NHWC; runs on CPU too), ``compile`` (``torch.compile`` of the
    network with ``compile_backend``; a failure at the first step falls back to eager with a
    warning), ``pin_memory`` (page-locked host batches, asynchronous copies; CUDA only).
    ``gpus`` x ``nodes`` is the launch geometry the pipeline asks for (workflow/rules/
    train.smk); the result does not depend on it.
    """

    steps: int
    batch_size: int  # global batch size, over all processes and micro-batches
    lr: float = 1e-4
    lr_min: float = 1e-5
    warmup: int = 0
    power: float = 0.96
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    accum: int = 1
    ema_decay: float = 0.9999
    ckpt_every: int = 1000
    keep_last: int = 3
    precision: str = "fp32"  # one of PRECISIONS ("bf16": CUDA autocast only)
    tf32: bool = False       # CUDA only
    seed: int = 0
    log_every: int = 50
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    pin_memory: bool = True  # CUDA only; no effect on CPU
    gpus: int = 1            # processes per node the launcher starts
    nodes: int = 1

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {what}")

        for k in ("steps", "batch_size", "accum", "ckpt_every", "keep_last", "log_every",
                  "gpus", "nodes"):
            v = getattr(self, k)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"{k} must be an integer >= 1, got {v!r}")
        need(isinstance(self.warmup, int) and not isinstance(self.warmup, bool)
             and self.warmup >= 0,
             f"warmup must be an integer >= 0, got {self.warmup!r}")
        need(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        need(0 <= self.lr_min <= self.lr, f"lr_min must be in [0, lr], got {self.lr_min!r}")
        need(self.power > 0, f"power must be > 0, got {self.power!r}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        self.betas = tuple(float(b) for b in self.betas)
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), got {self.betas!r}")
        need(self.grad_clip is None or self.grad_clip > 0,
             f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        need(0 <= self.ema_decay <= 1, f"ema_decay must be in [0, 1], got {self.ema_decay!r}")
        need(self.precision in PRECISIONS,
             f"precision must be {' or '.join(map(repr, PRECISIONS))} (fp16 is not offered, paper §B.3), "
             f"got {self.precision!r}")
        for k in ("tf32", "channels_last", "compile", "pin_memory"):
            need(isinstance(getattr(self, k), bool),
                 f"{k} must be true or false, got {getattr(self, k)!r}")
        need(isinstance(self.compile_backend, str) and self.compile_backend != "",
             f"compile_backend must name a torch.compile backend, got {self.compile_backend!r}")
        need(self.batch_size % self.accum == 0,
             f"batch_size {self.batch_size} is not divisible by accum {self.accum}")


# ---------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------
def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    frac = min(max(frac, 0.0), 1.0)
    return max((1.0 - frac) ** cfg.power, cfg.lr_min / cfg.lr)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of the update with 0-based index ``step`` (paper §B.3).

    ``lr0 * (step + 1) / warmup`` during warm-up, then ``max(lr0 * (1 - f) ** p, lr_min)``
    with ``f = (step - warmup) / (steps - warmup)`` clipped to [0, 1] (docs/training.md).
    """
    return cfg.lr * _lr_factor(int(step), cfg)


def _build_optimizer(model: nn.Module, cfg: TrainConfig):
    """AdamW over the trainable parameters (§B.3, Table 6); returns (optimizer, params)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    # foreach (the default on CUDA, not on the CPU): the same update as the per-tensor loop, 2-4% faster
    # steps of the embedded U-Net on the CPU. Not fused: with channels_last parameters and optimizer
    # state restored from a checkpoint (contiguous), torch's fused CPU kernel mixes up the elements
    # (benchmarks/adamw_kernels.py, benchmarks/RESULTS.md).
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True)
    return opt, params


def _build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, done: int = 0):
    """The §B.3 schedule as a LambdaLR positioned before update ``done`` (0: a fresh run).

    The scheduler holds no state of its own beyond the step, so a resumed run rebuilds it for
    *its* config (``steps`` may have changed) instead of loading the saved one: it sets
    exactly ``lr_at(done, cfg)``.
    """
    snapshot = copy.copy(cfg)

    def factor(step: int) -> float:  # a plain function: LambdaLR stores no state for it
        return _lr_factor(step, snapshot)

    if done > 0:
        for group in opt.param_groups:
            group.setdefault("initial_lr", cfg.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=factor, last_epoch=done - 1)


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------
class _EMA:
    """EMA of a model's state dict (§B.3): floating-point parameters averaged with one
    vectorised update per step (``torch.optim.swa_utils.get_ema_multi_avg_fn``), buffers
    copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.state: dict[str, Tensor] = {}
        seen: dict[int, str] = {}
        self._avg_dst, self._avg_src, self._cp_dst, self._cp_src = [], [], [], []
        for k, v in model.state_dict(keep_vars=True).items():
            if id(v) in seen:  # tied tensors stay tied
                self.state[k] = self.state[seen[id(v)]]
                continue
            seen[id(v)] = k
            e = v.detach().clone()
            self.state[k] = e
            if isinstance(v, nn.Parameter) and v.is_floating_point():
                self._avg_dst.append(e)
                self._avg_src.append(v)
            else:
                self._cp_dst.append(e)
                self._cp_src.append(v)
        self._lerp = get_ema_multi_avg_fn(self.decay)

    @torch.no_grad()
    def update(self) -> None:
        if self._avg_dst:
            self._lerp(self._avg_dst, self._avg_src, None)
        for dst, src in zip(self._cp_dst, self._cp_src):
            dst.copy_(src)

    @torch.no_grad()
    def load(self, saved: dict[str, Tensor]) -> None:
        for k, e in self.state.items():
            e.copy_(saved[k])


# ---------------------------------------------------------------------------------------------
# Data stream
# ---------------------------------------------------------------------------------------------
class _Stream:
    """Epoch permutations drawn from the shared generator; batches cross epoch boundaries.

    ``_Stream(n, generator)`` starts epoch 0 (one permutation drawn); ``_Stream(n,
    state=saved)`` continues a saved position without drawing anything.
    """

    def __init__(self, n: int, generator: torch.Generator | None = None, *,
                 state: dict | None = None):
        self.n = n
        if state is not None:
            self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
            self.perm = state["perm"].clone()
        else:
            self.epoch, self.offset = 0, 0
            self.perm = torch.randperm(n, generator=generator)

    def take(self, b: int, generator: torch.Generator) -> Tensor:
        parts = []
        need = b
        while need:
            if self.offset >= self.n:
                self.epoch += 1
                self.offset = 0
                self.perm = torch.randperm(self.n, generator=generator)
            k = min(need, self.n - self.offset)
            parts.append(self.perm[self.offset:self.offset + k])
            self.offset += k
            need -= k
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state(self) -> dict:
        return {"n": self.n, "epoch": self.epoch, "offset": self.offset, "perm": self.perm.clone()}


# ---------------------------------------------------------------------------------------------
# Metrics window: sums since the last metrics row, kept on the device (no sync per step)
# ---------------------------------------------------------------------------------------------
class _Window:
    """Loss / term / gradient-norm sums and the first non-finite step, on the device.

    Global sums live on rank 0 after a resume; the other ranks restart from zero, so an
    all-reduce of the window always gives the global sums.
    """

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.loss = torch.zeros((), dtype=_F64, device=dev)
        self.grad_norm = torch.zeros((), dtype=_F64, device=dev)
        self.terms: dict[str, Tensor] | None = None
        self.n = 0
        self.bad_loss = torch.full((), -1, dtype=torch.int64, device=dev)  # -1: none
        self.bad_grad = torch.full((), -1, dtype=torch.int64, device=dev)

    @torch.no_grad()
    def add(self, per_sample: Tensor, terms: dict[str, Tensor], step: int) -> None:
        s = per_sample.detach().sum(dtype=_F64)
        self.loss += s
        self.bad_loss.copy_(torch.where((self.bad_loss < 0) & ~torch.isfinite(s), step,
                                        self.bad_loss))
        if self.terms is None:
            self.terms = {k: torch.zeros((), dtype=_F64, device=self.dev) for k in terms}
        if terms.keys() != self.terms.keys():
            raise ValueError(f"the objective's terms changed from {sorted(self.terms)} to "
                             f"{sorted(terms)}")
        for k, v in terms.items():
            self.terms[k] += v.detach().sum(dtype=_F64)

    @torch.no_grad()
    def add_grad_norm(self, gn: Tensor, step: int) -> None:
        self.grad_norm += gn.detach().to(_F64)
        self.bad_grad.copy_(torch.where((self.bad_grad < 0) & ~torch.isfinite(gn), step,
                                        self.bad_grad))

    def sums(self, comm: _Comm) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        names = sorted(self.terms) if self.terms else []
        packed = torch.stack([self.loss] + [self.terms[k] for k in names]).cpu()
        comm.all_reduce(packed, dist.ReduceOp.SUM if comm.on else None)
        return packed[0], {k: packed[i + 1] for i, k in enumerate(names)}, self.grad_norm.cpu()

    def reset(self) -> None:
        self.loss.zero_()
        self.grad_norm.zero_()
        for v in (self.terms or {}).values():
            v.zero_()
        self.n = 0

    def load(self, saved: dict, rank: int) -> None:
        self.n = int(saved["n"])
        if rank == 0:
            self.loss += saved["loss"].to(self.dev)
            self.grad_norm += saved["grad_norm"].to(self.dev)
        if saved["terms"]:
            self.terms = {k: (v.to(self.dev) if rank == 0 else
                              torch.zeros((), dtype=_F64, device=self.dev))
                          for k, v in saved["terms"].items()}

    def snapshot(self) -> tuple:
        terms = {k: v.clone() for k, v in (self.terms or {}).items()}
        return (self.loss.clone(), self.grad_norm.clone(), terms if self.terms else None,
                self.bad_loss.clone(), self.bad_grad.clone())

    def restore(self, snap: tuple) -> None:
        loss, gn, terms, bl, bg = snap
        self.loss.copy_(loss)
        self.grad_norm.copy_(gn)
        self.terms = terms
        self.bad_loss.copy_(bl)
        self.bad_grad.copy_(bg)

    def first_bad(self, comm: _Comm) -> tuple[int, int]:
        """(first step with a non-finite loss, ... gradient norm) over all ranks; _NONE: none."""
        flags = torch.stack([self.bad_loss, self.bad_grad]).cpu()
        flags = torch.where(flags < 0, _NONE, flags)
        comm.all_reduce(flags, dist.ReduceOp.MIN if comm.on else None)
        return int(flags[0]), int(flags[1])
# ---------------------------------------------------------------------------------------------
# RNG states (plain types / tensors only, so weights_only loading works)
# ---------------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict:
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


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch_cpu"])
    if device.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], device)
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------
def init_distributed(backend: str | None = None, *,
                     timeout_s: float = 1800.0) -> tuple[int, int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment.

    Returns ``(rank, world_size, local_rank)``.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through
    ``env://``).  Without them (or with ``WORLD_SIZE=1``) nothing is initialised and
    ``(0, 1, 0)`` is returned.  ``backend=None`` picks nccl when CUDA is available (and then
    selects ``cuda:LOCAL_RANK``), else gloo.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    rank = int(os.environ["RANK"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    return rank, world, local


_CTRL_GROUPS: dict[int, Any] = {}


def _control_group():
    """A gloo group for small CPU-side collectives (flags, metrics, RNG gathering)."""
    if dist.get_backend() == "gloo":
        return None  # the default group
    key = id(dist.group.WORLD)
    if key not in _CTRL_GROUPS:
        _CTRL_GROUPS[key] = dist.new_group(backend="gloo")
    return _CTRL_GROUPS[key]


class _Comm:
    def __init__(self):
        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1
        self.group = _control_group() if self.on else None

    def barrier(self) -> None:
        if self.on:
            dist.barrier(group=self.group)

    def all_reduce(self, t: Tensor, op) -> Tensor:
        if self.on:
            dist.all_reduce(t, op=op, group=self.group)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one (e.g. a preemption signal)."""
        if not self.on:
            return flag
        return bool(self.all_reduce(torch.tensor([int(flag)]), dist.ReduceOp.MAX)[0])

    def gather(self, obj) -> list | None:
        if not self.on:
            return [obj]
        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out


# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------
def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """``out_dir/ckpt-{step:08d}.pt``."""
    return Path(out_dir) / f"ckpt-{int(step):08d}.pt"


def _list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
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
    found = _list_checkpoints(Path(out_dir))
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
        _check_state_dict(ckpt["model"], model.state_dict(), path, "model")
        model.load_state_dict(ckpt["model"])
    return ckpt


def ema_model(ckpt_path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load the EMA weights of a checkpoint into ``model`` (shapes checked); eval mode."""
    ckpt = load_checkpoint(ckpt_path)
    _check_state_dict(ckpt["ema"], model.state_dict(), Path(ckpt_path), "ema")
    model.load_state_dict(ckpt["ema"])
    return model.eval()


def snapshots(out_dir: str | os.PathLike, model: nn.Module) -> list[dict]:
    """The EMA weights of every checkpoint kept in ``out_dir``, oldest first, as
    ``[{"step": step, "ema": state_dict}]`` (shapes checked against ``model``): what a model file
    keeps for the FID-against-training-step figure."""
    out = []
    for step, path in _list_checkpoints(Path(out_dir)):
        ema = load_checkpoint(path)["ema"]
        _check_state_dict(ema, model.state_dict(), path, "ema")
        out.append({"step": step, "ema": {k: v.detach().cpu() for k, v in ema.items()}})
    return out


def _check_state_dict(saved: dict, current: dict, path: Path, what: str) -> None:
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


def _check_plain(v, where: str) -> None:
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_plain(x, f"{where}[{i}]")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}")
            _check_plain(x, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} must hold only plain values (None/bool/int/float/str/list/"
                    f"tuple/dict); got {type(v).__name__}")


_ABSENT = object()


def _compare_dicts(saved: dict, now: dict, path: Path, name: str, allowed=frozenset()) -> None:
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


# ---------------------------------------------------------------------------------------------
# Metrics file
# ---------------------------------------------------------------------------------------------
def _trim_metrics(path: Path, step: int) -> None:
    """Keep the header and the rows with step <= ``step`` (drop everything at a fresh start)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        path.unlink()
        return
    header, kept = rows[0], [rows[0]]
    for r in rows[1:]:
        if len(r) != len(header):
            continue  # a partial line from a killed writer
        try:
            if int(r[0]) <= step:
                kept.append(r)
        except ValueError:
            continue

    def write(f):
        s = io.StringIO()
        csv.writer(s, lineterminator="\n").writerows(kept)
        f.write(s.getvalue().encode())

    atomic_write(path, write)


def _append_metrics(path: Path, row: dict) -> None:
    header = list(row)
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            old = next(csv.reader(f), None)
        if old is not None and old != header:
            raise ValueError(f"{path} has columns {old} but this run logs {header}; "
                             f"the objective's terms changed")
        new = False
    else:
        new = True
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(header)
        w.writerow([row[k] for k in header])


# ---------------------------------------------------------------------------------------------
# Signals and precision
# ---------------------------------------------------------------------------------------------
class _PreemptFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # keep it trivial: no I/O in a handler
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: preemption signals are not handled")
            return
        for s in _PREEMPT_SIGNALS:
            self._previous[s] = signal.signal(s, self._handler)

    def restore(self) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()


@contextlib.contextmanager
def _fp32_mode(device: torch.device, tf32: bool):
    """TF32 for CUDA matmuls and cuDNN convolutions on/off, restored afterwards.

    Uses the ``allow_tf32`` flags: in torch 2.9+ they map onto the per-backend
    ``fp32_precision`` settings, and unlike setting those directly they keep
    ``torch.get_float32_matmul_precision()`` usable.
    """
    if device.type != "cuda":
        yield
        return
    mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    old = (mm.allow_tf32, cudnn.allow_tf32)
    mm.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        mm.allow_tf32, cudnn.allow_tf32 = old


def _resolve_device(device, comm: _Comm) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if comm.on
                           else torch.cuda.current_device())
    return dev




# ---------------------------------------------------------------------------------------------
# Input checks and the fast path
# ---------------------------------------------------------------------------------------------
def _check_inputs(data, cfg, model_meta) -> dict:
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    lazy = not isinstance(data, Tensor) and all(hasattr(data, a) for a in ("shape", "dtype", "device", "__getitem__"))
    if not (isinstance(data, Tensor) or lazy) or len(data.shape) < 1 or data.shape[0] < 1:
        raise ValueError("data must be a tensor (N, ...) with N >= 1, or an object with shape, dtype, device "
                         "and rows data[idx] (ddm.conditioned.PackedSplit)")
    if not data.dtype.is_floating_point:
        raise ValueError(f"data must be floating point in the model's range, got {data.dtype}")
    model_meta = {} if model_meta is None else model_meta
    if not isinstance(model_meta, dict):
        raise TypeError(f"model_meta must be a dict, got {type(model_meta).__name__}")
    _check_plain(model_meta, "model_meta")
    return model_meta


def _check_device_options(cfg: TrainConfig, dev: torch.device, world: int) -> None:
    """Refuse (bf16 on CPU) or explain (CUDA-only options on CPU) the fast-path options."""
    if cfg.precision == "bf16" and dev.type != "cuda":
        raise ValueError(f"precision='bf16' is a GPU-only option (CUDA autocast); device is "
                         f"{dev}. Use precision='fp32' on CPU.")
    if cfg.tf32 and dev.type != "cuda":
        log.warning("tf32=True has no effect on device %s", dev)
    if cfg.gpus * cfg.nodes != world:
        log.info("train.gpus x train.nodes = %d x %d, running %d process(es): the result "
                 "does not depend on the process count", cfg.gpus, cfg.nodes, world)


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
class Trainer:
    """One training run (paper §B.3): AdamW, the polynomial LR schedule, gradient clipping,
    EMA, checkpoints with exact resume, preemption and DDP.

    ``fit()`` runs it to ``cfg.steps``; the parts are separate methods: :meth:`resume`
    (newest checkpoint or a fresh start), :meth:`step` (one optimizer update over the global
    batch), :meth:`log` (a metrics row) and :meth:`checkpoint`.  Rank 0 writes every file.
    """

    def __init__(self, model: nn.Module, objective: Objective, data: Tensor, cfg: TrainConfig,
                 out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
                 model_meta: dict | None = None, progress: bool | None = None):
        self.model_meta = _check_inputs(data, cfg, model_meta)
        self.objective, self.data, self.cfg = objective, data, cfg
        self.out_dir = Path(out_dir)
        self.comm = _Comm()
        self.rank, self.world = self.comm.rank, self.comm.world
        self.dev = _resolve_device(device, self.comm)
        B = cfg.batch_size
        if B % (self.world * cfg.accum) != 0:
            raise ValueError(f"batch_size {B} is not divisible by world_size {self.world} x "
                             f"accum {cfg.accum}")
        self.b_local, self.b_micro = B // self.world, B // (self.world * cfg.accum)
        _check_device_options(cfg, self.dev, self.world)
        self.pin = cfg.pin_memory and self.dev.type == "cuda"
        self.progress = progress
        self.model = model.to(self.dev)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer, self.params = _build_optimizer(self.model, cfg)
        self.sched = None
        self.ema = _EMA(self.model, cfg.ema_decay)
        self.gen = torch.Generator()  # CPU: data order and the objective's draws
        self.gen.manual_seed(cfg.seed)
        self.cfg_dict = dataclasses.asdict(cfg)
        self.stream: _Stream | None = None
        self.window = _Window(self.dev)
        self.done = 0                       # optimizer updates done
        self.last_saved: Path | None = None
        self.net: nn.Module = self.model    # what the objective calls (DDP / compiled)
        self._ddp: nn.Module | None = None
        self._eager: nn.Module = self.model
        self._compile_pending = False
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if cfg.precision == "bf16" else contextlib.nullcontext())

    # -- resume ------------------------------------------------------------------------------
    def resume(self) -> int:
        """Continue from the newest checkpoint in out_dir, or start afresh; returns the step."""
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for p in self.out_dir.glob(TMP_PREFIX + "*"):  # left by a writer that was killed
                with contextlib.suppress(OSError):
                    p.unlink()
        self.comm.barrier()
        found = _list_checkpoints(self.out_dir)
        if found:
            self._load(*found[-1])
        else:
            _seed_globals(self.cfg.seed + 1 + self.rank)
            self.stream = _Stream(self.data.shape[0], self.gen)
        self.sched = _build_scheduler(self.optimizer, self.cfg, self.done)
        if self.rank == 0:
            _trim_metrics(self.out_dir / _METRICS, self.done)
        self.comm.barrier()
        self._wrap()
        self._t_log, self._s_log = time.perf_counter(), self.done  # the it/s of log lines
        return self.done

    def _load(self, step: int, path: Path) -> None:
        ckpt = load_checkpoint(path)
        _compare_dicts(ckpt["model_meta"], self.model_meta, path, "model_meta")
        _compare_dicts(ckpt["config"], self.cfg_dict, path, "config", RESUMABLE_KEYS)
        saved_shape = list(ckpt["data"].get("shape", []))
        if saved_shape != list(self.data.shape):
            raise CheckpointMismatchError(
                f"cannot resume from {path}: data has shape {list(self.data.shape)} but the "
                f"checkpoint was trained on data of shape {saved_shape}")
        _check_state_dict(ckpt["model"], self.model.state_dict(), path, "model")
        _check_state_dict(ckpt["ema"], self.ema.state, path, "ema")
        if step != ckpt["step"]:
            raise CheckpointError(f"{path} holds step {ckpt['step']}, its name says {step}")
        if step > self.cfg.steps:
            raise ValueError(f"{path} is at step {step}, beyond cfg.steps={self.cfg.steps}")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.gen.set_state(ckpt["rng"]["generator"])
        self.stream = _Stream(self.data.shape[0], state=ckpt["data"])
        per_rank = ckpt["rng"]["per_rank"]
        if len(per_rank) == self.world:
            _set_rng_state(per_rank[self.rank], self.dev)
        else:
            log.warning("checkpoint written by %d processes, resuming with %d: the model's "
                        "own RNG (dropout) is reseeded", len(per_rank), self.world)
            _seed_globals(self.cfg.seed + 1 + self.rank + 7919 * step)
        self.window.load(ckpt["metrics_window"], self.rank)
        self.done, self.last_saved = step, path
        if self.rank == 0:
            log.info("resuming from %s (step %d of %d)", path, step, self.cfg.steps)

    def _wrap(self) -> None:
        """DDP (after the weights are final: it broadcasts rank 0's) and torch.compile."""
        if self.comm.on and self._ddp is None:
            self._ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        self._eager = self._ddp if self._ddp is not None else self.model
        self.net = self._eager
        if self.cfg.compile:
            try:
                self.net = torch.compile(self._eager, backend=self.cfg.compile_backend)
                self._compile_pending = True  # compiling happens at the first call
            except Exception as e:  # an unknown backend, no compiler support, ...
                log.warning("torch.compile(backend=%r) is not available (%s: %s); training "
                            "without compiling", self.cfg.compile_backend, type(e).__name__, e)

    # -- step --------------------------------------------------------------------------------
    def step(self) -> None:
        """One optimizer update over the global batch (every rank draws the same batch and
        noise and keeps its rows; loss scaled so the gradient is the global-batch mean)."""
        if self.stream is None:
            raise RuntimeError("Trainer.step() before Trainer.resume(): call resume() first")
        x0, noise = self._next_batch()
        if self._compile_pending:
            self._first_compiled_update(x0, noise)
        else:
            self._forward_backward(x0, noise)
        if self.cfg.grad_clip is not None:
            gn = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.window.add_grad_norm(gn, self.done + 1)
        self.optimizer.step()
        self.sched.step()
        self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.done += 1
        self.window.n += 1

    def _next_batch(self) -> tuple[Tensor, dict[str, Tensor]]:
        data = self.data
        idx = self.stream.take(self.cfg.batch_size, self.gen)
        x0 = data[idx.to(data.device)] if data.device.type != "cpu" else data[idx]
        noise = self.objective.draw(x0 if x0.device.type == "cpu" else x0.cpu(), self.gen)
        _check_noise(noise, self.cfg.batch_size)
        if self.pin:  # page-locked host memory: the copies below run asynchronously
            x0 = x0.pin_memory() if x0.device.type == "cpu" else x0
            noise = {k: v.pin_memory() for k, v in noise.items()}
        return x0, noise

    def _forward_backward(self, x0: Tensor, noise: dict[str, Tensor]) -> None:
        cfg, lo, b = self.cfg, self.rank * self.b_local, self.b_micro
        scale = self.world / cfg.batch_size
        for m in range(cfg.accum):
            a, z = lo + m * b, lo + (m + 1) * b
            xb = x0[a:z].to(self.dev, non_blocking=True)
            nb = {k: v[a:z].to(self.dev, non_blocking=True) for k, v in noise.items()}
            if cfg.channels_last:
                xb, nb = _channels_last(xb), {k: _channels_last(v) for k, v in nb.items()}
            sync = self._ddp is None or m == cfg.accum - 1
            with contextlib.nullcontext() if sync else self._ddp.no_sync():
                with self.autocast:
                    per_sample, terms = self.objective(self.net, xb, nb)
                _check_out(per_sample, terms, b)
                (per_sample.float().sum() * scale).backward()
            self.window.add(per_sample, terms, self.done + 1)

    def _first_compiled_update(self, x0: Tensor, noise: dict[str, Tensor]) -> None:
        """Run the first update compiled; if compiling fails, undo it and run eagerly."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else None
        buffers = [b.detach().clone() for b in self.model.buffers()]
        window = self.window.snapshot()
        try:
            self._forward_backward(x0, noise)
        except Exception as e:
            log.warning("torch.compile(backend=%r) failed at the first step (%s: %s); "
                        "training continues without compiling", self.cfg.compile_backend,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.dev)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            self.window.restore(window)
            self.net = self._eager
            self._forward_backward(x0, noise)  # an error here is the model's own: raised
        self._compile_pending = False

    # -- log ---------------------------------------------------------------------------------
    def log(self, bar=None) -> dict:
        """Append the metrics row of the window (means since the last row) and reset it."""
        cfg, step = self.cfg, self.done
        loss_s, terms_s, gn_s = self.window.sums(self.comm)
        n = self.window.n
        denom = float(cfg.batch_size * n)
        row = {"step": step, "lr": repr(lr_at(step - 1, cfg)),
               "loss": repr(float(loss_s) / denom)}
        if cfg.grad_clip is not None:
            row["grad_norm"] = repr(float(gn_s) / n)
        for k, v in terms_s.items():
            if k in row:
                raise ValueError(f"objective term name {k!r} clashes with a metrics column")
            row[k] = repr(float(v) / denom)
        if self.rank == 0:
            _append_metrics(self.out_dir / _METRICS, row)
            now = time.perf_counter()
            rate = (step - self._s_log) / max(now - self._t_log, 1e-9)
            self._t_log, self._s_log = now, step
            if bar is not None:
                bar.set_postfix(loss=f"{float(row['loss']):.4g}",
                                lr=f"{float(row['lr']):.2e}", refresh=False)
            else:
                extra = "  ".join(f"{k} {float(row[k]):.4g}" for k in terms_s)
                log.info("step %d/%d  loss %.5g  lr %.3e  %s  %.2f it/s", step, cfg.steps,
                         float(row["loss"]), float(row["lr"]), extra, rate)
        self.window.reset()
        return row

    # -- checkpoint --------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """Write ``ckpt-{step}.pt`` atomically (rank 0) and prune to ``keep_last``."""
        loss_s, terms_s, gn_s = self.window.sums(self.comm)
        per_rank = self.comm.gather(_rng_state(self.dev))
        target = checkpoint_path(self.out_dir, self.done)
        if self.rank == 0:
            obj = {
                "format": CKPT_FORMAT,
                "step": self.done,
                "model": self.model.state_dict(),
                "ema": self.ema.state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.sched.state_dict(),
                "data": {**self.stream.state(), "shape": list(self.data.shape)},
                "rng": {"generator": self.gen.get_state(), "per_rank": per_rank},
                "config": self.cfg_dict,
                "model_meta": self.model_meta,
                "metrics_window": {"loss": loss_s, "terms": terms_s, "grad_norm": gn_s,
                                   "n": self.window.n},
                "world_size": self.world,
                "torch_version": str(torch.__version__),
            }
            atomic_write(target, lambda f: torch.save(obj, f))
            for _, old in _list_checkpoints(self.out_dir)[:-self.cfg.keep_last]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        self.comm.barrier()
        self.last_saved = target
        return target

    def check_finite(self) -> None:
        """Raise NonFiniteLoss naming the first step with a NaN/inf loss or gradient norm."""
        fl, fg = self.window.first_bad(self.comm)
        if fl == _NONE and fg == _NONE:
            return
        last_ok = _list_checkpoints(self.out_dir)
        keep = f"; last good checkpoint: {last_ok[-1][1]}" if last_ok else ""
        if fl <= fg:
            raise NonFiniteLoss(f"non-finite loss at step {fl}{keep}", fl)
        raise NonFiniteLoss(f"non-finite gradient norm at step {fg} (loss finite){keep}", fg)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Resume, train to ``cfg.steps``, return the final checkpoint (module docstring)."""
        self.resume()
        if self.done >= self.cfg.steps:  # already done
            return self.last_saved
        bar = self._progress_bar()
        flag = _PreemptFlag()
        flag.install()
        try:
            with _fp32_mode(self.dev, self.cfg.tf32):
                while self.done < self.cfg.steps:
                    self.step()
                    if bar is not None:
                        bar.update(1)
                    self._bookkeeping(flag, bar)
        finally:
            flag.restore()
            if bar is not None:
                bar.close()
        return self.last_saved

    def _bookkeeping(self, flag: _PreemptFlag, bar) -> None:
        cfg, step = self.cfg, self.done
        is_log = step % cfg.log_every == 0 or step == cfg.steps
        is_ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps
        preempt = self.comm.any(flag.signum is not None)
        if is_log or is_ckpt or preempt:
            self.check_finite()
        if is_log:
            self.log(bar)
        if is_ckpt or preempt:
            self.checkpoint()
        if preempt and step < cfg.steps:
            if self.rank == 0:
                log.warning("preempted: checkpoint %s written at step %d; exiting with code "
                            "%d", self.last_saved, step, PREEMPT_EXIT_CODE)
            raise TrainingInterrupted(step, self.last_saved, flag.signum)

    def _progress_bar(self):
        show = self.rank == 0 and (sys.stderr.isatty() if self.progress is None
                                   else bool(self.progress))
        if not show:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.cfg.steps, initial=self.done, unit="it", dynamic_ncols=True,
                    desc="train")


def train(model: nn.Module, objective: Objective, data: Tensor, cfg: TrainConfig,
          out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
          model_meta: dict | None = None, progress: bool | None = None) -> Path:
    """Train ``model`` on ``objective`` over ``data`` (N, ...); return the final checkpoint.

    ``Trainer(...).fit()``: resumes from the newest checkpoint in ``out_dir`` if there is one.
    Raises :class:`TrainingInterrupted` (exit code :data:`PREEMPT_EXIT_CODE`) on
    SIGTERM/SIGUSR1 after writing a checkpoint, :class:`NonFiniteLoss` on a NaN/inf loss,
    :class:`CheckpointError` / :class:`CheckpointMismatchError` when the newest checkpoint
    cannot be resumed.
    """
    return Trainer(model, objective, data, cfg, out_dir, device=device, model_meta=model_meta,
                   progress=progress).fit()


def _check_noise(noise, B: int) -> None:
    if not isinstance(noise, dict):
        raise TypeError(f"objective.draw must return a dict of tensors, got {type(noise).__name__}")
    for k, v in noise.items():
        if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[0] != B:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"objective.draw()[{k!r}] must have leading dimension {B} "
                             f"(the global batch), got {shape}")
        if v.device.type != "cpu":
            raise ValueError(f"objective.draw()[{k!r}] is on {v.device}; draw on the CPU "
                             f"(x0.device) with the given generator")


def _check_out(per_sample, terms, b: int) -> None:
    if not isinstance(per_sample, Tensor) or tuple(per_sample.shape) != (b,):
        shape = tuple(per_sample.shape) if isinstance(per_sample, Tensor) else type(per_sample)
        raise ValueError(f"the objective must return a per-sample loss of shape ({b},), got "
                         f"{shape}")
    if not isinstance(terms, dict):
        raise TypeError(f"the objective's terms must be a dict, got {type(terms).__name__}")
    for k, v in terms.items():
        if not isinstance(v, Tensor) or tuple(v.shape) != (b,):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"objective term {k!r} must have shape ({b},), got {shape}")
