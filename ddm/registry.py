"""Which sampler and which time grid fit which forward process, and every name params.yaml may
use: the one place that ``ddm.validation`` checks params.yaml against (through its snapshot,
:func:`snapshot`, which ``ddm.snapshot`` caches so that reading params.yaml does not import torch),
so a misfit fails before any job starts (``ddm.snapshot.fit_error``, ``samplers_for`` and
``grids_for`` read what fits what from that snapshot; this module never imports ``ddm.snapshot``).

A process is named as in params.yaml (``ddm``, ``vp``, ``ve``); ``ddm/constant`` is DDM with
h_t = c only, whose forward process x_t = (1 - t) x0 + sqrt(t) eps (Eq. 7 with H_t = -t x0) is
a Gaussian path x_t = alpha_t x0 + sigma_t eps, as the VP and VE SDEs are (Eq. 1-5). The ODE
solvers (``ddm.sampling.sample_ddim``, ``sample_dpmpp_2m``) and the ``lambda`` grid need such a
path (``ddm.sampling.alpha_sigma``); the other h_t families of Table 4 are not one.

``SAMPLERS`` and ``GRIDS`` join ``ddm.sampling``'s and ``ddm.sde_samplers``' tables (``ddm.names``:
neither module imports the other's table, so there is no import cycle, and no table is edited at
import time by another module). Each sampler and grid is registered where it is defined, with
the processes it fits (``fits``), the values of its ``final_step`` option and its label, so a
new one is one decorated function; one outside the package registers on the joined tables here:

    @ddm.registry.sampler("my_sampler", fits=("ddm",), label="mine")
    def sample_mine(net, process, noise, grid, *, rng=None, clip=None, callback=None): ...

:func:`schema_enums` gives the names of every registry (h_t families, samplers, grids,
weightings, processes), which ``ddm.validation`` puts into the params.yaml schema when it validates.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import Tensor

from ddm import sampling, sde_samplers
from ddm.families import FAMILIES
from ddm.losses import LOSS_TYPES, REDUCTIONS, WEIGHTINGS
from ddm.names import EXTRACTORS, GAUSSIAN, PROCESSES, Names, grid_table, sampler_table
from ddm.task_metrics import TASK_METRICS  # codedeps: names only (what params.yaml may name)

__all__ = ["SAMPLERS", "GRIDS", "sampler", "grid", "get_sampler", "make_grid", "grid_options", "BoundSampler", "bind_sampler", "PROCESSES",
           "GAUSSIAN", "SAMPLER_PROCESSES", "GRID_PROCESSES", "SAMPLER_FINAL_STEPS", "schema_enums",
           "snapshot"]

#: Every sampler and time grid by params.yaml name: the package's (``ddm.sampling``,
#: ``ddm.sde_samplers``), then any registered here.
SAMPLERS: Names[Callable[..., Tensor]] = sampler_table(sampling.SAMPLERS, sde_samplers.SAMPLERS)
GRIDS: Names[Callable[..., Tensor]] = grid_table(sampling.GRIDS, sde_samplers.GRIDS)

#: Decorators that register a sampler (``fits``, ``final_steps``, ``label``) or a time grid
#: (``fits``, ``label``) by its params.yaml name; ``SAMPLERS.unregister(name)`` removes one.
sampler = SAMPLERS.register
grid = GRIDS.register

#: sampler name -> the processes it fits ("ddm": every h_t family; "ddm/constant": h_t = c only).
SAMPLER_PROCESSES: Mapping[str, tuple[str, ...]] = SAMPLERS.column("fits")
#: grid name -> the processes it fits.
GRID_PROCESSES: Mapping[str, tuple[str, ...]] = GRIDS.column("fits")
#: sampler name -> the values its ``final_step`` option takes (``ddm.sampling.FINAL_STEPS``);
#: ("paper",) for a sampler that has only the paper's last step.
SAMPLER_FINAL_STEPS: Mapping[str, tuple[str, ...]] = SAMPLERS.column("final_steps")


def get_sampler(name: str) -> Callable[..., Tensor]:
    """A sampler by its params.yaml name (one signature: ``ddm.sampling``'s module docstring)."""
    return SAMPLERS.lookup(name)


def make_grid(name: str, n: int, **options) -> Tensor:
    """A time grid of N + 1 points by its params.yaml name."""
    return GRIDS.lookup(name)(n, **options)


def grid_options(name: str, available: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of grid ``name`` found in ``available`` (the sampling options of a
    resolved config and the process): a grid takes what it names in its signature."""
    params = inspect.signature(GRIDS.lookup(name)).parameters
    return {k: v for k, v in available.items() if k in params and k != "n"}


@dataclass(frozen=True)
class BoundSampler:
    """An experiment's sampling bound once (:func:`bind_sampler`): its sampler and time grid looked up by
    their params.yaml names, the grid's options, the process, ``clip`` and ``final_step``. Calling
    it draws one batch: ``draw(net, noise, nfe, rng=..., callback=...)`` runs the sampler on the
    grid of N = ``nfe`` steps (``ddm.sampling``'s one signature); nothing is looked up again."""

    sampler: Callable[..., Tensor]
    grid: Callable[..., Tensor]
    grid_options: Mapping[str, Any]
    process: Any
    options: Mapping[str, Any]  # clip, and final_step unless it is the paper's

    def time_grid(self, nfe: int) -> Tensor:
        """The time grid of N = ``nfe`` steps (N + 1 points)."""
        return self.grid(nfe, **self.grid_options)

    def __call__(self, net, noise: Tensor, nfe: int, *, rng=None, callback=None) -> Tensor:
        return self.sampler(net, self.process, noise, self.time_grid(nfe), rng=rng, callback=callback, **self.options)


def bind_sampler(sampling: Mapping[str, Any], process) -> BoundSampler:
    """The sampling of a resolved config (its ``sampling`` block: ``sampler``, ``grid``, the grid's
    options such as ``rho`` and ``t_end``, ``clip``, ``final_step``) bound to ``process``: every
    name looked up here, once; an unknown name is a ValueError listing the valid ones."""
    grid = GRIDS.lookup(sampling["grid"])
    final = sampling.get("final_step", "paper")
    options = {"clip": sampling["clip"]}
    if final != "paper":  # only the DDM and EM samplers take the option
        options["final_step"] = final
    return BoundSampler(SAMPLERS.lookup(sampling["sampler"]), grid,
                        grid_options(sampling["grid"], {**sampling, "process": process}), process, options)


def _datasets() -> dict[str, Any]:
    """The datasets a preset may name (``ddm.datasets.DATASETS``: those with ``channels``), each with
    its channels, resolution and report label: the facts of the one registered object."""
    from ddm.datasets import DATASETS  # codedeps: names only (what params.yaml may name, and their facts)

    return {k: {"channels": s.channels, "resolution": s.options.get("resolution"), "label": s.label}
            for k, s in DATASETS.items() if s.channels is not None}


def _choices() -> dict[str, list[str]]:
    """The fixed choices of a method entry and of a budget, each from the module whose code takes
    it: the U-Net's heads (``ddm.nets.HEAD_TYPES``), the loss types and reductions
    (``ddm.losses``), the condition encoders and fusions (``ddm.conditioning.ENCODERS``,
    ``CONDITIONINGS``) and the training precisions (``ddm.training.config.PRECISIONS``)."""
    from ddm.conditioning import CONDITIONINGS, ENCODERS  # codedeps: names only (what params.yaml may name)
    from ddm.nets import HEAD_TYPES  # codedeps: names only (what params.yaml may name)
    from ddm.training.config import PRECISIONS  # codedeps: names only (what params.yaml may name)

    return {"head": list(HEAD_TYPES), "loss_type": list(LOSS_TYPES), "reduction": list(REDUCTIONS),
            "encoder": list(ENCODERS), "conditioning": list(CONDITIONINGS), "precision": list(PRECISIONS)}


def schema_enums() -> dict[str, list[str]]:
    """The names params.yaml may use that torch-importing code defines, as the params.yaml
    schema's enums (``ddm.validation``): those of each registry (h_t families (Table 4), samplers,
    grids, final steps, weightings (Table 5), processes, the datasets of a preset (``ddm.datasets``),
    the FID extractors (``ddm.extractors``), the extra task metrics (``ddm.task_metrics``)) and the
    fixed choices of :func:`_choices`."""
    # the FID extractors register on import (torch-fidelity: imported here, not at start-up)
    from ddm import extractors  # noqa: F401  codedeps: names only

    steps = [s for name in SAMPLERS for s in SAMPLER_FINAL_STEPS[name]]
    return {"family": list(FAMILIES), "ht": ["main", *FAMILIES], "sampler": list(SAMPLERS), "grid": list(GRIDS),
            "final_step": list(dict.fromkeys(steps)), "weighting": list(WEIGHTINGS), "process": list(PROCESSES),
            "dataset": list(_datasets()), "extractor": list(EXTRACTORS), "task_metric": list(TASK_METRICS),
            **_choices()}


def snapshot() -> dict[str, Any]:
    """The registries as plain data (``ddm.snapshot``, which reads params.yaml's
    names from it without importing torch): the schema's enums, which processes each sampler and grid fits, each
    sampler's final steps, the labels of the h_t families and weightings, the datasets' facts,
    where each FID extractor's weights come from (``ddm.names.EXTRACTORS``' ``weights``) and the
    extra task metrics' facts (``ddm.task_metrics``)."""
    return {"enums": schema_enums(),
            "fits": {"sampler": {k: list(v) for k, v in SAMPLER_PROCESSES.items()},
                     "grid": {k: list(v) for k, v in GRID_PROCESSES.items()}},
            "final_steps": {k: list(v) for k, v in SAMPLER_FINAL_STEPS.items()},
            "labels": {"family": {k: cls.label for k, cls in FAMILIES.items()},
                       "weighting": {k: WEIGHTINGS.info(k)["label"] for k in WEIGHTINGS}},
            "datasets": _datasets(),
            "extractors": {k: {"weights": EXTRACTORS.info(k)["weights"]} for k in EXTRACTORS},
            "task_metrics": _task_metrics()}


def _task_metrics() -> dict[str, dict[str, Any]]:
    """Each extra task metric's tasks, label, direction and decimals (``ddm.task_metrics``)."""
    return {k: {**TASK_METRICS.info(k), "tasks": list(TASK_METRICS.info(k)["tasks"])} for k in TASK_METRICS}
