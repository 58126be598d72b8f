"""Paper scale on the CPU (Table 6): the `paper` preset's U-Nets build, train one step at
batch 2 (ddm.training.Trainer: resume, step, log; no checkpoint written) and sample one step.

Run:  DDM_THREADS=2 .venv/bin/python benchmarks/paper_scale_step.py [--datasets cifar10 celebahq256]

Prints the parameter count and the time of each part per dataset; a dataset whose network does
not build prints the error (one line) and the others still run. Measured on the 2-core
development machine under load: CIFAR-10 178.45M parameters, build 13.7 s, one training step
131 s, one sampling step 15 s (too long for the test suite, hence a benchmark).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ddm.config import resolve  # noqa: E402
from ddm.experiment import build  # noqa: E402
from ddm.generate import generate  # noqa: E402
from ddm.nets import count_parameters  # noqa: E402
from ddm.training import Trainer, TrainConfig  # noqa: E402


def paper_scale_step(dataset: str, batch: int = 2) -> dict:
    """Build, one Trainer step at ``batch``, one sampling step; parameter count and times (s)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["preset"] = "paper"
    cfg = resolve(params, dataset, "ddm")
    exp = build(cfg)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = exp.make_model()
    n_params = count_parameters(model)
    t1 = time.perf_counter()
    shape = (batch, cfg["channels"], cfg["resolution"], cfg["resolution"])
    data = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tcfg = TrainConfig(**{**cfg["train"], "batch_size": batch, "steps": 1})
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, exp.objective, data, tcfg, out, progress=False)
        trainer.resume()
        trainer.step()
        trainer.check_finite()
        loss = float(trainer.log()["loss"])
    t2 = time.perf_counter()
    with torch.no_grad():
        x = generate(exp, model.eval(), 1, list(range(batch)), batch_size=batch)
    t3 = time.perf_counter()
    assert tuple(x.shape) == shape and torch.isfinite(x).all()
    return {"dataset": dataset, "parameters": n_params, "loss": loss, "build_s": t1 - t0,
            "train_step_s": t2 - t1, "sample_step_s": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "celebahq256"])
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("DDM_THREADS", "1"))))
    for ds in args.datasets:
        try:
            r = paper_scale_step(ds)
        except ValueError as e:
            print(f"{ds}: does not build: {e}")
            continue
        print(f"{ds}: {r['parameters'] / 1e6:.2f}M parameters; build {r['build_s']:.1f} s, one "
              f"training step (batch 2) {r['train_step_s']:.1f} s (loss {r['loss']:.4g}), one "
              f"sampling step {r['sample_step_s']:.1f} s")


if __name__ == "__main__":
    main()
