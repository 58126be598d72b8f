"""Benchmark: how the embedded preset converges (the measurement behind its width, steps, lr, batch).

Trains one Table 1 configuration of params.yaml on the digits (8x8) with training overrides,
keeps a checkpoint every --every steps, and scores the EMA weights of each with FID (digits
classifier, --num-samples samples against the 1,347 training images) at NFE 10 and 50 with the
method's own sampler, both final steps (DDM: paper / x0_head; SDEs: paper / denoise). One JSON
line per (step, NFE, final step) to --out.

Run (one configuration; several side by side on a 2-core machine):
  .venv/bin/python benchmarks/preset_sweep.py --method ddm --steps 4000 --every 500 \
      --set batch_size=128 lr=2e-3 --model ch=16 --out benchmarks/out/sweep-ddm.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ddm import metrics as M
from ddm import fidstats
from ddm.config import resolve
from ddm.datasets import load_dataset, to_model_range, to_uint8
from ddm.digits_classifier import DIGITS_CLASSIFIER, train_digits_classifier
from ddm.experiment import build
from ddm.generate import generate
from ddm.training import TrainConfig, ema_model, train
from ddm.training.checkpoint import list_checkpoints


def _kv(items):
    out = {}
    for item in items or []:
        k, v = item.split("=", 1)
        v = yaml.safe_load(v)
        if isinstance(v, str):  # YAML 1.1 reads "2e-3" as a string
            try:
                v = float(v)
            except ValueError:
                pass
        out[k] = v
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--method", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--set", nargs="*", help="train overrides key=value")
    p.add_argument("--model", nargs="*", help="model overrides key=value")
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 50])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--work", default=None, help="folder for checkpoints and FID files (default: temp)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    params = yaml.safe_load(open(a.params))
    block = params["presets"]["embedded"]["digits"]
    block["train"].update({"steps": a.steps, "ckpt_every": a.every, "keep_last": 10_000, **_kv(a.set)})
    block["model"].update(_kv(a.model))
    cfg = resolve(params, "digits", a.method)
    work = Path(a.work or tempfile.mkdtemp(prefix="ddm-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    images = load_dataset("digits", None, "train", resolution=8)
    weights = work / "digits_classifier.pt"
    if not weights.exists():
        train_digits_classifier(weights, seed=0)
    ref = work / "reference.npz"
    if not ref.exists():
        fidstats.reference_stats(images, DIGITS_CLASSIFIER, weights, ref)

    exp = build(cfg)
    torch.manual_seed(cfg["train"]["seed"])
    model = exp.make_model()
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.time()
    train(model, exp.objective, to_model_range(images), TrainConfig(**cfg["train"]), work / a.method)
    train_s = time.time() - t0
    finals = ["paper", "x0_head"] if cfg["method"]["process"] == "ddm" else ["paper", "denoise"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        for step, ckpt in list_checkpoints(work / a.method):
            ema_model(ckpt, model)
            model.eval()
            for nfe in a.nfe:
                for final in finals:
                    exp.cfg["sampling"]["final_step"] = final
                    x = generate(exp, model, nfe, list(range(1_000_000, 1_000_000 + a.num_samples)))
                    r = M.fid(to_uint8(x.clamp(-1, 1)), ref, DIGITS_CLASSIFIER, weights)
                    row = {"method": a.method, "step": step, "nfe": nfe, "final_step": final, "fid": r["fid"],
                           "num_samples": a.num_samples, "train": cfg["train"], "model": cfg["model"],
                           "params": n_params, "train_seconds": round(train_s, 1)}
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps({k: row[k] for k in ("method", "step", "nfe", "final_step", "fid")}), flush=True)


if __name__ == "__main__":
    main()
