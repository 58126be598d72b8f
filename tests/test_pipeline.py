"""The real pipeline on the tiny config (tests/fixtures/params-tiny.yaml): real Snakemake, real
`ddm` jobs, no mocks. One completed run (the session fixture ``tiny_run``, ~1.5 min on 2 idle
cores) is shared; tests that change files or params work on a copy of it (``tiny_run_copy``) or
in a fresh workdir (``workdir_factory``)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as st

from conftest import CORES, dry_run_jobs, dvc_env, run_ddm, run_snakemake, run_tool, tiny_params, write_params, merge_params
from ddm.io import load_torch, save_npz
from ddm.losses import LOSS_TYPES
from ddm.families import FAMILIES
from ddm.validation import load_params
from ddm.report.labels import METHOD_LABELS

pytestmark = pytest.mark.slow

#: The rules that make the files of one (dataset, method).
PER_METHOD_RULES = ("train", "sample", "evaluate")
#: Rules downstream of every metric file (rerun whenever any method's FIDs change).
AGGREGATE_RULES = {"stats", "report", "fid_plot", "report_pdf", "all"}


def expected_outputs(params: dict) -> list[str]:
    """Every file `snakemake all` must leave for ``params`` (written out independently of the rules)."""
    files = ["reports/tables.tex", "reports/claims.tex", "reports/metrics.json", "reports/report.pdf"]
    preset = params["presets"][params["preset"]]
    for ds, b in preset.items():
        files += [f"data/prepared/{ds}.pt", f"results/fid/{ds}/extractor.json", f"results/fid/{ds}/reference.npz",
                  f"reports/figures/fid_vs_nfe_{ds}.png"]
        for m in params["methods"]:
            files += [f"results/models/{ds}/{m}.pt", f"results/curves/{ds}/{m}.csv"]
            for n in b["nfe"]:
                files.append(f"reports/figures/samples_{ds}_{m}_nfe{n}.png")
                for r in range(b["fid"]["repeats"]):
                    files += [f"results/samples/{ds}/{m}/nfe{n}-r{r}.pt", f"results/metrics/{ds}/{m}/nfe{n}-r{r}.json"]
    return files


def job_stats(output: str) -> Counter:
    """The 'Job stats' table of a Snakemake run / dry run."""
    m = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+\d+", output, flags=re.S)
    assert m, f"no job stats in:\n{output[-3000:]}"
    return Counter({line.split()[0]: int(line.split()[1]) for line in m.group(1).splitlines()})


def lint_findings(output: str) -> dict[str, list[str]]:
    """``snakemake --lint`` text output -> {"rule X" / "snakefile ...": [lint titles]}."""
    findings: dict[str, list[str]] = {}
    where = None
    for line in output.splitlines():
        head = re.match(r"^Lints for (rule \w+|snakefile [^ ]+)", line)
        if head:
            where = head.group(1)
            findings[where] = []
        elif where and re.match(r"^    \* ", line):
            findings[where].append(line.strip("* :").strip())
    return findings


# --------------------------------------------------------------------------- the completed run
def test_all_outputs_exist(tiny_run):
    params = load_params(tiny_run / "params.yaml")
    missing = [f for f in expected_outputs(params) if not (tiny_run / f).is_file()]
    assert not missing, f"missing after `snakemake all`: {missing}"
    for f in expected_outputs(params):
        path = tiny_run / f
        assert path.stat().st_size > 0, f
        if f.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
        if f.endswith(".json"):
            json.loads(path.read_text())
    # sample files are what `ddm evaluate` expects: uint8 (N, 1, 8, 8)
    b = params["presets"][params["preset"]]["digits"]
    x = load_torch(tiny_run / "results/samples/digits/ddm/nfe2-r0.pt", "sample file", "ddm sample")
    assert x.dtype == torch.uint8 and tuple(x.shape) == (b["fid"]["num_samples"], 1, 8, 8)
    # atomic writes: no temp or partial file is left anywhere
    leftovers = [str(p.relative_to(tiny_run)) for top in ("data", "results", "reports")
                 for p in (tiny_run / top).rglob("*") if p.name.endswith((".tmp", ".part")) or p.name.startswith(".tmp-")]
    assert not leftovers


def test_rerun_has_nothing_to_do(tiny_run):
    r = run_snakemake(tiny_run, "--cores", CORES, "all", timeout=120)
    assert r.returncode == 0, r.output
    assert "Nothing to be done" in r.output, r.output[-3000:]
    # 1.6-4.9 s measured on the 2-core machines (goal: 10 s); the bound leaves room for a CI
    # machine shared with other jobs, where 11 s was seen once. benchmarks/embedded_pipeline.sh
    # times it for the record.
    assert r.elapsed < 30, f"a no-op `snakemake all` took {r.elapsed:.1f} s"


def test_deleted_model_is_rebuilt_and_dvc_agrees(tiny_run_copy):
    """Issue 12.2: after a complete run, a deleted model is rebuilt by `snakemake all` (which names
    every product), as `dvc status` reports its stage changed; afterwards both see nothing to do.
    The SDE model: the tiny config's convergence figure leaves it out, so fewer jobs rerun."""
    run = tiny_run_copy
    assert "sde" not in tiny_params()["presets"]["embedded"]["digits"]["convergence"]["methods"]
    model = run / "results/models/digits/sde.pt"
    model.unlink()
    dvc = (run / ".dvc").is_dir()
    if dvc:
        status = json.loads(run_tool(run, "dvc", "status", "--json").stdout)
        assert any("changed outs" in e for e in status.get("train", []) if isinstance(e, dict)), status
    dry = run_snakemake(run, "-n", "all", timeout=120)
    assert dry.returncode == 0, dry.output[-3000:]
    trained = [wc for rule, wc in dry_run_jobs(dry.output) if rule == "train"]
    assert trained == [{"dataset": "digits", "method": "sde"}], dry.output[-3000:]

    r = run_snakemake(run, "--cores", CORES, "all", timeout=600, env=dvc_env(run))
    assert r.returncode == 0, r.output[-3000:]
    assert model.is_file()
    assert "Nothing to be done" in run_snakemake(run, "-n", "all", timeout=120).output
    if dvc:
        assert "Data and pipelines are up to date" in run_tool(run, "dvc", "status").output


