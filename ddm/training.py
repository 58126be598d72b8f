"""Training engine, independent of what is trained (paper §B.3 "Training details", Table 6).

``train(model, objective, data, cfg, out_dir)`` runs AdamW with the paper's polynomial
learning-rate decay, gradient-norm clipping, an EMA of the weights, checkpointing with exact
resume, preemption handling and optional DistributedDataParallel.  The *objective* (what is
trained: DDM, VP, VE, ...) is a plug-in with two methods:

* ``objective.draw(x0, generator) -> {name: (B, ...) tensor}`` -- all randomness of one step
  for the global batch ``x0`` (a CPU tensor), drawn from ``generator`` (a CPU
  ``torch.Generator``).  It must create its tensors on ``x0.device`` (the CPU).
* ``objective(model, x0, noise) -> (per_sample_loss (B,), {term: (B,)})`` -- deterministic
  given its inputs; ``model`` is the (possibly DDP-wrapped) network and must only be *called*.

Choices, and where they come from
---------------------------------
Optimiser (§B.3, Table 6; authors' code).  ``torch.optim.AdamW(lr, betas, weight_decay)``,
weight decay on every parameter, eps = 1e-8.  Defaults are the CIFAR-10 row of Table 6 and the
authors' code: lr 1e-4 decayed to 1e-5, weight decay 1e-4, betas (0.9, 0.999), gradient-norm
clipping at 1.0 (``torch.nn.utils.clip_grad_norm_`` on the accumulated global-batch gradient).

Learning rate (§B.3).  The paper's polynomial policy
``lr = max(lr0 * (1 - N_iter/N_total) ** p, lr_min)`` with ``p = 0.96``, preceded by the
authors' linear warm-up (their code uses 5,000 steps; ``warmup=0`` is the paper's text).  With
``step`` = the 0-based index of the optimizer update (= number of updates already done)::

    step <  warmup:  lr = lr0 * (step + 1) / warmup          (no floor: a ramp from ~0)
    step >= warmup:  lr = lr0 * max((1 - f) ** p, lr_min / lr0),
                     f = clip((step - warmup) / max(steps - warmup, 1), 0, 1)

i.e. ``max(lr0 * (1 - f) ** p, lr_min)`` up to float rounding.  The authors' code divides by
``steps`` instead of ``steps - warmup``; we decay over the steps that remain after warm-up so
that the floor is reached exactly at the end.  It is implemented as a
``torch.optim.lr_scheduler.LambdaLR`` (stepped after every optimizer update) and
:func:`lr_at` returns exactly the value the scheduler sets.

EMA (§B.3).  ``ema <- decay * ema + (1 - decay) * weights`` after every optimizer update,
starting from the initial weights, with no EMA warm-up; default decay 0.9999 (the authors'
code uses 0.999 or 0.9996 -- a config value).  It is vectorised over all parameters with
``torch._foreach_lerp_`` (one call per step); floating-point buffers and integer buffers are
copied (``torch._foreach_copy_``), not averaged.  The EMA lives in fp32 next to the model.

Precision (§B.3: "mixed-precision (FP16) training negatively impacts the generative
performances").  Default ``precision="fp32"`` with TF32 *off* for both matmuls and cuDNN
convolutions (PyTorch enables TF32 for cuDNN convolutions by default; we turn it off so fp32
means fp32).  Options, CUDA only: ``precision="bf16"`` (``torch.autocast`` in bfloat16 around
the objective; weights, gradients, optimizer state and EMA stay fp32; no loss scaling needed)
and ``tf32=True``.  ``precision="bf16"`` on a CPU device raises ``ValueError``; ``tf32=True``
on CPU has no effect (a warning is logged).  The previous TF32 settings are restored after
training.  fp16 is not offered.

Randomness.  One CPU ``torch.Generator`` seeded with ``cfg.seed`` owns all randomness of the
training data stream: (1) the data order, a fresh permutation of the N examples drawn from it
whenever the previous epoch is used up (global batches run across epoch boundaries, so
nothing is dropped and N < batch_size works); (2) ``objective.draw`` for the global batch.
Every DDP rank draws the same global batch and the same noise, then keeps its rows
``[r*B/W, (r+1)*B/W)``, so the run does not depend on the number of processes beyond float
rounding.  Gradient accumulation splits the rank's rows into ``accum`` consecutive
micro-batches of the *same* draw, so ``accum`` does not change the data or noise either.
Randomness *inside* the model (dropout) uses the process-global torch RNG, which
:func:`train` seeds with ``cfg.seed + 1 + rank`` on a fresh start (NumPy's and Python's global
RNGs likewise); those states are checkpointed per rank and restored on resume.

Loss scaling.  Let l_i be the per-sample losses of the global batch of size B, W the world
size.  Each rank back-propagates ``sum_{i in its micro-batch} l_i * W / B`` for each of its
micro-batches; gradients add up over micro-batches (``no_sync`` on all but the last), and
DDP averages over ranks (divides by W), so every rank ends with the gradient of
``(1/B) sum_{i=1..B} l_i``, the global-batch mean, whatever W and accum are.

Checkpoints.  ``out_dir/ckpt-{step:08d}.pt`` every ``ckpt_every`` steps, at the end, and on
preemption; only the newest ``keep_last`` are kept (there is no pointer file: the newest is
the largest step).  Each holds: model, EMA, optimizer and scheduler state, step, the data
stream position (epoch, offset and the epoch's permutation), the generator state, and per
rank the torch CPU RNG, the CUDA RNG of the rank's device, and NumPy's and Python's RNG states,
plus the config (``dataclasses.asdict``), ``model_meta`` and the metrics accumulated since the
last metrics row.  Only tensors and plain Python values are stored, so
``torch.load(weights_only=True)`` reads it.  Rank 0 writes a temporary file in ``out_dir``,
fsyncs it and ``os.replace``-s it onto the final name (atomic), with barriers around it.

Resume.  ``train`` with an ``out_dir`` that holds checkpoints continues from the newest one;
on CPU the final weights, EMA and optimizer state equal an uninterrupted run bit for bit
(same thread count).  The newest checkpoint must load: a corrupt one raises
:class:`CheckpointError` naming the file (delete it to fall back to the previous one) -- never
a silent fresh start.  ``model_meta``, the data shape, every model tensor's shape and the
config must match; a mismatch raises :class:`CheckpointMismatchError` naming the key and both
values.  Config keys that may change on resume: :data:`RESUMABLE_KEYS` -- ``steps``
(extend or finish training; the LR schedule is then recomputed for the new total),
``ckpt_every``, ``keep_last``, ``log_every`` and ``accum`` (same mathematics, but not bit
exact).  The world size may change too (only the dropout RNG streams are then reseeded).

Preemption.  SIGTERM and SIGUSR1 (SLURM: ``#SBATCH --signal=USR1@120`` delivers SIGUSR1 to
the tasks 120 s before the time limit; it sends SIGTERM at the limit itself) set a flag;
the current step finishes, a checkpoint is written and :class:`TrainingInterrupted` is raised,
a ``SystemExit`` with code :data:`PREEMPT_EXIT_CODE` = 75 (``EX_TEMPFAIL`` of sysexits.h,
"temporary failure, retry": the job script can ``scontrol requeue`` on 75, and rerunning the
same command resumes).  Under DDP the ranks agree on the flag every step (a one-integer
all-reduce on a CPU/gloo group).  Handlers are installed only when ``train`` runs in the
main thread, and the previous handlers are restored when it returns or raises.

Non-finite losses.  The per-step check stays on the device (no synchronisation per step);
it is read at every metrics row, before every checkpoint and at the end, and
:class:`NonFiniteLoss` names the first step whose loss (or, with clipping, gradient norm) was
NaN/inf.  No checkpoint is written after that step, so the last good one stays untouched.

DDP.  When ``torch.distributed`` is initialised (see :func:`init_distributed`, which reads
torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and picks nccl on CUDA, gloo on CPU), the
model is wrapped in ``DistributedDataParallel`` (every parameter must receive a gradient) and
the objective is handed the wrapped module; only rank 0 writes checkpoints, metrics and log
lines, and every rank reads the checkpoint on resume (shared file system).  Small control
collectives (preemption flag, metrics sums, RNG states) run on a gloo group, so they never
synchronise the GPU.  ``device="cuda"`` means ``cuda:LOCAL_RANK`` under DDP.  Under torchrun
a preempted worker's exit code 75 is reported by torchrun as a worker failure; launch with
``--max-restarts=0`` and requeue the job, which resumes from the checkpoint.

Progress.  A tqdm bar (it/s, loss, lr) when stderr is a TTY (``progress=None``) or when
``progress=True``; otherwise an INFO line on the ``ddm.training`` logger every ``log_every``
steps.  ``out_dir/metrics.csv`` gets a row every ``log_every`` steps and at the end:
``step`` (updates done), ``lr`` (of the last update), ``loss`` and each term (means over
the samples of the global batches since the previous row) and ``grad_norm`` (mean pre-clip
norm, when clipping is on).  On resume, rows after the checkpoint's step are dropped, so the
file equals that of an uninterrupted run.
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

from ddm.io import TMP_PREFIX, atomic_write

__all__ = [
    "Objective", "TrainConfig", "lr_at", "train", "load_checkpoint", "ema_model",
    "init_distributed", "checkpoint_path", "latest_checkpoint",
    "TrainingInterrupted", "NonFiniteLoss", "CheckpointError", "CheckpointMismatchError",
    "PREEMPT_EXIT_CODE", "RESUMABLE_KEYS", "CKPT_FORMAT",
]

log = logging.getLogger(__name__)

#: Exit status of a preempted run (EX_TEMPFAIL, sysexits.h): "temporary failure, retry".
PREEMPT_EXIT_CODE = 75
#: Config keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_KEYS = frozenset({"steps", "ckpt_every", "keep_last", "log_every", "accum"})
#: Format tag stored in every checkpoint.
CKPT_FORMAT = "ddm.training/1"

_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.pt$")
_METRICS = "metrics.csv"
_PREEMPT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))
_CKPT_KEYS = ("format", "step", "model", "ema", "optimizer", "scheduler", "data", "rng",
              "config", "model_meta", "metrics_window")


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
    """Training hyper-parameters; defaults follow paper Table 6 (CIFAR-10) and §B.3."""

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
    precision: str = "fp32"  # "fp32" | "bf16" (CUDA autocast only)
    tf32: bool = False       # CUDA only
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {what}")

        for k in ("steps", "batch_size", "accum", "ckpt_every", "keep_last", "log_every"):
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
        need(self.precision in ("fp32", "bf16"),
             f"precision must be 'fp32' or 'bf16' (fp16 is not offered, paper §B.3), "
             f"got {self.precision!r}")
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
    """Learning rate of the update with 0-based index ``step`` (see the module docstring)."""
    return cfg.lr * _lr_factor(int(step), cfg)


def _build_optimizer(model: nn.Module, cfg: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    snapshot = copy.copy(cfg)

    def factor(step: int) -> float:  # a plain function: LambdaLR stores no state for it
        return _lr_factor(step, snapshot)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=factor)
    return opt, sched, params


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------
class _EMA:
    """EMA of a model's state dict; params averaged with one _foreach_lerp_, buffers copied."""

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

    @torch.no_grad()
    def update(self) -> None:
        if self._avg_dst:
            torch._foreach_lerp_(self._avg_dst, self._avg_src, 1.0 - self.decay)
        if self._cp_dst:
            torch._foreach_copy_(self._cp_dst, self._cp_src)

    @torch.no_grad()
    def load(self, saved: dict[str, Tensor]) -> None:
        for k, e in self.state.items():
            e.copy_(saved[k])


