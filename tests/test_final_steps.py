"""Final steps beyond the paper (DDM: x0 head; SDE Euler-Maruyama: denoise) and the sampler
ceiling (the exact posterior mean of the training set), on closed-form oracles."""

from __future__ import annotations

import math

import pytest
import torch

from ddm.baselines import VESDE, VPSDE
from ddm.sde_samplers import sample_ve_em, sample_vp_ancestral, sample_vp_em, sde_grid
from ddm.ceiling import PosteriorMeanDenoiser
from ddm.process import DecoupledProcess
from ddm.times import expand_t
from ddm.sampling import (SampleRNG, polynomial_grid, sample_ddim, sample_ddm, sample_ddm_deterministic,
                          sample_dpmpp_2m, uniform_grid)
from oracles import GaussianOracle, VPGaussianOracle

MU = 0.7


def _noise(n: int, shape=(1, 2, 2), seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# -- DDM: the x0 head's estimate at the last call -------------------------------------------
@pytest.mark.parametrize("family", ["constant", "linear", "quadratic"])
@pytest.mark.parametrize("n_steps", [1, 2, 10])
@pytest.mark.parametrize("sampler", [sample_ddm, sample_ddm_deterministic])
def test_x0_head_returns_a_point_mass_exactly(family, n_steps, sampler):
    proc = DecoupledProcess(family)
    oracle = GaussianOracle(proc.family, MU, 0.0)
    x = sampler(oracle, proc, _noise(64), uniform_grid(n_steps), final_step="x0_head")
    assert torch.allclose(x, torch.full_like(x, MU), atol=1e-9)
    assert oracle.calls == n_steps


@pytest.mark.parametrize("n_steps", [2, 5])
def test_x0_head_on_gaussian_data_matches_the_exact_recursion(n_steps):
    """x0 ~ N(0.7, 0.5^2), h_t = c: before the last call x is Gaussian with the moments of the
    exact affine recursion; the x0 head then returns -phi_hat = -(p0 + p1 x)."""
    proc = DecoupledProcess("constant")
    oracle = GaussianOracle(proc.family, MU, 0.5)
    grid = uniform_grid(n_steps)
    m, v = oracle.output_moments(grid[:-1])  # moments at t = grid[N-1] = 1/N
    p0, p1, _, _ = oracle.coefficients(float(grid[-2]))
    mean, var = -(p0[0] + p1[0] * m).item(), (p1[0] ** 2 * v).item()
    n = 40_000
    x = sample_ddm(oracle, proc, _noise(n, (1, 1, 1)), grid, rng=SampleRNG(range(n)), final_step="x0_head").reshape(-1)
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / n)
    assert abs(x.mean().item() - mean) < 6 * se_mean
    assert abs(x.var().item() - var) < 6 * se_var
    # With consistent optimal heads, x - H_t(phi) - sqrt(t) eps = E[x0 | x_t] = -phi: the two final
    # steps agree exactly. They differ only where the heads disagree (network error).
    paper = sample_ddm(oracle, proc, _noise(n, (1, 1, 1)), grid, rng=SampleRNG(range(n))).reshape(-1)
    assert torch.allclose(paper, x, atol=1e-9)

    def biased(xt, t):
        phi, eps = oracle(xt, t)
        return phi, eps + 0.1

    a = sample_ddm(biased, proc, _noise(8, (1, 1, 1)), grid, rng=SampleRNG(range(8)))
    b = sample_ddm(biased, proc, _noise(8, (1, 1, 1)), grid, rng=SampleRNG(range(8)), final_step="x0_head")
    assert (a - b).abs().min() > 1e-3


def test_final_step_names_are_checked():
    proc = DecoupledProcess("constant")
    oracle = GaussianOracle(proc.family, MU, 0.0)
    with pytest.raises(ValueError, match="final_step 'denoise'.*allowed: paper, x0_head"):
        sample_ddm(oracle, proc, _noise(2), uniform_grid(2), final_step="denoise")
    with pytest.raises(ValueError, match="final_step 'x0_head'.*allowed: paper, denoise"):
        sample_vp_em(VPGaussianOracle(VPSDE(), MU, 0.0), VPSDE(), _noise(2), sde_grid(2), final_step="x0_head")


# -- SDE Euler-Maruyama: the x0 estimate of the last call ------------------------------------
class VEPointMass:
    """Exact eps of a point mass c under the VE-SDE, for a network fed c_in(t) x_t."""

    def __init__(self, sde: VESDE, c: float):
        self.sde, self.c = sde, c

    def __call__(self, x_in, t):
        x = x_in / expand_t(self.sde.c_in(t), x_in)
        return ((x - self.c) / expand_t(self.sde.sigma(t), x),)


@pytest.mark.parametrize("n_steps", [1, 3, 10])
def test_vp_em_denoise_returns_a_point_mass_exactly_where_plain_em_does_not(n_steps):
    sde = VPSDE()
    oracle = VPGaussianOracle(sde, MU, 0.0)
    grid = sde_grid(n_steps, 1e-3)
    x = sample_vp_em(oracle, sde, _noise(64), grid, rng=SampleRNG(range(64)), final_step="denoise")
    assert torch.allclose(x, torch.full_like(x, MU), atol=1e-9)
    plain = sample_vp_em(oracle, sde, _noise(64), grid, rng=SampleRNG(range(64)))
    assert (plain - MU).abs().max() > 1e-3


@pytest.mark.parametrize("n_steps", [1, 3, 10])
def test_ve_em_denoise_returns_a_point_mass_exactly(n_steps):
    sde = VESDE(0.01, 16.0)
    x = sample_ve_em(VEPointMass(sde, MU), sde, _noise(64, scale=16.0), sde_grid(n_steps, 1e-5),
                     rng=SampleRNG(range(64)), final_step="denoise")
    assert torch.allclose(x, torch.full_like(x, MU), atol=1e-9)


