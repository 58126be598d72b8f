"""The paper's sampler (Alg. 2, Eq. 11) against closed-form oracles, grids, NFE and seeding."""

import math

import pytest
import torch

from ddm.process import DecoupledProcess
from ddm.registry import get_sampler, make_grid
from ddm.sampling import (
    SampleRNG,
    authors_grid,
    polynomial_grid,
    sample_ddm,
    sample_ddm_deterministic,
    uniform_grid,
)
from oracles import GaussianOracle

LINEAR_H = ["constant", "linear", "quadratic"]


def _noise(n, shape=(1, 4, 4), seed=0):
    return SampleRNG(range(seed, seed + n)).randn(shape, dtype=torch.float64)


@pytest.mark.parametrize("name", LINEAR_H + ["sin"])
@pytest.mark.parametrize("n_steps", [1, 2, 5, 10, 50])
@pytest.mark.parametrize("sampler", [sample_ddm, sample_ddm_deterministic])
def test_point_mass_is_returned_for_every_N(name, n_steps, sampler):
    """With the exact predictors of a point mass, the sampler returns the point (float tolerance).

    Not for ``exp``: its H_t is nonlinear in phi, so the L2-optimal E[phi | x_t] plugged into H
    is not E[H_t(phi) | x_t]; at N = 1 the output is biased by E[(e^a - 1)/a] - 1 ~ 0.2 for
    a ~ N(0, 1), a property of the objective, not of the sampler."""
    mu = 0.6 if name == "sin" else -0.8  # sin can only reach |x0| <= 0.7246
    proc = DecoupledProcess(name)
    oracle = GaussianOracle(proc.family, mu, 0.0)
    x = sampler(oracle, proc, _noise(16), uniform_grid(n_steps), rng=SampleRNG(range(16)))
    torch.testing.assert_close(x, torch.full_like(x, mu), atol=1e-9, rtol=0)
    assert oracle.calls == n_steps  # NFE = N


def test_authors_grid_point_mass_with_clipping():
    proc = DecoupledProcess("constant")
    oracle = GaussianOracle(proc.family, 0.3, 0.0)
    x = sample_ddm_deterministic(oracle, proc, _noise(4), authors_grid(7), clip=1.0)
    torch.testing.assert_close(x, torch.full_like(x, 0.3), atol=1e-9, rtol=0)
    assert oracle.calls == 7


@pytest.mark.parametrize("name", LINEAR_H)
@pytest.mark.parametrize("n_steps", [1, 10, 1000])
def test_gaussian_data_matches_exact_recursion(name, n_steps):
    """Gaussian data N(0.7, 0.5^2): the sampler is a linear-Gaussian recursion whose output mean
    and variance are computed by hand (tests/oracles.py); Monte Carlo agrees within 5 s.e."""
    proc = DecoupledProcess(name)
    oracle = GaussianOracle(proc.family, 0.7, 0.5)
    grid = uniform_grid(n_steps)
    m, v = oracle.output_moments(grid)
    n = 4096 if n_steps < 1000 else 256  # samples; x 16 pixels each
    x = sample_ddm(oracle, proc, _noise(n), grid, rng=SampleRNG(range(10_000, 10_000 + n))).reshape(-1)
    k = x.numel()
    assert abs(x.mean().item() - m) <= 5 * math.sqrt(v / k) + 1e-9
    assert abs(x.var().item() - v) <= 5 * v * math.sqrt(2 / (k - 1)) + 1e-9


def test_gaussian_output_moments_approach_data_as_N_grows():
    """The sampler's own discretisation error for data N(0.7, 0.25) (constant h_t): exact output
    variance 0.1359, 0.2219, 0.2450 at N = 10, 100, 1000 (an earlier Monte Carlo check gave
    0.136, 0.223, 0.245); the mean is exact at every N."""
    oracle = GaussianOracle(DecoupledProcess("constant").family, 0.7, 0.5)
    out = {n: oracle.output_moments(uniform_grid(n)) for n in (1, 10, 100, 1000)}
    for n, (m, _) in out.items():
        assert abs(m - 0.7) < 1e-9, n
    variances = [out[n][1] for n in (1, 10, 100, 1000)]
    assert variances == sorted(variances) and variances[-1] < 0.25
    assert [round(out[n][1], 4) for n in (10, 100, 1000)] == [0.1359, 0.2219, 0.2450]
    gaps = [0.25 - v for v in variances]
    assert all(b < a / 2 for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-2


def test_final_step_returns_the_predicted_x0():
    """On the uniform grid the last call is at t = 1/N and returns x - H_t(phi) - sqrt(t) eps."""
    proc = DecoupledProcess("constant")
    seen = []
    x = sample_ddm(
        GaussianOracle(proc.family, 0.2, 0.3), proc, _noise(3), uniform_grid(4),
        callback=lambda i, t, xt, x0: seen.append((t[0].item(), x0.clone())),
    )
    assert [round(s[0], 6) for s in seen] == [1.0, 0.75, 0.5, 0.25]
    torch.testing.assert_close(x, seen[-1][1])


def test_nfe_equals_N_with_a_real_network():
    from ddm.nets import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=(1, 1), resolution=8, ch=16, ch_mult=(1, 2), num_blocks=1,
               attn_resolutions=(4,), dropout=0.0).eval()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    for sampler_name in ("ddm", "ddm_deterministic"):
        calls.clear()
        get_sampler(sampler_name)(net, DecoupledProcess("constant"), torch.randn(2, 1, 8, 8), uniform_grid(7))
        assert len(calls) == 7


