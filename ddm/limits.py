"""Upper bounds on NFE and sample counts, derived from memory (standard library only).

A sampling job holds its whole time grid (NFE + 1 float64 values, ``ddm.sampling``'s grids) and
its whole sample set: float32 samples in the model's range, their clamped copy and the uint8 file
(``ddm.generate.generate``, ``ddm sample``): 4 + 4 + 1 bytes per pixel and channel. A count
whose estimate exceeds the memory a job may use cannot run, and is refused before any work with
the estimate and the limit:

* ``ddm sample`` and the other sampling commands: the memory of this machine (physical pages,
  ``os.sysconf``), the machine that runs them;
* params validation (``snakemake -n``, every ``ddm`` command that reads params.yaml), which may run
  on another machine than the jobs (a SLURM login node): the stated cap :data:`JOB_MEMORY_CAP`.

``DDM_MEMORY`` (bytes, or a number with K, M, G or T: binary units) replaces both: the memory of
the machines that run the jobs.
"""

from __future__ import annotations

import os

__all__ = ["GRID_BYTES_PER_STEP", "SAMPLE_BYTES_PER_VALUE", "JOB_MEMORY_CAP", "memory_limit", "grid_bytes",
           "sample_bytes", "nfe_error", "samples_error", "size_errors", "human_bytes"]

#: Bytes of the time grid per step (float64 t_i, NFE + 1 of them).
GRID_BYTES_PER_STEP = 8
#: Bytes per pixel and channel of a sample set in memory: float32 samples, their clamped float32
#: copy and the uint8 result.
SAMPLE_BYTES_PER_VALUE = 4 + 4 + 1
#: The most memory a job of the pipeline may use where params are checked away from the jobs'
#: machines: 2 TiB, more than the largest single nodes of common clusters.
JOB_MEMORY_CAP = 2 << 40
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _from_env() -> tuple[int, str] | None:
    text = os.environ.get("DDM_MEMORY", "").strip()
    if not text:
        return None
    number, unit = text.rstrip("KMGTkmgtiBb"), text[len(text.rstrip("KMGTkmgtiBb")):]
    unit = unit.upper().rstrip("B").rstrip("I")
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        value = -1.0
    if not value > 0 or value == float("inf"):
        from ddm.yamlio import ConfigError

        raise ConfigError(f"environment variable DDM_MEMORY='{text}' is not a memory size: give bytes or a "
                          "number with K, M, G or T (e.g. DDM_MEMORY=64G), or unset it")
    return int(value), f"DDM_MEMORY={text}"


def memory_limit(here: bool = True) -> tuple[int, str]:
    """(bytes, what they are) a job may use: ``DDM_MEMORY`` when set; else with ``here`` this
    machine's physical memory, without it :data:`JOB_MEMORY_CAP` (the stated cap)."""
    env = _from_env()
    if env:
        return env
    if not here:
        return JOB_MEMORY_CAP, f"the {human_bytes(JOB_MEMORY_CAP)} a sampling job may use (set DDM_MEMORY to " \
                               "the memory of the machines that run the jobs)"
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return JOB_MEMORY_CAP, f"the {human_bytes(JOB_MEMORY_CAP)} a sampling job may use"
    return total, f"this machine's {human_bytes(total)} of memory"


def grid_bytes(nfe: int) -> int:
    return (int(nfe) + 1) * GRID_BYTES_PER_STEP


def sample_bytes(n: int, channels: int, resolution: int) -> int:
    return int(n) * int(channels) * int(resolution) ** 2 * SAMPLE_BYTES_PER_VALUE


def nfe_error(nfe: int, *, here: bool = True) -> str | None:
    """Why NFE ``nfe`` cannot run (its time grid alone exceeds the memory limit), or None."""
    need, (limit, what) = grid_bytes(nfe), memory_limit(here)
    if need <= limit:
        return None
    return (f"NFE {nfe} needs {human_bytes(need)} for its time grid alone ({GRID_BYTES_PER_STEP} bytes per "
            f"step), more than {what}: use a smaller NFE (at most {limit // GRID_BYTES_PER_STEP - 1:,})")


def samples_error(n: int, channels: int, resolution: int, *, here: bool = True) -> str | None:
    """Why ``n`` samples of (channels, resolution, resolution) cannot be held (the set exceeds
    the memory limit), or None."""
    need, (limit, what) = sample_bytes(n, channels, resolution), memory_limit(here)
    if need <= limit:
        return None
    most = limit // sample_bytes(1, channels, resolution)
    return (f"{n:,} samples of {channels}x{resolution}x{resolution} need {human_bytes(need)} "
            f"({SAMPLE_BYTES_PER_VALUE} bytes per value), more than {what}: use at most {most:,}")


#: The NFE lists and the sample counts of a preset's dataset block (each a sample set in memory).
_NFE_KEYS = (("nfe",), ("nfe_long",), ("ablation_nfe",), ("solver_nfe",), ("convergence", "nfe"))
_SAMPLE_KEYS = (("fid", "num_samples"), ("num_samples_long",), ("convergence", "num_samples"))


def _get(block, keys):
    for k in keys:
        block = block.get(k) if isinstance(block, dict) else None
    return block


def size_errors(params, cond_block, dataset_channels, task_channels) -> list[str]:
    """``path: why`` of every NFE and sample count of the active preset and of its conditioned
    block (``cond_block``; None when off) that does not fit in a sampling job's memory
    (:func:`memory_limit` without ``here``: the stated cap, or DDM_MEMORY)."""
    lines: list[str] = []

    def check(where, nfes=(), count=None, channels=1, resolution=1):
        for n in nfes or ():
            if (msg := nfe_error(n, here=False)):
                lines.append(f"{where}: {msg}")
        if count is not None and (msg := samples_error(count, channels, resolution, here=False)):
            lines.append(f"{where}: {msg}")

    preset = params["preset"]
    for ds, block in params["presets"][preset].items():
        for keys in _NFE_KEYS:
            check(f"presets/{preset}/{ds}/{'/'.join(keys)}", nfes=_get(block, keys))
        for keys in _SAMPLE_KEYS:
            check(f"presets/{preset}/{ds}/{'/'.join(keys)}", count=_get(block, keys),
                  channels=dataset_channels[ds], resolution=block["resolution"])
    cond = cond_block or {}
    for table in ("table2", "table3"):
        check(f"conditioned_presets/{preset}/{table}/nfe", nfes=_get(cond, (table, "nfe")))
    for task, t in (cond.get("tasks") or {}).items():
        check(f"conditioned_presets/{preset}/tasks/{task}/n_test", count=t.get("n_test"),
              channels=task_channels[task], resolution=t["size"])
    return lines
