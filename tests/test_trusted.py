"""Numbers a reviewer trusts: training-seed replicates (ddm.replicates), KID beside FID (ddm.kid),
the plateau check (ddm.plateau), equal counts in a FID-only table (ddm.contracts), and Table 1's
caption saying what its std is over. Unit tests on hand-written metric files and features; the
shared tiny run (tests/test_pipeline.py) checks the same through the real graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from conftest import TINY_PARAMS, run_ddm
from ddm.config import ConfigError, resolve, resolved_hash
from ddm.validation import load_params
from ddm.io import save_json
from ddm.kid import RowSample, kid
from ddm.metrics import feature_statistics, frechet_distance
from ddm.plateau import BORDERLINE, CONVERGED, NOT_CHECKED, NOT_CONVERGED, plateau_check
from ddm.replicates import check_method, replicate_name, split_replicate
from ddm.report.collect import add_plateau, collect
from ddm.report.tables import render_tables


@pytest.fixture(scope="module")
def params():
    p = load_params(TINY_PARAMS)
    p["replicates"] = 3
    return p


# -- replicates -------------------------------------------------------------------------------
def test_a_replicate_is_its_method_with_its_own_seed(params):
    assert split_replicate("ddm-s2") == ("ddm", 2) and split_replicate("ddm") == ("ddm", 0)
    assert replicate_name("ddm", 0) == "ddm" and replicate_name("ddm", 2) == "ddm-s2"
    base, r1, r2 = (resolve(params, "digits", m) for m in ("ddm", "ddm-s1", "ddm-s2"))
    assert [c["train"]["seed"] for c in (base, r1, r2)] == [params["seed"], params["seed"] + 1, params["seed"] + 2]
    assert {k: v for k, v in r1.items() if k != "train"} == {k: v for k, v in base.items() if k != "train"}
    # the seed is in the hash the checkpoints are kept under: three runs, three folders
    assert len({resolved_hash(c) for c in (base, r1, r2)}) == 3


@pytest.mark.parametrize("name, fragment", [
    ("ddm-s3", "replicates is 3"),              # beyond K
    ("ddm_ceiling-s1", "no training-seed replicates"),  # a solver variant is sampled, not trained
    ("nope-s1", "no training-seed replicates"),
])
def test_a_replicate_that_does_not_exist_is_refused(params, name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve(params, "digits", name)
    with pytest.raises(ConfigError, match=fragment):
        check_method(params, name)


def _write(folder, rows):
    """Metric files as `ddm evaluate` writes them: rows of (method, nfe, repeat, fid, kid, n)."""
    paths = []
    for m, nfe, r, fid, kid_, n in rows:
        p = folder / f"{m}-nfe{nfe}-r{r}.json"
        rec = {"dataset": "digits", "method": m, "nfe": nfe, "repeat": r, "fid": fid, "num_samples": n,
               "extractor": "digits-classifier", "reference": "reference.npz (n=1347)", "weights_sha256": "0" * 64}
        if kid_ is not None:
            rec["kid"] = kid_
        save_json(rec, p)
        paths.append(p)
    return paths


#: network k of each method, scored on repeat k's sample set; network 0 also on repeats 1 and 2
SEEDS = {"ddm": [10.0, 14.0, 12.0], "ddpm": [20.0, 21.0, 26.0], "sde": [30.0, 31.0, 29.0]}
SETS = {"ddm": [10.0, 10.1, 9.9], "ddpm": [20.0, 20.2, 19.8], "sde": [30.0, 30.5, 29.5]}


def _replicate_rows():
    rows = []
    for m in SEEDS:
        rows += [(m, 2, r, v, v / 1e3, 20) for r, v in enumerate(SETS[m])]
        rows += [(replicate_name(m, k), 2, k, SEEDS[m][k], SEEDS[m][k] / 1e3, 20) for k in (1, 2)]
    return rows


def test_table1_is_over_the_k_networks_and_keeps_the_sample_set_std(params, tmp_path):
    metrics = collect(_write(tmp_path, _replicate_rows()), params)
    res = metrics["datasets"]["digits"]["results"]
    assert set(res) == set(SEEDS)  # replicates fold into their method: no row "ddm-s1"
    for m in SEEDS:
        cell = res[m]["2"]
        assert cell["values"] == SEEDS[m] and cell["n"] == 3 and cell["unit"] == "training seeds"
        assert cell["std"] == pytest.approx(np.std(SEEDS[m], ddof=1))
        assert cell["sample_sets"]["values"] == SETS[m]
        assert cell["sample_sets"]["std"] == pytest.approx(np.std(SETS[m], ddof=1))
        assert cell["kid"]["values"] == pytest.approx([v / 1e3 for v in SEEDS[m]])
    col = metrics["datasets"]["digits"]["table1"]["2"]
    # the t-test is Welch's over the K networks: over the sample sets ddm vs ddpm would be far more significant
    assert (col["best"], col["second"]) == ("ddm", "ddpm")
    assert col["p"] == pytest.approx(st.ttest_ind(SEEDS["ddm"], SEEDS["ddpm"], equal_var=False).pvalue)
    assert col["p"] > st.ttest_ind(SETS["ddm"], SETS["ddpm"], equal_var=False).pvalue
    tex = render_tables(metrics)
    assert "3 independently trained networks (training seeds)" in tex
    assert "Std over the sample sets of one network" in tex
    # the values behind each mean: one row per network, so the seed that moves a mean is named
    assert "The networks behind each mean $\\pm$ std over training seeds" in tex
    for m, label in (("ddm", "DDM (ours)"), ("sde", "SDE (VE-SDE, EM)")):
        for k, v in enumerate(SEEDS[m]):
            assert f"{label}, network {k} & {v:.2f}" in tex


def test_table4_rows_are_over_their_k_networks_too(params, tmp_path):
    """With ablations, a Table 4 row is replicated like a Table 5 row: its cells over its K networks,
    listed network by network; h_t = c, which samples DDM's networks, is not listed twice."""
    p = {**params, "ablations": True}
    rows = _replicate_rows()
    rows += [(replicate_name("ht_linear", k), 2, k, v, None, 20) for k, v in enumerate([15.0, 17.0, 13.0])]
    rows += [(replicate_name("ht_constant", k), 2, k, SEEDS["ddm"][k], None, 20) for k in range(3)]
    metrics = collect(_write(tmp_path, rows), p)
    res = metrics["datasets"]["digits"]["results"]
    assert res["ht_linear"]["2"]["values"] == [15.0, 17.0, 13.0] and res["ht_linear"]["2"]["unit"] == "training seeds"
    assert metrics["shared_networks"] == {"ht_constant": "ddm"}
    tex = render_tables(metrics)
    assert "ht\\_linear, network 2 & 13.00" in tex and "ht\\_constant, network" not in tex
    assert "(Table 4): FID$\\downarrow$. Mean $\\pm$ std over 3 training seeds a row" in tex


