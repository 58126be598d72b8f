"""What a training run keeps besides the weights: the EMA of the weights (§B.3), the data
stream (epoch permutations of the shared generator), the window of metric sums and its CSV
file, the preemption flag and the two ways a run stops early (:class:`TrainingInterrupted`,
:class:`NonFiniteLoss`)."""

from __future__ import annotations

import csv
import io
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ddm.io import atomic_write
from ddm.training.distributed import Comm

__all__ = ["PREEMPT_EXIT_CODE", "METRICS_FILE", "NO_BAD_STEP", "TrainingInterrupted", "NonFiniteLoss", "EMA",
           "Stream", "Window", "trim_metrics", "append_metrics", "PreemptFlag"]

log = logging.getLogger("ddm.training")  # one logger for the package (what users filter on)

#: Exit status of a preempted run (EX_TEMPFAIL, sysexits.h): "temporary failure, retry".
PREEMPT_EXIT_CODE = 75
#: The metrics file of a run's folder: one row per ``log_every`` steps.
METRICS_FILE = "metrics.csv"
#: "No bad step" in the all-reduced non-finite flags of :meth:`Window.first_bad`.
NO_BAD_STEP = torch.iinfo(torch.int64).max

_PREEMPT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))
_F64 = torch.float64


class TrainingInterrupted(SystemExit):
    """Raised after a preemption checkpoint; exits the process with PREEMPT_EXIT_CODE."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int | None = None):
        super().__init__(PREEMPT_EXIT_CODE)
        self.step = step
        self.checkpoint = checkpoint
        self.signum = signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name if self.signum is not None else "signal"
        return (f"training preempted by {name} after step {self.step}; checkpoint "
                f"{self.checkpoint}; exit code {PREEMPT_EXIT_CODE}")


class NonFiniteLoss(RuntimeError):
    """A NaN/inf loss (or gradient norm); ``.step`` is the first bad step (1-based)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------
