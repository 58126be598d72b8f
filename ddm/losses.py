"""Training objectives (Eq. 10, Alg. 1, Table 5) and the baselines' (Eq. 4).

Each objective follows the protocol of ``ddm.training``: ``draw(x0, generator)`` returns all
randomness of a step for the (global) batch — t, eps and the free parameters of phi — and
``objective(model, x0, noise)`` returns the per-sample loss (B,) and per-sample terms. Every
weight is a (B,) tensor applied to a (B,) per-sample error: never a (B,) x (B, 1) broadcast
(the authors' code scales its extra term by a (B, B) matrix that way; see official-code.md).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ddm.names import Names
from ddm.process import DecoupledProcess, Process

__all__ = ["WEIGHTINGS", "weights", "DDMObjective", "VPObjective", "VEObjective", "per_sample_error"]


#: (lambda_1, lambda_2) of Table 5 by params.yaml name (``weighting:``), plus the later weights of
#: the authors' code; ``label`` is the row of Table 5 (``ddm.roles``). A new weighting is one
#: decorated function ``(t, t_min) -> (lambda_1(t), lambda_2(t))``.
WEIGHTINGS: Names[Callable[[Tensor, float], tuple[Tensor, Tensor]]] = Names("weighting")


@WEIGHTINGS.register("unit", label=r"$\lambda_1 = 1$, $\lambda_2 = 1$")
def _unit(t: Tensor, t_min: float) -> tuple[Tensor, Tensor]:
    return torch.ones_like(t), torch.ones_like(t)


@WEIGHTINGS.register("inverse", label=r"$\lambda_1 = 1/t$, $\lambda_2 = 1/(1-t)$")
def _inverse(t: Tensor, t_min: float) -> tuple[Tensor, Tensor]:
    # 1/(1 - t) is kept finite by the same floor as 1/t: t >= t_min and 1 - t + t_min >= t_min,
    # so both weights are at most 1/t_min (1e4 for t_min = 1e-4). The authors write 1/(1-t+eps).
    return 1 / t, 1 / (1 - t + t_min)


@WEIGHTINGS.register("exp", label=r"$\lambda_1 = e^t$, $\lambda_2 = e^{1-t}$")
def _exp(t: Tensor, t_min: float) -> tuple[Tensor, Tensor]:
    return t.exp(), (1 - t).exp()


@WEIGHTINGS.register("authors_v2", label=r"$\lambda_1 = (t^2 - t + 1)/t$, $\lambda_2 = (t^2 - t + 1)/(1-t)$")
def _authors_v2(t: Tensor, t_min: float) -> tuple[Tensor, Tensor]:
    q = t**2 - t + 1
    return q / t, q / (1 - t + t_min)


def weights(name: str, t: Tensor, t_min: float = 1e-4) -> tuple[Tensor, Tensor]:
    """(lambda_1(t), lambda_2(t)) for a (B,) time tensor (Table 5)."""
    return WEIGHTINGS.lookup(name)(t, t_min)


LOSS_TYPES = ("l2", "l1")
REDUCTIONS = ("mean", "sum")


def per_sample_error(pred: Tensor, target: Tensor, loss_type: str = "l2", reduction: str = "mean") -> Tensor:
    """||pred - target||^2 (l2) or |pred - target| (l1), reduced over all but the batch axis.

    ``reduction="mean"`` averages over C, H, W (the default here: the paper does not say);
    ``"sum"`` sums over them, as the authors' code does.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction has shape {tuple(pred.shape)}, target {tuple(target.shape)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss type '{loss_type}'; valid: {', '.join(LOSS_TYPES)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduction}'; valid: {', '.join(REDUCTIONS)}")
    diff = pred - target
    err = diff.square() if loss_type == "l2" else diff.abs()
    err = err.flatten(1)
    return err.mean(1) if reduction == "mean" else err.sum(1)


def _draw_t(batch: int, t_min: float, generator: torch.Generator | None, device) -> Tensor:
    """t ~ U(t_min, 1) (Table 6: smallest time step 1e-4; the authors draw U(0,1)(1-t_min)+t_min)."""
    u = torch.rand(batch, generator=generator, device=device)
    return t_min + (1 - t_min) * u


def _draw(process: Process, x0: Tensor, t_min: float, generator: torch.Generator | None) -> dict[str, Tensor]:
    """All randomness of a step: t, then the process' noise (eps, and z for DDM), in that order."""
    return {"t": _draw_t(x0.shape[0], t_min, generator, x0.device), **process.draw(x0, generator)}


