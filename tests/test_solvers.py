"""Second-order solvers beyond the paper (DDIM, DPM-Solver++(2M)) and the time grids."""

import math

import pytest
import torch

from ddm.baselines import VPSDE
from ddm.sde_samplers import sde_grid
from ddm.process import DecoupledProcess
from ddm.sampling import lambda_grid, polynomial_grid, sample_ddim, sample_dpmpp_2m, uniform_grid
from oracles import GaussianOracle, VPGaussianOracle

PROC = DecoupledProcess("constant")
GRIDS = {"uniform": uniform_grid, "polynomial": lambda n: polynomial_grid(n, 2.0), "lambda": lambda n: lambda_grid(n, PROC)}


def _affine(sampler, oracle, process, grid):
    """A deterministic solver with affine predictors is an affine map x_1 -> a x_1 + b."""
    f0 = sampler(oracle, process, torch.zeros(1, 1, 1, 1, dtype=torch.float64), grid).item()
    f1 = sampler(oracle, process, torch.ones(1, 1, 1, 1, dtype=torch.float64), grid).item()
    return f1 - f0, f0


@pytest.mark.parametrize("sampler", [sample_ddim, sample_dpmpp_2m])
@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("n_steps", [1, 2, 5, 10, 50])
def test_point_mass_is_returned_exactly(sampler, grid, n_steps):
    oracle = GaussianOracle(PROC.family, -0.35, 0.0)
    x = sampler(oracle, PROC, torch.randn(6, 1, 3, 3, dtype=torch.float64), GRIDS[grid](n_steps))
    torch.testing.assert_close(x, torch.full_like(x, -0.35), atol=1e-9, rtol=0)
    assert oracle.calls == n_steps


@pytest.mark.parametrize("sampler", [sample_ddim, sample_dpmpp_2m])
def test_vp_point_mass_on_a_grid_to_zero(sampler):
    sde = VPSDE()
    oracle = VPGaussianOracle(sde, 0.4, 0.0)
    x = sampler(oracle, sde, torch.randn(4, 1, 2, 2, dtype=torch.float64), uniform_grid(7))
    torch.testing.assert_close(x, torch.full_like(x, 0.4), atol=1e-9, rtol=0)
    assert oracle.calls == 7


def test_observed_order_on_the_smooth_vp_case():
    """VP-SDE, Gaussian data, lambda-uniform grid from 1 to 1e-3 (lambda finite at both ends):
    the error of the flow map against a 5000-step reference falls as N^-2 for DPM-Solver++(2M)
    (observed 1.98, 2.00 at N = 40 -> 80 -> 160) and as N^-1 for DDIM (0.99, 1.01)."""
    sde = VPSDE()
    oracle = VPGaussianOracle(sde, 0.7, 0.5)

    def orders(sampler):
        ref = _affine(sampler, oracle, sde, lambda_grid(5000, sde, 1e-3))
        errs = []
        for n in (40, 80, 160):
            a, b = _affine(sampler, oracle, sde, lambda_grid(n, sde, 1e-3))
            errs.append(abs(a - ref[0]) + abs(b - ref[1]))
        return [math.log2(errs[i] / errs[i + 1]) for i in range(2)]

    assert all(1.85 < o < 2.15 for o in orders(sample_dpmpp_2m))
    assert all(0.85 < o < 1.15 for o in orders(sample_ddim))


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_second_order_beats_first_order_on_ddm(grid):
    """DDM (h_t = c), Gaussian data N(0.7, 0.5^2): the exact flow maps N(0, 1) onto the data, so
    the error is |a - 0.5| + |b - 0.7|. The final step to t = 0 (sigma = 0, lambda = +inf) is
    first order, which caps the global order at 1 on the uniform and lambda grids; 2M's error is
    still lower than DDIM's at every N, and far lower on the polynomial grid."""
    oracle = GaussianOracle(PROC.family, 0.7, 0.5)
    for n in (10, 20, 40):
        errs = {}
        for s in (sample_ddim, sample_dpmpp_2m):
            a, b = _affine(s, oracle, PROC, GRIDS[grid](n))
            errs[s] = abs(a - 0.5) + abs(b - 0.7)
        assert errs[sample_dpmpp_2m] < errs[sample_ddim]
        if grid == "polynomial":
            assert errs[sample_dpmpp_2m] < errs[sample_ddim] / 5


def test_lambda_grid_shape_and_refusals():
    g = lambda_grid(6, PROC)
    assert g.numel() == 7 and g[0] == 1 and g[-1] == 0 and torch.all(g[1:] < g[:-1])
    assert g[1].item() == pytest.approx(1 - 1 / 6) and g[-2].item() == pytest.approx(1 / 6)
    lam = torch.log(1 - g[1:-1]) - 0.5 * torch.log(g[1:-1])
    torch.testing.assert_close(lam.diff(), torch.full((4,), lam.diff()[0].item(), dtype=torch.float64))
    v = lambda_grid(4, VPSDE(), 1e-3)
    assert v[0] == 1 and v[-1].item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="needs the process"):
        lambda_grid(4)
    with pytest.raises(ValueError, match="h_t family 'linear' is not one"):
        sample_dpmpp_2m(lambda x, t: (x, x), DecoupledProcess("linear"), torch.zeros(1, 1, 2, 2), uniform_grid(2))
    with pytest.raises(ValueError, match="x0_source"):
        sample_ddim(GaussianOracle(PROC.family, 0.0, 0.0), PROC, torch.zeros(1, 1, 1, 1), uniform_grid(2), x0_source="eps")
    assert sde_grid(3)[-1].item() == pytest.approx(1e-3)
