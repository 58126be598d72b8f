"""From a resolved config (``ddm.config.resolve``) to library objects: the one place that maps
params.yaml names onto the process table (``ddm.names.PROCESSES``: ``ddm.process``,
``ddm.baselines``; each process gives its objective, ``ddm.losses``, and its network's heads),
``ddm.nets`` and the samplers and grids (``ddm.registry``). The CLI and the pipeline call only
this (and ``ddm.modelfile`` for model files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ddm.conditioning import bind
from ddm.nets import UNet
from ddm.process import Process
from ddm.registry import PROCESSES, get_sampler, grid_options, make_grid
from ddm.sampling import SampleRNG

__all__ = ["Experiment", "build", "make_process", "model_kwargs", "generate"]


@dataclass
class Experiment:
    cfg: dict
    process: Process  # DecoupledProcess | VPSDE | VESDE (ddm.names.PROCESSES)
    objective: Any
    model_kwargs: dict

    def make_model(self) -> nn.Module:
        return UNet(**self.model_kwargs)

    @property
    def prior_std(self) -> float:
        return float(self.process.prior_std)

    def grid(self, nfe: int) -> Tensor:
        """The time grid of N = nfe steps, given the sampling options it names (``rho``, ``t_end``)
        and, if it names it, the process (``ddm.registry.grid_options``)."""
        s = self.cfg["sampling"]
        return make_grid(s["grid"], nfe, **grid_options(s["grid"], {**s, "process": self.process}))

    @property
    def sampler(self) -> Callable[..., Tensor]:
        return get_sampler(self.cfg["sampling"]["sampler"])


def make_process(method: Mapping) -> Process:
    """The process a resolved method config names (``process:``, looked up in
    ``ddm.names.PROCESSES``), with its options."""
    return PROCESSES.lookup(method["process"]).from_method(method)


def model_kwargs(cfg: Mapping, process: Process) -> dict:
    """U-Net constructor arguments: the process' heads (phi, eps for DDM; eps, + x0 for a
    baseline with an x0 branch)."""
    m, c = cfg["method"], cfg["channels"]
    model = cfg["model"]
    return {
        "in_channels": c,
        "out_channels": process.out_channels(c, m),
        "resolution": cfg["resolution"],
        "ch": model["ch"],
        "ch_mult": list(model["ch_mult"]),
        "num_blocks": model["num_blocks"],
        "attn_resolutions": list(model["attn_resolutions"]),
        "dropout": model["dropout"],
        "head": m["head"],
    }


def build(cfg: Mapping) -> Experiment:
    process = make_process(cfg["method"])
    return Experiment(dict(cfg), process, process.objective(cfg["method"]), model_kwargs(cfg, process))


@torch.no_grad()
def generate(exp: Experiment, net: nn.Module, nfe: int, seeds: list[int], *, batch_size: int = 500,
             device: str | torch.device = "cpu", callback=None, cond: Tensor | None = None) -> Tensor:
    """Samples in the model's range, one per seed, in batches (pixels independent of batch size).
    ``cond`` (one condition per seed, a conditioned network's): sample i sees ``cond[i]``
    (``ddm.conditioning.bind``), so every method given the same seeds sees the same conditions."""
    shape = (exp.cfg["channels"], exp.cfg["resolution"], exp.cfg["resolution"])
    grid = exp.grid(nfe)
    final = exp.cfg["sampling"].get("final_step", "paper")
    options = {} if final == "paper" else {"final_step": final}  # only DDM and EM samplers have one
    if cond is not None and len(cond) != len(seeds):
        raise ValueError(f"{len(cond)} conditions for {len(seeds)} seeds: give one condition per sample")
    out = []
    for i in range(0, len(seeds), batch_size):
        rng = SampleRNG(seeds[i : i + batch_size], device)
        noise = exp.process.prior_sample(rng, shape)
        model = net if cond is None else bind(net, cond[i : i + batch_size].to(device))
        out.append(exp.sampler(model, exp.process, noise, grid, rng=rng, clip=exp.cfg["sampling"]["clip"],
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