class DDMObjective:
    """DDM's loss (Eq. 10, Alg. 1) with the weights of Table 5:

        L = lambda_1(t) ||phi_theta - phi||^2 + lambda_2(t) ||eps_theta - eps||^2,

    t ~ U(t_min, 1), phi solved from x0 (App. B), x_t = x0 + H_t(phi) + sqrt(t) eps.

    Options: ``weighting`` in WEIGHTINGS ("inverse" = (1/t, 1/(1-t)), the paper's best and our
    default; "unit"; "exp"; "authors_v2"), ``loss_type`` "l2" (default) or "l1", ``reduction``
    over pixels "mean" (default) or "sum" (authors), and ``recon_weight`` > 0 to add the authors'
    extra term recon_weight * (-log t / 2) * |x0_hat - x0| (L1 in pixel space; off by default,
    not in the paper), weighted per sample.
    """

    def __init__(
        self,
        process: DecoupledProcess,
        weighting: str = "inverse",
        loss_type: str = "l2",
        t_min: float = 1e-4,
        reduction: str = "mean",
        recon_weight: float = 0.0,
    ):
        weights(weighting, torch.ones(1), t_min)  # validates the name
        per_sample_error(torch.zeros(1, 1), torch.zeros(1, 1), loss_type, reduction)
        if not 0 < t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1); got {t_min}")
        self.process, self.weighting, self.loss_type = process, weighting, loss_type
        self.t_min, self.reduction, self.recon_weight = t_min, reduction, recon_weight

    def draw(self, x0: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return _draw(self.process, x0, self.t_min, generator)

    def __call__(self, model: nn.Module, x0: Tensor, noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        t = noise["t"].to(x0)
        phi, eps = target = self.process.target(x0, noise)
        x_t = self.process.sample_xt(x0, t, target)
        phi_pred, eps_pred = self.process.heads(model, x_t, t)[:2]
        lam1, lam2 = weights(self.weighting, t, self.t_min)
        phi_err = per_sample_error(phi_pred, phi, self.loss_type, self.reduction)
        eps_err = per_sample_error(eps_pred, eps, self.loss_type, self.reduction)
        loss = lam1 * phi_err + lam2 * eps_err
        terms = {"phi": phi_err.detach(), "eps": eps_err.detach()}
        if self.recon_weight:
            x0_hat = self.process.x0(x_t, t, (phi_pred, eps_pred))
            rec = per_sample_error(x0_hat, x0, "l1", self.reduction)
            loss = loss + self.recon_weight * (-t.log() / 2) * rec
            terms["recon"] = rec.detach()
        return loss, terms


class VPObjective:
    """DDPM's eps loss on the VP-SDE (Eq. 4 with lambda_t = 1), t ~ U(t_min, 1).

    ``x0_branch=True`` is "DDPM + x0 prediction" (§4.1): a second head predicts x0, trained
    with an added ||x0_theta - x0||^2 (weight ``x0_weight``).
    """

    def __init__(self, sde: Process, t_min: float = 1e-5, x0_branch: bool = False, x0_weight: float = 1.0,
                 loss_type: str = "l2", reduction: str = "mean"):
        per_sample_error(torch.zeros(1, 1), torch.zeros(1, 1), loss_type, reduction)
        self.process, self.t_min, self.x0_branch, self.x0_weight = sde, t_min, x0_branch, x0_weight
        self.loss_type, self.reduction = loss_type, reduction

    @property
    def sde(self) -> Process:
        return self.process

    def draw(self, x0: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return _draw(self.process, x0, self.t_min, generator)

    def __call__(self, model: nn.Module, x0: Tensor, noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        t = noise["t"].to(x0)
        (eps,) = target = self.process.target(x0, noise)
        x_t = self.process.sample_xt(x0, t, target)
        heads = self.process.heads(model, x_t, t, 2 if self.x0_branch else 1)
        eps_err = per_sample_error(heads[0], eps, self.loss_type, self.reduction)
        terms = {"eps": eps_err.detach()}
        loss = eps_err
        if self.x0_branch:
            x0_err = per_sample_error(heads[1], x0, self.loss_type, self.reduction)
            loss = loss + self.x0_weight * x0_err
            terms["x0"] = x0_err.detach()
        return loss, terms


class VEObjective(VPObjective):
    """Denoising score matching on the VE-SDE written as an eps loss (lambda = sigma^2)."""

    def __init__(self, sde, t_min: float = 1e-5, loss_type: str = "l2", reduction: str = "mean"):
        super().__init__(sde, t_min=t_min, x0_branch=False, loss_type=loss_type, reduction=reduction)