def test_one_seed_has_no_table_of_networks(tmp_path, params):
    metrics = collect(_write(tmp_path, [(m, 2, r, v, None, 20) for m in SETS for r, v in enumerate(SETS[m])]), params)
    assert "The networks behind each mean" not in render_tables(metrics)


def test_one_seed_says_so_and_is_the_run_without_replicates(tmp_path):
    one = load_params(TINY_PARAMS)
    one["replicates"] = 1
    rows = [(m, 2, r, v, v / 1e3, 20) for m in SETS for r, v in enumerate(SETS[m])]
    metrics = collect(_write(tmp_path, rows), one)
    cell = metrics["datasets"]["digits"]["results"]["ddm"]["2"]
    assert cell["values"] == SETS["ddm"] and "sample_sets" not in cell and "unit" not in cell
    tex = render_tables(metrics)
    assert "A quick run (" in tex and "1 training seed)" in tex
    assert "understates the variance of retraining" in tex


# -- KID ----------------------------------------------------------------------------------------
def test_kid_is_unbiased_at_small_counts_where_fid_is_not():
    """Two samples of one Gaussian: the FID of 50 samples is far above that of 300 (its bias);
    KID's mean over draws stays at zero within its own spread at both counts."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1000, 16))
    ref_stats = feature_statistics(ref)
    out = {}
    for n in (50, 300):
        fids, kids = [], []
        for _ in range(6):
            x = rng.normal(size=(n, 16))
            fids.append(frechet_distance(*feature_statistics(x), *ref_stats))
            kids.append(kid(x, ref)["kid"])
        out[n] = (np.mean(fids), np.mean(kids), np.std(kids) / math.sqrt(len(kids)))
    assert out[50][0] > 4 * out[300][0]  # FID's small-count bias
    for n in (50, 300):
        assert abs(out[n][1]) < 4 * out[n][2] + 1e-3, out


def test_kid_of_shards_equals_kid_of_the_set_and_reference_rows_are_a_fixed_subset():
    rng = np.random.default_rng(1)
    x, ref = rng.normal(size=(300, 8)), rng.normal(size=(500, 8))
    assert kid([x[:100], x[100:250], x[250:]], ref) == kid(x, ref)
    rows = RowSample(50, limit=20)
    for chunk in np.array_split(np.arange(50.0)[:, None], 7):
        rows.add(chunk)
    kept = rows.features()[:, 0]
    assert len(kept) == 20 and np.all(np.diff(kept) > 0)
    again = RowSample(50, limit=20)
    again.add(np.arange(50.0)[:, None])
    assert np.array_equal(again.features()[:, 0], kept)  # the subset does not depend on the chunking


def test_the_kid_rows_are_in_table1(params, tmp_path):
    tex = render_tables(collect(_write(tmp_path, _replicate_rows()), params))
    assert r"KID$\downarrow$ ($\times 10^{3}$)" in tex
    assert r"12.00 $\pm$ 2.000" in tex  # ddm's KID x 10^3 over its three networks


# -- equal counts --------------------------------------------------------------------------------
def _stats(workdir, paths):
    return run_ddm(workdir, "stats", "--params", str(TINY_PARAMS), "--inputs", *map(str, paths),
                   "--out", str(workdir / "metrics.json"))


@pytest.mark.parametrize("with_kid", [False, True])
def test_unequal_counts_in_a_fid_only_table_fail_the_stats_step(tmp_path, with_kid):
    rows = [(m, nfe, r, 20.0 + r + nfe, (0.01 if with_kid else None), 500 if nfe == 2 else 100)
            for m in ("ddm", "ddpm", "sde") for nfe in (2, 4) for r in range(2)]
    r = _stats(tmp_path, _write(tmp_path, rows))
    if with_kid:
        assert r.returncode == 0, r.output
        return
    assert r.returncode == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "Table 1 on digits" in lines[0] and "100 and 500 samples" in lines[0] and "no KID" in lines[0]
    assert not (tmp_path / "metrics.json").exists()


# -- the plateau check ----------------------------------------------------------------------------
def _convergence(method, fids):
    return {"dataset": "digits", "method": method, "num_samples": 20, "extractor": "digits-classifier",
            "rows": [{"step": 100 * (i + 1), "nfe": 2, "fid": f} for i, f in enumerate(fids)]}


def test_the_plateau_check_flags_a_model_whose_fid_still_falls():
    results = {m: {"2": {"values": SETS[m], "mean": float(np.mean(SETS[m])), "std": float(np.std(SETS[m], ddof=1)),
                         "n": 3}} for m in SETS}
    found = plateau_check([_convergence("ddm", [90.0, 10.0, 10.05]),        # last two: 0.05 < std 0.1
                           _convergence("ddpm", [90.0, 40.0, 25.0, 20.0]),  # still falling by 5 > std 0.2
                           _convergence("sde", [30.0])], results)           # one checkpoint
    assert found["ddm"]["verdict"] == CONVERGED
    assert found["ddpm"]["verdict"] == NOT_CONVERGED
    assert found["ddpm"]["checks"][0]["diff"] == pytest.approx(5.0)
    assert found["sde"]["verdict"] == NOT_CHECKED


def test_a_difference_within_the_margin_of_the_std_is_borderline():
    """diff against std on a knife edge (the converged run's SDE: 6.587 against 6.579) is neither verdict."""
    results = {m: {"2": {"values": SETS[m], "mean": float(np.mean(SETS[m])), "std": float(np.std(SETS[m], ddof=1)),
                         "n": 3}} for m in SETS}
    std = results["sde"]["2"]["std"]  # 0.5; the margin is 2 x CPU_REL of it, 0.03
    found = plateau_check([_convergence("sde", [40.0, 30.0, 30.0 + std * 1.01]),
                           _convergence("ddpm", [40.0, 20.0, 20.0 + 0.2 * 0.9])], results)
    assert found["sde"]["verdict"] == BORDERLINE and found["sde"]["checks"][0]["margin"] == pytest.approx(0.03)
    assert found["ddpm"]["verdict"] == CONVERGED  # 10 % below its std: outside the margin


def test_a_model_that_is_not_converged_is_named_in_the_caption(params, tmp_path):
    paths = _write(tmp_path, _replicate_rows())
    metrics = collect(paths, params)
    conv = []
    for m, fids in (("ddm", [50.0, 10.0, 10.01]), ("ddpm", [60.0, 30.0, 21.0]), ("sde", [40.0, 30.0, 30.5])):
        p = tmp_path / f"conv-{m}.json"
        save_json(_convergence(m, fids), p)
        conv.append(p)
    add_plateau(metrics, conv)
    plateau = metrics["datasets"]["digits"]["plateau"]
    assert [plateau[m]["verdict"] for m in ("ddm", "ddpm", "sde")] == [CONVERGED, NOT_CONVERGED, BORDERLINE]
    tex = render_tables(metrics)
    assert "Not converged (the FIDs of its last two checkpoints differ by more than the sample-set std): DDPM (" in tex
    assert r"Borderline (that difference within 6\% of the std): SDE (" in tex
    del metrics["datasets"]["digits"]["plateau"]["sde"]
    add_plateau(metrics, conv[:2])
    assert "Plateau not checked (no convergence record): SDE (" in render_tables(metrics)


# -- through the real graph: the shared tiny run, then replicates: 2 ---------------------------------
def test_two_seeds_train_two_distinct_networks_and_the_t_test_is_over_them(tiny_run_copy):
    """`snakemake all --config replicates=2` after the tiny run trains a second network per Table 1
    method (and samples and scores it), leaves the first as it was, and Table 1 is over both."""
    import json

    import torch

    from conftest import dry_run_jobs, run_snakemake
    from ddm.contracts import load_json_product
    from ddm.modelfile import read_model

    tiny_run = tiny_run_copy
    plan = dry_run_jobs(run_snakemake(tiny_run, "-n", "--cores", "2", "all", "--config", "replicates=2").stdout)
    assert sorted(w["method"] for rule, w in plan if rule == "train") == ["ddm-s1", "ddpm-s1", "sde-s1"]
    r = run_snakemake(tiny_run, "--cores", "2", "all", "--config", "replicates=2", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = load_json_product(tiny_run / "reports/metrics.json", "metrics")
    d = metrics["datasets"]["digits"]
    assert metrics["run"]["replicates"] == 2
    for m in ("ddm", "ddpm", "sde"):
        a, b = (read_model(tiny_run / f"results/models/digits/{name}.pt") for name in (m, f"{m}-s1"))
        assert a["cfg"]["train"]["seed"] + 1 == b["cfg"]["train"]["seed"]
        wa, wb = a["state_dict"], b["state_dict"]
        assert any(not torch.equal(wa[k], wb[k]) for k in wa), f"{m}: the two seeds trained the same network"
        own = json.loads((tiny_run / f"results/metrics/digits/{m}/nfe2-r0.json").read_text())["fid"]
        other = json.loads((tiny_run / f"results/metrics/digits/{m}-s1/nfe2-r1.json").read_text())["fid"]
        cell = d["results"][m]["2"]
        assert cell["values"] == [own, other] and cell["unit"] == "training seeds" and cell["n"] == 2
        assert "kid" in json.loads((tiny_run / f"results/metrics/digits/{m}/nfe2-r0.json").read_text())
    col = d["table1"]["2"]
    if col["p"] is not None:
        best, second = (d["results"][col[k]]["2"]["values"] for k in ("best", "second"))
        assert col["p"] == pytest.approx(st.ttest_ind(best, second, equal_var=False).pvalue)
    tex = (tiny_run / "reports/tables.tex").read_text()
    assert "2 independently trained networks (training seeds)" in tex and r"KID$\downarrow$" in tex
    assert "ddm-s1" not in tex  # a replicate is no row of its own
    assert set(d["plateau"]) == {"ddm", "ddpm", "sde"} and d["plateau"]["sde"]["verdict"] == NOT_CHECKED


# -- the converged run's overlay -------------------------------------------------------------------
def test_the_converged_overlay_plans_k_seeds_a_plateau_check_and_pixel_space_sr(tmp_path):
    """runs/converged.yaml over the shipped params.yaml: a dry run of the real graph plans 3
    networks per Table 1 method, a convergence record for each of the three models, and
    super-resolution in pixel space (no autoencoder); the tiny run keeps the latent path."""
    import shutil

    from conftest import REPO, dry_run_jobs, make_workdir, run_snakemake

    work = make_workdir(tmp_path, extra=("runs",))
    shutil.copy2(REPO / "params.yaml", work / "params.yaml")
    r = run_snakemake(work, "-n", "--cores", "2", "all", "--configfile", "runs/converged.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = dry_run_jobs(r.stdout)
    trained = sorted(w["method"] for rule, w in jobs if rule == "train")
    assert trained == sorted(f"{m}{s}" for m in ("ddm", "ddpm", "sde") for s in ("", "-s1", "-s2"))
    assert sorted(w["method"] for rule, w in jobs if rule == "convergence") == ["ddm", "ddpm", "sde"]
    # with the ablations: every network of Tables 4-5 and Fig. 3 is plateau-checked too (the twin h_t = c
    # is Table 1's DDM, checked as such), each with 3 sample sets at the check's NFE for its std
    r = run_snakemake(work, "-n", "--cores", "2", "all", "--configfile", "runs/converged.yaml", "--config", "ablations=True")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = dry_run_jobs(r.stdout)
    checked = sorted(w["method"] for rule, w in jobs if rule == "convergence")
    ablations = ["arch_conv", "ddpm_x0", "ht_exp", "ht_linear", "ht_quadratic", "ht_sin", "loss_l1", "w_exp", "w_unit"]
    assert checked == sorted(["ddm", "ddpm", "sde", *ablations])
    sets = {(w["method"], w["repeat"]) for rule, w in jobs if rule in ("sample", "sample_shard") and w["nfe"] == "10"}
    assert all((m, str(r)) in sets for m in ablations for r in range(3)), sorted(sets)
    assert "ht_constant" not in {w["method"] for rule, w in jobs if rule == "train"}
    assert not [w for rule, w in jobs if rule == "train_autoencoder"]
    assert ("train_autoencoder", {"task": "super_resolution"}) in dry_run_jobs(
        run_snakemake(make_workdir(tmp_path / "tiny"), "-n", "--cores", "2", "all").stdout)
