"""AdamW's three CPU kernels on the embedded DDM U-Net: step time side by side, and the fused
kernel's fault with channels_last parameters whose state was restored from a checkpoint.

Run:  .venv/bin/python benchmarks/adamw_kernels.py [--rounds 15] [--steps 5]

Step time: one U-Net per kernel (the embedded preset's DDM network, batch 64 of 8x8, 1 thread),
forward + backward + ``AdamW.step``; the kernels take turns, ``--steps`` steps each per round, and
the median over ``--rounds`` rounds is printed with its ratio to the per-tensor loop (CPU's
default). Fault check: a 4x3x3x3 parameter, one step, its state saved and made contiguous (as a
checkpoint restores it), a second step; the largest difference from the loop kernel on a
contiguous parameter is printed per kernel and memory format. ddm.training uses ``foreach``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddm.nets import UNet  # noqa: E402

KERNELS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_times(rounds: int, steps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    x, t = torch.randn(64, 1, 8, 8), torch.rand(64)
    setups = {}
    for name, kw in KERNELS.items():
        torch.manual_seed(0)
        net = UNet(in_channels=1, out_channels=(1, 1), resolution=8, ch=16, ch_mult=(1, 2), num_blocks=1,
                   attn_resolutions=(4,), dropout=0.0)
        setups[name] = (net, torch.optim.AdamW(net.parameters(), lr=1e-3, **kw))

    def step(net, opt):
        loss = sum(o.square().mean() for o in net(x, t))
        loss.backward()
        opt.step()
        opt.zero_grad()

    for net, opt in setups.values():
        for _ in range(3):
            step(net, opt)
    times = {name: [] for name in setups}
    for _ in range(rounds):
        for name, (net, opt) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(net, opt)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(v) for name, v in times.items()}


def restored_state_error(kernel: dict, channels_last: bool) -> torch.Tensor:
    torch.manual_seed(0)
    w0, g = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    p = torch.nn.Parameter(w0.contiguous(memory_format=fmt))
    opt = torch.optim.AdamW([p], lr=0.1, **kernel)
    p.grad = g.contiguous(memory_format=fmt)
    opt.step()
    state = opt.state_dict()
    for k in ("exp_avg", "exp_avg_sq"):  # as torch.load gives it back
        state["state"][0][k] = state["state"][0][k].contiguous()
    opt = torch.optim.AdamW([p], lr=0.1, **kernel)
    opt.load_state_dict(state)
    p.grad = (2 * g).contiguous(memory_format=fmt)
    opt.step()
    return p.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    med = step_times(a.rounds, a.steps)
    for name, s in med.items():
        print(f"step {name:8s} {1e3 * s:7.1f} ms   ratio to loop {s / med['loop']:.3f}")
    ref = restored_state_error(KERNELS["loop"], False)
    for name, kw in KERNELS.items():
        for cl in (False, True):
            err = (restored_state_error(kw, cl) - ref).abs().max().item()
            print(f"restored state, {name:8s} {'channels_last' if cl else 'contiguous':13s} max error {err:.2e}")


if __name__ == "__main__":
    main()
