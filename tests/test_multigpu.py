"""Multi-process training through the pipeline (workflow/rules/train.smk, params.yaml
`train.gpus` / `train.nodes`).

* test_two_process_training_by_the_rule_equals_one_process: the train rule's own command line
  with `train.gpus: 2` (torchrun, 2 gloo processes on the CPU) on the tiny config gives the
  same EMA weights as `train.gpus: 1` within 1e-6.
* test_slurm_dry_run_of_a_multi_gpu_training: `snakemake -n --profile slurm --executor slurm`
  on a 4-GPU and a 2-node x 4-GPU training shows the SLURM request (gres gpu:4 per node, nodes,
  one task per node, no --ntasks-per-gpu) and the torchrun (srun + torchrun) command.
"""
from __future__ import annotations

import csv
import re
import shutil

import pytest
import torch

from conftest import run_snakemake

MODEL = "results/models/digits/ddm.pt"


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_two_process_training_by_the_rule_equals_one_process(workdir_factory):
    one = workdir_factory()
    two = workdir_factory({"presets.embedded.digits.train.gpus": 2})
    # the reference first; the prepared data are copied so both train on the same file
    r1 = run_snakemake(one, "--cores", "2", "-p", MODEL, timeout=900)
    assert r1.returncode == 0, r1.output[-4000:]
    (two / "data" / "prepared").mkdir(parents=True)
    shutil.copy2(one / "data" / "prepared" / "digits.pt", two / "data" / "prepared" / "digits.pt")
    r2 = run_snakemake(two, "--cores", "2", "-p", MODEL, timeout=900,
                       env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})
    log = (two / "logs" / "train" / "digits" / "ddm.log")
    assert r2.returncode == 0, r2.output[-4000:] + (log.read_text()[-4000:] if log.exists() else "")
    # the rule launched torchrun with 2 processes per node
    assert re.search(r"-m torch\.distributed\.run --nnodes=1 --nproc_per_node=2 .*--standalone "
                     r"-m ddm train", r2.output), r2.output[-3000:]
    ckpts = list((two / "results" / "checkpoints" / "digits").glob("ddm-*/ckpt-*.pt"))
    assert ckpts and torch.load(max(ckpts), weights_only=True)["world_size"] == 2
    # the training curve (loss, gradient norm, terms of the global batch): within 1e-6
    c1, c2 = (list(csv.DictReader(open(w / "results/curves/digits/ddm.csv"))) for w in (one, two))
    assert [r["step"] for r in c1] == [r["step"] for r in c2] and c1
    for a, b in zip(c1, c2):
        assert a.keys() == b.keys()
        for k in a:
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-6, abs=0), (k, a, b)
    # the EMA weights: within 1e-5. Not 1e-6: the gradients are summed in another order
    # (2 partial sums + all-reduce), and Adam's update m / sqrt(v) of a weight whose gradient
    # is float noise around 0 is about +-lr whatever the noise's size (measured on this config:
    # raw weights differ by up to 2e-4 after 6 steps at lr 2e-3, the EMA by 2.8e-6).
    w1, w2 = _weights(one / MODEL), _weights(two / MODEL)
    assert w1.keys() == w2.keys()
    worst = max((w1[k].double() - w2[k].double()).abs().max().item() for k in w1)
    print(f"\nmax |EMA weight difference| 1 process vs 2 processes: {worst:.3g}")
    assert worst <= 1e-5


def _dry_run(workdir, target):
    return run_snakemake(workdir, "-n", "--profile", "slurm", "--executor", "slurm", "-p",
                         "--verbose", target, timeout=300)


def _job_block(output: str, rule: str) -> tuple[dict, str]:
    """(resources, shell command) of the first job of `rule` in a dry run's output."""
    block = output.split(f"rule {rule}:", 1)[1]
    res = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
    resources = dict(item.split("=", 1) for item in res.split(", "))
    shell = re.search(r"^Shell command: (.*)$", block, re.M)
    shell = shell.group(1) if shell else block.split("\n\n", 1)[0]
    return resources, shell


@pytest.mark.parametrize("nodes", [1, 2])
def test_slurm_dry_run_of_a_multi_gpu_training(workdir_factory, nodes):
    wd = workdir_factory({"presets.embedded.digits.train.gpus": 4,
                          "presets.embedded.digits.train.nodes": nodes}, extra=("slurm",))
    (wd / "data" / "prepared").mkdir(parents=True)
    (wd / "data" / "prepared" / "digits.pt").write_bytes(b"")  # only the DAG is built
    r = _dry_run(wd, MODEL)
    assert r.returncode == 0, r.output[-4000:]
    resources, shell = _job_block(r.output, "train")
    assert resources["gres"] == "gpu:4"          # per node -> sbatch --gres=gpu:4
    assert resources["gpus"] == "0"             # no `srun --gpus` in the plugin's job step
    assert "slurm_extra" in resources and "USR1" in resources["slurm_extra"]
    launch = r"-m torch\.distributed\.run --nnodes=%d --nproc_per_node=4 --max-restarts=0" % nodes
    assert re.search(launch, shell), shell
    assert "-m ddm train --dataset digits --method ddm" in shell
    if nodes == 1:
        assert "--standalone" in shell and "srun" not in shell
        assert not {"nodes", "mpi", "tasks", "tasks_per_gpu"} & resources.keys(), resources
    else:  # sbatch --nodes=2 --ntasks=2 (one torchrun per node), never --ntasks-per-gpu
        assert (resources["nodes"], resources["tasks"], resources["mpi"]) == ("2", "2", "srun")
        assert resources["tasks_per_gpu"] == "0"
        assert re.search(r"srun --nodes=2 --ntasks-per-node=1 .*torch\.distributed\.run", shell)
        assert "--rdzv_backend=c10d" in shell and 'SLURM_JOB_ID' in shell
    # one GPU and one process by default: the command is the plain `ddm train`
    wd1 = workdir_factory(extra=("slurm",))
    (wd1 / "data" / "prepared").mkdir(parents=True)
    (wd1 / "data" / "prepared" / "digits.pt").write_bytes(b"")
    r1 = _dry_run(wd1, MODEL)
    res1, shell1 = _job_block(r1.output, "train")
    assert res1["gres"] == "gpu:1" and "torch.distributed" not in shell1, (res1, shell1)


def test_several_nodes_outside_slurm_is_a_clear_error(workdir_factory):
    wd = workdir_factory({"presets.embedded.digits.train.nodes": 2})
    (wd / "data" / "prepared").mkdir(parents=True)
    (wd / "data" / "prepared" / "digits.pt").write_bytes(b"x")
    r = run_snakemake(wd, "--cores", "1", MODEL, timeout=300, env={"SLURM_JOB_ID": ""})
    assert r.returncode != 0
    assert "train.nodes: 2 needs a SLURM allocation" in r.output, r.output[-3000:]
