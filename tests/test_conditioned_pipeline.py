"""Conditioned generation through the real Snakemake graph (Tables 2 and 3; workflow/rules/tasks.smk).

The tiny config has ``conditioned: true``, so the session's one tiny run (conftest ``tiny_run``)
prepares each of the three tasks, trains its DDM and DDPM networks (2 steps), samples the test
conditions (two sets at 5 NFE, one at 10), scores them, and puts Tables 2 and 3 into the report.
Its super-resolution task has a tiny ``latent`` block (§5.1), so the run also trains that task's
autoencoder, trains both methods on its latents and decodes their samples. Its saliency task uses
§B.2's concatenation (``model: {conditioning: concat}``), the others cross-attention (§5.1). These tests read that
run; Table 2's markers with three repeats are checked on metric files written here.

Also: a conditioned network's output depends on its condition, and bad conditioned params fail
with one line naming the key, the value and the fix (in-process, no Snakemake).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import DELETE, merge_params, tiny_params, write_params
from ddm.io import load_torch
from ddm.config import ConfigError, TASKS
from ddm.validation import validate

#: The (NFE, repeat) sample sets of the tiny conditioned block: Table 2 at 5 NFE x 2, Table 3 at 5 and 10.
SETS = ((5, 0), (5, 1), (10, 0))
METHODS = ("ddm", "ddpm")


def _check_sets(root: Path, task: str, method: str, test: dict) -> None:
    """Every sample set of (task, method): uint8, one sample per test condition, and its metric file;
    the job kept each set for a resumed job (ddm.setstore: one key folder, the same bytes)."""
    kept = list((root / f"results/checkpoints/task_sets/{task}/{method}").iterdir())
    assert len(kept) == 1 and kept[0].is_dir(), kept
    for nfe, rep in SETS:
        out = root / f"results/samples/tasks/{task}/{method}/nfe{nfe}-r{rep}.pt"
        assert (kept[0] / out.name).read_bytes() == out.read_bytes(), out
        x = load_torch(out, "sample file", "ddm sample")
        assert x.dtype == torch.uint8 and x.shape == test["target"].shape, (task, method, x.shape)
        m = json.loads((root / f"results/metrics/tasks/{task}/{method}/nfe{nfe}-r{rep}.json").read_text())
        assert (m["metric"], m["nfe"], m["repeat"], m["num_samples"]) == (TASKS[task]["metric"], nfe, rep, len(x))
        assert math.isfinite(m["value"])


def test_each_task_trains_samples_and_is_evaluated(tiny_run):
    from ddm.conditioned import load_split

    assert list(tiny_params()["conditioned_methods"]) == list(METHODS), "the tiny config changed: revise this test"
    for task in TASKS:
        test = load_split(tiny_run / f"data/prepared/tasks/{task}/test.pt", task, "test")
        for method in METHODS:  # DDM and the DDPM baseline: the same commands, the same backbone
            assert (tiny_run / f"results/models/tasks/{task}/{method}.pt").is_file()
            _check_sets(tiny_run, task, method, test)
        refs = json.loads((tiny_run / f"results/metrics/tasks/{task}/reference.json").read_text())["references"]
        assert set(refs) == {"saliency": {"all_background"}, "super_resolution": {"bicubic"},
                             "inpainting": {"mean_fill", "test_images"}}[task]
        assert (tiny_run / f"reports/figures/tasks_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reports_hold_tables_2_and_3(tiny_run):
    full = json.loads((tiny_run / "reports/metrics.json").read_text())
    stamps = [json.loads(p.read_text())["computed_at"] for p in (tiny_run / "results/metrics/tasks").rglob("*.json")]
    assert full["provenance"]["computed_first"] <= min(stamps) and max(stamps) <= full["provenance"]["computed_last"]
    from ddm.validation import load_params
    from ddm.report.provenance import params_hash

    params = load_params(tiny_run / "params.yaml")
    pairs = [("digits", m) for m in params["methods"]]
    assert full["provenance"]["params_hash"] == params_hash(params, pairs, [(t, m) for t in TASKS for m in METHODS])
    assert full["provenance"]["params_hash"] != params_hash(params, pairs)  # the tasks' configs count
    metrics = full["conditioned"]
    assert metrics["methods"] == list(METHODS) and metrics["table2_nfe"] == [5] and metrics["table3_nfe"] == [5, 10]
    sal = metrics["tasks"]["saliency"]
    assert sal["results"]["ddm"]["5"]["n"] == 2 and sal["results"]["ddm"]["10"]["n"] == 2  # table3.repeats: 2
    assert metrics["tasks"]["super_resolution"]["higher_is_better"] is True

    tex = (tiny_run / "reports/tables.tex").read_text()
    t2 = tex[tex.index("Conditioned generation (Table 2)"):tex.index("(Table 3)")]
    t3 = tex[tex.index("(Table 3)"):]
    for text in ("DDM-5 step", r"$\pm$", "All background", "Bicubic", "Mean-colour fill",
                 "stands in for DUTS", "stands in for DIV2K", "stands in for CelebA-HQ",
                 r"TRACER-T7\reported{}", r"DDM-10 step (paper)\reported{}", "not comparable"):
        assert text in t2, text
    assert t2.index("Saliency detection") < t2.index("Super-resolution") < t2.index("Image inpainting")
    assert r"Method $\backslash$ NFE & 5 & 10 & 5 & 10 & 5 & 10 \\" in t3
    assert "\nDDM & " in t3 and r"DDPM (paper)\reported{}" in t3


def test_table2_marks_the_better_method_as_table1_does(tmp_path):
    """Both methods with three repeats: mean +- std, the t-test marker on the better mean (PSNR:
    the higher), the references and the paper's rows (the rendering of `ddm report`)."""
    from ddm.report.collect import collect_conditioned
    from ddm.report.tables import render_tables

    params = merge_params(tiny_params(), {"conditioned": True, "conditioned_presets.embedded.table2.repeats": 3})
    values = {("saliency", "ddm"): 0.05, ("saliency", "ddpm"): 0.40, ("super_resolution", "ddm"): 30.0,
              ("super_resolution", "ddpm"): 12.0, ("inpainting", "ddm"): 20.0, ("inpainting", "ddpm"): 20.005}
    files, refs = [], []
    for (task, method), v in values.items():
        for rep in range(3):
            f = tmp_path / f"{task}-{method}-{rep}.json"
            f.write_text(json.dumps({"task": task, "method": method, "nfe": 5, "repeat": rep, "value": v + rep * 0.01,
                                     "metric": TASKS[task]["metric"], "num_samples": 4}))
            files.append(f)
        r = tmp_path / f"{task}-reference.json"
        r.write_text(json.dumps({"task": task, "metric": TASKS[task]["metric"], "num_samples": 4,
                                 "references": {"saliency": {"all_background": 0.1}, "super_resolution": {"bicubic": 25.0},
                                                "inpainting": {"mean_fill": 90.0, "test_images": 3.0}}[task]}))
        refs.append(r)
    cond = collect_conditioned(files, refs, params)
    assert [cond["tasks"][t]["markers"]["5"]["best"] for t in TASKS] == ["ddm", "ddm", "ddm"]
    tex = render_tables({"preset": "embedded", "ht": "constant", "table1_methods": [], "datasets": {}, "conditioned": cond})
    row = next(line for line in tex.splitlines() if line.startswith("DDM-5 step &"))
    assert row.count(r"\sigmark") == 2 and row.count(r"\nsmark") == 1  # inpainting: 20.010 vs 20.015, std 0.01
    assert next(line for line in tex.splitlines() if line.startswith("DDPM-5 step &")).count(r"\textbf") == 0
    assert r"\textbf{30.01}\sigmark $\pm$ 0.010" in row and r"\textbf{0.0600}\sigmark $\pm$ 0.01000" in row


