"""Extending ddm (README "Extending"): a new h_t family is one class and a new sampler one
decorated function, each used by one params.yaml entry, and nothing else.

The family h_t = c t^3 (a Table 4 row of our own) and the sampler ``ddm_mean`` (Alg. 2 without its
noise: each step moves to the mean of Eq. 11) are defined in the fixtures below, so they are
registered only while a test that asks for them runs; the fixtures remove them again, and every
other test sees the package's own registries. With them registered, the one entry validates
(ddm.config fills the schema's lists of names from the registries), trains, samples and, for the
family, makes a row of Table 4 (its ``role``, its family's ``label``).

Plug-ins (ddm/plugins.py, issue 24): the same family and sampler, an FID extractor and a dataset in a
file of the user's own (``PLUGIN``) named by ``plugins:`` in params.yaml go through the real
Snakemake graph with no file under ddm/ edited; a plug-in that cannot be imported is one line and
exit code 2; a plug-in is imported once per process.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, merge_params, run_ddm, run_snakemake, tiny_params, write_params
from ddm import registry
from ddm.config import ConfigError, resolve
from ddm.validation import validate
from ddm.contracts import load_images
from ddm.experiment import build
from ddm.families import FAMILIES, HtFamily
from ddm.generate import generate
from ddm.process import DecoupledProcess
from ddm.report.collect import collect, solver_label
from ddm.report.tables import render_tables
from ddm.sampling import sample_ddm, uniform_grid
from ddm.training import TrainConfig, ema_model, train
from oracles import GaussianOracle
from test_report import FID, write_metric_files

MU = 0.7  # a point mass: the oracle's network is exact, so a sampler must return MU exactly


#: The code of the family and of the sampler, as a user writes them (the plug-in file ``PLUGIN`` below
#: and README "Extending"): the class is all the code a new family needs, the function all a sampler needs.
FAMILY = '''\
class CubicFamily(HtFamily):
    """h_t = c t^3, H_t = c t^4 / 4; x0 + H_1 = 0 gives c = -4 x0 (App. B)."""

    name = "cubic"
    label = r"$\\mathbf{c}t^3$"  # its row of Table 4
    n_params = 1
    n_free = 0

    def H(self, phi, t):
        return phi * self.t_like(t, phi) ** 4 / 4  # t shaped to broadcast against phi

    def solve(self, x0, z=None):
        self.check_free(x0, z)  # z checked, split into n_free parts (none here)
        return -4 * x0
'''
SAMPLER = '''\
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
'''


def _define(code: str, name: str):
    """Run ``code`` (FAMILY or SAMPLER) here, as a plug-in module would; the object it defines."""
    namespace = {"HtFamily": HtFamily, "registry": registry, "torch": torch}
    exec(compile(code, f"<{name}>", "exec"), namespace)
    return namespace[name]


@pytest.fixture
def cubic():
    """h_t = c t^3, registered while the test runs."""
    yield _define(FAMILY, "CubicFamily")
    del FAMILIES["cubic"]


@pytest.fixture
def ddm_mean():
    """The sampler ``ddm_mean``, registered while the test runs."""
    yield _define(SAMPLER, "sample_ddm_mean")
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
    # h_t = c is Table 1's DDM network (ht: constant): trained once, marked (ddm.config.training_twins)
    assert rows[2:4] == [r"$\mathbf{c}$$^\dagger$ & 21.00 \\", r"$\mathbf{c}t^3$ & 23.50 \\"], rows


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
    """README "Extending" shows the plug-in file of this file's PLUGIN (its family and its sampler)
    and the params.yaml entries that use it (PLUGIN_ENTRIES, the metric and the dataset aside)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Extending\n"):readme.index("\n## Layout\n")]
    source = [ln.strip() for ln in PLUGIN.splitlines() if ln.strip()]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 1
    lines = [ln.strip() for ln in code[0].splitlines()
             if ln.strip() and not ln.startswith(("import", "from", "#"))]  # imports and the file's name aside
    start = source.index(lines[0])
    assert source[start:start + len(lines)] == lines, code[0]
    entries = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)]
    assert entries == [PLUGIN_ENTRIES]