class EMA:
    """EMA of a model's state dict (§B.3): floating-point parameters averaged with one
    vectorised update per step (``torch.optim.swa_utils.get_ema_multi_avg_fn``), buffers
    copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.state: dict[str, Tensor] = {}
        seen: dict[int, str] = {}
        self._avg_dst, self._avg_src, self._cp_dst, self._cp_src = [], [], [], []
        for k, v in model.state_dict(keep_vars=True).items():
            if id(v) in seen:  # tied tensors stay tied
                self.state[k] = self.state[seen[id(v)]]
                continue
            seen[id(v)] = k
            e = v.detach().clone()
            self.state[k] = e
            if isinstance(v, nn.Parameter) and v.is_floating_point():
                self._avg_dst.append(e)
                self._avg_src.append(v)
            else:
                self._cp_dst.append(e)
                self._cp_src.append(v)
        self._lerp = get_ema_multi_avg_fn(self.decay)

    @torch.no_grad()
    def update(self) -> None:
        if self._avg_dst:
            self._lerp(self._avg_dst, self._avg_src, None)
        for dst, src in zip(self._cp_dst, self._cp_src):
            dst.copy_(src)

    @torch.no_grad()
    def load(self, saved: dict[str, Tensor]) -> None:
        for k, e in self.state.items():
            e.copy_(saved[k])


# ---------------------------------------------------------------------------------------------
# Data stream
# ---------------------------------------------------------------------------------------------
class Stream:
    """Epoch permutations drawn from the shared generator; batches cross epoch boundaries.

    ``Stream(n, generator)`` starts epoch 0 (one permutation drawn); ``Stream(n,
    state=saved)`` continues a saved position without drawing anything.
    """

    def __init__(self, n: int, generator: torch.Generator | None = None, *,
                 state: dict | None = None):
        self.n = n
        if state is not None:
            self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
            self.perm = state["perm"].clone()
        else:
            self.epoch, self.offset = 0, 0
            self.perm = torch.randperm(n, generator=generator)

    def take(self, b: int, generator: torch.Generator) -> Tensor:
        parts = []
        need = b
        while need:
            if self.offset >= self.n:
                self.epoch += 1
                self.offset = 0
                self.perm = torch.randperm(self.n, generator=generator)
            k = min(need, self.n - self.offset)
            parts.append(self.perm[self.offset:self.offset + k])
            self.offset += k
            need -= k
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state(self) -> dict:
        return {"n": self.n, "epoch": self.epoch, "offset": self.offset, "perm": self.perm.clone()}


# ---------------------------------------------------------------------------------------------
# Metrics window: sums since the last metrics row, kept on the device (no sync per step)
# ---------------------------------------------------------------------------------------------
class Window:
    """Loss / term / gradient-norm sums and the first non-finite step, on the device.

    Global sums live on rank 0 after a resume; the other ranks restart from zero, so an
    all-reduce of the window always gives the global sums.
    """

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.loss = torch.zeros((), dtype=_F64, device=dev)
        self.grad_norm = torch.zeros((), dtype=_F64, device=dev)
        self.terms: dict[str, Tensor] | None = None
        self.n = 0
        self.bad_loss = torch.full((), -1, dtype=torch.int64, device=dev)  # -1: none
        self.bad_grad = torch.full((), -1, dtype=torch.int64, device=dev)

    @torch.no_grad()
    def add(self, per_sample: Tensor, terms: dict[str, Tensor], step: int) -> None:
        s = per_sample.detach().sum(dtype=_F64)
        self.loss += s
        self.bad_loss.copy_(torch.where((self.bad_loss < 0) & ~torch.isfinite(s), step,
                                        self.bad_loss))
        if self.terms is None:
            self.terms = {k: torch.zeros((), dtype=_F64, device=self.dev) for k in terms}
        if terms.keys() != self.terms.keys():
            raise ValueError(f"the objective's terms changed from {sorted(self.terms)} to "
                             f"{sorted(terms)}")
        for k, v in terms.items():
            self.terms[k] += v.detach().sum(dtype=_F64)

    @torch.no_grad()
    def add_grad_norm(self, gn: Tensor, step: int) -> None:
        self.grad_norm += gn.detach().to(_F64)
        self.bad_grad.copy_(torch.where((self.bad_grad < 0) & ~torch.isfinite(gn), step,
                                        self.bad_grad))

    def sums(self, comm: Comm) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        names = sorted(self.terms) if self.terms else []
        packed = torch.stack([self.loss] + [self.terms[k] for k in names]).cpu()
        comm.all_reduce(packed, dist.ReduceOp.SUM if comm.on else None)
        return packed[0], {k: packed[i + 1] for i, k in enumerate(names)}, self.grad_norm.cpu()

    def reset(self) -> None:
        self.loss.zero_()
        self.grad_norm.zero_()
        for v in (self.terms or {}).values():
            v.zero_()
        self.n = 0

    def load(self, saved: dict, rank: int) -> None:
        self.n = int(saved["n"])
        if rank == 0:
            self.loss += saved["loss"].to(self.dev)
            self.grad_norm += saved["grad_norm"].to(self.dev)
        if saved["terms"]:
            self.terms = {k: (v.to(self.dev) if rank == 0 else
                              torch.zeros((), dtype=_F64, device=self.dev))
                          for k, v in saved["terms"].items()}

    def snapshot(self) -> tuple:
        terms = {k: v.clone() for k, v in (self.terms or {}).items()}
        return (self.loss.clone(), self.grad_norm.clone(), terms if self.terms else None,
                self.bad_loss.clone(), self.bad_grad.clone())

    def restore(self, snap: tuple) -> None:
        loss, gn, terms, bl, bg = snap
        self.loss.copy_(loss)
        self.grad_norm.copy_(gn)
        self.terms = terms
        self.bad_loss.copy_(bl)
        self.bad_grad.copy_(bg)

    def first_bad(self, comm: Comm) -> tuple[int, int]:
        """(first step with a non-finite loss, ... gradient norm) over all ranks; NO_BAD_STEP: none."""
        flags = torch.stack([self.bad_loss, self.bad_grad]).cpu()
        flags = torch.where(flags < 0, NO_BAD_STEP, flags)
        comm.all_reduce(flags, dist.ReduceOp.MIN if comm.on else None)
        return int(flags[0]), int(flags[1])


# ---------------------------------------------------------------------------------------------
# Metrics file
# ---------------------------------------------------------------------------------------------
def trim_metrics(path: Path, step: int) -> None:
    """Keep the header and the rows with step <= ``step`` (drop everything at a fresh start)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        path.unlink()
        return
    header, kept = rows[0], [rows[0]]
    for r in rows[1:]:
        if len(r) != len(header):
            continue  # a partial line from a killed writer
        try:
            if int(r[0]) <= step:
                kept.append(r)
        except ValueError:
            continue

    def write(f):
        s = io.StringIO()
        csv.writer(s, lineterminator="\n").writerows(kept)
        f.write(s.getvalue().encode())

    atomic_write(path, write)


def append_metrics(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (a header first in a new file); ValueError if the
    file's columns differ."""
    header = list(row)
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            old = next(csv.reader(f), None)
        if old is not None and old != header:
            raise ValueError(f"{path} has columns {old} but this run logs {header}; "
                             f"the objective's terms changed")
        new = False
    else:
        new = True
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(header)
        w.writerow([row[k] for k in header])


# ---------------------------------------------------------------------------------------------
# Preemption
# ---------------------------------------------------------------------------------------------
class PreemptFlag:
    """Records the first SIGTERM/SIGUSR1 while installed (the trainer checkpoints and exits)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # keep it trivial: no I/O in a handler
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: preemption signals are not handled")
            return
        for s in _PREEMPT_SIGNALS:
            self._previous[s] = signal.signal(s, self._handler)

    def restore(self) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()