def test_default_workflow_profile_is_used(tiny_run):
    """profiles/default is picked up at the repository root, and holds no per-rule keys (they
    would replace the SLURM profile's whole per-rule block when the two are merged)."""
    r = run_snakemake(tiny_run, "-n", "--forcerun", "train", "all", timeout=120)
    assert r.returncode == 0, r.output
    assert "workflow specific profile profiles/default" in r.output, r.output[:2000]
    profile = yaml.safe_load((tiny_run / "profiles/default/config.yaml").read_text())
    assert not {"set-threads", "set-resources", "default-resources"} & set(profile), profile


def test_lint_is_clean(tiny_run):
    r = run_snakemake(tiny_run, "--lint", timeout=120)
    findings = lint_findings(r.output)
    summary = Counter(t for titles in findings.values() for t in titles)
    assert r.returncode == 0 and not findings, f"lint findings {dict(summary)} in {sorted(findings)}"


def _parse_table1(tex: str) -> tuple[list[int], dict[str, list[str]]]:
    m = re.search(r"^Method \$\\backslash\$ NFE & Param((?: & \d+)+) \\\\$", tex, flags=re.M)
    assert m, tex
    nfes = [int(n) for n in m.group(1).split(" & ")[1:]]
    rows = {}
    for label in METHOD_LABELS.values():
        row = re.search(rf"^{re.escape(label)}((?: & [^&]*?)+) \\\\$", tex, flags=re.M)
        if row:
            rows[label] = row.group(1).split(" & ")[2:]  # after the Param cell
    return nfes, rows


