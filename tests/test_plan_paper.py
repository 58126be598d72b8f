"""The paper preset's plan (ddm/plan.py, ddm/gpucards.py) against the shipped SLURM profile and the
figures the project prints: one dry run of Snakemake's real graph (12,422 jobs), planned on each
named card. No job may ask for less time or host memory than the plan needs, none for more than
24 h, every training must finish within its retries, and every GPU job must fit its card (the
conditioned tasks at Table 6's batches through gradient accumulation and their sampling batch)."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, make_workdir
from ddm import gpucards
from ddm import plan as P

@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("paper"), extra=("slurm",))
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text())
    overrides = {"preset": "paper"}
    params = P.merged_config(work, overrides)
    jobs = P.graph_jobs(work, overrides)
    profile = P.profile_resources(REPO / "slurm" / "config.yaml")

    planned: dict[tuple, tuple[dict[str, P.Row], dict]] = {}

    def rows(card: str, precision: str | None = None) -> tuple[dict[str, P.Row], dict]:
        """The plan's rows on ``card`` in ``precision`` (made once per pair; the tests only read them)."""
        if (card, precision) not in planned:
            table = P.load_table()
            table["devices"]["gpu"] = gpucards.gpu_device(table, card)
            planned[card, precision] = {r.rule: r for r in P.make_plan(jobs, params, table, profile, "gpu", precision)}, table
        return planned[card, precision]

    return {"rows": rows, "profile": profile, "params": params}


@pytest.mark.parametrize("card", ["h100", "a100"])
def test_profile_asks_for_what_the_plan_needs(paper, card):
    """Runtime (at most 24 h), host memory (mem_mb) and retries of every rule against the plan, on
    each card at the preset's own precision (TF32 for the paper's trainings)."""
    rows, table = paper["rows"](card)
    prof, cap = paper["profile"], table["wall"]["max_wall_min"]
    assert cap == 24 * 60
    short, long, mem, retries = {}, {}, {}, {}
    for r in rows.values():
        if r.runtime is not None and r.runtime < r.wall_min:
            short[r.rule] = (r.runtime, r.wall_min)
        if (r.runtime or 0) > cap or r.wall_min > cap:
            long[r.rule] = (r.runtime, r.wall_min)
        mem_mb = prof.get(r.rule, {}).get("mem_mb", prof["__default__"]["mem_mb"])
        if r.mem_gb * 1000 > mem_mb:
            mem[r.rule] = (mem_mb, round(r.mem_gb, 1))
        if r.retries < r.allocations - 1:
            retries[r.rule] = (r.retries, r.allocations)
    assert not short, f"profile runtime below the plan's wall time (runtime, plan) in minutes: {short}"
    assert not long, f"a job asks for more than 24 h: {long}"
    assert not mem, f"profile mem_mb below the plan's host memory (mem_mb, GB): {mem}"
    assert not retries, f"a training cannot finish within its retries (retries, allocations): {retries}"
    trainings = {r for r in P.TRAININGS if r in rows}
    assert {r for r in P.RESUMABLE if r in rows} == set(prof["__preemptible__"])
    assert all(rows[r].allocations > 1 for r in trainings)
    assert all(rows[r].device == "gpu" for r in ("evaluate", "refstats", "evaluate_task")), \
        "the FID jobs run Inception on a GPU"
    over = {r.rule: round(r.gpu_mem_gb, 1) for r in rows.values()
            if r.device == "gpu" and r.gpu_mem_gb > table["devices"]["gpu"]["memory_gb"]}
    assert not over, f"GPU memory per GPU above the {card}'s: {over}"
    assert gpucards.memory_error(rows.values(), table["devices"]["gpu"], prof) is None


def test_memory_line_names_the_key_that_fits_the_card(paper):
    """Without its accumulation or sampling batch, each conditioned job is the plan's one line, which
    names the params.yaml key that lowers it; the micro-batch is what a GPU holds."""
    from ddm import jobcost

    assert jobcost.micro_batch({"batch_size": 48, "accum": 6}) == 8
    assert jobcost.micro_batch({"batch_size": 64, "accum": 2}, gpus=4) == 8
    rows, table = paper["rows"]("h100")
    dev = table["devices"]["gpu"]
    for rule, key in (("train_task", "raise accum in the conditioned preset's train block"),
                      ("train_autoencoder", "raise accum in the task's latent block"),
                      ("sample_task", "lower the conditioned preset's batch_size")):
        big = P.Row(rule=rule, device="gpu", gpu_mem_gb=dev["memory_gb"] + 1, largest={"gpu_mem_gb": "task/ddm"})
        line = gpucards.memory_error([rows["train"], big], dev, paper["profile"])
        assert line.startswith(f"{rule} (task/ddm): needs ") and key in line and "\n" not in line, line


