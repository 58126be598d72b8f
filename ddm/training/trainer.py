"""The training loop (paper §B.3): :class:`Trainer` and its one-call wrapper :func:`train`,
built from the parts of this package (docs/training.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ddm.io import TMP_PREFIX, atomic_write
from ddm.training.bookkeeping import (EMA, METRICS_FILE, NO_BAD_STEP, PREEMPT_EXIT_CODE, NonFiniteLoss,
                                      PreemptFlag, Stream, TrainingInterrupted, Window, append_metrics,
                                      trim_metrics)
from ddm.training.checkpoint import (CKPT_FORMAT, CheckpointError, CheckpointMismatchError, check_state_dict,
                                     checkpoint_path, compare_dicts, list_checkpoints, load_checkpoint, rng_state,
                                     seed_globals, set_rng_state)
from ddm.training.config import RESUMABLE_KEYS, TrainConfig, build_optimizer, build_scheduler, lr_at
from ddm.training.distributed import Comm, check_device_options, fp32_mode, resolve_device, to_channels_last
from ddm.training.objective import Objective, check_inputs, check_noise, check_objective_out

__all__ = ["Trainer", "train"]

log = logging.getLogger("ddm.training")  # one logger for the package (what users filter on)


class Trainer:
    """One training run (paper §B.3): AdamW, the polynomial LR schedule, gradient clipping,
    EMA, checkpoints with exact resume, preemption and DDP.

    ``fit()`` runs it to ``cfg.steps``; the parts are separate methods: :meth:`resume`
    (newest checkpoint or a fresh start), :meth:`step` (one optimizer update over the global
    batch), :meth:`log` (a metrics row) and :meth:`checkpoint`.  Rank 0 writes every file.
    """

    def __init__(self, model: nn.Module, objective: Objective, data: Tensor, cfg: TrainConfig,
                 out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
                 model_meta: dict | None = None, progress: bool | None = None):
        self.model_meta = check_inputs(data, cfg, model_meta)
        self.objective, self.data, self.cfg = objective, data, cfg
        self.out_dir = Path(out_dir)
        self.comm = Comm()
        self.rank, self.world = self.comm.rank, self.comm.world
        self.dev = resolve_device(device, self.comm)
        B = cfg.batch_size
        if B % (self.world * cfg.accum) != 0:
            raise ValueError(f"batch_size {B} is not divisible by world_size {self.world} x "
                             f"accum {cfg.accum}")
        self.b_local, self.b_micro = B // self.world, B // (self.world * cfg.accum)
        check_device_options(cfg, self.dev, self.world)
        self.pin = cfg.pin_memory and self.dev.type == "cuda"
        self.progress = progress
        self.model = model.to(self.dev)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer, self.params = build_optimizer(self.model, cfg)
        self.sched = None
        self.ema = EMA(self.model, cfg.ema_decay)
        self.gen = torch.Generator()  # CPU: data order and the objective's draws
        self.gen.manual_seed(cfg.seed)
        self.cfg_dict = dataclasses.asdict(cfg)
        self.stream: Stream | None = None
        self.window = Window(self.dev)
        self.done = 0                       # optimizer updates done
        self.last_saved: Path | None = None
        self.net: nn.Module = self.model    # what the objective calls (DDP / compiled)
        self._ddp: nn.Module | None = None
        self._eager: nn.Module = self.model
        self._compile_pending = False
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if cfg.precision == "bf16" else contextlib.nullcontext())

    # -- resume ------------------------------------------------------------------------------
    def resume(self) -> int:
        """Continue from the newest checkpoint in out_dir, or start afresh; returns the step."""
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for p in self.out_dir.glob(TMP_PREFIX + "*"):  # left by a writer that was killed
                with contextlib.suppress(OSError):
                    p.unlink()
        self.comm.barrier()
        found = list_checkpoints(self.out_dir)
        if found:
            self._load(*found[-1])
        else:
            seed_globals(self.cfg.seed + 1 + self.rank)
            self.stream = Stream(self.data.shape[0], self.gen)
        self.sched = build_scheduler(self.optimizer, self.cfg, self.done)
        if self.rank == 0:
            trim_metrics(self.out_dir / METRICS_FILE, self.done)
        self.comm.barrier()
        self._wrap()
        self._t_log, self._s_log = time.perf_counter(), self.done  # the it/s of log lines
        return self.done

    def _load(self, step: int, path: Path) -> None:
        ckpt = load_checkpoint(path)
        compare_dicts(ckpt["model_meta"], self.model_meta, path, "model_meta")
        compare_dicts(ckpt["config"], self.cfg_dict, path, "config", RESUMABLE_KEYS)
        saved_shape = list(ckpt["data"].get("shape", []))
        if saved_shape != list(self.data.shape):
            raise CheckpointMismatchError(
                f"cannot resume from {path}: data has shape {list(self.data.shape)} but the "
                f"checkpoint was trained on data of shape {saved_shape}")
        check_state_dict(ckpt["model"], self.model.state_dict(), path, "model")
        check_state_dict(ckpt["ema"], self.ema.state, path, "ema")
        if step != ckpt["step"]:
            raise CheckpointError(f"{path} holds step {ckpt['step']}, its name says {step}")
        if step > self.cfg.steps:
            raise ValueError(f"{path} is at step {step}, beyond cfg.steps={self.cfg.steps}")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.gen.set_state(ckpt["rng"]["generator"])
        self.stream = Stream(self.data.shape[0], state=ckpt["data"])
        per_rank = ckpt["rng"]["per_rank"]
        if len(per_rank) == self.world:
            set_rng_state(per_rank[self.rank], self.dev)
        else:
            log.warning("checkpoint written by %d processes, resuming with %d: the model's "
                        "own RNG (dropout) is reseeded", len(per_rank), self.world)
            seed_globals(self.cfg.seed + 1 + self.rank + 7919 * step)
        self.window.load(ckpt["metrics_window"], self.rank)
        self.done, self.last_saved = step, path
        if self.rank == 0:
            log.info("resuming from %s (step %d of %d)", path, step, self.cfg.steps)

    def _wrap(self) -> None:
        """DDP (after the weights are final: it broadcasts rank 0's) and torch.compile."""
        if self.comm.on and self._ddp is None:
            self._ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        self._eager = self._ddp if self._ddp is not None else self.model
        self.net = self._eager
        if self.cfg.compile:
            try:
                self.net = torch.compile(self._eager, backend=self.cfg.compile_backend)
                self._compile_pending = True  # compiling happens at the first call
            except Exception as e:  # an unknown backend, no compiler support, ...
                log.warning("torch.compile(backend=%r) is not available (%s: %s); training "
                            "without compiling", self.cfg.compile_backend, type(e).__name__, e)

    # -- step --------------------------------------------------------------------------------
    def step(self) -> None:
        """One optimizer update over the global batch (every rank draws the same batch and
        noise and keeps its rows; loss scaled so the gradient is the global-batch mean)."""
        if self.stream is None:
            raise RuntimeError("Trainer.step() before Trainer.resume(): call resume() first")
        x0, noise = self._next_batch()
        if self._compile_pending:
            self._first_compiled_update(x0, noise)
        else:
            self._forward_backward(x0, noise)
        if self.cfg.grad_clip is not None:
            gn = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.window.add_grad_norm(gn, self.done + 1)
        self.optimizer.step()
        self.sched.step()
        self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.done += 1
        self.window.n += 1

    def _next_batch(self) -> tuple[Tensor, dict[str, Tensor]]:
        data = self.data
        idx = self.stream.take(self.cfg.batch_size, self.gen)
        x0 = data[idx.to(data.device)] if data.device.type != "cpu" else data[idx]
        noise = self.objective.draw(x0 if x0.device.type == "cpu" else x0.cpu(), self.gen)
        check_noise(noise, self.cfg.batch_size)
        if self.pin:  # page-locked host memory: the copies below run asynchronously
            x0 = x0.pin_memory() if x0.device.type == "cpu" else x0
            noise = {k: v.pin_memory() for k, v in noise.items()}
        return x0, noise

    def _forward_backward(self, x0: Tensor, noise: dict[str, Tensor]) -> None:
        cfg, lo, b = self.cfg, self.rank * self.b_local, self.b_micro
        scale = self.world / cfg.batch_size
        for m in range(cfg.accum):
            a, z = lo + m * b, lo + (m + 1) * b
            xb = x0[a:z].to(self.dev, non_blocking=True)
            nb = {k: v[a:z].to(self.dev, non_blocking=True) for k, v in noise.items()}
            if cfg.channels_last:
                xb, nb = to_channels_last(xb), {k: to_channels_last(v) for k, v in nb.items()}
            sync = self._ddp is None or m == cfg.accum - 1
            with contextlib.nullcontext() if sync else self._ddp.no_sync():
                with self.autocast:
                    per_sample, terms = self.objective(self.net, xb, nb)
                check_objective_out(per_sample, terms, b)
                (per_sample.float().sum() * scale).backward()
            self.window.add(per_sample, terms, self.done + 1)

    def _first_compiled_update(self, x0: Tensor, noise: dict[str, Tensor]) -> None:
        """Run the first update compiled; if compiling fails, undo it and run eagerly."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else None
        buffers = [b.detach().clone() for b in self.model.buffers()]
        window = self.window.snapshot()
        try:
            self._forward_backward(x0, noise)
        except Exception as e:
            log.warning("torch.compile(backend=%r) failed at the first step (%s: %s); "
                        "training continues without compiling", self.cfg.compile_backend,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.dev)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            self.window.restore(window)
            self.net = self._eager
            self._forward_backward(x0, noise)  # an error here is the model's own: raised
        self._compile_pending = False

    # -- log ---------------------------------------------------------------------------------
    def log(self, bar=None) -> dict:
        """Append the metrics row of the window (means since the last row) and reset it."""
        cfg, step = self.cfg, self.done
        loss_s, terms_s, gn_s = self.window.sums(self.comm)
        n = self.window.n
        denom = float(cfg.batch_size * n)
        row = {"step": step, "lr": repr(lr_at(step - 1, cfg)),
               "loss": repr(float(loss_s) / denom)}
        if cfg.grad_clip is not None:
            row["grad_norm"] = repr(float(gn_s) / n)
        for k, v in terms_s.items():
            if k in row:
                raise ValueError(f"objective term name {k!r} clashes with a metrics column")
            row[k] = repr(float(v) / denom)
        if self.rank == 0:
            append_metrics(self.out_dir / METRICS_FILE, row)
            now = time.perf_counter()
            rate = (step - self._s_log) / max(now - self._t_log, 1e-9)
            self._t_log, self._s_log = now, step
            if bar is not None:
                bar.set_postfix(loss=f"{float(row['loss']):.4g}",
                                lr=f"{float(row['lr']):.2e}", refresh=False)
            else:
                extra = "  ".join(f"{k} {float(row[k]):.4g}" for k in terms_s)
                log.info("step %d/%d  loss %.5g  lr %.3e  %s  %.2f it/s", step, cfg.steps,
                         float(row["loss"]), float(row["lr"]), extra, rate)
        self.window.reset()
        return row

    # -- checkpoint --------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """Write ``ckpt-{step}.pt`` atomically (rank 0) and prune to ``keep_last``."""
        loss_s, terms_s, gn_s = self.window.sums(self.comm)
        per_rank = self.comm.gather(rng_state(self.dev))
        target = checkpoint_path(self.out_dir, self.done)
        if self.rank == 0:
            obj = {
                "format": CKPT_FORMAT,
                "step": self.done,
                "model": self.model.state_dict(),
                "ema": self.ema.state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.sched.state_dict(),
                "data": {**self.stream.state(), "shape": list(self.data.shape)},
                "rng": {"generator": self.gen.get_state(), "per_rank": per_rank},
                "config": self.cfg_dict,
                "model_meta": self.model_meta,
                "metrics_window": {"loss": loss_s, "terms": terms_s, "grad_norm": gn_s,
                                   "n": self.window.n},
                "world_size": self.world,
                "torch_version": str(torch.__version__),
            }
            atomic_write(target, lambda f: torch.save(obj, f))
            for _, old in list_checkpoints(self.out_dir)[:-self.cfg.keep_last]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        self.comm.barrier()
        self.last_saved = target
        return target

    def check_finite(self) -> None:
        """Raise NonFiniteLoss naming the first step with a NaN/inf loss or gradient norm."""
        fl, fg = self.window.first_bad(self.comm)
        if fl == NO_BAD_STEP and fg == NO_BAD_STEP:
            return
        last_ok = list_checkpoints(self.out_dir)
        keep = f"; last good checkpoint: {last_ok[-1][1]}" if last_ok else ""
        if fl <= fg:
            raise NonFiniteLoss(f"non-finite loss at step {fl}{keep}", fl)
        raise NonFiniteLoss(f"non-finite gradient norm at step {fg} (loss finite){keep}", fg)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Resume, train to ``cfg.steps``, return the final checkpoint (module docstring)."""
        self.resume()
        if self.done >= self.cfg.steps:  # already done
            return self.last_saved
        bar = self._progress_bar()
        flag = PreemptFlag()
        flag.install()
        try:
            with fp32_mode(self.dev, self.cfg.tf32):
                while self.done < self.cfg.steps:
                    self.step()
                    if bar is not None:
                        bar.update(1)
                    self._bookkeeping(flag, bar)
        finally:
            flag.restore()
            if bar is not None:
                bar.close()
        return self.last_saved

    def _bookkeeping(self, flag: PreemptFlag, bar) -> None:
        cfg, step = self.cfg, self.done
        is_log = step % cfg.log_every == 0 or step == cfg.steps
        is_ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps
        preempt = self.comm.any(flag.signum is not None)
        if is_log or is_ckpt or preempt:
            self.check_finite()
        if is_log:
            self.log(bar)
        if is_ckpt or preempt:
            self.checkpoint()
        if preempt and step < cfg.steps:
            if self.rank == 0:
                log.warning("preempted: checkpoint %s written at step %d; exiting with code "
                            "%d", self.last_saved, step, PREEMPT_EXIT_CODE)
            raise TrainingInterrupted(step, self.last_saved, flag.signum)

    def _progress_bar(self):
        show = self.rank == 0 and (sys.stderr.isatty() if self.progress is None
                                   else bool(self.progress))
        if not show:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.cfg.steps, initial=self.done, unit="it", dynamic_ncols=True,
                    desc="train")


def train(model: nn.Module, objective: Objective, data: Tensor, cfg: TrainConfig,
          out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
          model_meta: dict | None = None, progress: bool | None = None) -> Path:
    """Train ``model`` on ``objective`` over ``data`` (N, ...); return the final checkpoint.

    ``Trainer(...).fit()``: resumes from the newest checkpoint in ``out_dir`` if there is one.
    Raises :class:`TrainingInterrupted` (exit code :data:`PREEMPT_EXIT_CODE`) on
    SIGTERM/SIGUSR1 after writing a checkpoint, :class:`NonFiniteLoss` on a NaN/inf loss,
    :class:`CheckpointError` / :class:`CheckpointMismatchError` when the newest checkpoint
    cannot be resumed.
    """
    return Trainer(model, objective, data, cfg, out_dir, device=device, model_meta=model_meta,
                   progress=progress).fit()
