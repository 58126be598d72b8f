"""Where a converged-run job spends its time, and what the cheap levers give, side by side.

    .venv/bin/python benchmarks/profile_jobs.py [--method ddm] [--steps 30] [--nfe 200] [--reps 5]

The network, process and objective are the converged run's (params.yaml + runs/converged.yaml:
digits 8x8, width 24, batch 64), built by the library as ``ddm train`` / ``ddm sample`` build them.

1. Profile (torch.profiler, CPU): ``--steps`` training steps (objective draw, forward, loss,
   backward, AdamW step) and one sampling call of 100 samples at ``--nfe`` (the NFE 1000/2000
   columns' batch); the top operators by self CPU time are printed.
2. Levers, each timed against the plain fp32 step in alternating order (``--reps`` pairs, median
   ratio; a shared machine swings single timings by +-30 %):
   - training step with ``torch.autocast("cpu", torch.bfloat16)`` (numerics change);
   - training step in ``channels_last`` memory format (same math, other kernels), and under bf16
     autocast in channels_last (convolutions in bf16 on oneDNN's channels-last kernels, what autocast
     keeps in fp32 stays there);
   - sampling network call under ``torch.inference_mode`` at batch 100 against batch 500
     (per-sample cost: is the long-NFE column overhead-bound?).
Threads: one (as each pipeline job runs), unless ``--threads``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddm.config import resolve  # noqa: E402
from ddm.experiment import build  # noqa: E402
from ddm.validation import load_params  # noqa: E402
from ddm.yamlio import read_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def converged_cfg(method: str) -> dict:
    """The resolved config of ``method`` on digits in the converged run (runs/converged.yaml over params.yaml)."""
    params = load_params(ROOT / "params.yaml")
    over = read_yaml(ROOT / "runs" / "converged.yaml")
    digits = params["presets"]["embedded"]["digits"]
    for key, value in over["presets"]["embedded"]["digits"].items():
        digits[key] = {**digits.get(key, {}), **value} if isinstance(value, dict) else value
    return resolve(params, "digits", method)


def step_fn(exp, net, batch: int, *, autocast: bool = False, channels_last: bool = False):
    """One training step of the real objective (draw, loss, backward, AdamW), as a closure."""
    c, r = exp.cfg["channels"], exp.cfg["resolution"]
    x0 = torch.rand(batch, c, r, r) * 2 - 1
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step():
        noise = exp.objective.draw(x0, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = exp.objective(net, x0, noise)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sample_fn(exp, net, batch: int, nfe: int):
    from ddm.generate import generate

    def run():
        with torch.inference_mode():
            generate(exp, net, nfe, list(range(batch)), batch_size=batch)

    return run


def bf16_levers(exp, net):
    """(name, fp32 call, bf16 channels_last call): one 3x3 convolution of the network's widest level
    (where oneDNN can use the CPU's bf16 units: AMX, AVX512-BF16) and the whole sampling network call
    at batch 100 (bf16 weights in channels_last, autocast for the float time embedding)."""
    width = exp.cfg["model"]["ch"] * max(exp.cfg["model"]["ch_mult"])
    conv = torch.nn.Conv2d(width, width, 3, padding=1).eval()
    x = torch.randn(100, width, 8, 8)
    conv_b = torch.nn.Conv2d(width, width, 3, padding=1).eval().to(torch.bfloat16, memory_format=torch.channels_last)
    x_b = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    net_b = exp.make_model().eval().to(torch.bfloat16, memory_format=torch.channels_last)
    c, r = exp.cfg["channels"], exp.cfg["resolution"]
    xt, t = torch.randn(100, c, r, r), torch.rand(100)
    xt_b = xt.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def infer(fn, *inputs, autocast=False):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                fn(*inputs)
        return run

    net_cl = exp.make_model().eval().to(memory_format=torch.channels_last)
    net_cl.load_state_dict(net.state_dict())
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    return [(f"3x3 conv, {width} channels, batch 100 at 8x8", infer(conv, x), infer(conv_b, x_b)),
            ("sampling network call, batch 100", infer(net, xt, t), infer(net_b, xt_b, t, autocast=True)),
            ("sampling network call, batch 100, fp32 weights in channels_last under bf16 autocast",
             infer(net, xt, t), infer(net_cl, xt_cl, t, autocast=True))]


def compile_levers(exp, net, batch: int, n: int, reps: int) -> None:
    """torch.compile (inductor, default mode) of the network, in a training step and in the sampling
    network call at batch 100: the first call's time (compiling; the inductor's on-disk cache makes a
    later process's first call cheaper) and the steady ratio against eager."""
    c, r = exp.cfg["channels"], exp.cfg["resolution"]
    xt, t = torch.randn(100, c, r, r), torch.rand(100)
    compiled = torch.compile(net)

    def call(module):
        def run():
            with torch.inference_mode():
                module(xt, t)
        return run

    cases = [("train step", step_fn(exp, exp.make_model(), batch), step_fn(exp, torch.compile(exp.make_model()), batch), n),
             ("sampling network call, batch 100", call(net), call(compiled), 10)]
    for name, eager, fast, calls in cases:
        start = time.perf_counter()
        fast()
        first = time.perf_counter() - start
        a, b, q = ratio(eager, fast, calls, reps)
        print(f"{name}, torch.compile: first call {first:.1f} s (compiling); {a * 1e3:.2f} ms eager vs "
              f"{b * 1e3:.2f} ms compiled: ratio {q:.2f}")


def timed(fn, n: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def ratio(base, other, n: int, reps: int) -> tuple[float, float, float]:
    """Median over ``reps`` alternating pairs: (base s, other s, other / base)."""
    a, b = [], []
    for i in range(reps):
        order = (base, other) if i % 2 == 0 else (other, base)
        times = [timed(f, n) for f in order]
        a.append(times[0] if i % 2 == 0 else times[1])
        b.append(times[1] if i % 2 == 0 else times[0])
    ma, mb = statistics.median(a), statistics.median(b)
    return ma, mb, mb / ma


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="ddm")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--nfe", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) of the network")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = converged_cfg(args.method)
    exp = build(cfg)
    net = exp.make_model()
    batch = cfg["train"]["batch_size"]
    print(f"{args.method}: width {cfg['model']['ch']}, batch {batch}, {sum(p.numel() for p in net.parameters()):,} "
          f"parameters, {args.threads} thread(s), torch {torch.__version__}")
    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        step = step_fn(exp, net, batch)
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        print(f"\n== training, {args.steps} steps: top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        run = sample_fn(exp, net.eval(), 100, args.nfe)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(f"\n== sampling, 100 samples at NFE {args.nfe}: top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        net.train()
    n = max(3, args.steps // 3)
    print("\n== levers (median of alternating pairs; ratio < 1: faster)")
    for name, kw in (("bf16 autocast", {"autocast": True}), ("channels_last", {"channels_last": True}),
                     ("bf16 autocast in channels_last", {"autocast": True, "channels_last": True})):
        base = step_fn(exp, exp.make_model(), batch)
        other = step_fn(exp, exp.make_model(), batch, **kw)
        a, b, q = ratio(base, other, n, args.reps)
        print(f"train step, {name}: {a * 1e3:.1f} ms fp32 vs {b * 1e3:.1f} ms: ratio {q:.2f}")
    net.eval()
    for name, f32, fast in bf16_levers(exp, net):
        a, b, q = ratio(f32, fast, 10, args.reps)
        print(f"{name}: {a * 1e3:.2f} ms fp32 vs {b * 1e3:.2f} ms bf16 channels_last: ratio {q:.2f}")
    if args.compile:
        compile_levers(exp, net, batch, n, args.reps)
    small, big = sample_fn(exp, net, 100, 20), sample_fn(exp, net, 500, 20)
    a, b, q = ratio(small, big, 1, args.reps)
    print(f"sampling per sample, batch 500 against batch 100 (NFE 20): {a / 100 * 1e3:.2f} ms vs "
          f"{b / 500 * 1e3:.2f} ms: ratio {q / 5:.2f}")


if __name__ == "__main__":
    main()