# --------------------------------------------------------------------------- plug-ins (ddm/plugins.py)
#: A plug-in file of a user's own (README "Extending"): an h_t family, a sampler, an FID extractor
#: (the metric) and a dataset (an image folder variant), with no file under ddm/ edited. The tests
#: below write it into their workdir, and only the Snakemake run and its jobs import it (this
#: process keeps the package's own registries).
PLUGIN = '''\
"""My plug-in (params.yaml: plugins: [my_plugin.py]): a family, a sampler, metrics, a dataset."""

import dataclasses

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ddm import registry
from ddm.datasets import DATASETS, register_dataset
from ddm.families import HtFamily
from ddm.metrics import register_extractor
from ddm.task_metrics import register_task_metric


''' + FAMILY + "\n\n" + SAMPLER + '''

@register_extractor("pixels", "16", label="FID (pixel projections)")
class PixelFeatures(FeatureExtractorBase):
    """FID features: 16 projections of the grey pixels (the weights file holds the 64 x 16 matrix)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.proj = torch.load(feature_extractor_weights_path).double()

    @staticmethod
    def get_provided_features_list():
        return ("16",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "16"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        return (x[:, 0].flatten(1).double() / 255 @ self.proj.to(x.device),)


def load_grey(root, split, **options):
    """An image folder's images in grey (one channel)."""
    rgb = DATASETS["imagefolder"].loader(root, split, **options)
    return rgb.float().mean(1, keepdim=True).round().to(torch.uint8)


register_dataset(dataclasses.replace(
    DATASETS["imagefolder"], name="greyfolder", description="a folder of images, in grey", loader=load_grey,
    options={"resolution": 8, "limit": None, "on_error": "skip"}, channels=1, label="Grey folder"))


@register_task_metric("ssim", tasks=("super_resolution",), label="SSIM", digits=4)
def ssim(samples, split):
    """Mean SSIM (Wang et al. 2004; scikit-image's, 7x7 windows) of the samples against the targets."""
    from skimage.metrics import structural_similarity

    pairs = zip(samples.numpy(), split["hr_uint8"].numpy())
    return sum(structural_similarity(x, y, channel_axis=0, data_range=255) for x, y in pairs) / len(samples)
'''

#: The params.yaml entries that use the plug-in (merged into the tiny params).
PLUGIN_ENTRIES = {
    "plugins": ["my_plugin.py"],
    "ablation_methods": {"ht_cubic": {"process": "ddm", "ht": "cubic", "role": "table4", "sampler": "ddm",
                                      "grid": "uniform"}},
    "solver_methods": {"ddm_mean": {"model": "ddm", "sampler": "ddm_mean", "grid": "uniform"}},
}


def _plugin_workdir(workdir_factory) -> Path:
    """A workdir whose params.yaml runs only the plug-in's things on the plug-in's dataset, with the
    fewest jobs: Table 1 of DDM alone, the Table 4 row of h_t = c t^3, the sampler's row of the solver
    table; FID by the plug-in's extractor; of the conditioned tasks super-resolution alone, in pixel space,
    scored also by the plug-in's SSIM, DDM's row alone; no long NFE, no convergence figure."""
    work = workdir_factory()
    (work / "my_plugin.py").write_text(PLUGIN)
    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # blobs of grey on black: something a network can learn in a few steps
        img = np.zeros((8, 8, 3), np.uint8)
        y, x = rng.integers(1, 6, size=2)
        img[y:y + 3, x:x + 3] = rng.integers(128, 256)
        Image.fromarray(img).save(images / f"{i:02d}.png")
    torch.save(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)), work / "pixels.pt")
    params = tiny_params()
    block = {k: v for k, v in params["presets"]["embedded"]["digits"].items() if k != "convergence"}
    block.update(source=str(images), method_overrides={},
                 fid={"extractor": "pixels", "weights": str(work / "pixels.pt"), "num_samples": 20, "repeats": 2})
    cond = params["conditioned_presets"]["embedded"]
    cond["tasks"] = {"super_resolution": {**cond["tasks"]["super_resolution"], "metrics": ["ssim"]}}
    del cond["tasks"]["super_resolution"]["latent"]  # pixel space: the fewest jobs
    params.update(copy.deepcopy(PLUGIN_ENTRIES), long_nfe=False, ablations=True,
                  solver_study=True, methods={"ddm": params["methods"]["ddm"]},
                  conditioned_methods={"ddm": params["conditioned_methods"]["ddm"]},
                  presets={"embedded": {"greyfolder": block}})
    write_params(work, params)
    return work


