"""The baselines' samplers and time grid (Table 1, Fig. 3; the processes are ``ddm.baselines``),
registered by params.yaml name and joined with ``ddm.sampling``'s in ``ddm.registry``:

- ``vp_em``: Euler-Maruyama on the VP reverse SDE (Eq. 5), the paper's comparison (§5.2), on a
  grid from 1 to t_end = 1e-3 (``sde_grid``) with a noise-free last step (Song et al.'s denoising);
- ``vp_ancestral``: ancestral steps x_s ~ q(x_s | x_t, x0_hat) with x0_hat from eps (DDPM's
  posterior written for continuous t), on the uniform grid down to t = 0;
- ``ve_em``: Euler-Maruyama on the VE reverse SDE, grid from 1 to 1e-5, noise-free last step.

With an x0 branch ("DDPM + x0 branch", §4.1) the samplers move x with the eps head and report the
x0 head to ``callback`` as x0_hat (what Fig. 3 plots).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddm.baselines import GaussianSDE, VESDE, VPSDE
from ddm.names import Names, grid_table, sampler_table
from ddm.sampling import FINAL_STEPS, SampleRNG, Callback, check_final_step, check_grid, check_steps, step_times
from ddm.times import expand_t

__all__ = ["sde_grid", "sample_vp_em", "sample_vp_ancestral", "sample_ve_em", "SAMPLERS", "GRIDS"]

#: This module's samplers and grids by params.yaml name (as ``ddm.sampling.SAMPLERS`` and
#: ``GRIDS``; joined with those in ``ddm.registry``).
SAMPLERS: Names = sampler_table()
GRIDS: Names = grid_table()


@GRIDS.register("sde", label="uniform $t$")
def sde_grid(n: int, t_end: float = 1e-3) -> Tensor:
    """N + 1 times linear from 1 to t_end (Song et al.'s Euler-Maruyama grid)."""
    if not 0 < t_end < 1:
        raise ValueError(f"t_end must lie in (0, 1); got {t_end}")
    return torch.linspace(1.0, t_end, check_steps(n) + 1, dtype=torch.float64)


@SAMPLERS.register("vp_em", fits=("vp",), final_steps=FINAL_STEPS["sde"], label="Euler-Maruyama")  # Eq. 5
@torch.no_grad()
def sample_vp_em(
    net, process: VPSDE, noise: Tensor, grid: Tensor, *, rng: SampleRNG | None = None,
    clip: float | None = None, callback: Callback | None = None, final_step: str = "paper",
) -> Tensor:
    """Euler-Maruyama on the reverse VP-SDE (Eq. 5): with dt = t_next - t < 0,
    x <- x + [-beta x / 2 + beta eps / sigma] dt + sqrt(beta |dt|) z; the last step adds no
    noise. ``clip`` applies only to a returned x0 estimate (plain EM never forms x0).
    ``final_step="denoise"`` (beyond the paper): the last call returns its x0 estimate instead of
    taking the last Euler step (see ``ddm.sampling.FINAL_STEPS``)."""
    return _reverse_em(net, process, noise, grid, process.beta, lambda x, beta: -0.5 * beta * x,
                       rng=rng, clip=clip, callback=callback, final_step=final_step)


@SAMPLERS.register("vp_ancestral", fits=("vp",), label="ancestral")
@torch.no_grad()
def sample_vp_ancestral(
    net, process: VPSDE, noise: Tensor, grid: Tensor, *, rng: SampleRNG | None = None,
    clip: float | None = None, callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling: x_s ~ q(x_s | x_t, x0_hat), x0_hat = (x - sigma_t eps)/alpha_t.

    With a_ts = alpha_t/alpha_s and v_ts = sigma_t^2 - a_ts^2 sigma_s^2:
    mean = a_ts sigma_s^2/sigma_t^2 x + alpha_s v_ts/sigma_t^2 x0_hat, var = v_ts sigma_s^2/sigma_t^2.
    At s = 0 this returns x0_hat. Exact for a point mass at any N (tests/test_baselines.py).
    """
    check_grid(grid)
    rng = rng or SampleRNG(range(noise.shape[0]), noise.device)
    x = noise
    for i in range(grid.numel() - 1):
        t, s = step_times(grid, i, x)
        x0_hat, heads = process.predict(net, x, t)
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        if callback is not None:  # the x0 branch where there is one (Fig. 3), else the step's x0_hat
            callback(i, t, x, process.x0(x, t, heads, head=True) if len(heads) > 1 else x0_hat)
        if grid[i + 1] == 0:
            x = x0_hat
            continue
        a_t, a_s = expand_t(process.alpha(t), x), expand_t(process.alpha(s), x)
        v_t, v_s = expand_t(process.sigma(t) ** 2, x), expand_t(process.sigma(s) ** 2, x)
        a_ts = a_t / a_s
        v_ts = v_t - a_ts**2 * v_s
        mean = a_ts * v_s / v_t * x + a_s * v_ts / v_t * x0_hat
        x = mean + (v_ts * v_s / v_t).clamp_min(0).sqrt() * rng.randn_like(x)
    return x


@SAMPLERS.register("ve_em", fits=("ve",), final_steps=FINAL_STEPS["sde"], label="Euler-Maruyama")
@torch.no_grad()
def sample_ve_em(
    net, process: VESDE, noise: Tensor, grid: Tensor, *, rng: SampleRNG | None = None,
    clip: float | None = None, callback: Callback | None = None, final_step: str = "paper",
) -> Tensor:
    """Euler-Maruyama on the reverse VE-SDE: x <- x + g^2 eps/sigma dt + g sqrt(|dt|) z
    (dt < 0, score = -eps/sigma); the last step adds no noise. ``final_step="denoise"``: the
    last call returns its x0 estimate x - sigma_t eps (as :func:`sample_vp_em`)."""
    return _reverse_em(net, process, noise, grid, process.g2, None,
                       rng=rng, clip=clip, callback=callback, final_step=final_step)


def _reverse_em(net, process: GaussianSDE, noise: Tensor, grid: Tensor, g2, drift, *, rng: SampleRNG | None,
                clip: float | None, callback: Callback | None, final_step: str) -> Tensor:
    """Euler-Maruyama on a reverse SDE dx = [f(x, t) - g^2 score] dt + g dw with score = -eps/sigma
    (Song et al. 2021, Eq. 6; the VP-SDE of Eq. 5: f = -beta x / 2, g^2 = beta; the VE-SDE: f = 0):
    x <- x + [f + g^2 eps / sigma] dt + g sqrt(|dt|) z with dt < 0, no noise on the last step.
    ``g2(t)``: g^2; ``drift(x, g2)``: f, or None for f = 0."""
    check_grid(grid)
    check_final_step(final_step, "sde")
    rng = rng or SampleRNG(range(noise.shape[0]), noise.device)
    x = noise
    n = grid.numel() - 1
    for i in range(n):
        t, t_next = step_times(grid, i, x)
        x0_hat, (eps, *_) = process.predict(net, x, t, head=True)  # the x0 branch where there is one
        if callback is not None:
            callback(i, t, x, x0_hat)
        if final_step == "denoise" and i == n - 1:
            return x0_hat if clip is None else x0_hat.clamp(-clip, clip)
        g2_t = expand_t(g2(t), x)
        dt = expand_t(t_next - t, x)
        step = g2_t * eps / expand_t(process.sigma(t), x)
        x = x + (step if drift is None else drift(x, g2_t) + step) * dt
        if i < n - 1:
            x = x + (g2_t * dt.abs()).sqrt() * rng.randn_like(x)
    return x

