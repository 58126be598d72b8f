"""Every name params.yaml may use and what fits what, as plain data, so that reading params.yaml
(``ddm.config``, ``ddm.validation``, ``ddm.roles``) does not import torch.

The registries (``ddm.registry``: h_t families, samplers, grids, weightings, processes) are filled
where each entry is defined, in modules that import torch; ``ddm.registry.snapshot`` gives them as
plain data. This module knows that data and nothing of the registries (they depend on it, never
the reverse): where a snapshot is cached (:func:`cached`, :func:`store`) and what fits what in a
given snapshot (:func:`fit_error`, :func:`samplers_for`, :func:`grids_for`). ``ddm.snapshot.load``
chooses the snapshot: the live one when torch is imported, else the cached one.

The cache file is named by the digest of the package's source files (any edit of a module of
ddm/ gives a new digest, hence a fresh snapshot). Snakemake reads params.yaml through ddm.validation
at every start, in every DVC stage and in every SLURM job step: with the cache, that start does
not import torch (3-4 s of a 2-core machine's time).

Cache folder: ``$DDM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ddm``, else ``~/.cache/ddm``; a folder
that cannot be written only costs the import.

The snapshot: ``enums`` (the params.yaml schema's lists of names that torch-importing code
defines: ``family``, ``ht``, ``sampler``, ``grid``, ``final_step``, ``weighting``, ``process``,
``dataset``, ``extractor``, ``head``, ``loss_type``, ``reduction``, ``encoder``, ``precision``),
``fits`` (sampler and grid -> the processes it fits; "ddm": every h_t family, "ddm/constant":
h_t = c only, the one whose path is Gaussian, ``ddm.registry``), ``final_steps`` (sampler -> the values of its ``final_step``
option) and ``labels`` (family and weighting -> its LaTeX label, in registration order).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["digest", "cache_dir", "cache_path", "cached", "store", "kinds", "samplers_for", "grids_for",
           "fit_error"]

PACKAGE = Path(__file__).resolve().parent


def digest() -> str:
    """SHA-256 of the package's Python sources (relative names and contents, in name order)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_dir() -> Path:
    """Where snapshots are kept: $DDM_CACHE_DIR, $XDG_CACHE_HOME/ddm or ~/.cache/ddm."""
    if os.environ.get("DDM_CACHE_DIR"):
        return Path(os.environ["DDM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ddm"


def cache_path() -> Path:
    """The cache file of this package's snapshot (named by :func:`digest`)."""
    return cache_dir() / f"catalog-{digest()[:24]}.json"


def cached() -> dict[str, Any] | None:
    """The cached snapshot, or None if there is none (or it cannot be read)."""
    try:
        return json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store(snap: dict[str, Any]) -> None:
    """Cache a snapshot; a folder that cannot be written is skipped (the next start imports torch)."""
    path = cache_path()
    try:
        from ddm.io import save_text

        path.parent.mkdir(parents=True, exist_ok=True)
        save_text(json.dumps(snap, indent=1), path)
    except OSError:
        pass


def kinds(process: str, ht: str | None = None) -> set[str]:
    """The names a (process, h_t family) answers to in ``fits``; ``ht=None`` (not yet known,
    e.g. ``ht: main`` of a method that is not run) answers to all of DDM's."""
    if process == "ddm" and ht in (None, "constant"):
        return {"ddm", "ddm/constant"}
    return {process}


def _describe(process: str, ht: str | None) -> str:
    return f"process '{process}'" + (f" with ht '{ht}'" if process == "ddm" and ht else "")


def _need(fits: list[str], process: str) -> str:
    """Why a DDM process with another h_t does not fit (the entry needs h_t = c)."""
    return " (it needs a Gaussian path: ht constant)" if process == "ddm" and "ddm/constant" in fits else ""


def _fitting(what: str, process: str, ht: str | None, cat: dict) -> list[str]:
    k = kinds(process, ht)
    return sorted(name for name, fits in cat["fits"][what].items() if k & set(fits))


def samplers_for(process: str, ht: str | None = None, *, cat: dict) -> list[str]:
    """The samplers of snapshot ``cat`` that fit a process (sorted)."""
    return _fitting("sampler", process, ht, cat)


def grids_for(process: str, ht: str | None = None, *, cat: dict) -> list[str]:
    """The time grids of snapshot ``cat`` that fit a process (sorted)."""
    return _fitting("grid", process, ht, cat)


def fit_error(sampler: str, grid: str, process: str, ht: str | None = None, final_step: str = "paper", *,
              cat: dict) -> str | None:
    """None if the sampler, the grid and the final step fit the process in snapshot ``cat``, else
    one sentence naming the sampler (or grid, or final step), the process and what is allowed for it."""
    k = kinds(process, ht)
    for what, name in (("sampler", sampler), ("grid", grid)):
        fits = cat["fits"][what]
        if name not in fits:
            return f"unknown {what} '{name}' (allowed: {', '.join(fits)})"
        if not k & set(fits[name]):
            return (f"{what} '{name}' does not fit {_describe(process, ht)}{_need(fits[name], process)} "
                    f"(allowed: {', '.join(_fitting(what, process, ht, cat))})")
    steps = cat["final_steps"][sampler]
    if final_step not in steps:
        return f"final_step '{final_step}' does not fit sampler '{sampler}' (allowed: {', '.join(steps)})"
    return None
