"""Step time of ``ddm.training.train`` against a bare training loop, side by side, on CPU.

Run:  python benchmarks/trainer_overhead.py [--steps 20] [--reps 7] [--threads 1]

Both loops train the same small U-Net (``ddm.nets.UNet`` when it is importable, else a local
conv net) with the same batch size and a DDM-like objective (t ~ U(1e-4, 1), eps ~ N(0, I),
``x_t = (1-t) x0 + sqrt(t) eps``, the net predicts (C = -x0, eps), loss = MSE summed over
C,H,W with the paper's weights 1/t and 1/(1-t+1e-4)).

* bare loop: fixed batch; per step ``objective.draw`` + forward + backward + ``AdamW.step``
  + ``zero_grad``.  No EMA, clipping, scheduler, metrics, logging or checkpoints.
* trainer: ``train()`` with the paper's settings (clipping at 1.0, EMA, LambdaLR schedule,
  data permutation, metrics every ``log_every`` steps, no progress bar) and one checkpoint
  at the end.

Two ratios are reported, median over ``--reps`` repetitions (bare then trainer, trainer then
bare, ...; alternating the order cancels drift on a shared machine):

* steady-state: median time between consecutive objective calls (= one full optimizer step
  of each loop, measured by a timing shim around the objective), trainer / bare;
* end-to-end: wall time of the whole call for ``--steps`` steps, trainer (including its
  set-up, EMA copy and the final checkpoint write) / bare.

Goal: steady-state ratio <= 1.10.  On a shared 2-core machine single repetitions swing by
+-30% with the neighbours' load, hence the medians and the isolated measurement of the
trainer's extra work (EMA update + gradient clipping), which is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddm.training import TrainConfig, train  # noqa: E402

RES, CH_IN, BATCH = 16, 3, 8


def make_net() -> tuple[nn.Module, str]:
    try:
        from ddm.nets import UNet
    except ImportError:
        UNet = None
    if UNet is not None:
        kw = dict(in_channels=CH_IN, out_channels=(CH_IN, CH_IN), resolution=RES, ch=16,
                  ch_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0)
        return UNet(**kw), f"ddm.nets.UNet({kw})"
    return LocalNet(), "local conv net (ddm.nets.UNet not available)"


class LocalNet(nn.Module):
    """Fallback: a two-level conv U-Net with a time embedding and two heads."""

    def __init__(self, ch: int = 48):
        super().__init__()
        self.t = nn.Sequential(nn.Linear(1, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.inp = nn.Conv2d(CH_IN, ch, 3, padding=1)
        self.d1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * ch, 2 * ch, 3, padding=1)
        self.up = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.u1 = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 2 * CH_IN, 3, padding=1)

    def forward(self, x, t):
        h = self.inp(x) + self.t(t[:, None])[:, :, None, None]
        h1 = F.silu(self.d1(F.silu(h)))
        h2 = F.silu(self.mid(F.silu(self.down(h1))))
        u = F.silu(self.up(F.interpolate(h2, scale_factor=2.0)))
        o = self.out(F.silu(self.u1(torch.cat([u, h1], 1))))
        return o[:, :CH_IN], o[:, CH_IN:]


class DDMLikeObjective:
    T_MIN = 1e-4

    def __init__(self):
        self.stamps: list[float] = []

    def draw(self, x0, generator):
        b = x0.shape[0]
        t = torch.rand(b, generator=generator, device=x0.device) * (1 - self.T_MIN) + self.T_MIN
        return {"t": t, "eps": torch.randn(x0.shape, generator=generator, device=x0.device)}

    def __call__(self, model, x0, noise):
        self.stamps.append(time.perf_counter())
        t, eps = noise["t"], noise["eps"]
        tt = t.view(-1, 1, 1, 1)
        c_pred, eps_pred = model((1 - tt) * x0 + tt.sqrt() * eps, t)
        mse_c = ((c_pred + x0) ** 2).flatten(1).sum(1)
        mse_e = ((eps_pred - eps) ** 2).flatten(1).sum(1)
        loss = mse_c / t + mse_e / (1 - t + self.T_MIN)
        return loss, {"mse_c": mse_c, "mse_eps": mse_e}


def bare_loop(net: nn.Module, data: torch.Tensor, steps: int, seed: int) -> tuple[float, list]:
    obj = DDMLikeObjective()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    x0 = data[:BATCH]
    net.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        noise = obj.draw(x0, gen)
        loss, _ = obj(net, x0, noise)
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, obj.stamps


def trainer_loop(net: nn.Module, data: torch.Tensor, steps: int, seed: int) -> tuple[float, list]:
    obj = DDMLikeObjective()
    cfg = TrainConfig(steps=steps, batch_size=BATCH, ckpt_every=10**9, log_every=10, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(net, obj, data, cfg, Path(d), progress=False)
        return time.perf_counter() - t0, obj.stamps


def step_times(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps[2:], stamps[3:])]  # skip the first (warm-up) steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = torch.rand(512, CH_IN, RES, RES) * 2 - 1
    net0, desc = make_net()
    state = {k: v.clone() for k, v in net0.state_dict().items()}
    print(f"net: {desc}; {sum(p.numel() for p in net0.parameters()) / 1e6:.2f}M params; "
          f"batch {BATCH}x{CH_IN}x{RES}x{RES}; {args.steps} steps x {args.reps} reps; "
          f"torch {torch.__version__}, {args.threads} thread(s), CPU")

    def fresh() -> nn.Module:
        net0.load_state_dict(state)
        return net0

    bare_loop(fresh(), data, 3, 0)  # warm-up (allocator, kernels)
    rows = []
    for r in range(args.reps):
        if r % 2 == 0:  # alternate the order: drift on a shared machine cancels out
            tb, sb = bare_loop(fresh(), data, args.steps, r)
            tt, st = trainer_loop(fresh(), data, args.steps, r)
        else:
            tt, st = trainer_loop(fresh(), data, args.steps, r)
            tb, sb = bare_loop(fresh(), data, args.steps, r)
        mb, mt = statistics.median(step_times(sb)), statistics.median(step_times(st))
        rows.append((mb, mt, tb, tt))
        print(f"rep {r}: step bare {mb * 1e3:7.2f} ms  trainer {mt * 1e3:7.2f} ms  "
              f"(ratio {mt / mb:.3f});  end-to-end bare {tb:.2f} s  trainer {tt:.2f} s  "
              f"(ratio {tt / tb:.3f})")
    # the trainer's extra per-step work in isolation (less noisy than the ratio on a busy
    # machine): EMA update (one _foreach_lerp_) + gradient-norm clipping
    from ddm.training.bookkeeping import EMA
    net = fresh()
    obj = DDMLikeObjective()
    x0 = data[:BATCH]
    loss, _ = obj(net, x0, obj.draw(x0, torch.Generator().manual_seed(0)))
    loss.mean().backward()
    ema = EMA(net, 0.9999)
    params = [p for p in net.parameters()]
    ts = []
    for _ in range(50):
        t0 = time.perf_counter()
        ema.update()
        torch.nn.utils.clip_grad_norm_(params, 1e9)
        ts.append(time.perf_counter() - t0)
    extra = statistics.median(ts)
    bare_step = statistics.median(r[0] for r in rows)
    print(f"EMA + clipping alone: {extra * 1e3:.3f} ms per step = "
          f"{100 * extra / bare_step:.2f}% of a bare step")
    steady = statistics.median(r[1] / r[0] for r in rows)
    e2e = statistics.median(r[3] / r[2] for r in rows)
    print(f"steady-state ratio trainer/bare: {steady:.3f} (goal <= 1.10) -> "
          f"{'OK' if steady <= 1.10 else 'ABOVE GOAL'}")
    print(f"end-to-end ratio trainer/bare (incl. set-up and final checkpoint): {e2e:.3f}")


if __name__ == "__main__":
    main()
