"""DDPM as a VP-SDE and the VE-SDE baseline: oracle checks of their samplers (Table 1, Fig. 3)."""

import math

import pytest
import torch

from ddm.baselines import VESDE, VPSDE
from ddm.sde_samplers import sample_ve_em, sample_vp_ancestral, sample_vp_em, sde_grid
from ddm.sampling import SampleRNG, uniform_grid
from oracles import VPGaussianOracle


def _noise(n, seed=0, scale=1.0):
    return SampleRNG(range(seed, seed + n)).randn((1, 4, 4), dtype=torch.float64) * scale


def test_vp_schedule_matches_song_et_al():
    sde = VPSDE()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    # alpha_t = exp(-t^2 (20 - 0.1)/4 - 0.1 t / 2); alpha^2 + sigma^2 = 1
    expected = torch.exp(-(t**2) * 19.9 / 4 - 0.05 * t)
    torch.testing.assert_close(sde.alpha(t), expected)
    torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones(3, dtype=torch.float64))
    assert sde.beta(torch.tensor(1.0)).item() == pytest.approx(20.0)
    # d log alpha / dt = -beta / 2
    tt = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(sde.log_alpha(tt).sum(), tt)
    assert d.item() == pytest.approx(-sde.beta(tt).item() / 2)


@pytest.mark.parametrize("n_steps", [1, 2, 5, 10, 50])
def test_vp_ancestral_is_exact_for_a_point_mass(n_steps):
    oracle = VPGaussianOracle(VPSDE(), 0.4, 0.0)
    x = sample_vp_ancestral(oracle, VPSDE(), _noise(8), uniform_grid(n_steps), rng=SampleRNG(range(8)))
    torch.testing.assert_close(x, torch.full_like(x, 0.4), atol=1e-9, rtol=0)
    assert oracle.calls == n_steps


def test_vp_euler_maruyama_error_shrinks_with_N():
    """EM is not exact at finite N: its error on a point mass falls as N grows."""
    errors = []
    for n_steps in (10, 100, 1000):
        oracle = VPGaussianOracle(VPSDE(), 0.4, 0.0)
        x = sample_vp_em(oracle, VPSDE(), _noise(64), sde_grid(n_steps), rng=SampleRNG(range(64)))
        assert oracle.calls == n_steps
        errors.append((x - 0.4).square().mean().sqrt().item())
    assert errors[0] > 10 * errors[2] and errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


class BatchRNG:
    """One generator for the whole batch: 2048 x 1000 per-sample draws (``SampleRNG``) would cost
    minutes, and per-sample seeding is not what these moment tests check."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


def test_vp_em_gaussian_moments_converge():
    """Gaussian data N(-0.3, 0.4^2): EM output moments approach the data's as N grows."""
    gaps = []
    for n_steps in (10, 1000):
        oracle = VPGaussianOracle(VPSDE(), -0.3, 0.4)
        x = sample_vp_em(oracle, VPSDE(), _noise(2048), sde_grid(n_steps), rng=BatchRNG(n_steps)).reshape(-1)
        gaps.append(abs(x.mean().item() + 0.3) + abs(x.std().item() - 0.4))
    k = 2048 * 16
    assert gaps[1] < gaps[0]
    assert gaps[1] < 6 * 0.4 / math.sqrt(k) + 0.01  # Monte Carlo error + EM bias at t_end = 1e-3


def test_ve_em_point_mass_error_shrinks():
    sde = VESDE(0.01, 10.0)

    def oracle(x, t):
        return ((x - 0.5) / sde.sigma(t).reshape(-1, 1, 1, 1).to(x) * 1.0,)

    # the VE network sees x * c_in; undo the scaling so the oracle sees x
    def net(xin, t):
        return oracle(xin / sde.c_in(t).reshape(-1, 1, 1, 1).to(xin), t)

    errs = []
    for n_steps in (10, 1000):
        x = sample_ve_em(net, sde, _noise(64, scale=sde.prior_std), sde_grid(n_steps, 1e-5), rng=SampleRNG(range(64)))
        errs.append((x - 0.5).square().mean().sqrt().item())
    # the floor is the noise left at t_end: sigma(1e-5) ~ sigma_min = 0.01
    assert errs[1] < errs[0] / 2 and errs[1] < 0.02


def test_bad_parameters():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(20, 0.1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="t_end"):
        sde_grid(4, 0.0)
