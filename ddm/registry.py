"""Which sampler and which time grid fit which forward process: the one table that
``ddm.config`` checks params.yaml against, so a misfit fails before any job starts.

A process is named as in params.yaml (``ddm``, ``vp``, ``ve``); ``ddm/constant`` is DDM with
h_t = c only, whose forward process x_t = (1 - t) x0 + sqrt(t) eps (Eq. 7 with H_t = -t x0) is
a Gaussian path x_t = alpha_t x0 + sigma_t eps, as the VP and VE SDEs are (Eq. 1-5). The ODE
solvers (``ddm.sampling.sample_ddim``, ``sample_dpmpp_2m``) and the ``lambda`` grid need such a
path (``ddm.sampling.alpha_sigma``); the other h_t families of Table 4 are not one.

It also holds the lookup by name: ``SAMPLERS`` and ``GRIDS`` join ``ddm.sampling``'s and
``ddm.baselines``' (neither module imports the other's table, so there is no import cycle and
no table edited at import time). A new sampler or grid is one entry in its module's table and
one line in the fit tables here; ``tests/test_config.py`` fails while one is missing.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from ddm import baselines, sampling

#: Every sampler and time grid by params.yaml name.
SAMPLERS: dict[str, Callable[..., Tensor]] = {**sampling.SAMPLERS, **baselines.SAMPLERS}
GRIDS: dict[str, Callable[..., Tensor]] = {**sampling.GRIDS, **baselines.GRIDS}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """A sampler by its params.yaml name (one signature: ``ddm.sampling``'s module docstring)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; valid names: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def make_grid(name: str, n: int, **options) -> Tensor:
    """A time grid of N + 1 points by its params.yaml name."""
    if name not in GRIDS:
        raise ValueError(f"unknown time grid '{name}'; valid names: {', '.join(sorted(GRIDS))}")
    return GRIDS[name](n, **options)

__all__ = ["SAMPLERS", "GRIDS", "get_sampler", "make_grid", "PROCESSES", "GAUSSIAN", "SAMPLER_PROCESSES", "GRID_PROCESSES", "SAMPLER_FINAL_STEPS", "kinds",
           "samplers_for", "grids_for", "fit_error"]

#: The forward processes of params.yaml (`process:`).
PROCESSES = ("ddm", "vp", "ve")
#: Every Gaussian path x_t = alpha_t x0 + sigma_t eps.
GAUSSIAN = ("ddm/constant", "vp", "ve")

#: sampler name -> the processes it fits ("ddm": every h_t family; "ddm/constant": h_t = c only).
SAMPLER_PROCESSES: dict[str, tuple[str, ...]] = {
    "ddm": ("ddm",),                  # Alg. 2 / Eq. 11
    "ddm_deterministic": ("ddm",),    # the authors' DDIM-like variant
    "ddim": GAUSSIAN,                 # x0-prediction ODE solvers on alpha_t, sigma_t
    "dpmpp_2m": GAUSSIAN,
    "vp_em": ("vp",),                 # Eq. 5, Euler-Maruyama
    "vp_ancestral": ("vp",),
    "ve_em": ("ve",),
}

#: grid name -> the processes it fits.
GRID_PROCESSES: dict[str, tuple[str, ...]] = {
    "uniform": PROCESSES,
    "authors": PROCESSES,
    "polynomial": PROCESSES,
    "sde": PROCESSES,
    "lambda": GAUSSIAN,               # uniform in log(alpha_t / sigma_t)
}

#: sampler name -> the values its ``final_step`` option takes (``ddm.sampling.FINAL_STEPS``);
#: a sampler not listed has only the paper's last step.
SAMPLER_FINAL_STEPS: dict[str, tuple[str, ...]] = {
    "ddm": ("paper", "x0_head"),
    "ddm_deterministic": ("paper", "x0_head"),
    "vp_em": ("paper", "denoise"),
    "ve_em": ("paper", "denoise"),
}


def kinds(process: str, ht: str | None = None) -> set[str]:
    """The names a (process, h_t family) answers to in the tables above; ``ht=None`` (not yet
    known, e.g. ``ht: main`` of a method that is not run) answers to all of DDM's."""
    if process == "ddm" and ht in (None, "constant"):
        return {"ddm", "ddm/constant"}
    return {process}


def _describe(process: str, ht: str | None) -> str:
    return f"process '{process}'" + (f" with ht '{ht}'" if process == "ddm" and ht else "")


def _need(fits: tuple[str, ...], process: str) -> str:
    """Why a DDM process with another h_t does not fit (the entry needs h_t = c)."""
    return " (it needs a Gaussian path: ht constant)" if process == "ddm" and "ddm/constant" in fits else ""


def samplers_for(process: str, ht: str | None = None) -> list[str]:
    """The samplers that fit a process (sorted)."""
    k = kinds(process, ht)
    return sorted(s for s, fits in SAMPLER_PROCESSES.items() if k & set(fits))


def grids_for(process: str, ht: str | None = None) -> list[str]:
    """The time grids that fit a process (sorted)."""
    k = kinds(process, ht)
    return sorted(g for g, fits in GRID_PROCESSES.items() if k & set(fits))


def fit_error(sampler: str, grid: str, process: str, ht: str | None = None, final_step: str = "paper") -> str | None:
    """None if the sampler, the grid and the final step fit the process, else one sentence
    naming the sampler (or grid, or final step), the process and what is allowed for it."""
    k = kinds(process, ht)
    if sampler not in SAMPLER_PROCESSES:
        return f"sampler '{sampler}' has no entry in ddm.registry.SAMPLER_PROCESSES (a bug: add one)"
    if not k & set(SAMPLER_PROCESSES[sampler]):
        return (f"sampler '{sampler}' does not fit {_describe(process, ht)}{_need(SAMPLER_PROCESSES[sampler], process)} "
                f"(allowed: {', '.join(samplers_for(process, ht))})")
    if grid not in GRID_PROCESSES:
        return f"grid '{grid}' has no entry in ddm.registry.GRID_PROCESSES (a bug: add one)"
    if not k & set(GRID_PROCESSES[grid]):
        return (f"grid '{grid}' does not fit {_describe(process, ht)}{_need(GRID_PROCESSES[grid], process)} "
                f"(allowed: {', '.join(grids_for(process, ht))})")
    steps = SAMPLER_FINAL_STEPS.get(sampler, ("paper",))
    if final_step not in steps:
        return f"final_step '{final_step}' does not fit sampler '{sampler}' (allowed: {', '.join(steps)})"
    return None
