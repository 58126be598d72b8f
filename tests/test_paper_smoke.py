"""The paper preset's GPU smoke run (benchmarks/paper_smoke.py, run by benchmarks/gpu_check.sh) in
its CPU dry mode: the tiny network on a CIFAR-10-format file of real photo crops, the loss falling,
images/s written into a copy of the throughput table that the plan then reads, a FID, one summary."""

from __future__ import annotations

import json
import pickle
import sys

import yaml

from conftest import REPO, _run
from ddm import gpucards
from ddm.plan import load_table


def test_dry_mode_trains_samples_and_writes_the_table(tmp_path):
    out = tmp_path / "smoke"
    r = _run([sys.executable, "benchmarks/paper_smoke.py", "cpu", str(out)], REPO, 600, {"PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.output[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["loss_fell"] and len(summary["train"]["loss_windows"]) == 20
    assert summary["data"] == {"train": 320, "test": 64, "mib": summary["data"]["mib"]} and summary["data"]["mib"] < 64
    assert summary["fid"]["num_samples"] == 32 and summary["fid"]["fid"] > 0
    assert summary["fid"]["note"].startswith(("Inception-v3", "digits classifier"))
    # the data file is CIFAR-10's format: a pickled dict with uint8 (N, 3072) rows and labels
    batch = pickle.loads((out / "data" / "cifar10" / "cifar-10-batches-py" / "data_batch_3").read_bytes())
    assert batch[b"data"].shape == (64, 3072) and batch[b"data"].dtype.name == "uint8" and len(batch[b"labels"]) == 64
    # the measured figures went into the copy's `measured:` block, its comments kept, and the plan reads them
    text = (out / "throughput.yaml").read_text()
    assert text.startswith("# The plan's throughput table")
    table = yaml.safe_load(text)
    measured = table["measured"]["dry-run"]
    assert measured["fp32"]["train"] > 0 and measured["tf32"]["sample"] > 0
    assert "benchmarks/paper_smoke.py on cpu (dry run)" in measured["source"]
    assert {k: v for k, v in table.items() if k != "measured"} == {k: v for k, v in load_table().items() if k != "measured"}
    table["cards"]["dry-run"] = table["cards"]["h100"]
    dev = gpucards.gpu_device(table, "dry-run")
    assert dev["rates"]["fp32"]["train"] == measured["fp32"]["train"] and "measured by benchmarks/gpu_check.sh" in dev["source"]
    assert "paper smoke (cpu" in r.output and "FID of 32 samples" in r.output
