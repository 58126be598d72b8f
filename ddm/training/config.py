"""The options of a training run and what follows from them alone (paper §B.3, Table 6):
:class:`TrainConfig`, the learning-rate schedule (:func:`lr_at`, :func:`build_scheduler`) and
the AdamW optimizer (:func:`build_optimizer`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PRECISIONS", "RESUMABLE_KEYS", "TrainConfig", "lr_at", "build_optimizer", "build_scheduler"]

#: Valid values of ``TrainConfig.precision`` (no fp16: paper §B.3; bf16: CUDA autocast only).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: Config keys that may differ between a checkpoint and the run that resumes it: the length
#: of the run, bookkeeping, and options that change the speed (or float rounding) but not the
#: mathematics: accumulation, the fast path and the launch geometry.
RESUMABLE_KEYS = frozenset({"steps", "ckpt_every", "keep_last", "log_every", "accum",
                            "channels_last", "compile", "compile_backend", "pin_memory",
                            "gpus", "nodes"})


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


def build_optimizer(model: nn.Module, cfg: TrainConfig):
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


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, done: int = 0):
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

