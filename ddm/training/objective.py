"""The objective a :class:`ddm.training.trainer.Trainer` drives (:class:`Objective`) and the
checks of what the trainer is given (data, config, model meta) and of what the objective
returns, each failing with one line that names the thing and the fix."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from ddm.training.checkpoint import check_plain
from ddm.training.config import TrainConfig

__all__ = ["Objective", "check_inputs", "check_noise", "check_objective_out"]


class Objective(Protocol):
    """What the trainer trains on: a loss with its randomness drawn apart (docs/training.md)."""

    def draw(self, x0: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """All randomness of one step for a (global) batch x0, every tensor with leading dim B."""

    def __call__(self, model: nn.Module, x0: Tensor,
                 noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample loss (B,) and per-sample named terms {name: (B,)}."""


def check_inputs(data, cfg, model_meta) -> dict:
    """The trainer's inputs checked (data: a float tensor or what the trainer reads of one; cfg:
    a TrainConfig; model_meta: plain values); returns model_meta ({} for None)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    lazy = not isinstance(data, Tensor) and all(hasattr(data, a) for a in ("shape", "dtype", "device", "__getitem__"))
    if not (isinstance(data, Tensor) or lazy) or len(data.shape) < 1 or data.shape[0] < 1:
        raise ValueError("data must be a tensor (N, ...) with N >= 1, or an object with shape, dtype, device "
                         "and rows data[idx] (ddm.datasets.ModelRangeImages, ddm.conditioned.PackedSplit)")
    if not data.dtype.is_floating_point:
        raise ValueError(f"data must be floating point in the model's range, got {data.dtype}")
    model_meta = {} if model_meta is None else model_meta
    if not isinstance(model_meta, dict):
        raise TypeError(f"model_meta must be a dict, got {type(model_meta).__name__}")
    check_plain(model_meta, "model_meta")
    return model_meta


def check_noise(noise, B: int) -> None:
    """``objective.draw``'s result: a dict of CPU tensors with the global batch ``B`` first."""
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


def check_objective_out(per_sample, terms, b: int) -> None:
    """The objective's result for a micro-batch of ``b``: a (b,) loss and a dict of (b,) terms."""
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