def test_per_sample_seeding_is_batch_independent():
    """A sample depends on (weights, seed, sampler, N) only: batch 1 vs batch 64 differ by float
    round-off through the conv net (tolerance 1e-5), and equal batches are bit-identical on CPU."""
    from ddm.nets import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=(1, 1), resolution=8, ch=16, ch_mult=(1, 2), num_blocks=1,
               attn_resolutions=(4,), dropout=0.0).eval()
    for p in net.parameters():  # the zero-initialised output layers would make this trivial
        p.data.normal_(0, 0.05)
    proc, grid = DecoupledProcess("constant"), uniform_grid(5)
    seeds = list(range(100, 164))

    def run(ss):
        rng = SampleRNG(ss)
        return sample_ddm(net, proc, rng.randn((1, 8, 8)), grid, rng=rng)

    full = run(seeds)
    again = run(seeds)
    assert torch.equal(full, again)
    single = torch.cat([run([s]) for s in seeds[:4]])
    assert (single - full[:4]).abs().max() < 1e-5
    assert not torch.equal(full[0], full[1])


def test_grids_and_bad_input():
    assert uniform_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = authors_grid(3)
    assert g.numel() == 4 and g[0] == 1 and g[-2] == pytest.approx(1e-4) and g[-1] == 0
    torch.testing.assert_close(polynomial_grid(4, 1.0), uniform_grid(4))
    assert polynomial_grid(2, 2.0).tolist() == [1.0, 0.25, 0.0]
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="N must be an integer >= 1"):
            uniform_grid(bad)
    with pytest.raises(ValueError, match="valid names: authors, lambda, polynomial, sde, uniform"):
        from ddm import baselines  # noqa: F401
        make_grid("cosine", 4)
    with pytest.raises(ValueError, match="unknown sampler .heun.; valid names: ddim, ddm, ddm_deterministic, dpmpp_2m"):
        get_sampler("heun")
    with pytest.raises(ValueError, match="strictly decrease"):
        sample_ddm(lambda x, t: (x, x), DecoupledProcess("constant"), torch.zeros(1, 1, 2, 2), torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        sample_ddm(lambda x, t: (x, x), DecoupledProcess("constant"), torch.zeros(1, 1, 2, 2), torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="3 samples but 2 seeds"):
        SampleRNG([1, 2]).randn_like(torch.zeros(3, 1))


def test_an_experiments_sampling_is_bound_once():
    """ddm.registry.bind_sampler looks the sampler and grid of a resolved config up once, with the grid's
    options and the process; drawing through it is the sampler called by hand on that grid."""
    from ddm import registry
    from ddm.sde_samplers import sample_vp_em, sde_grid
    from ddm.baselines import VPSDE

    proc = VPSDE(0.1, 20.0)
    sampling = {"sampler": "vp_em", "grid": "sde", "t_end": 1e-3, "rho": 2.0, "clip": 1.0, "final_step": "denoise"}
    draw = registry.bind_sampler(sampling, proc)
    assert draw.sampler is sample_vp_em and draw.grid is sde_grid and draw.process is proc
    assert dict(draw.grid_options) == {"t_end": 1e-3} and dict(draw.options) == {"clip": 1.0, "final_step": "denoise"}
    net = lambda x, t: (0.1 * x,)  # noqa: E731
    rng, again = SampleRNG([3, 4]), SampleRNG([3, 4])
    expected = sample_vp_em(net, proc, again.randn((1, 2, 2)), sde_grid(4, t_end=1e-3), rng=again, clip=1.0,
                            final_step="denoise")
    assert torch.equal(draw(net, rng.randn((1, 2, 2)), 4, rng=rng), expected)
    assert "final_step" not in registry.bind_sampler({**sampling, "final_step": "paper"}, proc).options
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        registry.bind_sampler({**sampling, "grid": "cosine"}, proc)
