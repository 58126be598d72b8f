"""From a resolved config (``ddm.config.resolve``) to library objects: the one place that maps
params.yaml names onto ``ddm.process``, ``ddm.baselines``, ``ddm.losses``, ``ddm.nets`` and
``ddm.sampling``. The CLI and the pipeline call only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ddm.baselines import VESDE, VPSDE
from ddm.losses import DDMObjective, VEObjective, VPObjective
from ddm.nets import UNet
from ddm.process import DecoupledProcess
from ddm.registry import get_sampler, grid_options, make_grid
from ddm.sampling import SampleRNG

__all__ = ["Experiment", "build", "model_kwargs", "generate"]


@dataclass
class Experiment:
    cfg: dict
    process: Any  # DecoupledProcess | VPSDE | VESDE
    objective: Any
    model_kwargs: dict

    def make_model(self) -> nn.Module:
        return UNet(**self.model_kwargs)

    @property
    def prior_std(self) -> float:
        return float(getattr(self.process, "prior_std", 1.0))

    def grid(self, nfe: int) -> Tensor:
        """The time grid of N = nfe steps, given the sampling options it names (``rho``, ``t_end``)
        and, if it names it, the process (``ddm.registry.grid_options``)."""
        s = self.cfg["sampling"]
        return make_grid(s["grid"], nfe, **grid_options(s["grid"], {**s, "process": self.process}))

    @property
    def sampler(self) -> Callable[..., Tensor]:
        return get_sampler(self.cfg["sampling"]["sampler"])


def _process(m: Mapping):
    if m["process"] == "ddm":
        opts = {"clamp_free": m["clamp_free"]} if m.get("clamp_free") else {}
        return DecoupledProcess(m["ht"], **opts)
    if m["process"] == "vp":
        return VPSDE(m["beta_min"], m["beta_max"])
    return VESDE(m["sigma_min"], m["sigma_max"])


def model_kwargs(cfg: Mapping, process) -> dict:
    """U-Net constructor arguments: heads (phi, eps) for DDM, eps (+ x0) for the baselines."""
    m, c = cfg["method"], cfg["channels"]
    if m["process"] == "ddm":
        heads = [process.family.phi_channels(c), c]
    else:
        heads = [c, c] if m.get("x0_branch") else [c]
    model = cfg["model"]
    return {
        "in_channels": c,
        "out_channels": heads,
        "resolution": cfg["resolution"],
        "ch": model["ch"],
        "ch_mult": list(model["ch_mult"]),
        "num_blocks": model["num_blocks"],
        "attn_resolutions": list(model["attn_resolutions"]),
        "dropout": model["dropout"],
        "head": m["head"],
    }


def build(cfg: Mapping) -> Experiment:
    m = cfg["method"]
    process = _process(m)
    if m["process"] == "ddm":
        objective = DDMObjective(process, weighting=m["weighting"], loss_type=m["loss_type"], t_min=m["t_min"],
                                 reduction=m["reduction"], recon_weight=m["recon_weight"])
    elif m["process"] == "vp":
        objective = VPObjective(process, t_min=m["t_min"], x0_branch=m["x0_branch"], loss_type=m["loss_type"],
                                reduction=m["reduction"])
    else:
        objective = VEObjective(process, t_min=m["t_min"], loss_type=m["loss_type"], reduction=m["reduction"])
    return Experiment(dict(cfg), process, objective, model_kwargs(cfg, process))


@torch.no_grad()
def generate(exp: Experiment, net: nn.Module, nfe: int, seeds: list[int], *, batch_size: int = 500,
             device: str | torch.device = "cpu", callback=None) -> Tensor:
    """Samples in the model's range, one per seed, in batches (pixels independent of batch size)."""
    shape = (exp.cfg["channels"], exp.cfg["resolution"], exp.cfg["resolution"])
    grid = exp.grid(nfe)
    final = exp.cfg["sampling"].get("final_step", "paper")
    options = {} if final == "paper" else {"final_step": final}  # only DDM and EM samplers have one
    out = []
    for i in range(0, len(seeds), batch_size):
        rng = SampleRNG(seeds[i : i + batch_size], device)
        noise = rng.randn(shape) * exp.prior_std
        out.append(exp.sampler(net, exp.process, noise, grid, rng=rng, clip=exp.cfg["sampling"]["clip"],
                               callback=callback, **options).cpu())
    return torch.cat(out)


def checkpoint_fids(exp: Experiment, model: nn.Module, snapshots, nfes: list[int], seeds: list[int],
                    score: Callable[[Tensor], dict], *, batch_size: int = 500, device: str | torch.device = "cpu") -> list[dict]:
    """FID against training step: the EMA weights of each ``(step, state_dict)`` snapshot
    sampled at each NFE with the experiment's sampler and scored by ``score`` (uint8 samples ->
    dict with ``fid``). Shows whether a model sits on its FID plateau (the embedded preset's
    convergence figure)."""
    from ddm.data import to_uint8

    rows = []
    for step, state in snapshots:
        model.load_state_dict(state)
        model.eval()
        for nfe in nfes:
            x = generate(exp, model, nfe, seeds, batch_size=batch_size, device=device)
            rows.append({"step": int(step), "nfe": int(nfe), **score(to_uint8(x.clamp(-1, 1)))})
    return rows