def test_vp_em_denoise_returns_the_posterior_mean_of_the_last_call():
    """Gaussian data: the output is E[x0 | x_t] at the last call's (t, x), by the closed form
    mu + alpha s^2 (x - alpha mu) / (alpha^2 s^2 + sigma^2)."""
    sde, s = VPSDE(), 0.5
    oracle = VPGaussianOracle(sde, MU, s)
    grid = sde_grid(20, 1e-3)
    seen = {}
    x = sample_vp_em(oracle, sde, _noise(256, (1, 1, 1)), grid, rng=SampleRNG(range(256)), final_step="denoise",
                     callback=lambda i, t, xt, x0: seen.update(t=t, x=xt.clone()))
    a, sg = expand_t(sde.alpha(seen["t"]), x), expand_t(sde.sigma(seen["t"]), x)
    expected = MU + a * s**2 * (seen["x"] - a * MU) / (a**2 * s**2 + sg**2)
    assert torch.allclose(x, expected, atol=1e-9)
    assert abs(float(seen["t"][0]) - float(grid[-2])) < 1e-12


# -- the sampler ceiling ---------------------------------------------------------------------
def test_posterior_mean_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    data = torch.rand(30, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    proc = VPSDE()
    den = PosteriorMeanDenoiser(data, proc)
    x = torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    got = den.x0(x, t)
    for b in range(5):
        a, s = proc.alpha(t[b]), proc.sigma(t[b])
        logw = torch.stack([-((x[b] - a * d) ** 2).sum() / (2 * s**2) for d in data])
        w = torch.softmax(logw, 0)
        assert torch.allclose(got[b], (w[:, None, None, None] * data).sum(0), atol=1e-10)


@pytest.mark.parametrize("n_steps", [1, 5])
def test_one_training_image_is_returned_exactly(n_steps):
    """A single training image is a point mass: its posterior mean is itself, so the samplers
    that are exact for a point mass (DDM Alg. 2, VP ancestral) return it."""
    image = torch.linspace(-1, 1, 4, dtype=torch.float64).reshape(1, 1, 2, 2)
    x = sample_ddm(PosteriorMeanDenoiser(image, DecoupledProcess("constant")), DecoupledProcess("constant"),
                   _noise(8), uniform_grid(n_steps), rng=SampleRNG(range(8)))
    assert torch.allclose(x, image.expand_as(x), atol=1e-9)
    x = sample_vp_ancestral(PosteriorMeanDenoiser(image, VPSDE()), VPSDE(), _noise(8), uniform_grid(n_steps),
                            rng=SampleRNG(range(8)))
    assert torch.allclose(x, image.expand_as(x), atol=1e-9)


def test_ceiling_refuses_a_non_gaussian_path():
    with pytest.raises(ValueError, match="Gaussian path.*'linear'"):
        PosteriorMeanDenoiser(torch.zeros(3, 1, 2, 2), DecoupledProcess("linear"))


@pytest.fixture(scope="module")
def digits_fid(tmp_path_factory):
    """FID of uint8 digits against the training split (digits classifier) and its floor."""
    from ddm import metrics as M
    from ddm import fidstats
    from ddm.datasets import load_dataset
    from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier

    work = tmp_path_factory.mktemp("ceiling")
    train = load_dataset("digits", None, "train", resolution=8)
    test = load_dataset("digits", None, "test", resolution=8)
    weights = work / "digits_classifier.pt"
    train_digits_classifier(weights, seed=0)
    ref = work / "reference.npz"
    fidstats.reference_stats(train, DIGITS_CLASSIFIER, weights, ref)

    def score(u8):
        return M.fid(u8, ref, DIGITS_CLASSIFIER, weights)["fid"]

    return train, score, score(test)


CEILING_SAMPLERS = {
    "ddm Alg. 2": (DecoupledProcess("constant"), sample_ddm, lambda n: uniform_grid(n)),
    "ddm DDIM": (DecoupledProcess("constant"), sample_ddim, lambda n: uniform_grid(n)),
    "ddm 2M poly": (DecoupledProcess("constant"), sample_dpmpp_2m, lambda n: polynomial_grid(n, 2.0)),
    "vp EM": (VPSDE(), sample_vp_em, lambda n: sde_grid(n, 1e-3)),
    "vp ancestral": (VPSDE(), sample_vp_ancestral, lambda n: uniform_grid(n)),
    "ve EM": (VESDE(0.01, 16.0), sample_ve_em, lambda n: sde_grid(n, 1e-5)),
}


@pytest.mark.parametrize("name", sorted(CEILING_SAMPLERS))
def test_every_sampler_with_the_ceiling_lands_near_the_floor(digits_fid, name):
    """With no network error, each sampler at NFE 50 is within a small factor of the floor
    (FID of the test split against the training split)."""
    from ddm.datasets import to_model_range, to_uint8

    train, score, floor = digits_fid
    proc, sampler, grid = CEILING_SAMPLERS[name]
    n = 500
    rng = SampleRNG(range(n))
    noise = rng.randn((1, 8, 8)) * getattr(proc, "prior_std", 1.0)
    x = sampler(PosteriorMeanDenoiser(to_model_range(train), proc), proc, noise, grid(50), rng=rng)
    fid = score(to_uint8(x.float().clamp(-1, 1)))
    assert fid < 5 * floor, f"{name}: FID {fid:.2f} with the exact posterior mean, floor {floor:.2f}"