@pytest.mark.slow
def test_a_plugin_file_adds_a_family_sampler_metric_and_dataset(workdir_factory):
    """Issue 24's "Done when": from one plug-in file outside ddm/ and one params.yaml entry each, an
    h_t family, a sampler, a metric and a dataset go through the real Snakemake graph on the tiny
    configuration: validate, prepare, train, sample, FID by the plug-in's extractor, a Table 4 row;
    and (issue 31) a task metric, SSIM beside super-resolution's PSNR, to a column of Table 2."""
    work = _plugin_workdir(workdir_factory)
    r = run_snakemake(work, "--cores", "2", "all", timeout=900)
    assert r.returncode == 0, r.output[-6000:]
    images = load_images(work / "data/prepared/greyfolder.pt", "dataset file", "ddm prepare")
    assert tuple(images.shape) == (24, 1, 8, 8)  # the plug-in's dataset: grey, at its resolution
    for method in ("ddm", "ht_cubic"):
        assert (work / f"results/models/greyfolder/{method}.pt").is_file()
    metrics = json.loads((work / "reports/metrics.json").read_text())
    text = json.dumps(metrics)
    assert '"pixels"' in text and "ddm_mean" in text and "ht_cubic" in text
    samples = list((work / "results/samples/greyfolder/ddm_mean").rglob("*.pt"))
    assert samples, "the plug-in sampler's samples"
    fids = [json.loads(p.read_text()) for p in (work / "results/metrics/greyfolder/ddm_mean").rglob("*.json")]
    assert fids and all(f["extractor"] == "pixels" and math.isfinite(f["fid"]) for f in fids)
    tex = (work / "reports/tables.tex").read_text()
    assert r"$\mathbf{c}t^3$ &" in tex and "Grey folder" in tex  # the Table 4 row; the dataset's label
    # the task metric: in every sample set's file, in metrics.json beside PSNR, and a column of Table 2
    records = [json.loads(p.read_text()) for p in (work / "results/metrics/tasks/super_resolution").glob("*/nfe*.json")]
    assert records and all(-1 <= r["extra"]["ssim"] <= 1 for r in records)
    ssim = metrics["conditioned"]["tasks"]["super_resolution"]["extra"]["ssim"]
    assert set(ssim["results"]) == {"ddm"} and ssim["label"] == "SSIM"
    table2 = tex[tex.index("Super-resolution"):]
    assert r"Method & PSNR$\uparrow$ & Method & SSIM$\uparrow$ \\" in table2, table2[:400]
    print(f"plug-in run: {r.elapsed:.0f} s")


def test_a_broken_plugin_is_one_line_and_exit_2(workdir_factory):
    """A plug-in that cannot be imported: `ddm` says so in one line (the entry, the file, the error,
    the fix) with exit code 2; Snakemake refuses to start with the same line."""
    work = workdir_factory({"plugins": ["broken.py"]})
    (work / "broken.py").write_text("raise RuntimeError('no GPU here')\n")
    r = run_ddm(work, "extractor", "--dataset", "digits", "--out", "x.json")
    assert r.returncode == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ddm extractor: ") and "plugins: 'broken.py'" in lines[0]
    assert str(work / "broken.py") in lines[0] and "RuntimeError: no GPU here" in lines[0]
    assert "remove it from plugins" in lines[0] and not (work / "x.json").exists()
    s = run_snakemake(work, "-n", "all")
    assert s.returncode != 0 and lines[0].removeprefix("ddm extractor: ") in s.output, s.output[-3000:]
    missing = run_ddm(workdir_factory({"plugins": ["nowhere.py", "no_such_module_xyz"]}), "extractor",
                      "--dataset", "digits", "--out", "x.json")
    assert missing.returncode == 2 and "plugins: 'nowhere.py'" in missing.stderr and "no such file" in missing.stderr


def test_a_plugin_that_exits_at_import_is_one_line_and_not_zero(workdir_factory):
    """`sys.exit(0)` in a plug-in (SystemExit, not an Exception) would end `ddm` and the Snakefile
    silently with exit code 0: it is refused like any broken plug-in, in one line."""
    work = workdir_factory({"plugins": ["quits.py"]})
    (work / "quits.py").write_text("import sys\nsys.exit(0)\n")
    r = run_ddm(work, "extractor", "--dataset", "digits", "--out", "x.json")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "plugins: 'quits.py'" in lines[0] and "sys.exit(0)" in lines[0] and not (work / "x.json").exists()
    s = run_snakemake(work, "-n", "all")
    assert s.returncode != 0 and lines[0].removeprefix("ddm extractor: ") in s.output, s.output[-3000:]


