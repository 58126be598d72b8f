"""The CPU rows of the plan's throughput table (ddm/data/throughput.yaml), measured on this machine
with one thread (a pipeline job's DDM_THREADS=1): effective FLOP/s of a training step, of sampling
and of FID feature extraction on the embedded preset's networks (FLOPs counted by ddm.netcost), and
the start-up of a job (interpreter + the imports of a `ddm` subcommand).

  DDM_THREADS=1 .venv/bin/python benchmarks/plan_throughput.py      # prints the YAML rows

Times are medians of a few repetitions after a warm-up.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ddm import netcost  # noqa: E402
from ddm.config import resolve  # noqa: E402
from ddm.experiment import build  # noqa: E402
from ddm.generate import generate  # noqa: E402
from ddm.training import Trainer, TrainConfig  # noqa: E402


def _median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def embedded_cfg(method: str = "ddm") -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return resolve(params, "digits", method)


def train_rate(cfg: dict, steps: int = 20) -> float:
    exp, batch = build(cfg), cfg["train"]["batch_size"]
    model = exp.make_model()
    data = (torch.rand(1024, cfg["channels"], cfg["resolution"], cfg["resolution"]) * 2 - 1)
    tcfg = TrainConfig(**{**cfg["train"], "steps": 10**6})
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, exp.objective, data, tcfg, out, progress=False)
        trainer.resume()
        per_step = _median_time(lambda: [trainer.step() for _ in range(steps)], 3) / steps
    return 3 * netcost.unet_cost(cfg).flops * batch / per_step


def sample_rate(cfg: dict, n: int = 500, nfe: int = 10) -> float:
    exp = build(cfg)
    model = exp.make_model().eval()
    secs = _median_time(lambda: generate(exp, model, nfe, list(range(n))), 3)
    return netcost.unet_cost(cfg).flops * n * nfe / secs


def feature_rate(name: str, n: int) -> float:
    if name == "digits-classifier":
        from ddm.digits_classifier import DigitsClassifier

        net, x = DigitsClassifier().eval(), torch.rand(n, 1, 8, 8) * 255
        fn = net.embed
    else:
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        x, fn = torch.rand(n, 3, 299, 299), net
    with torch.no_grad():
        secs = _median_time(lambda: fn(x), 3)
    return netcost.extractor_cost(name).flops * n / secs


STARTUP = {  # kind of job -> what such a job's run imports (the `ddm` CLI imports lazily, per subcommand)
    "torch": "ddm.cli, ddm.fit, ddm.training, ddm.sampleset, ddm.generate",        # train, sample
    "fid": "ddm.cli, ddm.metrics, ddm.fidstats, ddm.kid, scipy.linalg",           # evaluate, refstats
    "light": "ddm.cli, ddm.stats, ddm.claims, ddm.report.tables, pandas, jinja2, scipy.stats",  # stats, tables
}


def startup_seconds(imports: str, reps: int = 3) -> float:
    """A fresh interpreter that imports what a job of one kind imports."""
    def run():
        subprocess.run([sys.executable, "-c", "import " + imports], check=True, cwd=REPO)
    return _median_time(run, reps)


def main() -> None:
    torch.set_num_threads(1)
    cfg = embedded_cfg()
    rows = {
        "train": train_rate(cfg),
        "sample": sample_rate(cfg),
        "features": feature_rate("digits-classifier", 2000),
        "features_inception": feature_rate("inception-v3-compat", 4),
    }
    start = {k: round(startup_seconds(v), 2) for k, v in STARTUP.items()}
    print(yaml.safe_dump({"flops_per_s": {k: float(f"{v:.3g}") for k, v in rows.items()},
                          "startup_s": start}, sort_keys=False))


if __name__ == "__main__":
    main()
