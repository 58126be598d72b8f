"""Benchmark: Table 2's metric of a conditioned network at one of its training checkpoints, next to
the task's trivial references (docs/conditioned.md). It answers "how many steps does a task's
network need?" from the checkpoints a run keeps, without retraining: the converged run's frontier
for the conditioned tasks (benchmarks/RESULTS.md) comes from it.

Run in a work folder where `snakemake` has prepared the task and trained (part of) its network:
  .venv/bin/python benchmarks/task_checkpoint.py --workdir /tmp/conv \
      --params /tmp/conv/.snakemake/ddm-params/<digest>.yaml --task super_resolution --method ddm \
      --checkpoint /tmp/conv/results/checkpoints/tasks/super_resolution/ddm-<hash>/ckpt-00000600.pt \
      --sets 5:0 10:0

Prints one JSON line per sample set (the metric over the test split, as `ddm evaluate-task`
writes it), then one with the references. With `--mean-of K`, also the metric of the pixel-wise
mean of K sample sets at the first set's NFE (repeats 0..K-1): an estimate of the posterior mean,
whose PSNR a sampler's cannot reach (an exact posterior sample has twice its expected squared
error: 3.01 dB lower PSNR). Pixel-space tasks only (a latent task needs its
autoencoder; pass --autoencoder). The EMA weights of the checkpoint are scored, as a model file's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ddm.conditioned import build_task, load_split, reference_record, set_records, task_autoencoder  # noqa: E402
from ddm.config import resolve_task  # noqa: E402
from ddm.cli_tasks import parse_nfe_repeat  # noqa: E402
from ddm.generate import sample_sets  # noqa: E402
from ddm.training import ema_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="the run's folder (data/prepared/tasks/<task>/test.pt)")
    ap.add_argument("--params", type=Path, required=True, help="the run's params (its .snakemake/ddm-params/*.yaml)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--sets", type=parse_nfe_repeat, nargs="+", default=[(5, 0), (10, 0)], help="NFE:REPEAT")
    ap.add_argument("--autoencoder", help="a latent task's autoencoder model file")
    ap.add_argument("--mean-of", type=int, default=0, help="also score the mean of this many sample sets")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = yaml.safe_load(args.params.read_text())
    cfg = resolve_task(params, args.task, args.method)
    split = load_split(args.workdir / "data" / "prepared" / "tasks" / args.task / "test.pt", cfg["task"], "test",
                       cfg["data"])
    exp = build_task(cfg)
    net = ema_model(args.checkpoint, exp.make_model())
    ae = task_autoencoder(cfg, args.autoencoder) if args.autoencoder else None
    step = int(args.checkpoint.stem.split("-")[-1])
    wanted = list(dict.fromkeys([*args.sets, *((args.sets[0][0], r) for r in range(args.mean_of))]))
    t0 = time.perf_counter()
    samples = {(args.method, s): x for s, x in sample_sets(exp, net, split, wanted, autoencoder=ae)}
    secs = time.perf_counter() - t0
    if args.mean_of > 1:
        nfe = args.sets[0][0]
        stacked = torch.stack([samples[args.method, (nfe, r)].double() for r in range(args.mean_of)])
        samples[f"mean of {args.mean_of}", (nfe, -1)] = stacked.mean(0).round().to(torch.uint8)
    for (method, (nfe, repeat)), record in set_records(cfg, split, samples):
        print(json.dumps({"task": args.task, "method": method, "step": step, "nfe": nfe, "repeat": repeat,
                          "metric": record["metric"], "value": round(record["value"], 4)}), flush=True)
    print(json.dumps({"task": args.task, "references": reference_record(cfg, split)["references"],
                      "sampling_s": round(secs, 1)}), flush=True)


if __name__ == "__main__":
    main()
