"""Extending ddm (README "Extending"): a new h_t family is one class and a new sampler one
decorated function, each used by one params.yaml entry, and nothing else.

The family h_t = c t^3 (a Table 4 row of our own) and the sampler ``ddm_mean`` (Alg. 2 without its
noise: each step moves to the mean of Eq. 11) are defined in the fixtures below, so they are
registered only while a test that asks for them runs; the fixtures remove them again, and every
other test sees the package's own registries. With them registered, the one entry validates
(ddm.config fills the schema's lists of names from the registries), trains, samples and, for the
family, makes a row of Table 4 (its ``role``, its family's ``label``).
"""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from conftest import REPO, merge_params, tiny_params
from ddm import registry
from ddm.config import ConfigError, resolve, validate
from ddm.experiment import build
from ddm.generate import generate
from ddm.process import FAMILIES, DecoupledProcess, HtFamily
from ddm.report.collect import collect, solver_label
from ddm.report.tables import render_tables
from ddm.sampling import sample_ddm, uniform_grid
from ddm.training import TrainConfig, ema_model, train
from oracles import GaussianOracle
from test_report import FID, write_metric_files

MU = 0.7  # a point mass: the oracle's network is exact, so a sampler must return MU exactly


@pytest.fixture
def cubic():
    """h_t = c t^3 (README "Extending": the class is all the code a new family needs)."""

    class CubicFamily(HtFamily):
        """h_t = c t^3, H_t = c t^4 / 4; x0 + H_1 = 0 gives c = -4 x0 (App. B)."""

        name = "cubic"
        label = r"$\mathbf{c}t^3$"  # its row of Table 4
        n_params = 1
        n_free = 0

        def H(self, phi, t):
            return phi * self._t(t, phi) ** 4 / 4

        def solve(self, x0, z=None):
            self._check_free(x0, z)
            return -4 * x0

    yield CubicFamily
    del FAMILIES["cubic"]


@pytest.fixture
def ddm_mean():
    """The sampler ``ddm_mean`` (README "Extending": the function is all the code it needs)."""

    @registry.sampler("ddm_mean", fits=("ddm",), label="Eq. 11 mean, no noise")
    @torch.no_grad()
    def sample_ddm_mean(net, process, noise, grid, *, rng=None, clip=None, callback=None):
        """Alg. 2 without its noise: each step moves x to the mean of Eq. 11."""
        x = noise
        for i in range(grid.numel() - 1):
            t, t_next = grid[i].to(x).expand(len(x)), grid[i + 1].to(x).expand(len(x))
            phi, eps = net(x, t)
            x, _ = process.posterior(x, t, t_next, phi, eps)
        return x

    yield sample_ddm_mean
    registry.SAMPLERS.unregister("ddm_mean")


#: The one params.yaml entry of each extension (merged into the tiny params).
HT_CUBIC = {"ablation_methods.ht_cubic": {"process": "ddm", "ht": "cubic", "role": "table4",
                                          "sampler": "ddm", "grid": "uniform"}}
DDM_MEAN = {"solver_methods.ddm_mean": {"model": "ddm", "sampler": "ddm_mean", "grid": "uniform"}}


def _train_briefly(cfg: dict, out, steps: int = 4):
    """A handful of training steps at batch 8 on random images in [-1, 1]; the EMA network."""
    exp = build(cfg)
    torch.manual_seed(0)
    model = exp.make_model()
    images = torch.rand(16, cfg["channels"], cfg["resolution"], cfg["resolution"],
                        generator=torch.Generator().manual_seed(0)) * 2 - 1
    tcfg = TrainConfig(**{**cfg["train"], "steps": steps, "batch_size": 8, "ckpt_every": steps, "log_every": steps})
    final = train(model, exp.objective, images, tcfg, out, progress=False)
    return exp, ema_model(final, model).eval()


