"""Samplers: pure functions of (network, initial noise, time grid, per-sample generator).

Every sampler has one signature::

    sampler(net, process, noise, grid, *, rng=None, clip=None, callback=None) -> x

- ``net(x, t)`` returns a tuple of heads (the U-Net of ``ddm.nets``; any callable works); the
  samplers call it through the process (``process.predict``: its input scaling, its heads and
  the x0 estimate they imply, ``ddm.process.Process``);
- ``noise`` is the initial x at ``grid[0]`` (already scaled by the process' prior std);
- ``grid`` a 1-D tensor of N + 1 decreasing times; the sampler calls ``net`` exactly N times;
- ``rng`` a ``SampleRNG`` that draws the step noise sample by sample, so that a sample depends
  only on (weights, seed, sampler, N), never on the batch it was drawn in;
- ``clip`` clamps the predicted x0 to [-clip, clip] before it is used (default None: off, as
  in the paper's Alg. 2; the authors' code clamps to [-1, 1]);
- ``callback(i, t, x, x0_hat)`` sees every step (used for Fig. 3: MSE of x0_hat against t).

Time grids are separate functions (``uniform_grid`` is the paper's); a grid takes the number of
steps N and, by keyword, any sampling option of params.yaml it names (``rho``, ``t_end``) and the
``process`` (``ddm.registry.bind_sampler`` passes exactly those, ``ddm.registry.grid_options``).

Each sampler and grid is registered by its params.yaml name where it is defined
(``@SAMPLERS.register(name, fits=..., label=...)``, ``ddm.names``). DDM samplers (this module);
the DDPM/VP-SDE and VE-SDE samplers live in ``ddm.sde_samplers``; ``ddm.registry`` joins both
tables and looks them up by name (``bind``, ``get_sampler``, ``make_grid``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ddm.names import GAUSSIAN, Names, grid_table, sampler_table
from ddm.process import DecoupledProcess
from ddm.times import expand_t

__all__ = [
    "SampleRNG",
    "uniform_grid",
    "authors_grid",
    "polynomial_grid",
    "GRIDS",
    "sample_ddm",
    "sample_ddm_deterministic",
    "SAMPLERS",
    "check_grid",
    "lambda_grid",
    "alpha_sigma",
    "sample_ddim",
    "sample_dpmpp_2m",
]

Callback = Callable[[int, Tensor, Tensor, Tensor], None]

#: This module's samplers by params.yaml name: ``fits`` names the processes a sampler fits
#: ("ddm": every h_t family; "ddm/constant": h_t = c only; ``ddm.names.GAUSSIAN``),
#: ``final_steps`` the values of its ``final_step`` option (:data:`FINAL_STEPS`), ``label`` how
#: the tables write it. ``ddm.registry`` joins it with the baselines' (``ddm.sde_samplers``).
SAMPLERS: Names[Callable[..., Tensor]] = sampler_table()
#: This module's time grids by params.yaml name: ``fits`` as for samplers (default: every process).
GRIDS: Names[Callable[..., Tensor]] = grid_table()


class SampleRNG:
    """One ``torch.Generator`` per sample, seeded by that sample's seed (as edm's
    StackedRandomGenerator): draws of shape (B, ...) stack one draw per sample, so a
    sample's noise does not depend on batch size or on how many devices share the work."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """A (len(seeds), *shape) tensor of N(0, 1) draws."""
        return torch.stack(
            [torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        )

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"batch of {x.shape[0]} samples but {len(self.generators)} seeds")
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)


# -- time grids -----------------------------------------------------------------------------
def check_grid(grid: Tensor) -> Tensor:
    """A grid is 1-D, has at least 2 points, lies in [0, 1] and strictly decreases."""
    if not isinstance(grid, Tensor) or grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"a time grid is a 1-D tensor of N + 1 >= 2 times; got {grid!r}")
    if torch.any(grid < 0) or torch.any(grid > 1):
        raise ValueError(f"grid times must lie in [0, 1]; got {grid.tolist()}")
    if torch.any(grid[1:] >= grid[:-1]):
        raise ValueError(f"grid times must strictly decrease; got {grid.tolist()}")
    return grid


