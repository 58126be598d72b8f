"""Baselines on the same backbone (Table 1, Fig. 3): DDPM as a VP-SDE and the VE-SDE ("SDE").

VP-SDE (Song et al. 2021c, the continuous-time DDPM; paper Eq. 1-5):
    beta(t) = beta_min + t (beta_max - beta_min), beta_min = 0.1, beta_max = 20,
    x_t = alpha_t x0 + sigma_t eps,  alpha_t = exp(-t^2 (beta_max - beta_min)/4 - t beta_min/2),
    sigma_t = sqrt(1 - alpha_t^2); the network predicts eps (Eq. 4), score = -eps / sigma_t.
VE-SDE (Song et al. 2021c, NCSN++ "SDE" row of Table 1):
    sigma(t) = sigma_min (sigma_max / sigma_min)^t, x_t = x0 + sigma(t) eps, prior N(0, sigma_max^2 I).
    The network sees x_t * c_in(t) with c_in = 1/sqrt(1 + sigma^2) (input scaling so that a
    small U-Net sees unit-scale inputs; the SDE and its samplers are unchanged) and predicts eps.

Their samplers are ``ddm.sde_samplers``' (same signature as ``ddm.sampling``; looked up by name
through ``ddm.registry``), apart from the processes so that training imports no sampler code:
- ``vp_em``: Euler-Maruyama on the reverse SDE (Eq. 5), the paper's comparison (§5.2), on a grid
  from 1 to t_end = 1e-3 (``sde_grid``) with a noise-free last step (Song et al.'s denoising);
- ``vp_ancestral``: ancestral steps x_s ~ q(x_s | x_t, x0_hat) with x0_hat from eps (DDPM's
  posterior written for continuous t), on the uniform grid down to t = 0;
- ``ve_em``: Euler-Maruyama on the VE reverse SDE, grid from 1 to 1e-5, noise-free last step.
"DDPM + x0 branch" (§4.1) is the VP model with a second head that predicts x0 (trained by
``ddm.losses.VPObjective(x0_branch=True)``, which ``ddm.experiment`` builds); the samplers move x
with the eps head and report the x0 head to ``callback`` as x0_hat (that is what Fig. 3 plots).

Both SDEs implement ``ddm.process.Process`` through :class:`GaussianSDE` (input scaling c_in,
x0 from eps or the x0 branch, targets, heads) and register as ``vp`` and ``ve``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor

from ddm.process import Process
from ddm.times import expand_t

__all__ = ["GaussianSDE", "VPSDE", "VESDE"]



class GaussianSDE(Process):
    """An SDE with x_t = alpha_t x0 + sigma_t eps whose network predicts eps from c_in(t) x_t,
    optionally with a second head that predicts x0 (``x0_branch``, "DDPM + x0 prediction", §4.1).
    Subclasses give ``alpha``, ``sigma`` and ``c_in``."""

    head_names = ("eps", "x0")

    def head_channels(self, channels: int, n: int | None = None) -> list[int]:
        """eps, then x0 (the x0 branch: ``n = 2``), each with the data's channels."""
        return [channels, channels][: self.n_heads if n is None else n]

    def target(self, x0: Tensor, noise: Mapping[str, Tensor]) -> tuple[Tensor]:
        """(eps,): the eps head's target (an x0 branch regresses to x0 itself)."""
        return (noise["eps"].to(x0),)

    def sample_xt(self, x0: Tensor, t: Tensor, target: tuple[Tensor, ...]) -> Tensor:
        return self.q_sample(x0, t, target[0])

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return expand_t(self.alpha(t), x0) * x0 + expand_t(self.sigma(t), x0) * eps

    def net_input(self, x: Tensor, t: Tensor) -> Tensor:
        """c_in(t) x_t."""
        return x * expand_t(self.c_in(t), x)

    def x0_from_eps(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return (x - expand_t(self.sigma(t), x) * eps) / expand_t(self.alpha(t), x)

    def x0(self, x: Tensor, t: Tensor, heads: tuple[Tensor, ...], *, head: bool = False) -> Tensor:
        """(x - sigma_t eps) / alpha_t; ``head=True``: the x0 branch where the network has one."""
        return heads[1] if head and len(heads) > 1 else self.x0_from_eps(x, t, heads[0])

    def alpha_sigma(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        return self.alpha, self.sigma


class VPSDE(GaussianSDE):
    """Variance-preserving SDE with a linear beta schedule (DDPM in continuous time)."""

    name = "vp"
    label = "DDPM"
    prior_std = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max; got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2 * self.log_alpha(t))).sqrt()

    def c_in(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


class VESDE(GaussianSDE):
    """Variance-exploding SDE, sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    name = "ve"
    label = "SDE"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.prior_std = self.sigma_max

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def g2(self, t: Tensor) -> Tensor:
        """g(t)^2 = d sigma^2 / dt."""
        return 2 * self.sigma(t) ** 2 * math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def c_in(self, t: Tensor) -> Tensor:
        return 1 / (1 + self.sigma(t) ** 2).sqrt()
