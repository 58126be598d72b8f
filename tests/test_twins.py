"""Two methods whose training is the same (ddm.config.training_twins) train once: Table 4's h_t = c
row and Table 1's DDM (ht: constant) are one network, sampled for both rows, and the captions say so.
The real graph's run of it is tests/test_report_pdf.py's every-switch run
(test_the_twin_rows_come_from_one_training)."""

from __future__ import annotations

from conftest import DELETE, dry_run_jobs, run_snakemake, tiny_params
from ddm.config import model_of, resolve, resolved_hash, training_twins
from ddm.report.collect import collect
from ddm.report.tables import render_tables
from ddm.replicates import replicated_methods

#: The fewest jobs that hold a twin: Table 1's DDM and Table 4's h_t = c and h_t = a t + c rows.
ONLY_TWINS = {"conditioned": False, "long_nfe": False, "ablations": True, "solver_study": False,
              "presets.embedded.digits.convergence": DELETE, "presets.embedded.digits.method_overrides.sde": DELETE,
              **{f"methods.{m}": DELETE for m in tiny_params()["methods"] if m != "ddm"},
              **{f"solver_methods.{m}": DELETE for m in tiny_params()["solver_methods"]},
              **{f"ablation_methods.{m}": DELETE for m in tiny_params()["ablation_methods"]
                 if m not in ("ht_constant", "ht_linear")}}


def test_twins_are_methods_with_one_training_config(tmp_path):
    params = tiny_params()
    assert params["ht"] == "constant"
    assert training_twins(params) == {"ht_constant": "ddm"}
    assert model_of(params, "ht_constant") == "ddm" and model_of(params, "ht_linear") == "ht_linear"
    h = [resolved_hash(resolve(params, "digits", m)) for m in ("ddm", "ht_constant")]
    assert h[0] == h[1]
    # another main h_t: Table 1's DDM is no longer h_t = c, and each row trains its own network
    assert training_twins({**params, "ht": "linear"}) == {"ht_linear": "ddm"}
    # a different seed or network for one of them: no twin
    other = {**params, "ablation_methods": {**params["ablation_methods"],
                                           "ht_constant": {**params["ablation_methods"]["ht_constant"], "loss_type": "l1"}}}
    assert "ht_constant" not in training_twins(other)


def test_the_twin_is_sampled_from_its_owners_network(workdir_factory):
    """The dry run trains DDM and h_t = a t + c, never h_t = c, and samples h_t = c from ddm.pt."""
    work = workdir_factory(ONLY_TWINS)
    r = run_snakemake(work, "-n", "-p", "all")
    assert r.returncode == 0, r.output[-3000:]
    jobs = dry_run_jobs(r.stdout)
    trained = sorted(w["method"] for rule, w in jobs if rule == "train")
    assert trained == ["ddm", "ht_linear"]
    sampled = {w["method"] for rule, w in jobs if rule == "sample"}
    assert {"ddm", "ht_constant", "ht_linear"} <= sampled
    lines = [ln for ln in r.stdout.splitlines() if "--method ht_constant" in ln and " sample " in ln]
    assert lines and all("--model results/models/digits/ddm.pt" in ln for ln in lines), lines


def test_a_twins_replicates_are_its_owners(workdir_factory):
    """With `replicates: K` Table 4's rows are replicated too (ddm.replicates); h_t = c's network k is
    DDM's network k (the same config and seed): trained once, for both rows."""
    params = {**tiny_params(), "replicates": 3, "ablations": True}
    assert {"ht_constant", "ht_linear", "w_unit"} <= set(replicated_methods(params))
    assert model_of(params, "ht_constant-s2") == "ddm-s2" and model_of(params, "ht_linear-s1") == "ht_linear-s1"
    assert resolved_hash(resolve(params, "digits", "ht_constant-s1")) == resolved_hash(resolve(params, "digits", "ddm-s1"))
    work = workdir_factory({**ONLY_TWINS, "replicates": 3})
    r = run_snakemake(work, "-n", "-p", "all")
    assert r.returncode == 0, r.output[-3000:]
    jobs = dry_run_jobs(r.stdout)
    trained = sorted(w["method"] for rule, w in jobs if rule == "train")
    assert trained == ["ddm", "ddm-s1", "ddm-s2", "ht_linear", "ht_linear-s1", "ht_linear-s2"]
    lines = [ln for ln in r.stdout.splitlines() if "--method ht_constant-s2" in ln and " sample " in ln]
    assert lines and all("--model results/models/digits/ddm-s2.pt" in ln for ln in lines), lines


def test_the_caption_names_the_shared_network(tmp_path):
    """render_tables: the twin's row is marked and Table 4's caption says whose network it samples."""
    from test_trusted import _write  # metric files of `ddm evaluate`, one per (method, nfe, repeat)

    params = tiny_params()
    params["ablations"] = True
    rows = [(m, 2, r, 20.0 + i + r, None, 70) for i, m in enumerate(("ddm", "ddpm", "sde")) for r in range(2)]
    rows += [("ht_constant", 2, 0, 20.0, None, 70), ("ht_linear", 2, 0, 25.0, None, 70)]
    metrics = collect(_write(tmp_path, rows), params)
    assert metrics["shared_networks"] == {"ht_constant": "ddm"}
    tex = render_tables(metrics)
    assert r"$\mathbf{c}$$^\dagger$ &" in tex and r"$\mathbf{a}t + \mathbf{c}$ &" in tex
    del metrics["shared_networks"]
    assert r"$^\dagger$" not in render_tables(metrics)