def check_steps(n: int) -> int:
    """``n``, the number of sampler steps (NFE), checked to be an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of steps N must be an integer >= 1; got {n!r}")
    return n


@GRIDS.register("uniform", label="uniform $t$")
def uniform_grid(n: int) -> Tensor:
    """The paper's grid (Alg. 2): t = 1, 1 - 1/N, ..., 1/N, 0 — uniform steps s = 1/N."""
    return torch.linspace(1.0, 0.0, check_steps(n) + 1, dtype=torch.float64)


@GRIDS.register("authors", label="authors' grid")
def authors_grid(n: int, t_min: float = 1e-4) -> Tensor:
    """The authors' code: N times linear from 1 to t_min, then 0 (still N network calls)."""
    check_steps(n)
    return torch.cat([torch.linspace(1.0, t_min, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


@GRIDS.register("polynomial", label="$t_i = (1 - i/N)^{%g}$")  # %g: rho
def polynomial_grid(n: int, rho: float = 2.0) -> Tensor:
    """t_i = (1 - i/N)^rho: denser near t = 0 for rho > 1 (rho = 1 is ``uniform_grid``)."""
    if rho <= 0:
        raise ValueError(f"rho must be positive; got {rho}")
    return (1 - torch.arange(check_steps(n) + 1, dtype=torch.float64) / n) ** rho


# -- final steps -----------------------------------------------------------------------------
#: What a sampler's last network call returns, per kind of sampler. "paper": the protocol of the
#: paper (Alg. 2's last step for DDM; Euler-Maruyama's noise-free last step for the SDEs, §5.2).
#: "x0_head" (DDM, beyond the paper): the x0 head's estimate -H_1(phi). "denoise" (SDE
#: Euler-Maruyama, beyond the paper): the x0 estimate of the last call, (x - sigma_t eps)/alpha_t
#: (or the x0 branch), as DDM's own last step returns its x0 estimate.
FINAL_STEPS: dict[str, tuple[str, ...]] = {"ddm": ("paper", "x0_head"), "sde": ("paper", "denoise")}


def check_final_step(final_step: str, kind: str) -> str:
    allowed = FINAL_STEPS[kind]
    if final_step not in allowed:
        raise ValueError(f"final_step '{final_step}' does not fit this sampler (allowed: {', '.join(allowed)})")
    return final_step


# -- DDM samplers ---------------------------------------------------------------------------
def step_times(grid: Tensor, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(t_i, t_{i+1}) of step ``i`` of ``grid``, each (B,) on ``x``'s device and dtype."""
    t = grid[i].to(device=x.device, dtype=x.dtype).expand(x.shape[0])
    return t, grid[i + 1].to(device=x.device, dtype=x.dtype).expand(x.shape[0])


@SAMPLERS.register("ddm", fits=("ddm",), final_steps=FINAL_STEPS["ddm"], label="Alg. 2")  # Alg. 2 / Eq. 11
@torch.no_grad()
def sample_ddm(
    net,
    process: DecoupledProcess,
    noise: Tensor,
    grid: Tensor,
    *,
    rng: SampleRNG | None = None,
    clip: float | None = None,
    callback: Callback | None = None,
    final_step: str = "paper",
) -> Tensor:
    """The paper's stochastic sampler (Alg. 2, Eq. 11), for every h_t family.

    From x = noise at t = grid[0] (= 1), each step calls the network once,
    ``phi, eps = net(x, t)``, and draws x at t_next from N(mean, var) with

        mean = x + H_{t_next}(phi) - H_t(phi) - (t - t_next)/sqrt(t) * eps,
        var  = (t - t_next) * t_next / t.

    Written through the predicted image x0_hat = x - H_t(phi) - sqrt(t) eps (Eq. 20) the
    mean is ``x0_hat + H_{t_next}(phi) + t_next/sqrt(t) * eps`` — the same number, and the
    place where ``clip`` acts. Final denoising step (App. B): on the paper's uniform grid the
    last network call happens at t = 1/N (= Delta t, the smallest step) and steps to t = 0,
    where var = 0 and mean = x0_hat: the sample is the network's noise-free estimate of x0.

    ``final_step`` (:data:`FINAL_STEPS`): ``"paper"`` as above; ``"x0_head"`` (beyond the paper)
    makes the last network call return the x0 head's own estimate x0 = -H_1(phi) (-phi for
    h_t = c) instead of x - H_t(phi) - sqrt(t) eps.
    """
    check_grid(grid)
    check_final_step(final_step, "ddm")
    rng = rng or SampleRNG(range(noise.shape[0]), noise.device)
    x = noise
    family = process.family
    n = grid.numel() - 1
    for i in range(n):
        t, t_next = step_times(grid, i, x)
        last_x0 = final_step == "x0_head" and i == n - 1
        x0_hat, (phi, eps, *_) = process.predict(net, x, t, head=last_x0)
        root_t = expand_t(t.sqrt(), x)
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        if callback is not None:
            callback(i, t, x, x0_hat)
        if grid[i + 1] == 0 or last_x0:
            x = x0_hat
            continue
        mean = x0_hat + family.H(phi, t_next) + expand_t(t_next, x) / root_t * eps
        std = expand_t(((t - t_next) * t_next / t).sqrt(), x)
        x = mean + std * rng.randn_like(x)
    return x


@SAMPLERS.register("ddm_deterministic", fits=("ddm",), final_steps=FINAL_STEPS["ddm"], label="deterministic (authors)")
@torch.no_grad()
def sample_ddm_deterministic(
    net,
    process: DecoupledProcess,
    noise: Tensor,
    grid: Tensor,
    *,
    rng: SampleRNG | None = None,
    clip: float | None = None,
    callback: Callback | None = None,
    final_step: str = "paper",
) -> Tensor:
    """The authors' deterministic (DDIM-like, eta = 0) variant (official-code.md):

        x0_hat = x - H_t(phi) - sqrt(t) eps,   x_next = x0_hat + H_{t_next}(phi) + sqrt(t_next) eps.

    The authors' code runs it on ``authors_grid`` with ``clip=1``; here grid and clip are
    the caller's. ``rng`` is unused (kept for the common signature).
    """
    check_grid(grid)
    x = noise
    family = process.family
    for i in range(grid.numel() - 1):
        t, t_next = step_times(grid, i, x)
        x0_hat, (phi, eps, *_) = process.predict(net, x, t)
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x0_hat + family.H(phi, t_next) + expand_t(t_next.sqrt(), x) * eps
    return x


# -- ODE solvers on the Gaussian path (beyond the paper: its conclusion's "high-order solvers") --
def alpha_sigma(process) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """(alpha_t, sigma_t) of x_t = alpha_t x0 + sigma_t eps.

    DDM with h_t = c is such a path: x_t = (1 - t) x0 + sqrt(t) eps (alpha_1 = 0: pure noise at
    t = 1). Other h_t families are not (H_t depends on free random parameters), so the
    solvers refuse them. The baselines (``ddm.baselines``) provide ``alpha`` and ``sigma``
    (``ddm.process.Process.alpha_sigma``).
    """
    return process.alpha_sigma()


def _log_snr(process, t: Tensor) -> Tensor:
    """lambda_t = log(alpha_t / sigma_t); -inf where alpha_t = 0, +inf where sigma_t = 0."""
    alpha, sigma = alpha_sigma(process)
    return torch.log(alpha(t)) - torch.log(sigma(t))


@GRIDS.register("lambda", fits=GAUSSIAN, label="uniform $\\lambda$")  # needs alpha_t, sigma_t
def lambda_grid(n: int, process=None, t_end: float = 1e-3) -> Tensor:
    """N + 1 times uniform in lambda_t = log(alpha_t / sigma_t).

    DDM (h_t = c): lambda is -inf at t = 1 and +inf at t = 0, so the grid keeps t_0 = 1 and
    t_N = 0 and spaces t_1 .. t_{N-1} uniformly in lambda between lambda(1 - 1/N) and
    lambda(1/N) (the interior end points of the uniform grid). Baselines (alpha_1 > 0): uniform
    in lambda from t = 1 to t = t_end.
    """
    check_steps(n)
    if process is None:
        raise ValueError("the lambda grid needs the process (its alpha_t and sigma_t)")
    ddm = isinstance(process, DecoupledProcess)
    if ddm and n <= 2:
        return uniform_grid(n)
    hi, lo = (1 - 1 / n, 1 / n) if ddm else (1.0, t_end)
    k = n - 2 if ddm else n
    lam = torch.linspace(float(_log_snr(process, torch.tensor(hi, dtype=torch.float64))),
                         float(_log_snr(process, torch.tensor(lo, dtype=torch.float64))), k + 1, dtype=torch.float64)
    a, b = torch.full_like(lam, lo), torch.full_like(lam, hi)  # lambda decreases in t: bisection
    for _ in range(80):
        mid = (a + b) / 2
        above = _log_snr(process, mid) > lam
        a, b = torch.where(above, mid, a), torch.where(above, b, mid)
    t = (a + b) / 2
    t[0], t[-1] = hi, lo
    if ddm:
        t = torch.cat([torch.ones(1, dtype=torch.float64), t, torch.zeros(1, dtype=torch.float64)])
    return t


def _solver(net, process, noise, grid, *, order: int, clip, callback, x0_source) -> Tensor:
    check_grid(grid)
    if x0_source not in ("both", "phi"):
        raise ValueError(f"x0_source must be 'both' or 'phi'; got {x0_source!r}")
    alpha, sigma = alpha_sigma(process)
    x = noise
    x0_prev, h_prev = None, None
    n = grid.numel() - 1
    for i in range(n):
        t, s = step_times(grid, i, x)
        x0, _ = process.predict(net, x, t, head=x0_source == "phi")
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        if callback is not None:
            callback(i, t, x, x0)
        if sigma(grid[i + 1 : i + 2]).item() == 0:
            x = x0  # sigma_s = 0: the step lands on the data prediction (first order)
            continue
        t64, s64 = grid[i].double(), grid[i + 1].double()
        h = float(_log_snr(process, s64) - _log_snr(process, t64))
        D = x0
        if order == 2 and x0_prev is not None and math.isfinite(h_prev) and math.isfinite(h):
            r = h_prev / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        ratio = float(sigma(s64) / sigma(t64))
        x = ratio * x + float(alpha(s64)) * (-math.expm1(-h)) * D
        x0_prev, h_prev = x0, h
    return x


@SAMPLERS.register("ddim", fits=GAUSSIAN, label="DDIM")  # x0-prediction ODE solver on alpha_t, sigma_t
@torch.no_grad()
def sample_ddim(net, process, noise: Tensor, grid: Tensor, *, rng: SampleRNG | None = None,
                clip: float | None = None, callback: Callback | None = None, x0_source: str = "both") -> Tensor:
    """DDIM (eta = 0) written for x0-prediction on any Gaussian path (alpha_t, sigma_t):
    x_s = alpha_s x0_hat + sigma_s (x_t - alpha_t x0_hat) / sigma_t — the first-order member of
    the DPM-Solver++ family. x0_hat is the image implied by the process' heads
    (``x0_source="both"``, default: DDM's Eq. 20, the baselines' (x - sigma_t eps)/alpha_t) or the
    x0 head's own (``"phi"``: -phi for DDM with h_t = c, the x0 branch of a VP network that has
    one; ``ddm.process.Process.x0``)."""
    return _solver(net, process, noise, grid, order=1, clip=clip, callback=callback, x0_source=x0_source)


@SAMPLERS.register("dpmpp_2m", fits=GAUSSIAN, label="DPM-Solver++(2M)")
@torch.no_grad()
def sample_dpmpp_2m(net, process, noise: Tensor, grid: Tensor, *, rng: SampleRNG | None = None,
                    clip: float | None = None, callback: Callback | None = None, x0_source: str = "both") -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, multistep, data prediction), stepping in
    lambda_t = log(alpha_t / sigma_t): with h = lambda_s - lambda_t and r = h_prev / h,

        D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},   x_s = (sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) D.

    The first step from t = 1 (DDM: lambda = -inf, h = inf) is first order and equals DDIM's;
    the step after it has no finite h_prev and is first order too; a last step to sigma = 0
    (lambda = +inf) returns the data prediction. Exactly N network calls for N steps."""
    return _solver(net, process, noise, grid, order=2, clip=clip, callback=callback, x0_source=x0_source)

