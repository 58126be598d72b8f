"""The time t of the forward process as a tensor: one shape check and one range check for the
network (``ddm.nets``), the forward process (``ddm.process``) and the h_t families
(``ddm.families``).

Times lie in [0, 1] (Eq. 6-7: x_t = x0 + H_t(phi) + sqrt(t) eps, q(x_t | x0) = N(x0 + H_t, t I));
a batch carries one time per element, shape (B,). :func:`as_batch_t` checks the shape and type
only (no host sync: ``UNet.forward`` calls it on every step), :func:`check_t` adds the range,
:func:`expand_t` broadcasts (B,) against an image batch (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_batch_t", "check_t", "expand_t"]


def as_batch_t(t: Tensor | float, batch: int, *, device=None, dtype: torch.dtype | None = None) -> Tensor:
    """t as a tensor of shape (batch,): a Python number or a 0-d tensor is broadcast, a (batch,)
    tensor kept; moved to ``device``/``dtype`` when given (a number becomes float32 by default).

    Shape and type only, no look at the values: no host sync, nothing that breaks a
    ``torch.compile`` graph, so ``UNet.forward`` uses it on every call; :func:`check_t` adds the
    range check. Errors name t, its shape or type, and what is expected."""
    if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)):
        raise ValueError(f"t must be a number or a tensor of shape ({batch},), got {type(t).__name__} {t!r}: "
                         f"pass the time of each batch element as a tensor")
    if not isinstance(t, Tensor):
        return torch.full((batch,), float(t), device=device, dtype=dtype or torch.float32)
    if t.ndim == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise ValueError(f"expected t of shape ({batch},) (one time per batch element) or a scalar, "
                         f"got {tuple(t.shape)}")
    return t if device is None and dtype is None else t.to(device=device, dtype=dtype)


def check_t(t: Tensor | float, batch: int, *, low: float = 0.0, high: float = 1.0) -> Tensor:
    """t as a tensor of shape (batch,) (:func:`as_batch_t`), checked to lie in [low, high] (no NaN):
    the times of the forward process (Eq. 7) lie in [0, 1]."""
    t = as_batch_t(t, batch)
    if torch.any(t < low) or torch.any(t > high) or torch.any(torch.isnan(t)):
        raise ValueError(
            f"t must lie in [{low}, {high}]; got values in [{t.min().item()}, {t.max().item()}]: "
            f"the process is defined for times in [{low}, {high}] only"
        )
    return t


def expand_t(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) time tensor to broadcast against a (B, ...) tensor."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like)
