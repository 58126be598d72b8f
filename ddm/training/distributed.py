"""Processes and devices of a training run: ``torch.distributed`` from torchrun's environment
(:func:`init_distributed`), the small CPU-side collectives of the trainer (:class:`Comm`), the
device and the precision options of :class:`ddm.training.config.TrainConfig` (TF32, bf16,
channels_last; docs/training.md, "Fast path")."""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ddm.training.config import TrainConfig

__all__ = ["init_distributed", "Comm", "fp32_mode", "resolve_device", "check_device_options", "to_channels_last"]

log = logging.getLogger("ddm.training")  # one logger for the package (what users filter on)


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


class Comm:
    """The collectives of a training run over the control group; one process: no-ops."""

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


@contextlib.contextmanager
def fp32_mode(device: torch.device, tf32: bool):
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


def resolve_device(device, comm: Comm) -> torch.device:
    """``device`` as a torch.device; a bare "cuda" becomes this process's GPU (LOCAL_RANK under DDP)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if comm.on
                           else torch.cuda.current_device())
    return dev


def check_device_options(cfg: TrainConfig, dev: torch.device, world: int) -> None:
    """Refuse (bf16 on CPU) or explain (CUDA-only options on CPU) the fast-path options."""
    if cfg.precision == "bf16" and dev.type != "cuda":
        raise ValueError(f"precision='bf16' is a GPU-only option (CUDA autocast); device is "
                         f"{dev}. Use precision='fp32' on CPU.")
    if cfg.tf32 and dev.type != "cuda":
        log.warning("tf32=True has no effect on device %s", dev)
    if cfg.gpus * cfg.nodes != world:
        log.info("train.gpus x train.nodes = %d x %d, running %d process(es): the result "
                 "does not depend on the process count", cfg.gpus, cfg.nodes, world)


def to_channels_last(t: Tensor) -> Tensor:
    """A 4-D tensor in NHWC memory format (``TrainConfig.channels_last``); others unchanged."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