def test_a_plugin_is_imported_once_per_process(tmp_path):
    """Loading the same plug-in twice (the CLI, then load_params; a relative and an absolute path)
    runs it once, so nothing registers twice; its file joins every subcommand's code digest."""
    counter = tmp_path / "count.py"
    counter.write_text("import builtins\nbuiltins.ddm_test_count = getattr(builtins, 'ddm_test_count', 0) + 1\n")
    code = ("import builtins, sys; from ddm import plugins\n"
            f"a = plugins.load(['count.py'], {str(tmp_path)!r})\n"
            f"b = plugins.load([{str(counter)!r}], '/')\n"
            "assert a == b and builtins.ddm_test_count == 1, (a, b)\n"
            "d = plugins.with_code({'sample': '0' * 16}); assert d['sample'] != '0' * 16 and len(d['sample']) == 16\n"
            f"assert plugins.files() == [plugins.Path({str(counter)!r}).resolve()]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                       "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    from ddm import plugins
    assert plugins.with_code({"sample": "abc"}) == {"sample": "abc"}  # no plug-in: the digests are the package's


def test_an_extractor_without_its_weights_file_is_one_line_at_validation(workdir_factory):
    """The plug-in's extractor reads its weights from the file ``fid: weights:`` names: with
    ``weights: null``, or a path with no file, params validation says so in one line (`ddm` exit 2,
    and the Snakemake dry run refuses to start), not a job halfway through the run."""
    work = _plugin_workdir(workdir_factory)
    params = yaml.safe_load((work / "params.yaml").read_text())
    fid = params["presets"]["embedded"]["greyfolder"]["fid"]
    fid["weights"] = None
    write_params(work, params)
    r = run_ddm(work, "extractor", "--dataset", "greyfolder", "--out", "x.json")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "ddm extractor: params.yaml: presets/embedded/greyfolder/fid/weights: null, but FID extractor 'pixels' reads "
        "its weights from the file named here: set it to the path of that file"], r.stderr
    fid["weights"] = "gone.pt"
    write_params(work, params)
    s = run_snakemake(work, "-n", "all")
    assert s.returncode != 0 and ("presets/embedded/greyfolder/fid/weights: 'gone.pt' is not a file (FID extractor "
                                  "'pixels'): set it to the path of the extractor's weights file") in s.output, s.output[-3000:]


@pytest.fixture
def edge_metric():
    """A task metric of one's own (the mean absolute difference of neighbouring pixels' gradients
    against the targets'), registered for super-resolution while the test runs."""
    from ddm.task_metrics import TASK_METRICS, register_task_metric

    @register_task_metric("edges", tasks=("super_resolution",), label="Edge error", higher_is_better=False)
    def edges(samples, split):
        def grad(x):
            return x.double().diff(dim=-1).abs().mean()
        return float((grad(samples) - grad(split["hr_uint8"])).abs())

    yield edges
    TASK_METRICS.unregister("edges")


def test_a_task_metric_is_one_function_and_one_params_entry(edge_metric):
    """Named in a task's ``metrics``, a registered task metric is validated (it must score that task),
    scores every sample set beside the task's own metric, and is not a training input (no hash changes)."""
    from ddm.conditioned import set_records
    from ddm.config import resolve_task, task_hash

    sr = "conditioned_presets.embedded.tasks.super_resolution.metrics"
    params = merge_params(tiny_params(), {sr: ["edges"]})
    validate(params)
    cfg = resolve_task(params, "super_resolution", "ddm")
    assert cfg["metrics"] == ["edges"] and task_hash(cfg) == task_hash(resolve_task(tiny_params(), "super_resolution", "ddm"))
    with pytest.raises(ConfigError, match="saliency/metrics: 'edges' does not score the saliency task "
                                          r"\(it scores: super_resolution\); remove it"):
        validate(merge_params(params, {"conditioned_presets.embedded.tasks.saliency.metrics": ["edges"]}))
    hr = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    split = {"target": hr, "hr_uint8": hr, "scale": 4}
    (key, record), = set_records(cfg, split, {("ddm", (5, 0)): hr})
    assert key == ("ddm", (5, 0)) and record["extra"] == {"edges": 0.0} and record["value"] == math.inf
