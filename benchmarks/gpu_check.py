"""The measuring part of benchmarks/gpu_check.sh (run that script; it documents the figures).

    python benchmarks/gpu_check.py gpu|cpu OUT.json

Sections run in order of importance and OUT.json is rewritten after each one, so a run stopped
by its time limit keeps what it measured: training images/s without compiling (fp32, then each
fast-path option alone, then all of them), trainer / bare step, sampling at NFE 10 and sampler /
bare network, then the variants with ``torch.compile`` (slow to compile at paper size).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time

import torch

from ddm.config import resolve
from ddm.validation import load_params
from ddm.experiment import build
from ddm.generate import generate
from ddm.nets import count_parameters
from ddm.training import Trainer, TrainConfig


def main(mode: str, out: str) -> None:
    gpu = mode == "gpu"
    dev = torch.device("cuda" if gpu else "cpu")
    params = load_params("params.yaml")
    if gpu:
        params["preset"], dataset, batch, warm, timed, nfe_batch = "paper", "cifar10", 128, 3, 10, 256
    else:  # tiny: the embedded digits config
        dataset, batch, warm, timed, nfe_batch = "digits", 8, 1, 3, 64
        torch.set_num_threads(1)
    cfg = resolve(params, dataset, "ddm")
    exp = build(cfg)
    shape = (cfg["channels"], cfg["resolution"], cfg["resolution"])
    data = torch.rand((max(batch * 4, 512),) + shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = {"mode": mode, "device": torch.cuda.get_device_name(0) if gpu else "cpu",
           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "dataset": dataset,
           "batch": batch, "warmup_steps": warm, "timed_steps": timed, "train": {}}

    def save() -> None:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, out)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    def model():
        torch.manual_seed(0)
        return exp.make_model()

    def train_rate(**opts) -> dict:
        tcfg = TrainConfig(**{**cfg["train"], "tf32": False, "batch_size": batch, "steps": 10**6, **opts})  # fp32 unless opts
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(model(), exp.objective, data, tcfg, d, device=dev, progress=False)
            tr.resume()
            t0 = time.perf_counter()
            for _ in range(warm):
                tr.step()
            sync()
            t1 = time.perf_counter()
            times = []
            for _ in range(timed):
                s = time.perf_counter()
                tr.step()
                sync()
                times.append(time.perf_counter() - s)
            tr.check_finite()
        row = {"images_per_s": batch / statistics.median(times), "step_s": statistics.median(times),
               "warmup_s": t1 - t0, "options": opts}
        if opts.get("compile"):  # the trainer falls back to eager with a warning when compiling fails
            row["compile_fell_back"] = [r.getMessage() for r in fallbacks.records]
            fallbacks.records.clear()
        if gpu:
            row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        return row

    def run_variant(name: str, opts: dict) -> None:
        res["train"][name] = train_rate(**opts)
        print(f"train {name}: {res['train'][name]['images_per_s']:.1f} images/s", flush=True)
        save()

    fallbacks = _Records()
    logging.getLogger("ddm.training").addHandler(fallbacks)
    res["parameters"] = count_parameters(model())
    variants = {"fp32": dict(pin_memory=False), "pin_memory": {}, "channels_last": dict(channels_last=True)}
    if gpu:
        variants.update(tf32=dict(tf32=True), bf16=dict(precision="bf16"),
                        all_but_compile=dict(precision="bf16", tf32=True, channels_last=True))
    for name, opts in variants.items():
        run_variant(name, opts)

    res["trainer_over_bare_step"] = res["train"]["fp32"]["step_s"] / bare_step(exp, model, data[:batch], dev,
                                                                              warm, timed, sync)
    print(f"trainer / bare step: {res['trainer_over_bare_step']:.3f}", flush=True)
    save()

    res["sampling"] = sampling_rate(exp, model, shape, nfe_batch, dev, sync)
    print(json.dumps(res["sampling"]), flush=True)
    save()

    backend = "inductor" if gpu else "eager"   # inductor on a CPU takes minutes
    fast = dict(precision="bf16", tf32=True, channels_last=True, compile=True) if gpu else \
        dict(channels_last=True, compile=True, compile_backend=backend)
    run_variant("all", fast)
    run_variant("compile", dict(compile=True, compile_backend=backend))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def bare_step(exp, model, x0, dev, warm: int, timed: int, sync) -> float:
    """Median seconds of a bare forward + backward + AdamW step (fp32), the trainer's yardstick."""
    net = model().to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    times = []
    for i in range(warm + timed):
        s = time.perf_counter()
        noise = {k: v.to(dev) for k, v in exp.objective.draw(x0, g).items()}
        loss, _ = exp.objective(net, x0.to(dev), noise)
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warm:
            times.append(time.perf_counter() - s)
    return statistics.median(times)


def sampling_rate(exp, model, shape, nfe_batch: int, dev, sync) -> dict:
    """Alg. 2 at NFE 10 (ddm.generate.generate) against 10 bare network calls, same batch."""
    net = model().to(dev).eval()
    seeds = list(range(nfe_batch))
    ts, tb = [], []
    with torch.no_grad():
        generate(exp, net, 10, seeds[:8], batch_size=8, device=dev)
        sync()
        xt, tt = torch.randn((nfe_batch,) + shape, device=dev), torch.full((nfe_batch,), 0.5, device=dev)
        for _ in range(3):
            s = time.perf_counter()
            generate(exp, net, 10, seeds, batch_size=nfe_batch, device=dev)
            sync()
            ts.append(time.perf_counter() - s)
            s = time.perf_counter()
            for _ in range(10):
                net(xt, tt)
            sync()
            tb.append(time.perf_counter() - s)
    return {"nfe": 10, "batch": nfe_batch, "images_per_s": nfe_batch / statistics.median(ts),
            "sampler_over_bare_network": statistics.median(ts) / statistics.median(tb)}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