def test_gpu_hours_follow_card_and_precision(paper):
    """A CIFAR-10 training is 3 x its forward FLOPs x batch x steps over the card's dense peak in its
    precision x the stated efficiency, plus its start-up: the H100 in bf16 is the fastest."""
    from ddm import netcost
    from ddm.config import resolve

    cfg = resolve(paper["params"], "cifar10", "ddm")
    flops = 3 * netcost.unet_cost(cfg).flops * cfg["train"]["batch_size"] * cfg["train"]["steps"]
    for card, prec in (("h100", "bf16"), ("a100", "tf32"), ("h100", None)):
        rows, table = paper["rows"](card, prec)
        gpu = table["devices"]["gpu"]
        want = flops / (table["cards"][card]["peak"][prec or "tf32"] * gpu["efficiency"][prec or "tf32"])
        cifar = [s for s in rows["train"].seconds if abs(s - want - gpu["startup_s"]["torch"] - gpu["snakemake_job_s"]) < 1]
        assert cifar, (card, prec, want, rows["train"].seconds)
        assert rows["train"].precisions == [prec or "tf32"]
    h_bf16 = sum(r.device_hours for r in paper["rows"]("h100", "bf16")[0].values() if r.device == "gpu")
    a_tf32 = sum(r.device_hours for r in paper["rows"]("a100", "tf32")[0].values() if r.device == "gpu")
    assert h_bf16 < a_tf32


def _gpu_hours(paper, card, precision) -> int:
    return round(sum(r.device_hours for r in paper["rows"](card, precision)[0].values() if r.device == "gpu"))


def test_readme_and_docs_figures_are_the_plans(paper):
    """The GPU-hours in the README's SLURM section and docs/pipeline.md, and the shard times in
    params.yaml, are the plan's."""
    want = {("H100", "bf16"): _gpu_hours(paper, "h100", "bf16"), ("A100", "TF32"): _gpu_hours(paper, "a100", "tf32")}
    for doc in ("README.md", "docs/pipeline.md"):
        text = (REPO / doc).read_text()
        for (card, prec), hours in want.items():
            m = re.search(rf"{card}\s+in\s+{prec}:\s+\*\*([\d,]+) GPU-hours\*\*", text)
            assert m and int(m.group(1).replace(",", "")) == hours, (doc, card, prec, hours, m and m.group(0))
        assert "1,280 GPU-hours" not in text and "Until sharding lands" not in text
    rows, _ = paper["rows"]("h100", "bf16")
    split = (round(sum(rows[r].device_hours for r in P.TRAININGS)),
             round(sum(rows[r].device_hours for r in ("sample_shard", "sample_task") if r in rows)))
    m = re.search(r"H100 in bf16: \*\*[\d,]+ GPU-hours\*\*\s+\(training (\d+), sampling (\d+) in", (REPO / "README.md").read_text())
    assert m and (int(m.group(1)), int(m.group(2))) == split, (m and m.group(0), split)
    from ddm import netcost
    from ddm.config import resolve

    gpu = gpucards.gpu_device(P.load_table(), "a100")
    text = (REPO / "params.yaml").read_text()
    said = [int(m) for m in re.findall(r"about (\d+) min a shard on an A100 in TF32", text)]
    want = []
    for ds in ("cifar10", "celebahq256"):  # the largest shard of each: shard_size samples at the largest NFE
        block = paper["params"]["presets"]["paper"][ds]
        flops = netcost.unet_cost(resolve(paper["params"], ds, "ddm")).flops * block["shard_size"] * max(block["nfe_long"])
        want.append(round((flops / gpu["rates"]["tf32"]["sample"] + gpu["startup_s"]["torch"] + gpu["snakemake_job_s"]) / 60))
    assert said == want, (said, want)
    assert round(max(paper["rows"]("a100")[0]["sample_shard"].seconds) / 60) == want[1]
    assert "35 TFLOP/s" not in text


def test_measured_figures_replace_the_estimate():
    """gpu_check's figures for a card replace the estimate kind by kind, and the source says so."""
    table = P.load_table()
    est = gpucards.gpu_device(table, "h100")
    assert "no GPU measured yet" in est["source"]
    table["measured"] = {"h100": {"source": "gpu_check 2026-12-08", "bf16": {"train": 2.0e14}}}
    dev = gpucards.gpu_device(table, "h100")
    assert dev["rates"]["bf16"]["train"] == 2.0e14 and dev["rates"]["bf16"]["sample"] == est["rates"]["bf16"]["sample"]
    assert "measured by benchmarks/gpu_check.sh for bf16 train: gpu_check 2026-12-08" in dev["source"]
    with pytest.raises(P.ConfigError, match=r"--gpu v100: not a card of the throughput table \(known: a100, h100\)"):
        gpucards.gpu_device(table, "v100")
    assert yaml.safe_load((REPO / "ddm" / "data" / "throughput.yaml").read_text())["measured"] == {}
