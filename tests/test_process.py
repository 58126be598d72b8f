"""The decoupled forward process and the h_t families (Eq. 6-7, Table 4, App. B)."""

import math

import pytest
import torch

from ddm.families import FAMILIES, SinFamily, get_family
from ddm.process import DecoupledProcess

ALL = sorted(FAMILIES)

# h_t of Table 4, written independently of ddm.families, as functions of the phi maps.
TABLE4_h = {
    "constant": lambda p, t: p[0],
    "linear": lambda p, t: p[0] * t + p[1],
    "quadratic": lambda p, t: p[0] * t**2 + p[1] * t + p[2],
    "exp": lambda p, t: torch.exp(p[0] * t) + p[1],
    "sin": lambda p, t: torch.sin(p[0] * t),
}


def _x0(shape=(8, 3, 4, 4), scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale


@pytest.mark.parametrize("name", ALL)
def test_endpoint_and_origin(name):
    fam = get_family(name)
    x0 = _x0(scale=SinFamily.F_MAX if name == "sin" else 1.0)
    phi = fam.sample_phi(x0, torch.Generator().manual_seed(1))
    assert phi.shape == (8, fam.n_params * 3, 4, 4)
    ones, zeros = torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    torch.testing.assert_close(x0 + fam.H(phi, ones), torch.zeros_like(x0), atol=1e-12, rtol=0)
    assert fam.H(phi, zeros).abs().max() == 0
    torch.testing.assert_close(fam.x0_from_phi(phi), x0, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_H_is_the_integral_of_table4_h(name):
    """dH_t/dt equals h_t of Table 4 (autograd), at several t."""
    fam = get_family(name)
    x0 = _x0(scale=0.7)
    phi = fam.sample_phi(x0, torch.Generator().manual_seed(2))
    for tv in (0.05, 0.3, 0.77, 1.0):
        t = torch.full((8,), tv, dtype=torch.float64, requires_grad=True)
        H = fam.H(phi, t)
        (dHdt,) = torch.autograd.grad(H.sum(), t)
        h = TABLE4_h[name](fam.split(phi), tv)
        # each pixel's H depends on its own t; summing over pixels gives the per-sample sum.
        torch.testing.assert_close(dHdt, h.flatten(1).sum(1), rtol=1e-9, atol=1e-9)


def test_sin_has_no_solution_beyond_its_range():
    fam = SinFamily()
    x0 = torch.tensor([-1.0, -0.9, -0.72, 0.0, 0.5, 0.72, 0.8, 1.0], dtype=torch.float64).reshape(1, 8, 1, 1)
    res = fam.residual(x0).reshape(-1)
    inside = x0.reshape(-1).abs() <= fam.F_MAX
    assert res[inside].abs().max() < 1e-12
    expected = x0.reshape(-1)[~inside] - torch.sign(x0.reshape(-1)[~inside]) * fam.F_MAX
    torch.testing.assert_close(res[~inside], expected, atol=1e-9, rtol=0)
    # F_MAX is the maximum of (1 - cos a)/a over a > 0
    a = torch.linspace(1e-3, 50, 200001, dtype=torch.float64)
    assert abs(((1 - torch.cos(a)) / a).max().item() - fam.F_MAX) < 1e-8


def test_linear_clamp_option_of_authors_code():
    fam = get_family("linear", clamp_free=1.0)
    x0 = _x0(shape=(64, 1, 8, 8))
    phi = fam.sample_phi(x0, torch.Generator().manual_seed(3))
    a, _ = fam.split(phi)
    assert a.abs().max() <= 1.0 and (a.abs() == 1.0).any()
    torch.testing.assert_close(x0 + fam.H(phi, torch.ones(64, dtype=torch.float64)), torch.zeros_like(x0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_forward_marginal_monte_carlo(name):
    """q(x_t | x0) has mean x0 + H_t(phi) and variance t (Eq. 7), with phi held fixed."""
    proc = DecoupledProcess(name)
    fam = proc.family
    x0 = _x0(shape=(1, 1, 2, 2), scale=0.6)
    phi = fam.sample_phi(x0, torch.Generator().manual_seed(4))
    n, tv = 200_000, 0.37
    g = torch.Generator().manual_seed(5)
    eps = torch.randn((n, 1, 2, 2), generator=g, dtype=torch.float64)
    xt = proc.q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), tv, dtype=torch.float64), eps, phi.expand(n, -1, -1, -1))
    mean = x0 + fam.H(phi, torch.tensor([tv], dtype=torch.float64))
    # 6 standard errors: mean se = sqrt(t/n), variance se = t sqrt(2/(n-1))
    assert (xt.mean(0) - mean[0]).abs().max() < 6 * math.sqrt(tv / n)
    assert (xt.var(0) - tv).abs().max() < 6 * tv * math.sqrt(2 / (n - 1))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="constant, exp, linear, quadratic, sin"):
        get_family("cubic")
    proc = DecoupledProcess("constant")
    x0 = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        proc.q_sample(x0, torch.tensor([0.5, 1.5]), torch.zeros_like(x0), -x0)
    with pytest.raises(ValueError, match=r"expected t of shape \(2,\).*got \(3,\)"):  # as UNet.forward says it
        proc.q_sample(x0, torch.tensor([0.5, 0.5, 0.5]), torch.zeros_like(x0), -x0)
    with pytest.raises(ValueError, match="eps has shape"):
        proc.q_sample(x0, torch.tensor([0.5, 0.5]), torch.zeros(2, 1, 4, 5), -x0)
    lin = get_family("linear")
    with pytest.raises(ValueError, match="free parameters of shape"):
        lin.solve(x0, None)
    with pytest.raises(ValueError, match="divisible by 2"):
        lin.H(torch.zeros(2, 3, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match="clamp_free"):
        get_family("linear", clamp_free=0)


# --------------------------------------------------------------------------- the Process interface
def _processes():
    from ddm.baselines import VESDE, VPSDE

    return [DecoupledProcess("linear"), VPSDE(), VESDE(0.01, 16.0)]


def test_the_process_table_holds_ddm_vp_and_ve():
    """Each process registers under its params.yaml name where it is defined; ddm.experiment
    builds it from a method entry through the table (no branch on the name)."""
    from ddm.baselines import VESDE, VPSDE
    from ddm.experiment import make_process
    from ddm.process import Process
    from ddm.registry import PROCESSES

    assert dict(PROCESSES) == {"ddm": DecoupledProcess, "vp": VPSDE, "ve": VESDE}
    assert all(issubclass(cls, Process) for cls in PROCESSES.values())
    p = make_process({"process": "ddm", "ht": "linear", "clamp_free": 1.0})
    assert isinstance(p, DecoupledProcess) and p.family.name == "linear" and p.family.clamp_free == 1.0
    v = make_process({"process": "ve", "sigma_min": 0.02, "sigma_max": 12.0})
    assert isinstance(v, VESDE) and v.prior_std == 12.0
    with pytest.raises(ValueError, match="unknown process 'vq'; valid names: ddm, ve, vp"):
        make_process({"process": "vq"})


def test_a_method_entry_becomes_a_process_and_its_objective_through_its_recipe():
    """The process knows no loss and no params.yaml entry: ddm.experiment's recipe of its class
    builds both (a subclass without a recipe of its own uses its parent's)."""
    from ddm.experiment import RECIPES, Recipe, make_objective, recipe, recipe_for
    from ddm.losses import DDMObjective
    from ddm.process import Process

    method = {"process": "ddm", "ht": "linear", "weighting": "exp", "loss_type": "l1", "t_min": 1e-3,
              "reduction": "sum", "recon_weight": 0.5}
    proc = DecoupledProcess("linear")
    obj = make_objective(proc, method)
    assert isinstance(obj, DDMObjective) and obj.process is proc
    assert (obj.weighting, obj.loss_type, obj.t_min, obj.reduction, obj.recon_weight) == ("exp", "l1", 1e-3, "sum", 0.5)
    assert not hasattr(Process, "objective") and not hasattr(Process, "from_method")

    class Mine(DecoupledProcess):  # no ``name``: not registered
        pass

    class Bare(Process):
        pass

    assert recipe(Mine) is RECIPES[DecoupledProcess]
    with pytest.raises(ValueError, match=r"process 'Bare' has no recipe: register one with "
                                         r"@ddm.experiment.recipe_for\(Bare\)"):
        recipe(Bare)
    with pytest.raises(ValueError, match="process class DecoupledProcess already has a recipe: DDMRecipe"):
        recipe_for(DecoupledProcess)(type("Again", (Recipe,), {}))


@pytest.mark.parametrize("index", [0, 1, 2], ids=["ddm", "vp", "ve"])
def test_exact_heads_give_back_x0(index):
    """x_t from x0 and the target (sample_xt); a network that returns the target (seeing the
    process' input scaling) makes predict give back x0 (Eq. 20; (x - sigma_t eps)/alpha_t)."""
    proc = _processes()[index]
    x0 = _x0((6, 2, 3, 3))
    noise = {k: v.double() for k, v in proc.draw(x0, torch.Generator().manual_seed(0)).items()}
    assert set(noise) == ({"eps", "z"} if index == 0 else {"eps"})
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    target = proc.target(x0, noise)
    assert len(target) == proc.n_heads and [h.shape[1] for h in target] == proc.head_channels(2)
    x_t = proc.sample_xt(x0, t, target)
    seen = {}

    def net(x_in, t_in):
        seen["x"] = x_in
        return target

    x0_hat, heads = proc.predict(net, x_t, t)
    torch.testing.assert_close(x0_hat, x0)
    assert heads == tuple(target)
    torch.testing.assert_close(seen["x"], proc.net_input(x_t, t))
    if index == 2:  # VE: the network sees c_in(t) x_t
        assert not torch.allclose(seen["x"], x_t)


def test_heads_and_priors():
    """Too few heads is one error naming them; the prior has the process' std; an x0 head; the
    heads a method entry asks for (ddm.experiment)."""
    from ddm.experiment import out_channels
    from ddm.sampling import SampleRNG

    ddm, vp, ve = _processes()
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match=r"returned 1 head\(s\); process 'ddm' needs 2 \(phi, eps\)"):
        ddm.heads(lambda x, t: x, x, torch.ones(2))
    with pytest.raises(ValueError, match=r"process 'vp' needs 2 \(eps, x0\)"):
        vp.heads(lambda x, t: (x,), x, torch.ones(2), n=2)
    rng = SampleRNG([1, 2])
    torch.testing.assert_close(ve.prior_sample(rng, (1, 2, 2)), SampleRNG([1, 2]).randn((1, 2, 2)) * 16.0)
    assert ddm.prior_std == vp.prior_std == 1.0
    phi = torch.randn(2, 2, 2, 2)
    torch.testing.assert_close(ddm.x0(x, torch.ones(2), (phi, x), head=True), ddm.family.x0_from_phi(phi))
    branch = torch.randn(2, 1, 2, 2)
    assert vp.x0(x, torch.ones(2) / 2, (x, branch), head=True) is branch
    assert out_channels(vp, 3, {"x0_branch": True}) == [3, 3] and out_channels(ddm, 3, {}) == [6, 3]