def test_a_family_is_one_class_and_one_params_entry(cubic, tmp_path):
    params = merge_params(tiny_params(), HT_CUBIC)
    validate(params)  # the schema's ht enum now holds "cubic"
    assert list(FAMILIES)[-1] == "cubic" and FAMILIES["cubic"] is cubic
    cfg = resolve(params, "digits", "ht_cubic")
    assert cfg["method"]["ht"] == "cubic" and "role" not in cfg["method"]

    # the class is right: on a point mass the paper's sampler with the exact network returns it
    proc = DecoupledProcess("cubic")
    x = sample_ddm(GaussianOracle(proc.family, MU, 0.0), proc, torch.randn(16, 1, 2, 2, dtype=torch.float64),
                   uniform_grid(3))
    assert torch.allclose(x, torch.full_like(x, MU), atol=1e-9)

    exp, net = _train_briefly(cfg, tmp_path / "ckpt")
    assert exp.process.family.name == "cubic" and exp.model_kwargs["out_channels"] == [1, 1]
    samples = generate(exp, net, 2, list(range(8)), batch_size=8)
    assert samples.shape == (8, 1, 8, 8) and torch.isfinite(samples).all()

    fid = {**FID, "ht_constant": {2: [21.0]}, "ht_cubic": {2: [23.5]}}  # as reports/metrics.json has them
    tex = render_tables(collect(write_metric_files(tmp_path / "m", fid=fid), params))
    table4 = tex[tex.index(r"\mathbf{h}_t$ $\backslash$ NFE"):]
    rows = table4[:table4.index(r"\end{tabular}")].splitlines()
    assert rows[2:4] == [r"$\mathbf{c}$ & 21.00 \\", r"$\mathbf{c}t^3$ & 23.50 \\"], rows


def test_a_sampler_is_one_function_and_one_params_entry(ddm_mean):
    params = merge_params(tiny_params(), DDM_MEAN)
    validate(params)  # the schema's sampler enum now holds "ddm_mean"; its fits say where it fits
    cfg = resolve(params, "digits", "ddm_mean")
    assert cfg["sampling"]["sampler"] == "ddm_mean"
    assert registry.get_sampler("ddm_mean") is ddm_mean
    assert "Eq. 11 mean, no noise" in solver_label(params, "ddm_mean")
    with pytest.raises(ConfigError, match="sampler 'ddm_mean' does not fit process 'vp'"):
        validate(merge_params(params, {"solver_methods.ddm_mean.model": "ddpm"}))

    exp = build(cfg)
    torch.manual_seed(0)
    samples = generate(exp, exp.make_model().eval(), 2, list(range(8)), batch_size=8)
    assert samples.shape == (8, 1, 8, 8) and torch.isfinite(samples).all()

    proc = DecoupledProcess("linear")  # any family: exact network, point mass -> MU exactly
    x = ddm_mean(GaussianOracle(proc.family, MU, 0.0), proc, torch.randn(16, 1, 2, 2, dtype=torch.float64),
                 uniform_grid(2))
    assert torch.allclose(x, torch.full_like(x, MU), atol=1e-9)


def test_the_registries_are_the_packages_own_again():
    """The fixtures removed what they registered: the names are unknown again."""
    assert "cubic" not in FAMILIES and "ddm_mean" not in registry.SAMPLERS
    with pytest.raises(ConfigError, match="ht_cubic/ht: 'cubic' is not one of"):
        validate(merge_params(tiny_params(), HT_CUBIC))
    with pytest.raises(ConfigError, match="ddm_mean/sampler: 'ddm_mean' is not one of"):
        validate(merge_params(tiny_params(), DDM_MEAN))


def test_registration_refuses_clashes_and_misspelt_options():
    """A name is registered once; a sampler states where it fits; a family states its label."""
    with pytest.raises(ValueError, match="sampler 'ddm' is already registered"):
        registry.sampler("ddm", fits=("ddm",))(lambda *a, **k: None)
    with pytest.raises(TypeError, match="sampler 'heun': missing fits"):
        registry.sampler("heun")
    with pytest.raises(TypeError, match=r"unknown fit \(allowed: fits, label, final_steps\)"):
        registry.sampler("heun", fits=("ddm",), fit=("vp",))
    with pytest.raises(ValueError, match="h_t family 'linear' is already registered by LinearFamily"):
        type("Linear2", (HtFamily,), {"name": "linear", "label": "x", "n_params": 1, "n_free": 0})
    with pytest.raises(TypeError, match="h_t family 'quartic' .* must set label"):
        type("Quartic", (HtFamily,), {"name": "quartic", "n_params": 1, "n_free": 0})
    assert "heun" not in registry.SAMPLERS and "quartic" not in FAMILIES


def test_the_readme_shows_this_code():
    """README "Extending" shows the class, the function and the two entries of this file."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Extending\n"):readme.index("\n## Layout\n")]
    source = [ln.strip() for ln in open(__file__).read().splitlines() if ln.strip()]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 2
    for block in code:  # line for line (indentation aside), imports aside
        lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith(("import", "from"))]
        start = source.index(lines[0])
        assert source[start:start + len(lines)] == lines, block
    entries = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)]
    assert entries == [{"ablation_methods": {"ht_cubic": HT_CUBIC["ablation_methods.ht_cubic"]}},
                       {"solver_methods": {"ddm_mean": DDM_MEAN["solver_methods.ddm_mean"]}}]
