"""From a resolved config (``ddm.config.resolve``) to library objects: the one place that maps
params.yaml names onto the process table (``ddm.names.PROCESSES``: ``ddm.process``,
``ddm.baselines``), the training objectives (``ddm.losses``) and ``ddm.nets``; and a model file's
experiment and network (:func:`load_model`). Sampling from an experiment (its sampler and time
grid, ``ddm.registry``) is ``ddm.generate``'s: training imports no sampler code, so a fixed
sampler reruns the sample jobs and not the training (ddm.codedeps).

A process knows the maths only (``ddm.process.Process``); what a params.yaml method entry makes
of it is its :class:`Recipe` (:data:`RECIPES`): the process with the entry's options, its
training objective and how many heads its network has, each a method a reader can follow. A
process class of one's own registers its name by subclassing ``Process`` (``name = ...``) and its
recipe here::

    @ddm.experiment.recipe_for(MyProcess)
    class MyRecipe(ddm.experiment.Recipe):
        def process(self, method):
            return MyProcess(method["my_option"])

        def objective(self, process, method):
            return MyObjective(process)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ddm.baselines import VESDE, VPSDE
from ddm.io import InputError
from ddm.losses import DDMObjective, VEObjective, VPObjective
from ddm.modelfile import read_model
from ddm.names import PROCESSES
from ddm.nets import UNet
from ddm.process import DecoupledProcess, Process

__all__ = ["Experiment", "Recipe", "RECIPES", "recipe_for", "recipe", "build", "make_process", "make_objective",
           "out_channels", "model_kwargs", "load_model"]


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


class Recipe:
    """What a resolved method entry (``ddm.config.resolve``'s ``method``) makes of one process
    class: :meth:`process` the process with the entry's options, :meth:`objective` its training
    objective, :meth:`n_heads` the number of its network's heads (None: the process' ``n_heads``).
    A subclass states them for the class it registers with :func:`recipe_for`."""

    def process(self, method: Mapping[str, Any]) -> Process:
        raise NotImplementedError

    def objective(self, process: Process, method: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def n_heads(self, method: Mapping[str, Any]) -> int | None:
        return None


#: Process class -> its :class:`Recipe`; a subclass without a recipe of its own uses its parent's.
RECIPES: dict[type, Recipe] = {}


def recipe_for(process_class: type) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: the :class:`Recipe` subclass becomes ``process_class``'s recipe (one
    instance, in :data:`RECIPES`); a class given a recipe twice is refused."""
    def add(cls: type[Recipe]) -> type[Recipe]:
        if process_class in RECIPES:
            raise ValueError(f"process class {process_class.__name__} already has a recipe: "
                             f"{type(RECIPES[process_class]).__name__}")
        RECIPES[process_class] = cls()
        return cls
    return add


@recipe_for(DecoupledProcess)
class DDMRecipe(Recipe):
    def process(self, method: Mapping[str, Any]) -> DecoupledProcess:
        """DDM with the entry's h_t family (Table 4) and its option ``clamp_free``."""
        opts = {"clamp_free": method["clamp_free"]} if method.get("clamp_free") else {}
        return DecoupledProcess(method["ht"], **opts)

    def objective(self, process: DecoupledProcess, method: Mapping[str, Any]) -> DDMObjective:
        """DDM's loss (Eq. 10, Alg. 1) with the weights of Table 5."""
        return DDMObjective(process, weighting=method["weighting"], loss_type=method["loss_type"],
                            t_min=method["t_min"], reduction=method["reduction"], recon_weight=method["recon_weight"])


@recipe_for(VPSDE)
class VPRecipe(Recipe):
    def process(self, method: Mapping[str, Any]) -> VPSDE:
        """The VP-SDE (DDPM, Eq. 1-5) with the entry's beta range."""
        return VPSDE(method["beta_min"], method["beta_max"])

    def objective(self, process: VPSDE, method: Mapping[str, Any]) -> VPObjective:
        """DDPM's eps loss (Eq. 4), with the x0 branch's term (§4.1) if the method has one."""
        return VPObjective(process, t_min=method["t_min"], x0_branch=method["x0_branch"],
                           loss_type=method["loss_type"], reduction=method["reduction"])

    def n_heads(self, method: Mapping[str, Any]) -> int:
        """eps, + x0 for "DDPM + x0 branch" (§4.1)."""
        return 2 if method.get("x0_branch") else 1


@recipe_for(VESDE)
class VERecipe(Recipe):
    def process(self, method: Mapping[str, Any]) -> VESDE:
        """The VE-SDE with the entry's sigma range."""
        return VESDE(method["sigma_min"], method["sigma_max"])

    def objective(self, process: VESDE, method: Mapping[str, Any]) -> VEObjective:
        """Denoising score matching on the VE-SDE as an eps loss."""
        return VEObjective(process, t_min=method["t_min"], loss_type=method["loss_type"], reduction=method["reduction"])


def recipe(cls: type) -> Recipe:
    """The recipe of a process class (or of its nearest parent that has one)."""
    for klass in cls.__mro__:
        if klass in RECIPES:
            return RECIPES[klass]
    raise ValueError(f"process '{getattr(cls, 'name', cls.__name__)}' has no recipe: register one with "
                     f"@ddm.experiment.recipe_for({cls.__name__})")


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
