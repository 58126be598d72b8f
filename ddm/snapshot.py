"""Every name params.yaml may use and what fits what, as plain data, so that reading params.yaml
(``ddm.config``, ``ddm.validation``, ``ddm.roles``) does not import torch.

The registries (``ddm.registry``: h_t families, samplers, grids, weightings, processes, datasets)
are filled where each entry is defined, in modules that import torch; ``ddm.registry.snapshot``
gives them as plain data. :func:`load` gives that snapshot

* live, when torch is already imported: a program that defined a family or sampler of its own
  (it imported ddm.families or ddm.registry to do so) sees it at once;
* otherwise the cached one (:func:`cached`, written from the live registries by :func:`store` the
  first time, which imports torch once).

What fits what is read from a snapshot (:func:`fit_error`, :func:`samplers_for`,
:func:`grids_for`; by default :func:`load`'s), and :func:`dataset_facts` is a live view of one
fact of each dataset (its channels, resolution or report label). This module sits above the
registries: only it imports them (to fill the cache), and they never import it.

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
h_t = c only, the one whose path is Gaussian, ``ddm.registry``), ``final_steps`` (sampler -> the
values of its ``final_step`` option), ``labels`` (family and weighting -> its LaTeX label, in
registration order) and ``datasets`` (each dataset's channels, resolution and label).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = ["digest", "cache_dir", "cache_path", "cached", "store", "load", "dataset_facts", "kinds", "samplers_for",
           "grids_for", "fit_error"]

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
    return cache_dir() / f"snapshot-{digest()[:24]}.json"


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


def _fitting(what: str, process: str, ht: str | None, cat: dict | None) -> list[str]:
    cat = load() if cat is None else cat
    k = kinds(process, ht)
    return sorted(name for name, fits in cat["fits"][what].items() if k & set(fits))


def samplers_for(process: str, ht: str | None = None, *, cat: dict | None = None) -> list[str]:
    """The samplers that fit a process (sorted), in snapshot ``cat`` (default: :func:`load`'s)."""
    return _fitting("sampler", process, ht, cat)


def grids_for(process: str, ht: str | None = None, *, cat: dict | None = None) -> list[str]:
    """The time grids that fit a process (sorted), in snapshot ``cat`` (default: :func:`load`'s)."""
    return _fitting("grid", process, ht, cat)


def fit_error(sampler: str, grid: str, process: str, ht: str | None = None, final_step: str = "paper", *,
              cat: dict | None = None) -> str | None:
    """None if the sampler, the grid and the final step fit the process in snapshot ``cat`` (default:
    :func:`load`'s), else one sentence naming the sampler (or grid, or final step), the process and
    what is allowed for it."""
    cat = load() if cat is None else cat
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


def _live() -> dict[str, Any]:
    # Names and labels: they validate params.yaml, and a job sees what they change through its
    # resolved config (a rule param); the report, which prints labels, imports ddm.registry
    # itself. So this import is no code of a job's own (ddm.codedeps).
    from ddm.registry import snapshot  # codedeps: names only

    return snapshot()


_CACHED: list[dict[str, Any]] = []  # the cached snapshot, once read in this process


def load() -> dict[str, Any]:
    """The registries' snapshot: live when torch is imported, else the cached one (written on a
    miss; read once per process)."""
    if "torch" in sys.modules:
        return _live()
    if not _CACHED:
        snap = cached()
        if snap is None:
            snap = _live()
            store(snap)
        _CACHED.append(snap)
    return _CACHED[0]


class _Facts(Mapping[str, Any]):
    """dataset -> one fact of it (``channels``, ``resolution``, ``label``), live: read from
    :func:`load`'s ``datasets`` at each access, so a dataset a plug-in registers is seen (ddm.datasets)."""

    def __init__(self, key: str):
        self.key = key

    def _table(self) -> dict[str, Any]:
        return {k: v[self.key] for k, v in load()["datasets"].items() if v[self.key] is not None}

    def __getitem__(self, name: str) -> Any:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def dataset_facts(key: str) -> Mapping[str, Any]:
    """A live view dataset -> its ``key`` (``channels``, ``resolution`` or ``label``; datasets
    without one are left out): ``ddm.config.DATASET_CHANNELS``, ``ddm.report.labels.DATASET_LABELS``."""
    return _Facts(key)
