"""Tests of ddm.training: schedule, EMA, exact resume after SIGKILL, preemption, DDP, errors.

Tiny model (1 -> 8 -> 1 channels on 8x8 data) and a toy objective following the protocol.
Runs that are compared bit for bit use one torch thread (CPU kernels are deterministic for a
fixed thread count).  Subprocesses run this file as a script (see ``_child``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ddm.training import (PREEMPT_EXIT_CODE, RESUMABLE_KEYS, CheckpointError,
                          CheckpointMismatchError, NonFiniteLoss, TrainConfig,
                          TrainingInterrupted, checkpoint_path, ema_model,
                          latest_checkpoint, load_checkpoint, lr_at, train)
from ddm.training.config import build_optimizer, build_scheduler

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------------
# Tiny model, data and objective (shared with the child processes)
# ---------------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.temb = nn.Linear(1, width)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)
        self.register_buffer("calls", torch.zeros(()))  # a buffer that changes: EMA copies it

    def forward(self, x, t):
        if self.training:
            self.calls += 1
        h = torch.relu(self.conv1(x) + self.temb(t[:, None])[:, :, None, None])
        return self.conv2(h)


class ToyObjective:
    """t ~ U(0,1), eps ~ N(0,I); x_t = (1-t) x0 + sqrt(t) eps; loss (1+t) * MSE(eps_pred, eps)."""

    def __init__(self, nan_at: int | None = None, block_at: int | None = None,
                 signal_at: int | None = None, signum: int = signal.SIGTERM):
        self.calls = 0
        self.nan_at, self.block_at = nan_at, block_at
        self.signal_at, self.signum = signal_at, signum

    def draw(self, x0, generator):
        b = x0.shape[0]
        return {"t": torch.rand(b, generator=generator, device=x0.device),
                "eps": torch.randn(x0.shape, generator=generator, device=x0.device)}

    def __call__(self, model, x0, noise):
        self.calls += 1
        if self.block_at is not None and self.calls == self.block_at:
            time.sleep(3600)  # the parent SIGKILLs us here
        if self.signal_at is not None and self.calls == self.signal_at:
            os.kill(os.getpid(), self.signum)
        t, eps = noise["t"], noise["eps"]
        tt = t.view(-1, 1, 1, 1)
        pred = model((1 - tt) * x0 + tt.sqrt() * eps, t)
        mse = ((pred - eps) ** 2).flatten(1).mean(1)
        w = 1 + t
        loss = w * mse
        if self.nan_at is not None and self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, {"mse": mse, "w": w}


def make_model(width: int = 8, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(width)


def make_data(n: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1


def cfg_(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=8, lr=1e-3, lr_min=1e-4, warmup=2, ema_decay=0.9,
                ckpt_every=100, keep_last=3, log_every=100, seed=7)
    base.update(kw)
    return TrainConfig(**base)


META = {"width": 8, "in_channels": 1}


def run(out, cfg, *, width=8, obj=None, meta=META, model=None, progress=False, **kw):
    model = model if model is not None else make_model(width)
    return train(model, obj or ToyObjective(), make_data(), cfg, out, model_meta=meta,
                 progress=progress, **kw)


def states_equal(a: dict, b: dict, exact=True, atol=0.0, skip=()):
    """Compare nested dicts of tensors / numbers."""
    assert a.keys() == b.keys()
    for k in a:
        if k in skip:
            continue
        x, y = a[k], b[k]
        if isinstance(x, dict):
            states_equal(x, y, exact, atol)
        elif isinstance(x, torch.Tensor):
            if exact:
                assert torch.equal(x, y), k
            else:
                torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")
        else:
            assert x == y, k


def assert_same_training_state(p1: Path, p2: Path, exact=True, atol=0.0):
    c1, c2 = load_checkpoint(p1), load_checkpoint(p2)
    # TinyNet.calls counts forward calls: it differs with accum / world size by design
    skip = () if exact else ("calls",)
    states_equal(c1["model"], c2["model"], exact, atol, skip)
    states_equal(c1["ema"], c2["ema"], exact, atol, skip)
    states_equal(c1["optimizer"]["state"], c2["optimizer"]["state"], exact, atol)
    assert c1["optimizer"]["param_groups"] == c2["optimizer"]["param_groups"]
    assert c1["step"] == c2["step"]


def read_metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# Subprocess helpers
# ---------------------------------------------------------------------------------------------
def _child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn_child(mode: str, args: dict, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(THIS), mode, json.dumps(args)],
                            env=_child_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(pred, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out:\n{proc.communicate()[0]}")
        time.sleep(0.05)


def _child(mode: str, args: dict) -> None:
    torch.set_num_threads(1)
    cfg = cfg_(**args["cfg"])
    out = Path(args["out"])
    if mode == "block":  # train, hang forever at objective call `block_at`
        run(out, cfg, obj=ToyObjective(block_at=args["block_at"]))
    elif mode == "train":  # plain training; SystemExit(75) propagates on preemption
        run(out, cfg)
    elif mode == "ddp":
        from ddm.training import init_distributed
        rank, world, _ = init_distributed()
        assert world == int(os.environ["WORLD_SIZE"]) and torch.distributed.is_initialized()
        run(out, cfg)
        torch.distributed.destroy_process_group()
    else:
        raise SystemExit(f"unknown mode {mode}")


# ---------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------
def formula(step, lr0, lr_min, warmup, total, p):
    if step < warmup:
        return lr0 * (step + 1) / warmup
    f = min((step - warmup) / (total - warmup), 1.0)
    return max(lr0 * (1 - f) ** p, lr_min)


def test_lr_schedule_matches_formula():
    cfg = TrainConfig(steps=100, batch_size=4, lr=1e-3, lr_min=1e-5, warmup=10, power=0.96)
    for s in (0, 4, 9, 10, 11, 37, 60, 98, 99, 100, 250):
        assert lr_at(s, cfg) == pytest.approx(formula(s, 1e-3, 1e-5, 10, 100, 0.96), rel=1e-12)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # first warm-up step
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # peak right after warm-up
    assert lr_at(99, cfg) == pytest.approx(1e-3 * (1 / 90) ** 0.96)  # last update, > lr_min
    assert lr_at(100, cfg) == lr_at(500, cfg) == pytest.approx(1e-5)  # floored
    low = TrainConfig(steps=100, batch_size=4, lr=1e-3, lr_min=5e-4, power=0.96)
    assert lr_at(60, low) == pytest.approx(5e-4) and lr_at(40, low) > 5e-4
    assert lr_at(95, cfg) == pytest.approx(1e-3 * (5 / 90) ** 0.96)
    # paper default: no warm-up, p = 0.96, the floor
    paper = TrainConfig(steps=800_000, batch_size=128)
    assert (paper.lr, paper.lr_min, paper.power, paper.weight_decay) == (1e-4, 1e-5, 0.96, 1e-4)
    assert lr_at(0, paper) == 1e-4
    assert lr_at(400_000, paper) == pytest.approx(1e-4 * 0.5 ** 0.96, rel=1e-12)
    # the LambdaLR inside the trainer sets exactly lr_at(step) before update `step`
    opt, _ = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    for s in range(105):
        assert opt.param_groups[0]["lr"] == lr_at(s, cfg)
        opt.step()
        sched.step()
    # a scheduler rebuilt at step s (resume) sets exactly lr_at(s) of its own config
    longer = TrainConfig(steps=200, batch_size=4, lr=1e-3, lr_min=1e-5, warmup=10)
    for s in (1, 10, 57, 104):
        again = build_scheduler(opt, longer, s)
        assert opt.param_groups[0]["lr"] == lr_at(s, longer) == again.get_last_lr()[0]


def test_lr_used_in_training_and_metrics_rows(tmp_path):
    cfg = cfg_(steps=6, log_every=2, warmup=2)
    run(tmp_path, cfg)
    rows = read_metrics(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert list(rows[0]) == ["step", "lr", "loss", "grad_norm", "mse", "w"]
    for r in rows:
        assert float(r["lr"]) == lr_at(int(r["step"]) - 1, cfg)
        assert math.isfinite(float(r["loss"])) and float(r["grad_norm"]) > 0
        assert 1.0 <= float(r["w"]) <= 2.0  # mean of 1 + t
    # a row with log_every=1 is the batch mean of that step: loss = mean(w * mse) > 0
    run(tmp_path / "b", cfg_(steps=3, log_every=1))
    assert [int(r["step"]) for r in read_metrics(tmp_path / "b")] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------
def test_ema_equals_hand_computed_average(tmp_path):
    model = make_model()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    run(tmp_path, cfg_(steps=3, ckpt_every=1, keep_last=5, ema_decay=0.9), model=model)
    ws = [load_checkpoint(checkpoint_path(tmp_path, s))["model"] for s in (1, 2, 3)]
    ema3 = load_checkpoint(checkpoint_path(tmp_path, 3))["ema"]
    for k in w0:
        if k == "calls":  # buffer: copied, not averaged
            assert torch.equal(ema3[k], ws[2][k]) and ema3[k].item() == 3
            continue
        e = w0[k]
        for w in ws:
            e = 0.9 * e + 0.1 * w[k]
        torch.testing.assert_close(ema3[k], e, rtol=0, atol=3e-7)  # a few ulp of O(1) values
        assert (ema3[k] - ws[2][k]).abs().max() > 1e-4  # really an average, not the weights
    # ema_model loads those weights into a fresh model, in eval mode
    m = ema_model(checkpoint_path(tmp_path, 3), make_model(seed=99))
    assert not m.training
    states_equal(m.state_dict(), ema3)


# ---------------------------------------------------------------------------------------------
# Resume: bit-exact after SIGKILL; metrics trimming; config changes
# ---------------------------------------------------------------------------------------------
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    cfg = dict(steps=20, batch_size=8, ckpt_every=1, keep_last=3, log_every=3, warmup=3)
    ref = run(tmp_path / "ref", cfg_(**cfg))  # uninterrupted, in this process

    out = tmp_path / "killed"
    # the child blocks inside step 14 (objective call 14): checkpoint 13 is the newest
    proc = spawn_child("block", {"cfg": cfg, "out": str(out), "block_at": 14})
    try:
        # ckpt 13 is renamed into place atomically; ckpt 10 is pruned right after
        wait_for(lambda: checkpoint_path(out, 13).exists()
                 and not checkpoint_path(out, 10).exists(), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(out) == checkpoint_path(out, 13)
    assert not checkpoint_path(out, 10).exists()  # keep_last = 3
    assert [int(r["step"]) for r in read_metrics(out)] == [3, 6, 9, 12]

    obj = ToyObjective()
    final = run(out, cfg_(**cfg), obj=obj)
    assert obj.calls == 7  # steps 14..20 only
    assert final == checkpoint_path(out, 20)
    assert_same_training_state(ref, final, exact=True)
    c1, c2 = load_checkpoint(ref), load_checkpoint(final)
    assert torch.equal(c1["rng"]["generator"], c2["rng"]["generator"])
    assert (tmp_path / "ref" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_resume_drops_metric_rows_after_checkpoint(tmp_path):
    cfg = cfg_(steps=7, ckpt_every=3, log_every=2)
    ref = run(tmp_path / "ref", cfg)
    out = tmp_path / "b"
    run(out, cfg_(steps=7, ckpt_every=3, log_every=2))
    checkpoint_path(out, 7).unlink()  # as if killed after row 6 but before checkpoint 7
    checkpoint_path(out, 6).unlink()
    assert [int(r["step"]) for r in read_metrics(out)] == [2, 4, 6, 7]
    final = run(out, cfg)  # resumes from 3; rows 4, 6, 7 are dropped and rewritten
    assert (tmp_path / "ref" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert_same_training_state(ref, final, exact=True)


def test_extend_steps_and_resumable_keys(tmp_path):
    assert {"steps", "ckpt_every", "keep_last", "log_every", "accum", "channels_last", "compile",
            "compile_backend", "pin_memory", "gpus", "nodes"} == set(RESUMABLE_KEYS)
    run(tmp_path, cfg_(steps=4))
    obj = ToyObjective()
    final = run(tmp_path, cfg_(steps=6, ckpt_every=5, log_every=1), obj=obj)
    assert obj.calls == 2 and load_checkpoint(final)["step"] == 6
    assert load_checkpoint(final)["config"]["steps"] == 6
    # already finished: nothing to do, returns the final checkpoint
    obj = ToyObjective()
    assert run(tmp_path, cfg_(steps=6), obj=obj) == final and obj.calls == 0
    with pytest.raises(ValueError, match="beyond cfg.steps=5"):
        run(tmp_path, cfg_(steps=5))
    with pytest.raises(CheckpointMismatchError, match=r"config\['lr'\] is 0.001 .* but 0.002"):
        run(tmp_path, cfg_(steps=8, lr=2e-3))


# ---------------------------------------------------------------------------------------------
# Errors: corrupt checkpoint, model mismatch, NaN
# ---------------------------------------------------------------------------------------------
def test_corrupt_checkpoint_names_the_file(tmp_path):
    run(tmp_path, cfg_(steps=3, ckpt_every=1))
    newest = checkpoint_path(tmp_path, 3)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(newest)):
        run(tmp_path, cfg_(steps=5, ckpt_every=1))
    with pytest.raises(CheckpointError, match="ckpt-00000003.pt"):
        load_checkpoint(newest)
    assert newest.stat().st_size == len(data) // 2  # nothing overwritten
    newest.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tmp_path, cfg_(steps=5, ckpt_every=1))
    newest.unlink()  # documented way out: resume from the previous checkpoint
    assert load_checkpoint(run(tmp_path, cfg_(steps=5, ckpt_every=1)))["step"] == 5


def test_model_meta_and_shape_mismatch(tmp_path):
    run(tmp_path, cfg_(steps=2))
    with pytest.raises(CheckpointMismatchError, match=r"model_meta\['width'\] is 8 .* but 16"):
        run(tmp_path, cfg_(steps=4), width=16, meta={"width": 16, "in_channels": 1})
    with pytest.raises(CheckpointMismatchError,
                       match=r"'conv1.weight' has shape \(8, 1, 3, 3\) .* \(4, 1, 3, 3\)"):
        run(tmp_path, cfg_(steps=4), width=4)
    with pytest.raises(CheckpointMismatchError, match=r"'conv1.weight' has shape"):
        load_checkpoint(checkpoint_path(tmp_path, 2), make_model(width=4))
    with pytest.raises(CheckpointMismatchError, match="data has shape"):
        train(make_model(), ToyObjective(), make_data(30), cfg_(steps=4), tmp_path,
              model_meta=META, progress=False)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLoss, match="step 5") as ei:
        run(tmp_path, cfg_(steps=10, ckpt_every=2, log_every=3), obj=ToyObjective(nan_at=5))
    assert ei.value.step == 5
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 4)
    assert str(checkpoint_path(tmp_path, 4)) in str(ei.value)
    good = load_checkpoint(checkpoint_path(tmp_path, 4))
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert [int(r["step"]) for r in read_metrics(tmp_path)] == [3]


# ---------------------------------------------------------------------------------------------
# Data order, logging, threads
# ---------------------------------------------------------------------------------------------
class RecordingObjective(ToyObjective):
    def __init__(self):
        super().__init__()
        self.batches = []

    def draw(self, x0, generator):
        self.batches.append(x0.clone())
        return super().draw(x0, generator)


def test_data_order_is_a_permutation_per_epoch_across_batch_boundaries(tmp_path):
    data = make_data(12)
    obj = RecordingObjective()
    final = train(make_model(), obj, data, cfg_(steps=4, batch_size=8), tmp_path,
                  model_meta=META, progress=False)
    seen = torch.cat(obj.batches)  # 32 rows: epochs 0, 1 (12 each), 8 rows of epoch 2
    key = lambda x: x.flatten(1).sum(1)  # noqa: E731  (rows of random data are distinct)
    for e in range(2):
        assert torch.equal(key(seen[12 * e:12 * (e + 1)]).sort().values, key(data).sort().values)
    pos = load_checkpoint(final)["data"]
    assert (pos["epoch"], pos["offset"]) == (2, 8)
    # N < batch size works too
    train(make_model(), ToyObjective(), make_data(5), cfg_(steps=2, batch_size=8),
          tmp_path / "small", progress=False)


def test_log_lines_progress_bar_and_worker_thread(tmp_path, caplog, capsys):
    with caplog.at_level("INFO", logger="ddm.training"):
        run(tmp_path / "log", cfg_(steps=4, log_every=2))
    lines = [r.getMessage() for r in caplog.records if r.name == "ddm.training"]
    assert any(m.startswith("step 2/4  loss") and "lr" in m and "it/s" in m for m in lines)
    run(tmp_path / "bar", cfg_(steps=3, log_every=1), progress=True)
    assert "3/3" in capsys.readouterr().err  # tqdm writes to stderr
    # outside the main thread no signal handler is touched, training still works
    import threading
    before = signal.getsignal(signal.SIGTERM)
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("p", run(tmp_path / "th", cfg_(steps=2))))
    th.start()
    th.join(60)
    assert box["p"] == checkpoint_path(tmp_path / "th", 2)
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------------------------------
# Gradient accumulation, config checks
# ---------------------------------------------------------------------------------------------
def test_accum_matches_full_batch(tmp_path):
    a = run(tmp_path / "a", cfg_(steps=5, accum=1))
    b = run(tmp_path / "b", cfg_(steps=5, accum=2))
    c = run(tmp_path / "c", cfg_(steps=5, accum=4))
    assert_same_training_state(a, b, exact=False, atol=1e-6)
    assert_same_training_state(a, c, exact=False, atol=1e-6)
    with pytest.raises(ValueError, match="not divisible by accum"):
        cfg_(batch_size=8, accum=3)


def test_bf16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="GPU-only"):
        run(tmp_path, cfg_(precision="bf16"))
    with pytest.raises(ValueError, match="fp16 is not offered"):
        cfg_(precision="fp16")


# ---------------------------------------------------------------------------------------------
# Preemption
# ---------------------------------------------------------------------------------------------
def test_sigterm_in_process_checkpoints_and_restores_handlers(tmp_path):
    seen = []
    prev = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        mine = signal.getsignal(signal.SIGUSR1)
        with pytest.raises(TrainingInterrupted) as ei:
            run(tmp_path, cfg_(steps=50), obj=ToyObjective(signal_at=3))
        assert ei.value.code == PREEMPT_EXIT_CODE == 75 and ei.value.step == 3
        assert isinstance(ei.value, SystemExit)
        assert ei.value.checkpoint == checkpoint_path(tmp_path, 3)
        assert load_checkpoint(ei.value.checkpoint)["step"] == 3
        assert signal.getsignal(signal.SIGUSR1) is mine
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, prev)


def test_sigusr1_subprocess_exits_75_and_resume_continues(tmp_path):
    cfg = dict(steps=100_000, ckpt_every=100_000, log_every=1)
    proc = spawn_child("train", {"cfg": cfg, "out": str(tmp_path)})
    try:
        metrics = tmp_path / "metrics.csv"
        wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 3, proc)
        proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPT_EXIT_CODE, out
    ck = latest_checkpoint(tmp_path)
    assert ck is not None
    s = load_checkpoint(ck, make_model())["step"]
    assert s >= 2 and ck == checkpoint_path(tmp_path, s)
    assert int(read_metrics(tmp_path)[-1]["step"]) == s
    obj = ToyObjective()
    final = run(tmp_path, cfg_(steps=s + 2, ckpt_every=100_000, log_every=1), obj=obj)
    assert obj.calls == 2 and load_checkpoint(final)["step"] == s + 2
    assert [int(r["step"]) for r in read_metrics(tmp_path)] == list(range(1, s + 3))


# ---------------------------------------------------------------------------------------------
# DDP
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_ATOL = 1e-6


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    # 2 ranks x accum 2 (micro-batch 2) vs 1 process, accum 1, same global batch of 8
    cfg = dict(steps=5, batch_size=8, log_every=1)
    port = _free_port()
    procs = [spawn_child("ddp", {"cfg": {**cfg, "accum": 2}, "out": str(tmp_path / "ddp")},
                         RANK=r, LOCAL_RANK=r, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=port, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS=1)
             for r in range(2)]
    single = run(tmp_path / "one", cfg_(**cfg))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    ddp = checkpoint_path(tmp_path / "ddp", 5)
    assert ddp.exists() and load_checkpoint(ddp)["world_size"] == 2
    assert len(load_checkpoint(ddp)["rng"]["per_rank"]) == 2
    assert_same_training_state(single, ddp, exact=False, atol=DDP_ATOL)
    r1, r2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in r1] == [r["step"] for r in r2]
    for a, b in zip(r1, r2):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
        assert float(a["w"]) == pytest.approx(float(b["w"]), rel=1e-12)  # same noise


if __name__ == "__main__":
    _child(sys.argv[1], json.loads(sys.argv[2]))
