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

The package's parts, each importable on its own: :mod:`~ddm.training.config` (TrainConfig, the
learning-rate schedule, the optimizer), :mod:`~ddm.training.checkpoint` (checkpoint files, RNG
states, what a resume must agree with, errors), :mod:`~ddm.training.distributed` (processes and
devices), :mod:`~ddm.training.bookkeeping` (EMA, data stream, metrics window and CSV,
preemption), :mod:`~ddm.training.objective` (the plug-in and the checks of what it returns) and
:mod:`~ddm.training.trainer` (the loop).
"""

from ddm.training.bookkeeping import PREEMPT_EXIT_CODE, NonFiniteLoss, TrainingInterrupted
from ddm.training.checkpoint import (CKPT_FORMAT, CheckpointError, CheckpointMismatchError, checkpoint_path,
                                     ema_model, latest_checkpoint, load_checkpoint, snapshots)
from ddm.training.config import PRECISIONS, RESUMABLE_KEYS, TrainConfig, lr_at
from ddm.training.distributed import init_distributed
from ddm.training.objective import Objective
from ddm.training.trainer import Trainer, train

__all__ = [
    "snapshots",
    "Objective", "TrainConfig", "Trainer", "lr_at", "train", "load_checkpoint", "ema_model",
    "init_distributed", "checkpoint_path", "latest_checkpoint",
    "TrainingInterrupted", "NonFiniteLoss", "CheckpointError", "CheckpointMismatchError",
    "PREEMPT_EXIT_CODE", "RESUMABLE_KEYS", "CKPT_FORMAT", "PRECISIONS",
]