_CELL = re.compile(r"^(?:\\textbf\{(?P<bold>[-\d.]+)\}(?P<marker>\\sigmark|\\nsmark)|(?P<plain>[-\d.]+))"
                   r"(?: \$\\pm\$ (?P<std>[\d.]+))?$")


def test_tables_equal_metrics(tiny_run):
    tex = (tiny_run / "reports/tables.tex").read_text()
    metrics = json.loads((tiny_run / "reports/metrics.json").read_text())
    params = load_params(tiny_run / "params.yaml")
    b = params["presets"][params["preset"]]["digits"]
    d = metrics["datasets"]["digits"]
    nfes, rows = _parse_table1(tex)
    assert nfes == sorted(b["nfe"])
    assert set(rows) == {METHOD_LABELS[m] for m in params["methods"]}
    for m in params["methods"]:
        for nfe, text in zip(nfes, rows[METHOD_LABELS[m]]):
            cell = _CELL.match(text)
            assert cell, f"unparsable cell {text!r}"
            res = d["results"][m][str(nfe)]
            # metrics.json holds the FIDs of the per-sample-set metric files, and their mean/std
            fids = [json.loads((tiny_run / f"results/metrics/digits/{m}/nfe{nfe}-r{r}.json").read_text())["fid"]
                    for r in range(b["fid"]["repeats"])]
            assert res["values"] == fids
            assert res["mean"] == pytest.approx(np.mean(fids), rel=1e-12)
            assert res["std"] == pytest.approx(np.std(fids, ddof=1), rel=1e-12)
            # the table shows exactly those numbers, formatted
            assert (cell["bold"] or cell["plain"]) == f"{res['mean']:.2f}"
            assert cell["std"] == f"{res['std']:.3f}"
            # the marker sits on the column's best mean and matches a Welch t-test vs the second best
            col = d["table1"][str(nfe)]
            means = {k: d["results"][k][str(nfe)]["mean"] for k in params["methods"]}
            order = sorted(means, key=means.get)
            assert col["best"] == order[0] and col["second"] == order[1]
            p = st.ttest_ind(d["results"][order[0]][str(nfe)]["values"], d["results"][order[1]][str(nfe)]["values"],
                             equal_var=False).pvalue
            assert col["p"] == pytest.approx(p, rel=1e-9)
            if m == order[0]:
                want = r"\sigmark" if p < 0.05 else r"\nsmark"
                assert cell["marker"] == want, (m, nfe, text, p)
            else:
                assert cell["marker"] is None, (m, nfe, text)
    assert f"NFE {nfes[0]}: {b['fid']['num_samples']} samples $\\times$ {b['fid']['repeats']}" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_generated_tables_compile(tiny_run, tmp_path):
    from test_report import compile_tables

    r = compile_tables((tiny_run / "reports/tables.tex").read_text(), tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]


