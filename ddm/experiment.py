"""From a resolved config (``ddm.config.resolve``) to library objects: the one place that maps
params.yaml names onto the process table (``ddm.names.PROCESSES``: ``ddm.process``,
``ddm.baselines``), the training objectives (``ddm.losses``) and ``ddm.nets``; and a model file's
experiment and network (:func:`load_model`). Sampling from an experiment (its sampler and time
grid, ``ddm.registry``) is ``ddm.generate``'s: training imports no sampler code, so a fixed
sampler reruns the sample jobs and not the training (ddm.codedeps).

A process knows the maths only (``ddm.process.Process``); what a params.yaml method entry makes
of it is its :class:`Recipe` in :data:`RECIPES`: the process with the entry's options, its
training objective and how many heads its network has. A process class of one's own registers
its name by subclassing ``Process`` (``name = ...``) and its recipe here::

    ddm.experiment.RECIPES[MyProcess] = Recipe(lambda m: MyProcess(m["my_option"]), my_objective)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from torch import nn

from ddm.baselines import VESDE, VPSDE
from ddm.io import InputError
from ddm.losses import DDMObjective, VEObjective, VPObjective
from ddm.modelfile import read_model
from ddm.names import PROCESSES
from ddm.nets import UNet
from ddm.process import DecoupledProcess, Process

__all__ = ["Experiment", "Recipe", "RECIPES", "recipe", "build", "make_process", "make_objective", "out_channels",
           "model_kwargs", "load_model"]


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


class Recipe(NamedTuple):
    """What a resolved method entry (``ddm.config.resolve``'s ``method``) makes of one process
    class: ``process(method)`` the process with the entry's options, ``objective(process,
    method)`` its training objective, ``n_heads(method)`` the number of its network's heads
    (None: the process' ``n_heads``)."""

    process: Callable[[Mapping[str, Any]], Process]
    objective: Callable[[Process, Mapping[str, Any]], Any]
    n_heads: Callable[[Mapping[str, Any]], int | None] = lambda method: None


def _ddm(method: Mapping[str, Any]) -> DecoupledProcess:
    """DDM with the entry's h_t family (Table 4) and its option ``clamp_free``."""
    opts = {"clamp_free": method["clamp_free"]} if method.get("clamp_free") else {}
    return DecoupledProcess(method["ht"], **opts)


def _ddm_objective(process: DecoupledProcess, method: Mapping[str, Any]) -> DDMObjective:
    """DDM's loss (Eq. 10, Alg. 1) with the weights of Table 5."""
    return DDMObjective(process, weighting=method["weighting"], loss_type=method["loss_type"],
                        t_min=method["t_min"], reduction=method["reduction"], recon_weight=method["recon_weight"])


def _vp_objective(process: VPSDE, method: Mapping[str, Any]) -> VPObjective:
    """DDPM's eps loss (Eq. 4), with the x0 branch's term (§4.1) if the method has one."""
    return VPObjective(process, t_min=method["t_min"], x0_branch=method["x0_branch"],
                       loss_type=method["loss_type"], reduction=method["reduction"])


def _ve_objective(process: VESDE, method: Mapping[str, Any]) -> VEObjective:
    """Denoising score matching on the VE-SDE as an eps loss."""
    return VEObjective(process, t_min=method["t_min"], loss_type=method["loss_type"], reduction=method["reduction"])


#: Process class -> its :class:`Recipe`; a subclass without a recipe of its own uses its parent's.
RECIPES: dict[type, Recipe] = {
    DecoupledProcess: Recipe(_ddm, _ddm_objective),
    VPSDE: Recipe(lambda m: VPSDE(m["beta_min"], m["beta_max"]), _vp_objective,
                  lambda m: 2 if m.get("x0_branch") else 1),  # eps, + x0 for "DDPM + x0 branch" (§4.1)
    VESDE: Recipe(lambda m: VESDE(m["sigma_min"], m["sigma_max"]), _ve_objective),
}


def recipe(cls: type) -> Recipe:
    """The recipe of a process class (or of its nearest parent that has one)."""
    for klass in cls.__mro__:
        if klass in RECIPES:
            return RECIPES[klass]
    raise ValueError(f"process '{getattr(cls, 'name', cls.__name__)}' has no recipe: add one to "
                     f"ddm.experiment.RECIPES")


def make_process(method: Mapping) -> Process:
    """The process a resolved method config names (``process:``, looked up in
    ``ddm.names.PROCESSES``), with its options."""
    return recipe(PROCESSES.lookup(method["process"])).process(method)


def make_objective(process: Process, method: Mapping) -> Any:
    """The training objective of a process for a resolved method config (``ddm.losses``)."""
    return recipe(type(process)).objective(process, method)


def out_channels(process: Process, channels: int, method: Mapping) -> list[int]:
    """Channels of each head of the network for a resolved method config, for data of
    ``channels`` channels (``Process.head_channels``)."""
    return process.head_channels(channels, recipe(type(process)).n_heads(method))


def model_kwargs(cfg: Mapping, process: Process) -> dict:
    """U-Net constructor arguments: the process' heads (phi, eps for DDM; eps, + x0 for a
    baseline with an x0 branch)."""
    m, c = cfg["method"], cfg["channels"]
    model = cfg["model"]
    return {
        "in_channels": c,
        "out_channels": out_channels(process, c, m),
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
    return Experiment(dict(cfg), process, make_objective(process, cfg["method"]), model_kwargs(cfg, process))


def load_model(path: str | os.PathLike, device="cpu", *, blob: dict | None = None):
    """(Experiment, EMA network in eval mode on ``device``) of a model file (``ddm.modelfile``);
    InputError (one line) for any file that is not one. ``blob``: the file's dict, if :func:`read_model` read it
    already."""
    blob = read_model(path) if blob is None else blob
    try:
        exp = build(blob["cfg"])
        net = UNet(**blob["model_kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"model file {path}: its config and weights do not make a model "
                         f"({type(e).__name__}: {first}): train it again with `ddm train`") from None
    return exp, net.to(device).eval()