def test_latent_task_runs_through_its_autoencoder(tiny_run):
    """§5.1's latent path in the tiny run: super-resolution has a latent block, so its autoencoder
    model and PSNR file exist, both methods trained on its latents, the samples are pixel images,
    and the PSNR reaches reports/metrics.json and Table 2's caption."""
    from ddm.autoencoder import load_autoencoder
    from ddm.conditioned import load_split, load_task_model

    task = "super_resolution"
    assert "latent" in tiny_params()["conditioned_presets"]["embedded"]["tasks"][task], "the tiny config changed"
    made, ae = load_autoencoder(tiny_run / f"results/models/autoencoder/{task}.pt")
    psnr = json.loads((tiny_run / f"results/models/autoencoder/{task}.json").read_text())
    assert made["task"] == task and ae.factor == psnr["factor"] == 4 and math.isfinite(psnr["psnr"])
    assert float(ae.scale_factor) == pytest.approx(psnr["scale_factor"]) and float(ae.scale_factor) != 1.0
    test = load_split(tiny_run / f"data/prepared/tasks/{task}/test.pt", task, "test")
    for method in METHODS:  # DDM and DDPM: the same autoencoder
        exp, net = load_task_model(tiny_run / f"results/models/tasks/{task}/{method}.pt")
        assert (exp.cfg["channels"], exp.cfg["resolution"]) == (ae.z_channels, test["target"].shape[-1] // 4)
        assert net.cond_resolution == test["target"].shape[-1]
        x = load_torch(tiny_run / f"results/samples/tasks/{task}/{method}/nfe5-r0.pt", "sample file", "ddm sample")
        assert x.shape == test["target"].shape and x.dtype == torch.uint8
    full = json.loads((tiny_run / "reports/metrics.json").read_text())
    assert full["conditioned"]["tasks"][task]["latent"]["psnr"] == pytest.approx(psnr["psnr"])
    assert "saliency" in full["conditioned"]["tasks"] and "latent" not in full["conditioned"]["tasks"]["saliency"]
    tex = (tiny_run / "reports/tables.tex").read_text()
    assert f"runs in the latent space of a KL-f4 autoencoder (3 latent channels), reconstruction PSNR " \
           f"{psnr['psnr']:.1f}~dB on the test split" in tex


def test_changing_the_condition_changes_the_output(tiny_run):
    from ddm.conditioned import load_split, load_task_model
    from ddm.generate import sample_split
    from ddm.modelfile import sample_seeds

    exp, net = load_task_model(tiny_run / "results/models/tasks/saliency/ddm.pt")
    assert net.conditioning == "concat" and len(net.cross) == 0  # §B.2's fusion, from the tiny params
    split = load_split(tiny_run / "data/prepared/tasks/saliency/test.pt", "saliency", "test")
    seeds = sample_seeds(0, len(split["cond"]))
    a = sample_split(exp, net, split, 5, seeds)
    written = load_torch(tiny_run / "results/samples/tasks/saliency/ddm/nfe5-r0.pt", "sample file", "ddm sample")
    assert torch.equal(a, written)
    other = {**split, "cond": split["cond"].roll(1, dims=0)}  # each seed gets another condition
    b = sample_split(exp, net, other, 5, seeds)
    assert not torch.equal(a, b)


def _message(overrides: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate(merge_params(tiny_params(), {"conditioned": True, **overrides}))
    return str(e.value)


@pytest.mark.parametrize("overrides, expected", [
    ({"conditioned_presets.embedded": DELETE}, ["conditioned: true needs conditioned_presets/embedded",
                                                "or set conditioned: false"]),
    ({"conditioned_methods": DELETE}, ["conditioned: true needs conditioned_methods"]),
    ({"conditioned_presets.embedded.tasks.denoising": {"size": 8}},
     ["conditioned_presets/embedded/tasks", "'denoising'", "allowed: inpainting, saliency, super_resolution"]),
    ({"conditioned_presets.embedded.tasks.inpainting.size": 16},
     ["tasks/inpainting/size: 16", "presets/embedded/digits (resolution 8)", "set size to that resolution"]),
    ({"conditioned_presets.embedded.tasks.super_resolution.size": 8},
     ["tasks/super_resolution/size: 8 must be a multiple of the scale 4 above 8", "use e.g. 16"]),
    ({"conditioned_presets.embedded.tasks.saliency.size": 9}, ["tasks/saliency/size: 9 is not divisible by 2"]),
    ({"conditioned_presets.embedded.tasks.saliency.scale": 2}, ["tasks/saliency: ['scale'] belong to another task"]),
    ({"conditioned_presets.embedded.tasks.saliency.n_test": None}, ["tasks/saliency: set n_train and n_test"]),
    ({"conditioned_presets.embedded.tasks.saliency.model": {"ch": 0}},
     ["tasks/saliency/model/ch: 0 is less than the minimum of 1"]),
    ({"conditioned_methods.ddm.sampler": "vp_em"}, ["conditioned_methods/ddm: sampler 'vp_em' does not fit", "allowed:"]),
    ({"conditioned_methods.ddm.denoiser": "posterior_mean"}, ["conditioned_methods/ddm/denoiser: only 'network'"]),
    ({"conditioned_presets.embedded.table2.repeats": 0}, ["table2/repeats", "0 is less than the minimum of 1"]),
    # the latent block (§5.1): the task's size against the autoencoder's factor, its keys, its budget
    ({"conditioned_presets.embedded.tasks.super_resolution.size": 18},
     ["tasks/super_resolution/latent: the super_resolution task's size 18 is not divisible by its autoencoder's "
      "down-sampling factor 4", "set size to a multiple of 4 (e.g. 20)"]),
    ({"conditioned_presets.embedded.tasks.super_resolution.latent.ch_mult": [1, 2, 2, 2, 2]},
     ["tasks/super_resolution/size: its latent size 1 (size / the autoencoder's factor) is not divisible by 2"]),
    ({"conditioned_presets.embedded.tasks.super_resolution.latent.steps": 0},
     ["tasks/super_resolution/latent/steps: 0 is less than the minimum of 1"]),
    # §B.2's concatenation: a conv encoder at x_t's own size
    ({"conditioned_presets.embedded.tasks.super_resolution.model": {"conditioning": "concat"}},
     ["tasks/super_resolution/model/conditioning: 'concat'", "{'latent': 'a latent block'}",
      "or use conditioning 'cross_attention'"]),
    ({"conditioned_presets.embedded.tasks.saliency.model": {"conditioning": "concat", "cross_attn_resolutions": [8]}},
     ["tasks/saliency/model/conditioning: 'concat'", "{'cross_attn_resolutions': [8]}"]),
    ({"conditioned_presets.embedded.tasks.super_resolution.latent.width": 8},
     ["tasks/super_resolution/latent: Additional properties", "'width' was unexpected", "allowed: accum, batch_size, ch,"]),
])
def test_bad_conditioned_params_give_one_clear_line(overrides, expected):
    msg = _message(overrides)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith("params.yaml: "), msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_task_command_with_conditioned_off_says_so(tmp_path, capsys):
    from ddm.cli import main

    params = write_params(tmp_path, merge_params(tiny_params(), {"conditioned": False}))
    rc = main(["prepare-task", "--params", str(params), "--task", "saliency",
               "--train", str(tmp_path / "train.pt"), "--test", str(tmp_path / "test.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "conditioned is off" in err[0] and "set conditioned: true" in err[0]
    assert not (tmp_path / "train.pt").exists()