# ---------------------------------------------------------------------------------------------
# Data stream
# ---------------------------------------------------------------------------------------------
class _Stream:
    """Epoch permutations drawn from the shared generator; batches cross epoch boundaries."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n = n
        self.epoch = 0
        self.offset = 0
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

    def load(self, s: dict) -> None:
        self.epoch, self.offset, self.perm = int(s["epoch"]), int(s["offset"]), s["perm"].clone()


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
# Training
# ---------------------------------------------------------------------------------------------
def train(model: nn.Module, objective: Objective, data: Tensor, cfg: TrainConfig,
          out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
          model_meta: dict | None = None, progress: bool | None = None) -> Path:
    """Train ``model`` on ``objective`` over ``data`` (N, ...) and return the final checkpoint.

    Resumes from the newest checkpoint in ``out_dir`` if there is one.  See the module
    docstring for every choice.  Raises :class:`TrainingInterrupted` (exit code
    :data:`PREEMPT_EXIT_CODE`) on SIGTERM/SIGUSR1 after writing a checkpoint,
    :class:`NonFiniteLoss` on a NaN/inf loss, :class:`CheckpointError` /
    :class:`CheckpointMismatchError` when the newest checkpoint cannot be resumed.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] < 1:
        raise ValueError("data must be a tensor (N, ...) with N >= 1")
    if not data.is_floating_point():
        raise ValueError(f"data must be floating point in the model's range, got {data.dtype}")
    model_meta = {} if model_meta is None else model_meta
    if not isinstance(model_meta, dict):
        raise TypeError(f"model_meta must be a dict, got {type(model_meta).__name__}")
    _check_plain(model_meta, "model_meta")
    out_dir = Path(out_dir)
    comm = _Comm()
    rank, world = comm.rank, comm.world
    dev = _resolve_device(device, comm)
    B = cfg.batch_size
    if B % (world * cfg.accum) != 0:
        raise ValueError(f"batch_size {B} is not divisible by world_size {world} x accum "
                         f"{cfg.accum}")
    b_local, b_micro = B // world, B // (world * cfg.accum)
    if cfg.precision == "bf16" and dev.type != "cuda":
        raise ValueError(f"precision='bf16' is a GPU-only option (CUDA autocast); device is "
                         f"{dev}. Use precision='fp32' on CPU.")
    if cfg.tf32 and dev.type != "cuda":
        log.warning("tf32=True has no effect on device %s", dev)

    # -- out_dir, checkpoints -----------------------------------------------------------------
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in out_dir.glob(TMP_PREFIX + "*"):  # left by a writer that was killed
            with contextlib.suppress(OSError):
                p.unlink()
    comm.barrier()
    found = _list_checkpoints(out_dir)

    model.to(dev)
    model.train()
    optimizer, sched, params = _build_optimizer(model, cfg)
    ema = _EMA(model, cfg.ema_decay)
    gen = torch.Generator()  # CPU
    gen.manual_seed(cfg.seed)
    stream: _Stream
    cfg_dict = dataclasses.asdict(cfg)
    window = None  # (loss sum, {term: sum}, grad-norm sum, n_steps), restored on resume

    if found:
        step, path = found[-1]
        ckpt = load_checkpoint(path)
        _compare_dicts(ckpt["model_meta"], model_meta, path, "model_meta")
        _compare_dicts(ckpt["config"], cfg_dict, path, "config", RESUMABLE_KEYS)
        saved_shape = list(ckpt["data"].get("shape", []))
        if saved_shape != list(data.shape):
            raise CheckpointMismatchError(
                f"cannot resume from {path}: data has shape {list(data.shape)} but the "
                f"checkpoint was trained on data of shape {saved_shape}")
        _check_state_dict(ckpt["model"], model.state_dict(), path, "model")
        _check_state_dict(ckpt["ema"], ema.state, path, "ema")
        if step != ckpt["step"]:
            raise CheckpointError(f"{path} holds step {ckpt['step']}, its name says {step}")
        if step > cfg.steps:
            raise ValueError(f"{path} is at step {step}, beyond cfg.steps={cfg.steps}")
        model.load_state_dict(ckpt["model"])
        ema.load(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        lr_now = lr_at(step, cfg)  # the schedule of *this* config (steps may have changed)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        sched._last_lr = [lr_now for _ in optimizer.param_groups]
        gen.set_state(ckpt["rng"]["generator"])
        stream = _Stream.__new__(_Stream)
        stream.n = data.shape[0]
        stream.load(ckpt["data"])
        per_rank = ckpt["rng"]["per_rank"]
        if len(per_rank) == world:
            _set_rng_state(per_rank[rank], dev)
        else:
            log.warning("checkpoint written by %d processes, resuming with %d: the model's "
                        "own RNG (dropout) is reseeded", len(per_rank), world)
            _seed_globals(cfg.seed + 1 + rank + 7919 * step)
        mw = ckpt["metrics_window"]
        window = (mw["loss"], dict(mw["terms"]), mw["grad_norm"], int(mw["n"]))
        if rank == 0:
            log.info("resuming from %s (step %d of %d)", path, step, cfg.steps)
        del ckpt
    else:
        step = 0
        path = None
        _seed_globals(cfg.seed + 1 + rank)
        stream = _Stream(data.shape[0], gen)
    if rank == 0:
        _trim_metrics(out_dir / _METRICS, step)
    comm.barrier()

    if step >= cfg.steps:  # already done
        return path

    # -- per-step state on the device ------------------------------------------------------------
    f64 = torch.float64
    w_loss = torch.zeros((), dtype=f64, device=dev)
    w_gn = torch.zeros((), dtype=f64, device=dev)
    w_terms: dict[str, Tensor] | None = None
    w_n = 0
    if window is not None:
        loss_s, terms_s, gn_s, w_n = window
        if rank == 0:  # global sums live on rank 0; the others start from zero
            w_loss += loss_s.to(dev)
            w_gn += gn_s.to(dev)
        w_terms = {k: (v.to(dev) if rank == 0 else torch.zeros((), dtype=f64, device=dev))
                   for k, v in terms_s.items()} if terms_s else None
    bad_loss = torch.full((), -1, dtype=torch.int64, device=dev)  # first bad step, -1 = none
    bad_grad = torch.full((), -1, dtype=torch.int64, device=dev)

    net: nn.Module = model
    if comm.on:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    scale = world / B
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    metrics_path = out_dir / _METRICS

    def window_sums() -> tuple[Tensor, dict[str, Tensor], Tensor]:
        names = sorted(w_terms) if w_terms else []
        packed = torch.stack([w_loss] + [w_terms[k] for k in names]).cpu()
        comm.all_reduce(packed, dist.ReduceOp.SUM if comm.on else None)
        return packed[0], {k: packed[i + 1] for i, k in enumerate(names)}, w_gn.cpu()

    def check_finite() -> None:
        flags = torch.stack([bad_loss, bad_grad]).cpu()
        flags = torch.where(flags < 0, torch.iinfo(torch.int64).max, flags)
        comm.all_reduce(flags, dist.ReduceOp.MIN if comm.on else None)
        fl, fg = (int(v) for v in flags)
        big = torch.iinfo(torch.int64).max
        if fl == big and fg == big:
            return
        last_ok = _list_checkpoints(out_dir)
        keep = f"; last good checkpoint: {last_ok[-1][1]}" if last_ok else ""
        if fl <= fg:
            raise NonFiniteLoss(f"non-finite loss at step {fl}{keep}", fl)
        raise NonFiniteLoss(f"non-finite gradient norm at step {fg} (loss finite){keep}", fg)

    def save(at: int) -> Path:
        loss_s, terms_s, gn_s = window_sums()
        per_rank = comm.gather(_rng_state(dev))
        target = checkpoint_path(out_dir, at)
        if rank == 0:
            obj = {
                "format": CKPT_FORMAT,
                "step": at,
                "model": model.state_dict(),
                "ema": ema.state,
                "optimizer": optimizer.state_dict(),
                "scheduler": sched.state_dict(),
                "data": {**stream.state(), "shape": list(data.shape)},
                "rng": {"generator": gen.get_state(), "per_rank": per_rank},
                "config": cfg_dict,
                "model_meta": model_meta,
                "metrics_window": {"loss": loss_s, "terms": terms_s, "grad_norm": gn_s,
                                   "n": w_n},
                "world_size": world,
                "torch_version": str(torch.__version__),
            }
            atomic_write(target, lambda f: torch.save(obj, f))
            for _, old in _list_checkpoints(out_dir)[:-cfg.keep_last]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        comm.barrier()
        return target

    show_bar = rank == 0 and (sys.stderr.isatty() if progress is None else bool(progress))
    bar = None
    if show_bar:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, unit="it", dynamic_ncols=True,
                   desc="train")
    flag = _PreemptFlag()
    flag.install()
    t_log, s_log = time.perf_counter(), step
    last_saved = path if found else None
    try:
        with _fp32_mode(dev, cfg.tf32):
            while step < cfg.steps:
                # ---- one optimizer step over the global batch ----
                idx = stream.take(B, gen)
                x0 = data[idx.to(data.device)] if data.device.type != "cpu" else data[idx]
                x0_cpu = x0 if x0.device.type == "cpu" else x0.cpu()
                noise = objective.draw(x0_cpu, gen)
                _check_noise(noise, B)
                lo = rank * b_local
                for m in range(cfg.accum):
                    a, z = lo + m * b_micro, lo + (m + 1) * b_micro
                    xb = x0[a:z].to(dev, non_blocking=True)
                    nb = {k: v[a:z].to(dev, non_blocking=True) for k, v in noise.items()}
                    sync = (not comm.on or m == cfg.accum - 1)
                    with (contextlib.nullcontext() if sync else net.no_sync()):
                        with autocast:
                            per_sample, terms = objective(net, xb, nb)
                        _check_out(per_sample, terms, b_micro)
                        (per_sample.float().sum() * scale).backward()
                    with torch.no_grad():
                        s = per_sample.detach().sum(dtype=f64)
                        w_loss += s
                        bad_loss.copy_(torch.where((bad_loss < 0) & ~torch.isfinite(s),
                                                   step + 1, bad_loss))
                        if w_terms is None:
                            w_terms = {k: torch.zeros((), dtype=f64, device=dev) for k in terms}
                        if terms.keys() != w_terms.keys():
                            raise ValueError(f"the objective's terms changed from "
                                             f"{sorted(w_terms)} to {sorted(terms)}")
                        for k, v in terms.items():
                            w_terms[k] += v.detach().sum(dtype=f64)
                if cfg.grad_clip is not None:
                    gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    with torch.no_grad():
                        w_gn += gn.detach().to(f64)
                        bad_grad.copy_(torch.where((bad_grad < 0) & ~torch.isfinite(gn),
                                                   step + 1, bad_grad))
                optimizer.step()
                sched.step()
                ema.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                w_n += 1

                # ---- bookkeeping ----
                is_log = step % cfg.log_every == 0 or step == cfg.steps
                is_ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps
                preempt = flag.signum is not None
                if comm.on:
                    preempt = bool(comm.all_reduce(torch.tensor([int(preempt)]),
                                                   dist.ReduceOp.MAX)[0])
                if bar is not None:
                    bar.update(1)
                if is_log or is_ckpt or preempt:
                    check_finite()
                if is_log:
                    loss_s, terms_s, gn_s = window_sums()
                    denom = float(B * w_n)
                    row = {"step": step, "lr": repr(lr_at(step - 1, cfg)),
                           "loss": repr(float(loss_s) / denom)}
                    if cfg.grad_clip is not None:
                        row["grad_norm"] = repr(float(gn_s) / w_n)
                    for k, v in terms_s.items():
                        if k in row:
                            raise ValueError(f"objective term name {k!r} clashes with a "
                                             f"metrics column")
                        row[k] = repr(float(v) / denom)
                    if rank == 0:
                        _append_metrics(metrics_path, row)
                        now = time.perf_counter()
                        rate = (step - s_log) / max(now - t_log, 1e-9)
                        t_log, s_log = now, step
                        if bar is not None:
                            bar.set_postfix(loss=f"{float(row['loss']):.4g}",
                                            lr=f"{float(row['lr']):.2e}", refresh=False)
                        else:
                            extra = "  ".join(f"{k} {float(row[k]):.4g}" for k in terms_s)
                            log.info("step %d/%d  loss %.5g  lr %.3e  %s  %.2f it/s", step,
                                     cfg.steps, float(row["loss"]), float(row["lr"]), extra,
                                     rate)
                    w_loss.zero_()
                    w_gn.zero_()
                    for v in (w_terms or {}).values():
                        v.zero_()
                    w_n = 0
                if is_ckpt or preempt:
                    last_saved = save(step)
                if preempt and step < cfg.steps:
                    if rank == 0:
                        log.warning("preempted: checkpoint %s written at step %d; exiting "
                                    "with code %d", last_saved, step, PREEMPT_EXIT_CODE)
                    raise TrainingInterrupted(step, last_saved, flag.signum)
    finally:
        flag.restore()
        if bar is not None:
            bar.close()
    return last_saved


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