# --------------------------------------------------------------------------- invalid params
INVALID = {
    "enum": ({"ht": "cubic"}, ["ht", "cubic", *FAMILIES], "params.yaml: ht:"),
    "unknown-key": ({"bogus": 1}, ["bogus"], "params.yaml: (top level):"),
    "wrong-type": ({"seed": "zero"}, ["seed", "integer"], "params.yaml: seed:"),
    "nested-enum": ({"methods.ddm.loss_type": "l3"}, ["methods", "ddm", "loss_type", "l3", *LOSS_TYPES],
                    "params.yaml: methods/ddm/loss_type:"),
    "unknown-override": ({"presets.embedded.digits.method_overrides.sdee": {"sigma_max": 3.0}},
                         ["presets/embedded/digits/method_overrides", "sdee", "ddm", "ddpm", "sde"],
                         "params.yaml: presets/embedded/digits/method_overrides"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_params_fail_before_any_job(workdir_factory, case):
    overrides, needles, cli_needle = INVALID[case]
    work = workdir_factory(overrides)

    dry = run_snakemake(work, "-n", "all", timeout=120)
    assert dry.returncode != 0
    for s in needles:
        assert s in dry.output, f"{s!r} not in the error of `snakemake -n`:\n{dry.output[-3000:]}"
    assert "Job stats" not in dry.output and not re.search(r"^(local)?rule \w+:", dry.output, flags=re.M)

    if case in ("enum", "unknown-override"):  # a real run too: nothing starts, nothing is written
        real = run_snakemake(work, "--cores", "1", "all", timeout=120)
        assert real.returncode != 0
        for top in ("data", "results", "logs"):
            assert not (work / top).exists(), f"{top}/ written by a run with invalid params"
        # reports/ holds the tracked report source only
        assert sorted(p.name for p in (work / "reports").iterdir()) == ["report.tex.j2"]

    cli = run_ddm(work, "train", "--dataset", "digits", "--method", "ddm", "--data", "data/prepared/digits.pt",
                  "--checkpoints", "ckpt", "--out", "model.pt", timeout=120)
    assert cli.returncode == 2, cli.output
    assert f"ddm train: {cli_needle}" in cli.stderr, cli.stderr
    for s in needles:
        assert s in cli.stderr, f"{s!r} not in the error of `ddm train`:\n{cli.stderr}"
    assert "Traceback" not in cli.stderr
    assert not (work / "model.pt").exists() and not (work / "ckpt").exists()


# --------------------------------------------------------------------------- failures
def test_failing_rule_leaves_no_partial_output(tiny_run_copy):
    """A corrupt FID reference: `ddm evaluate` fails, Snakemake names the rule, no output is left."""
    run = tiny_run_copy
    ref = run / "results/fid/digits/reference.npz"
    target = run / "results/metrics/digits/ddm/nfe2-r0.json"
    before = ref.stat()
    save_npz(ref, mu=np.zeros(3))  # a valid .npz with its checksum, but not a ddm reference statistics file
    os.utime(ref, ns=(before.st_atime_ns, before.st_mtime_ns))  # so only the missing target reruns
    target.unlink()
    others = {p: p.stat().st_mtime_ns for p in (run / "results/metrics").rglob("*.json")}

    r = run_snakemake(run, "--cores", "1", str(target.relative_to(run)), timeout=300)
    assert r.returncode != 0
    assert "Error in rule evaluate" in r.output, r.output[-3000:]
    assert re.search(r"jobs? did not complete successfully|Exiting because a job execution failed", r.output)
    assert not target.exists()
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")]
    assert {p: p.stat().st_mtime_ns for p in others} == others  # nothing else was touched
    log = (run / "logs/evaluate/digits/ddm/nfe2-r0.log").read_text()
    assert "results/fid/digits/reference.npz is not a ddm FID reference statistics file" in log
    # the next run reports the same failure again (the failed job is not marked done)
    again = run_snakemake(run, "-n", str(target.relative_to(run)), timeout=120)
    assert again.returncode == 0 and "evaluate" in job_stats(again.output)


def test_missing_image_source_fails_in_prepare(workdir_factory):
    params = {**tiny_params(), "conditioned": False}  # the conditioned tasks need the digits block
    block = params["presets"]["embedded"].pop("digits")
    params["presets"]["embedded"]["imagefolder"] = {**block, "source": "no-such-folder"}
    work = workdir_factory()
    write_params(work, params)

    r = run_snakemake(work, "--cores", "1", "data/prepared/imagefolder.pt", timeout=300)
    assert r.returncode != 0
    assert "Error in rule prepare" in r.output, r.output[-3000:]
    assert not (work / "data/prepared/imagefolder.pt").exists()
    assert not [p for p in work.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert "image folder not found: no-such-folder" in (work / "logs/prepare/imagefolder.log").read_text()


#: Route http(s) through a closed local port: the download fails at once and for sure, even
#: where the machine is online (CI must never download CIFAR-10 here).
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


def _cifar10_workdir(workdir_factory) -> Path:
    params = {**tiny_params(), "conditioned": False}  # the conditioned tasks need the digits block
    block = params["presets"]["embedded"].pop("digits")
    params["presets"]["embedded"]["cifar10"] = {**block, "resolution": 32}
    work = workdir_factory()
    write_params(work, params)
    return work


def test_missing_dataset_offline(workdir_factory):
    """CIFAR-10 with no network: `ddm prepare` fails quickly, naming the URL, checksum and where
    to put the file by hand; under Snakemake the prepare rule fails the same way."""
    work = _cifar10_workdir(workdir_factory)
    out = "data/prepared/cifar10.pt"
    r = run_ddm(work, "prepare", "--dataset", "cifar10", "--data-root", "data/raw", "--out", out,
                env=OFFLINE, timeout=120)
    assert r.returncode != 0
    msg = r.stderr.strip().splitlines()[-1]
    assert CIFAR10_URL in msg and CIFAR10_SHA256 in msg, r.stderr[-2000:]
    assert "place it by hand at data/raw/downloads/cifar-10-python.tar.gz" in msg
    # time from the first failed attempt to the exit (the start-up, torch's import, excluded)
    first = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ddm\.download WARNING", r.stderr, flags=re.M)
    assert first, r.stderr[-2000:]
    started = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    download_s = r.ended - started
    print(f"offline `ddm prepare`: {r.elapsed:.1f} s in all, {download_s:.1f} s after the first failed attempt")
    assert download_s < 30, f"the offline failure took {download_s:.1f} s after the first attempt"
    assert r.elapsed < 120
    assert not (work / out).exists()
    assert not list((work / "data").rglob("*.part"))

    sm = run_snakemake(work, "--cores", "1", out, env=OFFLINE, timeout=300)
    assert sm.returncode != 0 and "Error in rule prepare" in sm.output
    assert not (work / out).exists()
    log = (work / "logs/prepare/cifar10.log").read_text()
    assert CIFAR10_URL in log and CIFAR10_SHA256 in log and "place it by hand" in log


def test_offline_error_is_one_clear_line(workdir_factory):
    work = _cifar10_workdir(workdir_factory)
    r = run_ddm(work, "prepare", "--dataset", "cifar10", "--data-root", "data/raw", "--out", "x.pt",
                env=OFFLINE, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    assert r.stderr.strip().splitlines()[-1].startswith("ddm prepare: could not download")


# --------------------------------------------------------------------------- targeted reruns
def _changed_jobs(run: Path, overrides: dict) -> list[tuple[str, dict]]:
    params = load_params(run / "params.yaml")
    write_params(run, merge_params(params, overrides))
    r = run_snakemake(run, "-n", "all", timeout=120)
    assert r.returncode == 0, r.output[-3000:]
    jobs = dry_run_jobs(r.output)
    assert Counter(rule for rule, _ in jobs) == job_stats(r.output)
    return jobs


CHANGES = {
    "sde-sigma_max": ({"presets.embedded.digits.method_overrides.sde.sigma_max": 12.0}, "sde", 1),
    "top-level-ht": ({"ht": "linear"}, "ddm", 1),
    "ddpm-beta_max": ({"methods.ddpm.beta_max": 15.0}, "ddpm", 1),
    "ddm-sampler": ({"methods.ddm.sampler": "ddm_deterministic"}, "ddm", 0),
    "sde-t_end": ({"methods.sde.t_end": 1.0e-4}, "sde", 0),
}
@pytest.mark.parametrize("case", list(CHANGES))
def test_param_change_reruns_only_that_method(tiny_run_copy, case):
    overrides, method, trains = CHANGES[case]
    params = load_params(tiny_run_copy / "params.yaml")
    b = params["presets"]["embedded"]["digits"]
    jobs = _changed_jobs(tiny_run_copy, overrides)
    per_method = [(rule, wc) for rule, wc in jobs if rule in PER_METHOD_RULES]
    # FID against training step: rerun for the changed method when it is one the figure shows
    conv = [wc["method"] for rule, wc in jobs if rule == "convergence"]
    assert conv == ([method] if method in b.get("convergence", {}).get("methods", []) else []), conv
    assert {wc["method"] for _, wc in per_method} == {method}, per_method
    counts = Counter(rule for rule, _ in per_method)
    sample_sets = {(int(n), r) for n in b["nfe"] for r in range(b["fid"]["repeats"])}
    assert counts == Counter({"train": trains, "sample": len(sample_sets), "evaluate": len(sample_sets)}), counts
    for rule in ("sample", "evaluate"):
        assert {(int(wc["nfe"]), int(wc["repeat"])) for r, wc in per_method if r == rule} == sample_sets
    others = Counter(rule for rule, _ in jobs if rule not in {*PER_METHOD_RULES, "convergence"})
    assert set(others) <= AGGREGATE_RULES | {"sample_grid", "convergence_plot"}, others
    assert {wc["method"] for rule, wc in jobs if rule == "sample_grid"} <= {method}
    assert not {"prepare", "extractor", "refstats"} & set(others)


def test_sampler_change_applies_to_new_samples(tiny_run_copy):
    """After a sampler change the sample files come from the new sampler (the model file is not
    the source of the sampling options): rerun one sample set and redo it here."""
    from ddm.cli import sample_seeds
    from ddm.experiment import load_model
    from ddm.config import resolve
    from ddm.datasets import to_uint8
    from ddm.generate import generate

    run = tiny_run_copy
    target = "results/samples/digits/ddm/nfe2-r0.pt"
    old = load_torch(run / target, "sample file", "ddm sample")
    params = merge_params(load_params(run / "params.yaml"), {"methods.ddm.sampler": "ddm_deterministic"})
    write_params(run, params)
    r = run_snakemake(run, "--cores", CORES, target, timeout=600)
    assert r.returncode == 0, r.output[-3000:]
    new = load_torch(run / target, "sample file", "ddm sample")

    exp, net = load_model(run / "results/models/digits/ddm.pt")
    exp.cfg["sampling"] = resolve(params, "digits", "ddm")["sampling"]
    assert exp.cfg["sampling"]["sampler"] == "ddm_deterministic"
    torch.set_num_threads(1)
    expected = to_uint8(generate(exp, net, 2, sample_seeds(0, new.shape[0])).clamp(-1, 1))
    diff = (new.int() - expected.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99, "the rerun did not use the new sampler"
    assert not torch.equal(new, old)


def test_config_overrides_reach_the_jobs(tiny_run_copy):
    """`snakemake --config ht=linear` retrains the main DDM model with h_t = linear: the jobs' `ddm`
    commands read the merged config (DDM_PARAMS), not params.yaml, which still says constant."""
    from ddm.experiment import load_model

    run = tiny_run_copy
    target = "results/models/digits/ddm.pt"
    r = run_snakemake(run, "--cores", CORES, target, "--config", "ht=linear", timeout=600)
    assert r.returncode == 0, r.output[-3000:]
    assert load_params(run / "params.yaml")["ht"] == "constant"
    exp, _ = load_model(run / target)
    assert exp.cfg["method"]["ht"] == "linear"
    merged = list((run / ".snakemake/ddm-params").glob("*.yaml"))
    assert len(merged) == 1 and yaml.safe_load(merged[0].read_text())["ht"] == "linear"
    # without the override the jobs read params.yaml again: the model is retrained with h_t = constant
    r = run_snakemake(run, "--cores", CORES, target, timeout=600)
    assert r.returncode == 0, r.output[-3000:]
    assert load_model(run / target)[0].cfg["method"]["ht"] == "constant"
